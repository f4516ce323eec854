//! Extraction (PtychoPINN's `extract_patches_position`) and its gradients: fast against
//! reference bit for bit (1, 2, 7 threads), the adjoint identity, finite differences for the
//! offsets, known values and every error.

mod common;

use common::{offsets_from, random_patches, rng};
use ndarray::{Array2, Array3};
use ptychostitch::kernel::Convention;
use ptychostitch::{Complex32, Error, Extraction, Gradients, Wrt};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

fn bits<T: bytemuck::Pod>(a: &Array3<T>) -> Vec<u32> {
    let flat: &[f32] = bytemuck::cast_slice(a.as_slice().unwrap());
    flat.iter()
        .map(|v| if v.is_nan() { 0x7fc0_0000 } else { v.to_bits() })
        .collect()
}

#[track_caller]
fn assert_same(a: &Gradients<Complex32>, b: &Gradients<Complex32>, what: &str) {
    assert_eq!(a.patches.is_some(), b.patches.is_some(), "{what}");
    if let (Some(x), Some(y)) = (&a.patches, &b.patches) {
        assert_eq!(bits(x), bits(y), "{what}: images' cotangents differ");
    }
    if let (Some(x), Some(y)) = (&a.offsets, &b.offsets) {
        for (p, q) in x.iter().zip(y) {
            assert!(
                p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()),
                "{what}: {p} vs {q}"
            );
        }
    }
}

fn random_cot(r: &mut ChaCha8Rng, shape: (usize, usize, usize)) -> Array3<Complex32> {
    Array3::from_shape_simple_fn(shape, || {
        Complex32::new(r.random_range(-1.0..1.0), r.random_range(-1.0..1.0))
    })
}

#[test]
fn fast_equals_reference() {
    for convention in [Convention::TensorFlow, Convention::Torch] {
        fast_equals_reference_in(convention);
    }
}

fn fast_equals_reference_in(convention: Convention) {
    let mut r = rng(0xe7);
    let equal_sides_allowed = convention == Convention::Torch;
    // (B, C, S, N, offset spread): offsets reaching past the image edge included.
    for (i, (b, c, s, n, spread)) in [
        (1, 1, 10, 8, 0.5),
        (2, 4, 24, 16, 5.0),
        (3, 9, 20, 8, 9.0),
        (1, 40, 40, 16, 14.0),
        (4, 1, 12, 2, 3.0),
        (2, 3, 12, 12, 2.5),
    ]
    .into_iter()
    .enumerate()
    {
        if s == n && !equal_sides_allowed {
            // TensorFlow's extraction needs N < S (tested with the other errors).
            assert!(
                Extraction::new_in(convention, Array2::<f64>::zeros((b * c, 2)).view(), c, s, n)
                    .is_err()
            );
            continue;
        }
        let images = random_patches(&mut r, b, s);
        let offsets = offsets_from(b * c, |_| {
            [
                r.random_range(-spread..spread),
                r.random_range(-spread..spread),
            ]
        });
        let plan = Extraction::new_in(convention, offsets.view(), c, s, n).unwrap();
        let cot = random_cot(&mut r, plan.output_shape());
        let fwd = plan.extract_reference(images.view()).unwrap();
        let vjp = plan
            .extract_vjp_reference(images.view(), cot.view(), Wrt::ALL)
            .unwrap();
        for threads in [1, 2, 7] {
            let fast = Extraction::new_in(convention, offsets.view(), c, s, n)
                .unwrap()
                .with_threads(threads)
                .with_min_pixels_per_worker(0);
            let what = format!("{convention:?}, case {i}, threads={threads}");
            assert_eq!(
                bits(&fast.extract(images.view()).unwrap()),
                bits(&fwd),
                "{what}: forward"
            );
            let got = fast
                .extract_vjp(images.view(), cot.view(), Wrt::ALL)
                .unwrap();
            assert_same(&got, &vjp, &what);
            let only = fast
                .extract_vjp(images.view(), cot.view(), Wrt::OFFSETS)
                .unwrap();
            assert!(only.patches.is_none() && only.offsets.is_some());
        }
    }
}

#[test]
fn known_values_for_integer_and_half_offsets() {
    let image = Array3::from_shape_fn((1, 12, 12), |(_, r, c)| (r * 12 + c) as f32);
    let offsets = offsets_from(3, |k| [[0.0, 2.0, 0.5][k], [0.0, -1.0, 0.0][k]]);
    let plan = Extraction::new(offsets.view(), 3, 12, 6).unwrap();
    let out = plan.extract(image.view()).unwrap();
    for r in 0..6 {
        for c in 0..6 {
            assert_eq!(out[[0, r, c]], image[[0, r + 3, c + 3]]);
            // x = +2 moves content right: pixel (r, c) shows column c + 3 - 2; y = -1 moves it up.
            assert_eq!(out[[1, r, c]], image[[0, r + 3 + 1, c + 3 - 2]]);
            // Half a pixel: the mean of two neighbours (exact for these integers).
            let mean = (image[[0, r + 3, c + 2]] + image[[0, r + 3, c + 3]]) / 2.0;
            assert_eq!(out[[2, r, c]], mean);
        }
    }
}

#[test]
fn adjoint_identity() {
    let mut r = rng(4);
    let (b, c, s, n) = (3, 4, 32, 16);
    let x = random_patches(&mut r, b, s);
    let offsets = offsets_from(b * c, |_| {
        [r.random_range(-9.0..9.0), r.random_range(-9.0..9.0)]
    });
    let plan = Extraction::new(offsets.view(), c, s, n).unwrap();
    let y = random_cot(&mut r, plan.output_shape());
    let ax = plan.extract(x.view()).unwrap();
    let aty = plan
        .extract_vjp(x.view(), y.view(), Wrt::PATCHES)
        .unwrap()
        .patches
        .unwrap();
    let dot = |a: &Array3<Complex32>, b: &Array3<Complex32>| -> (f64, f64) {
        a.iter().zip(b).fold((0.0, 0.0), |(s, m), (p, q)| {
            let t = p.re as f64 * q.re as f64 + p.im as f64 * q.im as f64;
            (s + t, m + t.abs())
        })
    };
    let (lhs, scale) = dot(&ax, &y);
    let (rhs, _) = dot(&x, &aty);
    assert!((lhs - rhs).abs() / scale <= 1e-6, "{lhs} vs {rhs}");
}

#[test]
fn finite_differences_agree_with_the_offset_gradient() {
    let mut r = rng(21);
    let (b, c, s, n) = (2, 4, 24, 12);
    let images = random_patches(&mut r, b, s);
    let base = offsets_from(b * c, |_| {
        [
            r.random_range(-4.0..4.0_f64).floor() + 0.5,
            r.random_range(-4.0..4.0_f64).floor() + 0.5,
        ]
    });
    let plan = Extraction::new(base.view(), c, s, n).unwrap();
    let w = random_cot(&mut r, plan.output_shape());
    let loss = |off: &Array2<f64>| -> f64 {
        let out = Extraction::new(off.view(), c, s, n)
            .unwrap()
            .extract(images.view())
            .unwrap();
        out.iter()
            .zip(w.iter())
            .map(|(o, q)| o.re as f64 * q.re as f64 + o.im as f64 * q.im as f64)
            .sum()
    };
    let g = plan
        .extract_vjp(images.view(), w.view(), Wrt::OFFSETS)
        .unwrap()
        .offsets
        .unwrap();
    let scale = g.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    let h = 0.05;
    for j in 0..b * c {
        for axis in 0..2 {
            let (mut plus, mut minus) = (base.clone(), base.clone());
            plus[[j, axis]] += h;
            minus[[j, axis]] -= h;
            let fd = (loss(&plus) - loss(&minus)) / (2.0 * h);
            assert!(
                (fd - g[[j, axis]]).abs() <= 2e-4 * scale,
                "j={j} axis={axis}: {fd} vs {}",
                g[[j, axis]]
            );
        }
    }
}

#[test]
fn bad_sizes_and_counts_are_errors() {
    let offsets = offsets_from(4, |k| [k as f64, 0.0]);
    // S = N: PtychoPINN returns an empty array; odd S - N: N + 1 pixels.
    for (s, n) in [(16, 16), (17, 16), (8, 16)] {
        let err = Extraction::new(offsets.view(), 4, s, n).unwrap_err();
        assert!(matches!(err, Error::ExtractSize { .. }), "{err}");
        assert!(err.to_string().contains("S - N even"), "{err}");
    }
    let err = Extraction::new(offsets.view(), 3, 16, 8).unwrap_err();
    assert!(matches!(err, Error::ExtractCount { .. }), "{err}");
    let plan = Extraction::new(offsets.view(), 2, 16, 8).unwrap();
    let three = Array3::<f32>::zeros((3, 16, 16));
    assert!(matches!(
        plan.extract(three.view()),
        Err(Error::ExtractCount { .. })
    ));
    let wrong_side = Array3::<f32>::zeros((2, 18, 18));
    assert!(matches!(
        plan.extract(wrong_side.view()),
        Err(Error::ImageShape { .. })
    ));
    let two = Array3::<f32>::zeros((2, 16, 16));
    let bad_cot = Array3::<f32>::zeros((4, 8, 9));
    assert!(matches!(
        plan.extract_vjp(two.view(), bad_cot.view(), Wrt::ALL),
        Err(Error::CotangentShape { .. })
    ));
    let nan = offsets_from(2, |k| [if k == 1 { f64::NAN } else { 0.0 }, 0.0]);
    assert!(matches!(
        Extraction::new(nan.view(), 1, 16, 8),
        Err(Error::NonFiniteOffset { index: 1, .. })
    ));
}

/// `Extraction::translation` (PtychoPINN's `center_channels`: each image moved in its own
/// frame, `N = S`): fast equals the reference bit for bit, forward and VJP, at sides around
/// the 8-pixel tile, with offsets inside, at and beyond the frame; `new` still refuses `N = S`.
#[test]
fn translation_in_the_images_own_frame() {
    let mut r = rng(36);
    for side in [1, 7, 8, 9, 16, 33] {
        let images = 5;
        let s = side as f64;
        let offsets = offsets_from(images, |i| match i {
            0 => [s, -s],
            1 => [1.5 * s + 0.25, 0.5],
            _ => [
                r.random_range(-0.6 * s..0.6 * s),
                r.random_range(-0.6 * s..0.6 * s),
            ],
        });
        let ext = Extraction::translation(offsets.view(), side).unwrap();
        assert_eq!(ext.output_shape(), (images, side, side));
        let imgs = random_patches(&mut r, images, side);
        let fast = ext.extract(imgs.view()).unwrap();
        let reference = ext.extract_reference(imgs.view()).unwrap();
        assert_eq!(bits(&fast), bits(&reference), "side {side}");
        // Moved wholly out of its frame: zeros.
        if side > 1 {
            assert!(
                fast.index_axis(ndarray::Axis(0), 1)
                    .iter()
                    .all(|v| *v == Complex32::new(0.0, 0.0))
            );
        }
        let cot = random_cot(&mut r, (images, side, side));
        let a = ext.extract_vjp(imgs.view(), cot.view(), Wrt::ALL).unwrap();
        let b = ext
            .extract_vjp_reference(imgs.view(), cot.view(), Wrt::ALL)
            .unwrap();
        assert_same(&a, &b, &format!("translation vjp, side {side}"));
    }
    let offsets = Array2::<f64>::zeros((2, 2));
    assert!(matches!(
        Extraction::new(offsets.view(), 1, 16, 16),
        Err(Error::ExtractSize { .. })
    ));
    assert!(matches!(
        Extraction::translation(Array2::<f64>::zeros((0, 2)).view(), 16),
        Err(Error::NoPatches)
    ));
}
