//! The CUDA extraction kernel's source (`ptychostitch_extract`), run on the CPU, against the
//! library's reference extraction: bit for bit (NaN payloads included) in both conventions
//! (TensorFlow's `extract_patches_position`, torch's `extract_channels_from_region`), complex
//! and real images, contiguous and strided, offsets inside and far outside the image, output
//! sides of one and of several 8×8 blocks.

#[path = "../../ptychostitch/tests/common/mod.rs"]
mod common;
mod support;

use common::{offsets_from, random_patches, rng};
use ndarray::{Array3, s};
use ptychostitch::kernel::Convention;
use ptychostitch::{Complex32, Extraction};
use rand::RngExt;
use support::{assert_lanes as assert_bits, assert_offsets};

#[test]
fn the_extraction_kernel_is_the_reference_bit_for_bit() {
    let mut r = rng(77);
    for convention in [Convention::TensorFlow, Convention::Torch] {
        for (images, per, side, n, reach) in [
            (2, 4, 24, 8, 3.0),  // one 8×8 block per patch
            (3, 1, 41, 17, 9.0), // 3×3 blocks, a partial last row and column
            (1, 9, 12, 12, 2.5), // S = N (torch allows it)
            (2, 4, 20, 6, 40.0), // offsets far outside: zeros, edges
            (1, 4, 17, 1, 1.0),  // N = 1
        ] {
            if convention == Convention::TensorFlow && side == n {
                continue; // PtychoPINN's TF function needs S > N
            }
            let what = format!("{convention:?}, B = {images}, C = {per}, S = {side}, N = {n}");
            let offsets = offsets_from(images * per, |k| {
                if k == 0 {
                    [0.5, -0.5] // half-pixel
                } else {
                    [r.random_range(-reach..reach), r.random_range(-reach..reach)]
                }
            });
            let ext = Extraction::new_in(convention, offsets.view(), per, side, n).unwrap();
            let mut complex: Array3<Complex32> = random_patches(&mut r, images, side);
            complex[[0, side / 2, side / 2]] = Complex32::new(f32::from_bits(0x7fc0_1234), 1.0);
            complex[[0, 1, 2]] = Complex32::new(f32::INFINITY, -0.0);
            let reference = ext.extract_reference(complex.view()).unwrap();
            let kernel = ptychostitch_kernel_emu::extract(&ext, complex.view()).unwrap();
            assert_bits(&kernel, &reference, &format!("{what}, complex"));
            let real = complex.map(|v| v.re);
            let reference = ext.extract_reference(real.view()).unwrap();
            let kernel = ptychostitch_kernel_emu::extract(&ext, real.view()).unwrap();
            assert_bits(&kernel, &reference, &format!("{what}, real"));
            // A strided view (every image reversed along its columns): the kernel reads it by
            // its strides, the reference by its own copy.
            let reversed = complex.slice(s![.., .., ..;-1]);
            let reference = ext.extract_reference(reversed).unwrap();
            let kernel = ptychostitch_kernel_emu::extract(&ext, reversed).unwrap();
            assert_bits(&kernel, &reference, &format!("{what}, strided"));
        }
    }
}

#[test]
fn a_shape_the_extraction_does_not_take_is_an_error_before_the_kernel() {
    let offsets = ndarray::Array2::<f64>::zeros((4, 2));
    let ext = Extraction::new(offsets.view(), 4, 16, 8).unwrap();
    let wrong = Array3::<f32>::zeros((1, 15, 15));
    assert!(ptychostitch_kernel_emu::extract(&ext, wrong.view()).is_err());
    let too_many = Array3::<f32>::zeros((2, 16, 16));
    assert!(ptychostitch_kernel_emu::extract(&ext, too_many.view()).is_err());
}

#[test]
fn the_extraction_backward_kernels_are_the_reference_bit_for_bit() {
    use ptychostitch::Wrt;
    let mut r = rng(78);
    for convention in [Convention::TensorFlow, Convention::Torch] {
        for (images, per, side, n, reach) in [
            (2, 4, 24, 8, 3.0),
            (1, 1, 41, 17, 9.0),
            (2, 2, 20, 6, 30.0),
            (1, 4, 9, 9, 1.5),
        ] {
            if convention == Convention::TensorFlow && side == n {
                continue;
            }
            let what = format!("{convention:?}, B = {images}, C = {per}, S = {side}, N = {n}");
            let offsets = offsets_from(images * per, |k| {
                if k == 0 {
                    [1.0, -2.0] // integer: weights exactly 0 and 1, signed zeros in play
                } else {
                    [r.random_range(-reach..reach), r.random_range(-reach..reach)]
                }
            });
            let ext = Extraction::new_in(convention, offsets.view(), per, side, n).unwrap();
            let imgs: Array3<Complex32> = random_patches(&mut r, images, side);
            let mut cot: Array3<Complex32> = random_patches(&mut r, images * per, n);
            cot[[0, 0, 0]] = Complex32::new(-0.0, f32::from_bits(0x7fc0_4321));
            let reference = ext
                .extract_vjp_reference(imgs.view(), cot.view(), Wrt::ALL)
                .unwrap();
            let kernel =
                ptychostitch_kernel_emu::extract_vjp(&ext, imgs.view(), cot.view(), Wrt::ALL)
                    .unwrap();
            assert_bits(
                kernel.patches.as_ref().unwrap(),
                reference.patches.as_ref().unwrap(),
                &format!("{what}: images' cotangent"),
            );
            assert_offsets(
                kernel.offsets.as_ref().unwrap(),
                reference.offsets.as_ref().unwrap(),
                &what,
            );
            // Real images and cotangent.
            let (imgs, cot) = (imgs.map(|v| v.re), cot.map(|v| v.im));
            let reference = ext
                .extract_vjp_reference(imgs.view(), cot.view(), Wrt::ALL)
                .unwrap();
            let kernel =
                ptychostitch_kernel_emu::extract_vjp(&ext, imgs.view(), cot.view(), Wrt::ALL)
                    .unwrap();
            assert_bits(
                kernel.patches.as_ref().unwrap(),
                reference.patches.as_ref().unwrap(),
                &format!("{what}: real images' cotangent"),
            );
            assert_offsets(
                kernel.offsets.as_ref().unwrap(),
                reference.offsets.as_ref().unwrap(),
                &format!("{what}, real"),
            );
        }
    }
}

/// The device fold writes the offsets' cotangent in PtychoPINN's channel layout `(B, 1, 2, C)`
/// when asked (what the Python layer hands back for `offsets_xy`), the same values.
#[test]
fn the_offsets_fold_writes_the_channel_layout() {
    use ptychostitch::gpu::compose::{self, ExtractVjp, Images};
    use ptychostitch_kernel_emu::Emulator;
    let mut r = rng(79);
    let (images, per, side, n) = (3, 4, 20, 8);
    let offsets = offsets_from(images * per, |_| {
        [r.random_range(-4.0..4.0), r.random_range(-4.0..4.0)]
    });
    let ext = Extraction::new(offsets.view(), per, side, n).unwrap();
    let imgs: Array3<Complex32> = random_patches(&mut r, images, side);
    let cot: Array3<Complex32> = random_patches(&mut r, images * per, n);
    let reference = ext
        .extract_vjp_reference(imgs.view(), cot.view(), ptychostitch::Wrt::ALL)
        .unwrap();
    let rows = reference.offsets.unwrap();
    let cot_lanes = ext.cotangent_lanes(cot.view()).unwrap();
    let mut channels = vec![f64::NAN; images * per * 2];
    let st = imgs.strides();
    // SAFETY: the images, cotangent and output are live host buffers of the sizes the
    // composition reads and writes; the emulator is synchronous.
    unsafe {
        compose::extract_vjp(
            &mut Emulator::default(),
            &ext,
            ExtractVjp {
                images: Images {
                    address: imgs.as_ptr() as u64,
                    strides: [st[0] as i64, st[1] as i64, st[2] as i64],
                    lanes: 2,
                },
                cot: cot_lanes.as_ptr() as u64,
                image_grad: 0,
                offsets_grad: channels.as_mut_ptr() as u64,
                channel_layout: true,
                shifts: compose::Shifts::Planned,
            },
        )
        .unwrap()
    };
    for b in 0..images {
        for c in 0..per {
            for axis in 0..2 {
                let got = channels[(b * 2 + axis) * per + c];
                let want = rows[[b * per + c, axis]];
                assert_eq!(got.to_bits(), want.to_bits(), "b {b}, c {c}, axis {axis}");
            }
        }
    }
}
