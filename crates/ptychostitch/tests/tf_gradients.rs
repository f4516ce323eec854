//! Gradients against TensorFlow's `GradientTape` through PtychoPINN's own functions
//! (`tests/data/gradients`, see its PROVENANCE.md): `max|ours − TF| ≤ 1e-6·max|TF|` for the
//! patches' and images' cotangents, `≤ 2e-5·max|TF|` for the offsets'; the extraction forward
//! bit for bit.

use ndarray::{Array2, Array3, ArrayD, Axis, Ix2, Ix3};
use ptychostitch::npy::Npz;
use ptychostitch::{Complex32, Extraction, Plan, Wrt};
use std::path::PathBuf;

const REASSEMBLY_CASES: [&str; 6] = ["random", "integer", "half", "oddM", "MeqN", "wide"];
const EXTRACTION_CASES: [&str; 3] = ["extract_g2", "extract_g1_half", "extract_g3"];

fn open(name: &str) -> Npz {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/gradients")
        .join(format!("{name}.npz"));
    Npz::open(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn complex(npz: &mut Npz, key: &str) -> ArrayD<Complex32> {
    npz.read(key).unwrap().to_complex32().unwrap()
}

/// `max|ours − tf| / max|tf|` over the lanes of two complex arrays.
fn relative(ours: &[Complex32], tf: &[Complex32]) -> f64 {
    let (mut diff, mut scale) = (0.0_f64, 0.0_f64);
    for (a, b) in ours.iter().zip(tf) {
        diff = diff
            .max(((a.re - b.re) as f64).abs())
            .max(((a.im - b.im) as f64).abs());
        scale = scale.max((b.re as f64).abs()).max((b.im as f64).abs());
    }
    diff / scale
}

fn relative_f64(ours: &[f64], tf: &[f64]) -> f64 {
    let diff = ours
        .iter()
        .zip(tf)
        .fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
    diff / tf.iter().fold(0.0_f64, |m, v| m.max(v.abs()))
}

#[test]
fn reassembly_gradients_match_tensorflow() {
    for name in REASSEMBLY_CASES {
        let mut npz = open(name);
        let obj = complex(&mut npz, "obj")
            .index_axis_move(Axis(3), 0)
            .into_dimensionality::<Ix3>()
            .unwrap();
        let offsets = npz.read("offsets").unwrap().to_f64().unwrap();
        let n = offsets.shape()[0];
        let offsets = offsets.into_shape_with_order((n, 2)).unwrap();
        let m = npz.read("M").unwrap().to_scalar_i64().unwrap();
        let w = complex(&mut npz, "W")
            .index_axis_move(Axis(2), 0)
            .into_dimensionality::<Ix2>()
            .unwrap();
        let plan = Plan::new(offsets.view(), obj.dim().1, m).unwrap();
        let ours_ss = plan
            .shift_and_sum_vjp(obj.view(), w.view(), Wrt::ALL)
            .unwrap();
        let out = plan.reassemble_position(obj.view()).unwrap();
        let ours_rp = plan
            .reassemble_position_vjp(obj.view(), Some(out.view()), w.view(), Wrt::ALL)
            .unwrap();
        for (function, ours) in [
            ("shift_and_sum_old", &ours_ss),
            ("shift_and_sum", &ours_ss),
            ("reassemble_position_old", &ours_rp),
            ("reassemble_position", &ours_rp),
        ] {
            let key = format!("{function}_dobj");
            if !npz.contains(&key) {
                continue; // TF's batched functions cannot run an odd M
            }
            let tf_dobj = complex(&mut npz, &key);
            let tf_doff = npz
                .read(&format!("{function}_doffsets"))
                .unwrap()
                .to_f64()
                .unwrap();
            let dobj: &Array3<Complex32> = ours.patches.as_ref().unwrap();
            let doff: &Array2<f64> = ours.offsets.as_ref().unwrap();
            let rp = relative(dobj.as_slice().unwrap(), tf_dobj.as_slice().unwrap());
            let ro = relative_f64(doff.as_slice().unwrap(), tf_doff.as_slice().unwrap());
            eprintln!("{name} {function}: patches {rp:.2e}, offsets {ro:.2e} of max|TF|");
            assert!(
                rp <= 1e-6,
                "{name} {function}: patch gradients differ by {rp:e} of max|TF|"
            );
            assert!(
                ro <= 2e-5,
                "{name} {function}: offset gradients differ by {ro:e} of max|TF|"
            );
        }
    }
}

#[test]
fn extraction_and_its_gradients_match_tensorflow() {
    for name in EXTRACTION_CASES {
        let mut npz = open(name);
        let imgs = complex(&mut npz, "imgs")
            .index_axis_move(Axis(3), 0)
            .into_dimensionality::<Ix3>()
            .unwrap();
        let off = npz.read("offsets_xy").unwrap().to_f64().unwrap();
        let (b, c) = (off.shape()[0], off.shape()[3]);
        // (B, 1, 2, C) → PtychoPINN's flat rows b·C + c of [x, y].
        let flat = Array2::from_shape_fn((b * c, 2), |(j, a)| off[[j / c, 0, a, j % c]]);
        let n = npz.read("N").unwrap().to_scalar_i64().unwrap() as usize;
        let plan = Extraction::new(flat.view(), c, imgs.dim().1, n).unwrap();
        let ours = plan.extract(imgs.view()).unwrap();
        let tf = complex(&mut npz, "extract_patches_position");
        let tf_bits: Vec<u32> = tf
            .iter()
            .flat_map(|v| [v.re.to_bits(), v.im.to_bits()])
            .collect();
        let our_bits: Vec<u32> = ours
            .iter()
            .flat_map(|v| [v.re.to_bits(), v.im.to_bits()])
            .collect();
        assert_eq!(
            our_bits, tf_bits,
            "{name}: forward not bit-identical to PtychoPINN"
        );
        let w = complex(&mut npz, "W")
            .index_axis_move(Axis(3), 0)
            .into_dimensionality::<Ix3>()
            .unwrap();
        let g = plan.extract_vjp(imgs.view(), w.view(), Wrt::ALL).unwrap();
        let tf_dimgs = complex(&mut npz, "extract_patches_position_dimgs");
        let tf_doff = npz
            .read("extract_patches_position_doffsets")
            .unwrap()
            .to_f64()
            .unwrap();
        let tf_doff_flat =
            Array2::from_shape_fn((b * c, 2), |(j, a)| tf_doff[[j / c, 0, a, j % c]]);
        let ri = relative(
            g.patches.as_ref().unwrap().as_slice().unwrap(),
            tf_dimgs.as_slice().unwrap(),
        );
        let ro = relative_f64(
            g.offsets.as_ref().unwrap().as_slice().unwrap(),
            tf_doff_flat.as_slice().unwrap(),
        );
        eprintln!("{name}: images {ri:.2e}, offsets {ro:.2e} of max|TF|");
        assert!(
            ri <= 1e-6,
            "{name}: image gradients differ by {ri:e} of max|TF|"
        );
        assert!(
            ro <= 2e-5,
            "{name}: offset gradients differ by {ro:e} of max|TF|"
        );
    }
}
