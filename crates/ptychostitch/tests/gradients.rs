//! Gradients of shift_and_sum and reassemble_position: the fast VJP bit for bit against the
//! reference VJP (1, 2, 7 threads, both kernels), the adjoint identity, central finite
//! differences for the offsets, and the shapes and errors of the API.

mod common;

use common::{offsets_from, random_patches, rng};
use ndarray::{Array2, Array3};
use ptychostitch::kernel::sample_axis;
use ptychostitch::{Complex32, Error, Gradients, Plan, Sample, Simd, Wrt};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

const THREADS: [usize; 3] = [1, 2, 7];
const KERNELS: [Simd; 3] = [Simd::Auto, Simd::Avx2, Simd::Portable];

fn lanes<T: Sample>(values: &[T]) -> Vec<u32> {
    let flat: &[f32] = bytemuck::cast_slice(values);
    flat.iter()
        .map(|v| if v.is_nan() { 0x7fc0_0000 } else { v.to_bits() })
        .collect()
}

#[track_caller]
fn assert_same<T: Sample>(a: &Gradients<T>, b: &Gradients<T>, what: &str) {
    match (&a.patches, &b.patches) {
        (Some(x), Some(y)) => {
            assert_eq!(x.dim(), y.dim(), "{what}: patch cotangent shapes");
            let (x, y) = (lanes(x.as_slice().unwrap()), lanes(y.as_slice().unwrap()));
            if let Some(i) = x.iter().zip(&y).position(|(p, q)| p != q) {
                panic!(
                    "{what}: patch cotangents differ at lane {i}: {} vs {}",
                    f32::from_bits(x[i]),
                    f32::from_bits(y[i])
                );
            }
        }
        (None, None) => {}
        _ => panic!("{what}: one side has no patch cotangent"),
    }
    match (&a.offsets, &b.offsets) {
        (Some(x), Some(y)) => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                assert!(
                    p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()),
                    "{what}: offset cotangents differ at {i}: {p} vs {q}"
                );
            }
        }
        (None, None) => {}
        _ => panic!("{what}: one side has no offset cotangent"),
    }
}

fn random_cot(r: &mut ChaCha8Rng, side: usize) -> Array2<Complex32> {
    Array2::from_shape_simple_fn((side, side), || {
        Complex32::new(r.random_range(-1.0..1.0), r.random_range(-1.0..1.0))
    })
}

/// Every fast configuration against the reference, for both operations and every `wrt`.
fn check(label: &str, patches: &Array3<Complex32>, offsets: &Array2<f64>, crop: i64, seed: u64) {
    let n = patches.dim().1;
    let plan = Plan::new(offsets.view(), n, crop).unwrap();
    let mut r = rng(seed);
    let cot = random_cot(&mut r, plan.canvas_shape().0);
    let out = plan.reassemble_position(patches.view()).unwrap();
    let ss_ref = plan
        .shift_and_sum_vjp_reference(patches.view(), cot.view(), Wrt::ALL)
        .unwrap();
    let rp_ref = plan
        .reassemble_position_vjp_reference(patches.view(), Some(out.view()), cot.view(), Wrt::ALL)
        .unwrap();
    for threads in THREADS {
        for simd in KERNELS {
            let what = format!("{label} (threads={threads}, kernel={simd:?})");
            let plan = Plan::new(offsets.view(), n, crop)
                .unwrap()
                .with_threads(threads)
                .with_simd(simd)
                .with_min_pixels_per_worker(0);
            let ss = plan
                .shift_and_sum_vjp(patches.view(), cot.view(), Wrt::ALL)
                .unwrap();
            assert_same(&ss, &ss_ref, &format!("{what} shift_and_sum"));
            let rp = plan
                .reassemble_position_vjp(patches.view(), Some(out.view()), cot.view(), Wrt::ALL)
                .unwrap();
            assert_same(&rp, &rp_ref, &format!("{what} reassemble_position"));
            // Recomputing the forward gives the same as passing it.
            let rp2 = plan
                .reassemble_position_vjp(patches.view(), None, cot.view(), Wrt::ALL)
                .unwrap();
            assert_same(
                &rp2,
                &rp_ref,
                &format!("{what} reassemble_position, recomputed"),
            );
            // Asking for one cotangent gives exactly that one.
            let only = plan
                .reassemble_position_vjp(patches.view(), Some(out.view()), cot.view(), Wrt::PATCHES)
                .unwrap();
            assert!(only.offsets.is_none());
            let expected = Gradients {
                patches: rp_ref.patches.clone(),
                offsets: None,
            };
            assert_same(&only, &expected, &format!("{what}: patches only"));
            let only = plan
                .shift_and_sum_vjp(patches.view(), cot.view(), Wrt::OFFSETS)
                .unwrap();
            assert!(only.patches.is_none());
            let expected = Gradients {
                patches: None,
                offsets: ss_ref.offsets.clone(),
            };
            assert_same(&only, &expected, &format!("{what}: offsets only"));
        }
    }
    // Real patches: the same machinery with one lane.
    let real = patches.mapv(|c| c.re);
    let real_cot = cot.mapv(|c| c.re);
    let real_out = plan.reassemble_position(real.view()).unwrap();
    let a = plan
        .reassemble_position_vjp_reference(
            real.view(),
            Some(real_out.view()),
            real_cot.view(),
            Wrt::ALL,
        )
        .unwrap();
    for threads in THREADS {
        let plan = Plan::new(offsets.view(), n, crop)
            .unwrap()
            .with_threads(threads)
            .with_min_pixels_per_worker(0);
        let b = plan
            .reassemble_position_vjp(
                real.view(),
                Some(real_out.view()),
                real_cot.view(),
                Wrt::ALL,
            )
            .unwrap();
        assert_same(&b, &a, &format!("{label} real, threads={threads}"));
    }
}

fn uniform(r: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    r.random_range(lo..hi)
}

#[test]
fn fast_equals_reference_on_random_scans() {
    let mut r = rng(0x9a4d);
    // (n, N, M, offset spread): odd M, M = N, M = 2, kept sides around the 8-lane width.
    let cases = [
        (1, 16, 8, 0.0),
        (2, 16, 16, 3.0),
        (3, 9, 2, 5.0),
        (5, 17, 17, 2.5),
        (7, 12, 7, 4.0),
        (9, 14, 9, 3.0),
        (40, 32, 11, 10.0),
        (64, 24, 20, 30.0),
        (120, 20, 16, 12.0),
    ];
    for (i, (n, size, crop, spread)) in cases.into_iter().enumerate() {
        let patches = random_patches(&mut r, n, size);
        let offsets = offsets_from(n, |_| {
            [
                uniform(&mut r, -spread - 1e-9, spread + 1e-9),
                uniform(&mut r, -spread - 1e-9, spread + 1e-9),
            ]
        });
        check(
            &format!("case {i}: n={n} N={size} M={crop}"),
            &patches,
            &offsets,
            crop,
            i as u64,
        );
    }
}

#[test]
fn fast_equals_reference_on_special_offsets() {
    let mut r = rng(77);
    let patches = random_patches(&mut r, 24, 16);
    type Pattern = Box<dyn Fn(usize) -> [f64; 2]>;
    let patterns: [(&str, Pattern); 5] = [
        (
            "integer",
            Box::new(|k| [(k % 6) as f64 * 3.0 - 9.0, (k / 6) as f64 * 2.0]),
        ),
        (
            "half-integer",
            Box::new(|k| [(k % 5) as f64 * 2.5 + 0.5, (k / 5) as f64 * 1.5]),
        ),
        (
            "wide",
            Box::new(|k| {
                [
                    ((k * 37) % 24) as f64 * 6.1 - 70.0,
                    ((k * 11) % 24) as f64 * -4.3,
                ]
            }),
        ),
        ("all equal", Box::new(|_| [12.345, -6.5])),
        // Shifts of exactly ±p put footprints against the canvas edge (clipped columns).
        (
            "edge",
            Box::new(|k| {
                [
                    if k % 2 == 0 { 4.0 } else { -4.0 },
                    if k % 3 == 0 { -4.0 } else { 4.0 },
                ]
            }),
        ),
    ];
    for (i, (label, draw)) in patterns.into_iter().enumerate() {
        let offsets = offsets_from(24, draw);
        check(label, &patches, &offsets, 10, 100 + i as u64);
    }
}

/// Shifts of ±2⁻²³ make `f32` rounding skip a source column: the irregular (list) path.
#[test]
fn rounding_edge_shifts_take_the_irregular_path() {
    let tiny = 2.0_f64.powi(-23);
    let offsets = offsets_from(4, |k| {
        [
            [-tiny, tiny, 0.5 - tiny, -0.5 + tiny][k],
            [tiny, -tiny, 0.0, 0.25][k],
        ]
    });
    let plan = Plan::new(offsets.view(), 12, 8).unwrap();
    let irregular = plan
        .geometry()
        .footprints()
        .iter()
        .zip(plan.geometry().shifts())
        .any(|(f, s)| {
            let floors: Vec<i64> = (f.cols.start..f.cols.end)
                .map(|x| sample_axis(x, s[0]).0)
                .collect();
            floors.windows(2).any(|w| w[1] != w[0] + 1)
        });
    assert!(
        irregular,
        "the test offsets no longer produce an irregular column table"
    );
    let mut r = rng(3);
    check(
        "rounding edge",
        &random_patches(&mut r, 4, 12),
        &offsets,
        8,
        3,
    );
}

#[test]
fn fast_equals_reference_on_a_jittered_grid() {
    let mut r = rng(2026);
    let n = 400;
    let patches = random_patches(&mut r, n, 16);
    let offsets = offsets_from(n, |k| {
        [
            (k % 20) as f64 * 1.7 + uniform(&mut r, -0.5, 0.5),
            (k / 20) as f64 * 1.7 + uniform(&mut r, -0.5, 0.5),
        ]
    });
    check("grid n=400", &patches, &offsets, 8, 9);
}

#[test]
fn non_finite_values_propagate_identically() {
    let mut r = rng(13);
    let mut patches = random_patches(&mut r, 10, 16);
    patches[[0, 8, 8]] = Complex32::new(f32::NAN, 1.0);
    patches[[3, 6, 9]] = Complex32::new(f32::INFINITY, 0.5);
    let offsets = offsets_from(10, |k| [(k % 4) as f64 * 2.25, (k / 4) as f64 * 3.5]);
    check("non-finite patches", &patches, &offsets, 10, 13);
}

/// `Re⟨A x, y⟩ = Re⟨x, Aᵀ y⟩` in f64 from f32 results, relative to the terms' magnitude.
#[test]
fn adjoint_identity_of_shift_and_sum() {
    let mut r = rng(31);
    for (n, size, crop, spread) in [(30, 24, 16, 8.0), (200, 32, 20, 25.0), (5, 12, 11, 2.0)] {
        let x = random_patches(&mut r, n, size);
        let offsets = offsets_from(n, |_| {
            [
                uniform(&mut r, -spread, spread),
                uniform(&mut r, -spread, spread),
            ]
        });
        let plan = Plan::new(offsets.view(), size, crop).unwrap();
        let y = random_cot(&mut r, plan.canvas_shape().0);
        let ax = plan.shift_and_sum(x.view()).unwrap();
        let aty = plan
            .shift_and_sum_vjp(x.view(), y.view(), Wrt::PATCHES)
            .unwrap()
            .patches
            .unwrap();
        let dot = |a: &[Complex32], b: &[Complex32]| -> (f64, f64) {
            a.iter().zip(b).fold((0.0, 0.0), |(s, m), (p, q)| {
                let t = p.re as f64 * q.re as f64 + p.im as f64 * q.im as f64;
                (s + t, m + t.abs())
            })
        };
        let (lhs, scale) = dot(ax.as_slice().unwrap(), y.as_slice().unwrap());
        let (rhs, _) = dot(x.as_slice().unwrap(), aty.as_slice().unwrap());
        let rel = (lhs - rhs).abs() / scale;
        assert!(
            rel <= 1e-6,
            "n={n}: <Ax,y>={lhs} <x,A^T y>={rhs}, relative {rel:e}"
        );
    }
}

/// Central differences of `L = Σ Re(conj(W)·F(offsets))` agree with the offsets' gradient
/// away from integer sample positions (within a cell `F` is linear in each shift, so the
/// differences of shift_and_sum are exact up to float32 rounding).
#[test]
fn finite_differences_agree_with_the_offset_gradient() {
    let mut r = rng(57);
    let n = 16;
    let size = 20;
    let crop = 12;
    let patches = random_patches(&mut r, n, size);
    // Centred shifts on a 4×4 grid of half-integers ±1.5, ±4.5, jittered by at most 0.1 with the
    // jitter's mean removed: every fractional part stays within 0.5 ± 0.11, far from a floor
    // crossing for steps of 0.05.
    let jitter: Vec<[f64; 2]> = (0..n)
        .map(|_| [uniform(&mut r, -0.1, 0.1), uniform(&mut r, -0.1, 0.1)])
        .collect();
    let mean = [0, 1].map(|a| jitter.iter().map(|j| j[a]).sum::<f64>() / n as f64);
    let base = offsets_from(n, |k| {
        [
            (k % 4) as f64 * 3.0 - 4.5 + jitter[k][0] - mean[0] + 7.0,
            (k / 4) as f64 * 3.0 - 4.5 + jitter[k][1] - mean[1] - 2.0,
        ]
    });
    let plan = Plan::new(base.view(), size, crop).unwrap();
    let w = random_cot(&mut r, plan.canvas_shape().0);
    let loss = |offsets: &Array2<f64>, reassemble: bool| -> f64 {
        let p = Plan::new(offsets.view(), size, crop).unwrap();
        assert_eq!(
            p.canvas_shape(),
            plan.canvas_shape(),
            "a step changed the canvas"
        );
        let out = if reassemble {
            p.reassemble_position(patches.view()).unwrap()
        } else {
            p.shift_and_sum(patches.view()).unwrap()
        };
        out.iter()
            .zip(w.iter())
            .map(|(o, c)| o.re as f64 * c.re as f64 + o.im as f64 * c.im as f64)
            .sum()
    };
    for reassemble in [false, true] {
        let grads = if reassemble {
            plan.reassemble_position_vjp(patches.view(), None, w.view(), Wrt::OFFSETS)
        } else {
            plan.shift_and_sum_vjp(patches.view(), w.view(), Wrt::OFFSETS)
        }
        .unwrap()
        .offsets
        .unwrap();
        let h = 0.05;
        let scale = grads.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        for k in 0..n {
            for axis in 0..2 {
                let mut plus = base.clone();
                plus[[k, axis]] += h;
                let mut minus = base.clone();
                minus[[k, axis]] -= h;
                let fd = (loss(&plus, reassemble) - loss(&minus, reassemble)) / (2.0 * h);
                let g = grads[[k, axis]];
                let tol = if reassemble { 2e-3 } else { 2e-4 } * scale;
                assert!(
                    (fd - g).abs() <= tol,
                    "reassemble={reassemble} k={k} axis={axis}: finite difference {fd} vs gradient {g} (scale {scale})"
                );
            }
        }
    }
}

#[test]
fn known_values_on_one_integer_patch() {
    // One patch: centred shift 0, p = 0, the canvas is the kept crop. The sum's cotangent is
    // the canvas cotangent put back in the crop; the offsets' gradient of one patch is zero
    // (its mean is itself).
    let offsets = offsets_from(1, |_| [3.0, -2.0]);
    let plan = Plan::new(offsets.view(), 8, 4).unwrap();
    assert_eq!(plan.canvas_shape(), (4, 4));
    let patches = Array3::<f32>::from_shape_fn((1, 8, 8), |(_, r, c)| (r * 8 + c) as f32);
    let cot = Array2::<f32>::from_shape_fn((4, 4), |(r, c)| (r * 4 + c) as f32 + 0.5);
    let g = plan
        .shift_and_sum_vjp(patches.view(), cot.view(), Wrt::ALL)
        .unwrap();
    let gp = g.patches.unwrap();
    for r in 0..8 {
        for c in 0..8 {
            let inside = (2..6).contains(&r) && (2..6).contains(&c);
            let expected = if inside { cot[[r - 2, c - 2]] } else { 0.0 };
            assert_eq!(gp[[0, r, c]], expected, "({r}, {c})");
        }
    }
    assert_eq!(g.offsets.unwrap(), Array2::<f64>::zeros((1, 2)));
}

#[test]
fn offset_gradients_of_two_patches_are_opposite() {
    // Re-centring: the gradient of each offset loses the mean of all, so two patches' offset
    // gradients are exact negatives of each other.
    let mut r = rng(5);
    let patches = random_patches(&mut r, 2, 16);
    let offsets = offsets_from(2, |k| [k as f64 * 3.3, k as f64 * -1.7]);
    let plan = Plan::new(offsets.view(), 16, 10).unwrap();
    let w = random_cot(&mut r, plan.canvas_shape().0);
    let g = plan
        .shift_and_sum_vjp(patches.view(), w.view(), Wrt::OFFSETS)
        .unwrap()
        .offsets
        .unwrap();
    for axis in 0..2 {
        let (a, b) = (g[[0, axis]], g[[1, axis]]);
        assert!(
            a != 0.0 && (a + b).abs() <= 1e-12 * a.abs(),
            "axis {axis}: {a} and {b}"
        );
    }
}

#[test]
fn wrong_cotangent_shapes_are_errors() {
    let offsets = offsets_from(3, |k| [k as f64, 0.0]);
    let plan = Plan::new(offsets.view(), 16, 8).unwrap();
    let patches = Array3::<Complex32>::zeros((3, 16, 16));
    let side = plan.canvas_shape().0;
    let bad = Array2::<Complex32>::zeros((side + 1, side));
    let err = plan
        .shift_and_sum_vjp(patches.view(), bad.view(), Wrt::ALL)
        .unwrap_err();
    assert!(matches!(err, Error::CotangentShape { .. }), "{err}");
    assert!(err.to_string().contains("cotangent"), "{err}");
    let cot = Array2::<Complex32>::zeros((side, side));
    let err = plan
        .reassemble_position_vjp(patches.view(), Some(bad.view()), cot.view(), Wrt::ALL)
        .unwrap_err();
    assert!(err.to_string().contains("output"), "{err}");
    let wrong_n = Array3::<Complex32>::zeros((2, 16, 16));
    assert!(matches!(
        plan.shift_and_sum_vjp(wrong_n.view(), cot.view(), Wrt::ALL),
        Err(Error::CountMismatch { .. })
    ));
}

#[test]
fn strided_cotangents_give_the_same_bits() {
    let mut r = rng(8);
    let patches = random_patches(&mut r, 6, 16);
    let offsets = offsets_from(6, |_| {
        [uniform(&mut r, -3.0, 3.0), uniform(&mut r, -3.0, 3.0)]
    });
    let plan = Plan::new(offsets.view(), 16, 10).unwrap();
    let side = plan.canvas_shape().0;
    let cot = random_cot(&mut r, side);
    let transposed = cot.t().to_owned();
    let a = plan
        .shift_and_sum_vjp(patches.view(), cot.view(), Wrt::ALL)
        .unwrap();
    let b = plan
        .shift_and_sum_vjp(patches.view(), transposed.t(), Wrt::ALL)
        .unwrap();
    assert_same(&a, &b, "transposed view of the cotangent");
}
