//! Every operator with device kernels, run on them through the emulator (the CUDA source run on
//! the CPU, `ptychostitch-kernel-emu`) exactly as an XLA custom call compiled for a GPU runs it
//! -- the framework's layouts, the declaration's spec, buffers by address, float32 or float64
//! offsets -- against the same operator on the host (what the CPU custom call runs), bit for
//! bit, forward and backward: complex and real, both conventions, every layout the device takes.

use ndarray::{ArrayViewD, ArrayViewMutD, IxDyn};
use ptychostitch::Complex32;
use ptychostitch_kernel_emu::Emulator;
use ptychostitch_ops::device::{self, Buffer, DType};
use ptychostitch_ops::{Operand, Output, Spec};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// An array of the call, in host memory (the emulator's "device" memory too).
#[derive(Clone, Debug)]
enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    C64(Vec<Complex32>),
    Bool(Vec<bool>),
}

#[derive(Clone, Debug)]
struct Arr {
    dims: Vec<usize>,
    data: Data,
}

impl Arr {
    fn random(r: &mut ChaCha8Rng, dims: &[usize], dtype: DType, spread: f64) -> Self {
        let len = dims.iter().product();
        let mut value = || {
            if spread == 0.0 {
                0.0
            } else {
                r.random_range(-spread..spread)
            }
        };
        let data = match dtype {
            DType::F32 => Data::F32((0..len).map(|_| value() as f32).collect()),
            DType::F64 => Data::F64((0..len).map(|_| value()).collect()),
            DType::C64 => Data::C64(
                (0..len)
                    .map(|_| Complex32::new(value() as f32, value() as f32))
                    .collect(),
            ),
            DType::Bool => unreachable!("no bool operands"),
        };
        Self {
            dims: dims.to_vec(),
            data,
        }
    }

    /// A result of `dims` and `dtype`, filled with NaN (what was not written shows).
    fn result(dims: &[usize], dtype: DType) -> Self {
        let len = dims.iter().product();
        let data = match dtype {
            DType::F32 => Data::F32(vec![f32::NAN; len]),
            DType::F64 => Data::F64(vec![f64::NAN; len]),
            DType::C64 => Data::C64(vec![Complex32::new(f32::NAN, f32::NAN); len]),
            // Not a bool a kernel writes: an unwritten element shows.
            DType::Bool => Data::Bool(vec![false; len]),
        };
        Self {
            dims: dims.to_vec(),
            data,
        }
    }

    fn dtype(&self) -> DType {
        match self.data {
            Data::F32(_) => DType::F32,
            Data::F64(_) => DType::F64,
            Data::C64(_) => DType::C64,
            Data::Bool(_) => DType::Bool,
        }
    }

    fn operand(&self) -> Operand<'_> {
        let shape = IxDyn(&self.dims);
        match &self.data {
            Data::F32(v) => Operand::F32(ArrayViewD::from_shape(shape, v).unwrap()),
            Data::F64(v) => Operand::F64(ArrayViewD::from_shape(shape, v).unwrap()),
            Data::C64(v) => Operand::C64(ArrayViewD::from_shape(shape, v).unwrap()),
            Data::Bool(_) => unreachable!("no bool operands"),
        }
    }

    fn output(&mut self) -> Output<'_> {
        let shape = IxDyn(&self.dims);
        match &mut self.data {
            Data::F32(v) => Output::F32(ArrayViewMutD::from_shape(shape, v).unwrap()),
            Data::F64(v) => Output::F64(ArrayViewMutD::from_shape(shape, v).unwrap()),
            Data::C64(v) => Output::C64(ArrayViewMutD::from_shape(shape, v).unwrap()),
            Data::Bool(v) => Output::Bool(ArrayViewMutD::from_shape(shape, v).unwrap()),
        }
    }

    /// The buffer a custom call would be handed.
    fn buffer(&mut self) -> Buffer {
        let address = match &mut self.data {
            Data::F32(v) => v.as_mut_ptr() as u64,
            Data::F64(v) => v.as_mut_ptr() as u64,
            Data::C64(v) => v.as_mut_ptr() as u64,
            Data::Bool(v) => v.as_mut_ptr() as u64,
        };
        Buffer {
            dtype: self.dtype(),
            dims: self.dims.clone(),
            address,
        }
    }

    /// Every value's bits (complex: both lanes).
    fn bits(&self) -> Vec<u64> {
        match &self.data {
            Data::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
            Data::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
            Data::C64(v) => v
                .iter()
                .flat_map(|x| [u64::from(x.re.to_bits()), u64::from(x.im.to_bits())])
                .collect(),
            Data::Bool(v) => v.iter().map(|&x| u64::from(x)).collect(),
        }
    }
}

/// Runs `op` on the host and on the emulated device kernels; asserts every result's bits
/// equal, and returns the host's results and how many values the device path read back.
fn same_bits(op: &str, spec: &str, args: &mut [Arr], rets: &[Arr]) -> (Vec<Arr>, usize) {
    let spec = Spec::parse(spec).unwrap();
    let mut host = rets.to_vec();
    {
        let operands: Vec<Operand<'_>> = args.iter().map(Arr::operand).collect();
        let mut outputs: Vec<Output<'_>> = host.iter_mut().map(Arr::output).collect();
        ptychostitch_ops::run(op, &spec, &operands, &mut outputs).unwrap();
    }
    let mut on_device = rets.to_vec();
    let mut emulator = Emulator::default();
    let buffers: Vec<Buffer> = args.iter_mut().map(Arr::buffer).collect();
    let results: Vec<Buffer> = on_device.iter_mut().map(Arr::buffer).collect();
    // SAFETY: every buffer is a live host vector of its dims and dtype (the emulator's memory),
    // the results distinct from the operands, all outliving the synchronous emulator.
    unsafe { device::run(op, &spec, &buffers, &results, &mut emulator) }.unwrap();
    for (k, (h, d)) in host.iter().zip(&on_device).enumerate() {
        let (hb, db) = (h.bits(), d.bits());
        if let Some(i) = hb.iter().zip(&db).position(|(a, b)| a != b) {
            panic!(
                "{op} ({spec:?}) result {k}, value {i}: device {:?} vs host {:?}",
                d.data_at(i),
                h.data_at(i)
            );
        }
    }
    (host, emulator.read)
}

impl Arr {
    fn data_at(&self, i: usize) -> String {
        match &self.data {
            Data::F32(v) => format!("{}", v[i]),
            Data::F64(v) => format!("{}", v[i]),
            Data::C64(v) => format!("{}", v[i / 2]),
            Data::Bool(v) => format!("{}", v[i]),
        }
    }
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

const SAMPLES: [DType; 2] = [DType::C64, DType::F32];
const OFFSETS: [DType; 2] = [DType::F64, DType::F32];

#[test]
fn the_reassembly_on_the_device_kernels_is_the_host_operator_bit_for_bit() {
    let mut r = rng(31);
    for &(count, n, crop, spread) in &[(1, 8, 4, 0.0), (37, 16, 8, 9.5), (300, 12, 6, 30.0)] {
        for op in ["shift_and_sum", "reassemble_position"] {
            for sample in SAMPLES {
                for od in OFFSETS {
                    let x = Arr::random(&mut r, &[count, n, n, 1], sample, 1.0);
                    let offsets = Arr::random(&mut r, &[count, 1, 1, 2], od, spread);
                    let spec =
                        format!("op={op:?};crop={crop};threads=0;reference=False;canvas_side=None");
                    let plan =
                        ptychostitch::Plan::new(host_offsets(&offsets).view(), n, crop as i64)
                            .unwrap();
                    let side = plan.canvas_shape().0;
                    let mut args = vec![x.clone(), offsets.clone()];
                    let (out, read) = same_bits(
                        "reassemble",
                        &spec,
                        &mut args,
                        &[Arr::result(&[side, side, 1], sample)],
                    );
                    assert_eq!(read, count * 2, "only the offsets are read back");
                    let cot = Arr::random(&mut r, &[side, side, 1], sample, 1.0);
                    let mut args = vec![x, offsets, out[0].clone(), cot];
                    same_bits(
                        "reassemble_backward",
                        &spec,
                        &mut args,
                        &[
                            Arr::result(&[count, n, n, 1], sample),
                            Arr::result(&[count, 1, 1, 2], od),
                        ],
                    );
                }
            }
        }
    }
}

fn host_offsets(a: &Arr) -> ndarray::Array2<f64> {
    let values: Vec<f64> = match &a.data {
        Data::F64(v) => v.clone(),
        Data::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        Data::C64(_) | Data::Bool(_) => unreachable!(),
    };
    ndarray::Array2::from_shape_vec((values.len() / 2, 2), values).unwrap()
}

#[test]
fn the_extraction_on_the_device_kernels_is_the_host_operator_bit_for_bit() {
    let mut r = rng(32);
    for &(b, c, s, n, spread) in &[
        (1, 1, 16, 8, 0.0),
        (3, 4, 40, 16, 9.0),
        (2, 9, 30, 12, 25.0),
    ] {
        for sample in SAMPLES {
            for od in OFFSETS {
                let images = Arr::random(&mut r, &[b, s, s, 1], sample, 1.0);
                let offsets = Arr::random(&mut r, &[b, 1, 2, c], od, spread);
                let spec = format!("patch_size={n};per_image={c};threads=0");
                let mut args = vec![images.clone(), offsets.clone()];
                let (out, read) = same_bits(
                    "extract_patches",
                    &spec,
                    &mut args,
                    &[Arr::result(&[b * c, n, n, 1], sample)],
                );
                assert_eq!(read, 0, "planned on the device: nothing read back");
                let cot = Arr::random(&mut r, &[b * c, n, n, 1], sample, 1.0);
                let mut args = vec![images, offsets, out[0].clone(), cot];
                same_bits(
                    "extract_patches_backward",
                    &spec,
                    &mut args,
                    &[
                        Arr::result(&[b, s, s, 1], sample),
                        Arr::result(&[b, 1, 2, c], od),
                    ],
                );
            }
        }
    }
}

#[test]
fn the_region_extraction_on_the_device_kernels_is_the_host_operator_bit_for_bit() {
    let mut r = rng(33);
    for &(b, c, p, n, spread) in &[
        (1, 1, 12, 8, 0.0),
        (2, 4, 40, 16, 9.0),
        (3, 9, 26, 12, 12.0),
    ] {
        for convention in ["tf", "torch"] {
            for sample in SAMPLES {
                for od in OFFSETS {
                    let regions = Arr::random(&mut r, &[b, 1, p, p], sample, 1.0);
                    let positions = Arr::random(&mut r, &[b, c, 1, 2], od, spread);
                    let spec =
                        format!("patch_size={n};channels={c};convention={convention:?};threads=0");
                    let mut args = vec![regions.clone(), positions.clone()];
                    let (out, read) = same_bits(
                        "extract_regions",
                        &spec,
                        &mut args,
                        &[Arr::result(&[b, c, n, n], sample)],
                    );
                    assert_eq!(read, 0, "planned on the device: nothing read back");
                    let cot = Arr::random(&mut r, &[b, c, n, n], sample, 1.0);
                    let mut args = vec![regions, positions, out[0].clone(), cot];
                    same_bits(
                        "extract_regions_backward",
                        &spec,
                        &mut args,
                        &[
                            Arr::result(&[b, 1, p, p], sample),
                            Arr::result(&[b, c, 1, 2], od),
                        ],
                    );
                }
            }
        }
    }
}

/// `(convention, recentre, numerator, denominator, epsilon, support, scale)` as the spec says
/// them: PtychoPINN's TensorFlow layer, its torch helper, and the batch-relative forms (a
/// support relative to the maximum, the regularised denominator) that read denominators back.
const REGION_OPTIONS: [(&str, bool, &str, &str, f64, &str, f64); 4] = [
    ("tf", true, "sum", "add", 1e-3, "None", 1.0),
    ("torch", false, "weighted", "clamp", 1e-12, "None", 1.0),
    (
        "torch",
        true,
        "sum",
        "one",
        0.0,
        "['above_max_fraction', 1e-06]",
        1.0,
    ),
    ("tf", false, "weighted", "regularised", 0.1, "None", 0.9),
];

#[test]
fn the_region_reassembly_on_the_device_kernels_is_the_host_operator_bit_for_bit() {
    let mut r = rng(34);
    for &(b, c, n, p, spread) in &[(1, 1, 8, 12, 0.0), (2, 4, 16, 40, 6.0), (3, 9, 12, 19, 9.0)] {
        for (convention, recentre, numerator, denominator, epsilon, support, scale) in
            REGION_OPTIONS
        {
            for sample in SAMPLES {
                for od in OFFSETS {
                    let x = Arr::random(&mut r, &[b, c, n, n], sample, 1.0);
                    let positions = Arr::random(&mut r, &[b, c, 2], od, spread);
                    let mut weights = Arr::random(&mut r, &[1, c, n, n], DType::F32, 1.0);
                    if let Data::F32(w) = &mut weights.data {
                        w.iter_mut().for_each(|v| *v = v.abs());
                    }
                    let spec = format!(
                        "layout='torch';side={p};convention={convention:?};recentre={};numerator={numerator:?};denominator={denominator:?};epsilon={epsilon:?};support={support};threads=0;reference=False;scale={scale:?}",
                        if recentre { "True" } else { "False" }
                    );
                    let mut args = vec![x.clone(), positions.clone(), weights.clone()];
                    let (out, read) = same_bits(
                        "reassemble_regions",
                        &spec,
                        &mut args,
                        &[Arr::result(&[b, p, p], sample)],
                    );
                    // Only a batch-relative normalisation reads anything back: the denominators.
                    let batch_relative = support.contains("max") || denominator == "regularised";
                    assert_eq!(
                        read == 0,
                        !batch_relative,
                        "{spec}: {read} values read back"
                    );
                    let cot = Arr::random(&mut r, &[b, p, p], sample, 1.0);
                    let mut args = vec![x, positions, weights, out[0].clone(), cot];
                    same_bits(
                        "reassemble_regions_backward",
                        &spec,
                        &mut args,
                        &[
                            Arr::result(&[b, c, n, n], sample),
                            Arr::result(&[b, c, 2], od),
                        ],
                    );
                }
            }
        }
    }
}

#[test]
fn the_support_mask_on_the_device_kernels_is_the_host_operators() {
    let mut r = rng(37);
    for &(b, c, n, p, spread) in &[(1, 1, 8, 12, 0.0), (2, 4, 16, 40, 6.0), (3, 9, 12, 19, 9.0)] {
        for (support, weights_spread) in [
            ("['above', 1e-06]", 1.0),
            ("['above', 0.5]", 1.0),
            ("['above_max_fraction', 0.25]", 3.0),
        ] {
            for sample in SAMPLES {
                for od in OFFSETS {
                    let x = Arr::random(&mut r, &[b, c, n, n], sample, 1.0);
                    let positions = Arr::random(&mut r, &[b, c, 2], od, spread);
                    let mut weights =
                        Arr::random(&mut r, &[1, c, n, n], DType::F32, weights_spread);
                    if let Data::F32(w) = &mut weights.data {
                        // Zeros and positives, as a centre mask or |P|² has.
                        w.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
                    let spec = format!(
                        "layout='torch';side={p};convention='torch';recentre=False;numerator='weighted';denominator='clamp';epsilon=1e-12;support={support};threads=0;reference=False;scale=1.0"
                    );
                    let mut args = vec![x, positions, weights];
                    let (mask, read) = same_bits(
                        "region_support",
                        &spec,
                        &mut args,
                        &[Arr::result(&[b, p, p], DType::Bool)],
                    );
                    let relative = support.contains("max");
                    assert_eq!(read == 0, !relative, "{spec}: {read} values read back");
                    if let Data::Bool(m) = &mask[0].data {
                        assert!(m.iter().any(|&v| v), "{spec}: some pixel is supported");
                    }
                }
            }
        }
    }
}

#[test]
fn the_device_operators_refuse_what_they_cannot_run_with_a_message() {
    let mut r = rng(35);
    let mut emulator = Emulator::default();
    let mut x = Arr::random(&mut r, &[2, 3, 8, 8], DType::F32, 1.0);
    let mut positions = Arr::random(&mut r, &[2, 1, 2, 3], DType::F32, 2.0);
    let mut weights = Arr::random(&mut r, &[1, 1, 8, 8], DType::F32, 1.0);
    let mut out = Arr::result(&[2, 12, 12, 1], DType::F32);
    let args = [x.buffer(), positions.buffer(), weights.buffer()];
    let rets = [out.buffer()];
    let run = |op: &str, spec: &str, emulator: &mut Emulator| {
        let spec = Spec::parse(spec).unwrap();
        // SAFETY: host vectors of their dims and dtypes, alive for the synchronous emulator.
        unsafe { device::run(op, &spec, &args, &rets, emulator) }.unwrap_err()
    };
    let tf = "layout='tf';side=12;convention='tf';recentre=True;numerator='sum';denominator='add';epsilon=0.001;support=None;threads=0;reference=False;scale=1.0";
    assert!(
        run("reassemble_regions", tf, &mut emulator).contains("transpose TensorFlow's patches"),
        "the tf layout is refused on the device"
    );
    let reference = tf
        .replace("layout='tf'", "layout='torch'")
        .replace("reference=False", "reference=True");
    assert!(run("reassemble_regions", &reference, &mut emulator).contains("host only"));
    assert!(run("center_channels", "threads=0", &mut emulator).contains("no device kernels"));
    assert!(run("no_such_op", "threads=0", &mut emulator).contains("no operator named"));
    assert!(emulator.launches.is_empty(), "nothing was launched");
}

#[test]
fn non_finite_positions_on_the_device_give_non_finite_patches_not_a_crash() {
    // The host refuses them (an error naming the position); planned on the device, where an
    // error would need a host round trip, the patch of a NaN position comes out NaN and the
    // others as on the host.
    let mut r = rng(36);
    let (b, c, p, n) = (2, 3, 20, 8);
    let mut regions = Arr::random(&mut r, &[b, 1, p, p], DType::F32, 1.0);
    let mut positions = Arr::random(&mut r, &[b, c, 2], DType::F32, 3.0);
    let spec_text = format!("patch_size={n};channels={c};convention='torch';threads=0");
    let spec = Spec::parse(&spec_text).unwrap();
    let want = same_bits(
        "extract_regions",
        &spec_text,
        &mut [regions.clone(), positions.clone()],
        &[Arr::result(&[b, c, n, n], DType::F32)],
    )
    .0;
    if let Data::F32(v) = &mut positions.data {
        v[2 * 4] = f32::NAN; // patch 4's x
    }
    let mut out = Arr::result(&[b, c, n, n], DType::F32);
    let args = [regions.buffer(), positions.buffer()];
    let rets = [out.buffer()];
    // SAFETY: host vectors of their dims and dtypes, alive for the synchronous emulator.
    unsafe {
        device::run(
            "extract_regions",
            &spec,
            &args,
            &rets,
            &mut Emulator::default(),
        )
    }
    .unwrap();
    let (Data::F32(got), Data::F32(host)) = (&out.data, &want[0].data) else {
        unreachable!()
    };
    let per_patch = n * n;
    for (j, (g, h)) in got
        .chunks(per_patch)
        .zip(host.chunks(per_patch))
        .enumerate()
    {
        if j == 4 {
            assert!(
                g.iter().all(|v| v.is_nan()),
                "the NaN position's patch is NaN"
            );
        } else {
            assert!(
                g.iter().zip(h).all(|(a, b)| a.to_bits() == b.to_bits()),
                "patch {j} is the host's"
            );
        }
    }
    let operands = [regions.operand(), positions.operand()];
    let mut host = Arr::result(&[b, c, n, n], DType::F32);
    let error = ptychostitch_ops::run("extract_regions", &spec, &operands, &mut [host.output()])
        .unwrap_err();
    assert!(error.contains("finite"), "{error}");
}
