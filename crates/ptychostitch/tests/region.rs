//! The training-path operator (`ptychostitch::region`): the fast path equals the reference bit
//! for bit (every option, both conventions, both pixel types, 1/2/7 threads, sizes around the
//! footprint edges), the VJP is the adjoint of the forward, and it matches central finite
//! differences for the positions and the weights.

mod common;

use common::rng;
use ndarray::{Array2, Array3, Array4, s};
use ptychostitch::region::{
    Convention, Denominator, Numerator, Region, RegionOptions, RegionWrt, Threshold,
};
use ptychostitch::{Complex32, Implementation, Sample, Simd};
use rand::RngExt;

fn options() -> Vec<RegionOptions> {
    let mut all = vec![
        RegionOptions::tensorflow(),
        RegionOptions::torch_center_mask(),
    ];
    all.push(RegionOptions {
        convention: Convention::Torch,
        recentre: false,
        numerator: Numerator::Weighted,
        denominator: Denominator::Clamp(1e-12),
        support: Some(Threshold::AboveMaxFraction(1e-6)),
    });
    all.push(RegionOptions {
        convention: Convention::TensorFlow,
        recentre: true,
        numerator: Numerator::Sum,
        denominator: Denominator::Add(1e-9),
        support: None,
    });
    all.push(RegionOptions {
        convention: Convention::Torch,
        recentre: true,
        numerator: Numerator::Sum,
        denominator: Denominator::One,
        support: None,
    });
    all.push(RegionOptions {
        convention: Convention::Torch,
        recentre: false,
        numerator: Numerator::Weighted,
        denominator: Denominator::Regularised {
            scale: 0.9,
            max_fraction: 0.1,
        },
        support: None,
    });
    all.push(RegionOptions {
        convention: Convention::TensorFlow,
        recentre: true,
        numerator: Numerator::Weighted,
        denominator: Denominator::Affine {
            scale: 1.0,
            offset: 0.05,
        },
        support: None,
    });
    all
}

fn positions(rng: &mut rand_chacha::ChaCha8Rng, count: usize, spread: f64) -> Array2<f64> {
    Array2::from_shape_fn((count, 2), |_| rng.random_range(-spread..spread))
}

fn complex_patches(
    rng: &mut rand_chacha::ChaCha8Rng,
    b: usize,
    c: usize,
    n: usize,
) -> Array4<Complex32> {
    Array4::from_shape_fn((b, c, n, n), |_| {
        Complex32::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0))
    })
}

fn real_patches(rng: &mut rand_chacha::ChaCha8Rng, b: usize, c: usize, n: usize) -> Array4<f32> {
    Array4::from_shape_fn((b, c, n, n), |_| rng.random_range(-1.0..1.0))
}

fn center_mask(n: usize) -> Array4<f32> {
    let mut m = Array4::zeros((1, 1, n, n));
    m.slice_mut(s![.., .., n / 4..n / 4 + n / 2, n / 4..n / 4 + n / 2])
        .fill(1.0);
    m
}

fn bits<T: Sample>(values: &[T]) -> Vec<u32> {
    bytemuck::cast_slice::<T, f32>(values)
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Equal in every bit, NaN by position: which NaN a sum of two NaNs gives depends on the operand
/// order the compiler picks for a commutative `f64` addition (scalar or vector), which Rust
/// does not fix.
fn same_f64<'a>(a: impl Iterator<Item = &'a f64>, b: impl Iterator<Item = &'a f64>) -> bool {
    let canonical = |v: &f64| if v.is_nan() { u64::MAX } else { v.to_bits() };
    a.map(canonical).eq(b.map(canonical))
}

fn assert_same<T: Sample>(a: &[T], b: &[T], what: &str) {
    assert_eq!(bits(a), bits(b), "{what}: fast and reference differ");
}

fn oracle(plan: &Region) -> Region {
    plan.clone().with_implementation(Implementation::Reference)
}

fn check_case<T: Sample>(
    plan: &Region,
    patches: &Array4<T>,
    weights: &Array4<f32>,
    cot: &Array3<T>,
    what: &str,
) {
    let reference = match oracle(plan).reassemble(patches.view(), weights.view()) {
        Ok(reference) => reference,
        Err(error) => {
            // Every patch outside its region under the regularised form: its maximum, and so
            // its denominator, is 0. An error on both paths, forward and backward, never NaN.
            assert!(
                matches!(error, ptychostitch::Error::ZeroDenominator { .. }),
                "{what}: {error}"
            );
            let fast = plan.clone().with_threads(2).with_min_pixels_per_worker(0);
            assert_eq!(
                fast.reassemble(patches.view(), weights.view()).unwrap_err(),
                error
            );
            assert_eq!(
                fast.vjp(
                    patches.view(),
                    weights.view(),
                    None,
                    cot.view(),
                    RegionWrt::ALL
                )
                .unwrap_err(),
                error
            );
            return;
        }
    };
    let g_ref = oracle(plan)
        .vjp(
            patches.view(),
            weights.view(),
            None,
            cot.view(),
            RegionWrt::ALL,
        )
        .unwrap();
    // 1, 2 and 7 threads, and the portable instance beside the FMA one.
    for (threads, simd) in [
        (1, Simd::Auto),
        (2, Simd::Auto),
        (7, Simd::Auto),
        (2, Simd::Portable),
    ] {
        let fast = plan
            .clone()
            .with_threads(threads)
            .with_simd(simd)
            .with_min_pixels_per_worker(0);
        let got = fast.reassemble(patches.view(), weights.view()).unwrap();
        assert_same(
            got.as_slice().unwrap(),
            reference.as_slice().unwrap(),
            &format!("{what}, {threads} threads"),
        );
        // Recomputing the forward, and from the forward's own result (numerators not summed
        // again): the reference's bits both ways.
        for output in [None, Some(got.view())] {
            let how = if output.is_some() {
                "given the output"
            } else {
                "recomputed"
            };
            let g = fast
                .vjp(
                    patches.view(),
                    weights.view(),
                    output,
                    cot.view(),
                    RegionWrt::ALL,
                )
                .unwrap();
            assert_same(
                g.patches.as_ref().unwrap().as_slice().unwrap(),
                g_ref.patches.as_ref().unwrap().as_slice().unwrap(),
                &format!("{what}: patches' cotangent, {threads} threads, {how}"),
            );
            assert_same(
                g.weights.as_ref().unwrap().as_slice().unwrap(),
                g_ref.weights.as_ref().unwrap().as_slice().unwrap(),
                &format!("{what}: weights' cotangent, {threads} threads, {how}"),
            );
            let p = g.positions.as_ref().unwrap();
            let pr = g_ref.positions.as_ref().unwrap();
            assert!(
                same_f64(p.iter(), pr.iter()),
                "{what}: positions' cotangent, {threads} threads, {how}"
            );
            // Without the weights' cotangent (the fast path's row-by-row kernel where the
            // footprints allow it), and each cotangent alone: the same bits.
            for wrt in [
                RegionWrt {
                    weights: false,
                    ..RegionWrt::ALL
                },
                RegionWrt {
                    patches: true,
                    positions: false,
                    weights: false,
                },
                RegionWrt {
                    patches: false,
                    positions: true,
                    weights: false,
                },
            ] {
                let g = fast
                    .vjp(patches.view(), weights.view(), output, cot.view(), wrt)
                    .unwrap();
                assert!(g.weights.is_none());
                if wrt.patches {
                    assert_same(
                        g.patches.as_ref().unwrap().as_slice().unwrap(),
                        g_ref.patches.as_ref().unwrap().as_slice().unwrap(),
                        &format!("{what}: patches' cotangent, {wrt:?}, {threads} threads, {how}"),
                    );
                }
                if wrt.positions {
                    let p = g.positions.as_ref().unwrap();
                    assert!(
                        same_f64(p.iter(), pr.iter()),
                        "{what}: positions' cotangent, {wrt:?}, {threads} threads, {how}"
                    );
                }
            }
        }
    }
}

#[test]
fn fast_equals_reference_bit_for_bit() {
    let mut r = rng(23);
    // (B, C, N, P, spread): footprints inside, touching the edges, partly and wholly outside.
    let shapes = [
        (2, 4, 8, 12, 2.5),
        (3, 1, 7, 7, 1.5),
        (1, 9, 6, 16, 9.0),
        (4, 4, 16, 26, 5.0),
        (2, 3, 5, 9, 40.0),
    ];
    for (i, &(b, c, n, p, spread)) in shapes.iter().enumerate() {
        for (o, opts) in options().into_iter().enumerate() {
            let pos = positions(&mut r, b * c, spread);
            let plan = Region::new(pos.view(), b, n, p, opts).unwrap();
            let weights_shapes = [
                center_mask(n),
                Array4::from_shape_fn((b, 1, n, n), |_| r.random_range(0.0..2.0)),
                Array4::from_shape_fn((1, c, n, n), |_| r.random_range(0.0..2.0)),
                Array4::from_shape_fn((b, c, n, n), |_| r.random_range(0.0..2.0)),
            ];
            for (k, w) in weights_shapes.iter().enumerate() {
                let what = format!("shape {i}, options {o}, weights {k}");
                let x = complex_patches(&mut r, b, c, n);
                let cot = Array3::from_shape_fn((b, p, p), |_| {
                    Complex32::new(r.random_range(-1.0..1.0), r.random_range(-1.0..1.0))
                });
                check_case(&plan, &x, w, &cot, &format!("{what}, complex"));
                let x = real_patches(&mut r, b, c, n);
                let cot = Array3::from_shape_fn((b, p, p), |_| r.random_range(-1.0..1.0));
                check_case(&plan, &x, w, &cot, &format!("{what}, real"));
            }
        }
    }
}

#[test]
fn non_finite_values_propagate_the_same_way() {
    let mut r = rng(7);
    let (b, c, n, p) = (2, 4, 8, 14);
    let pos = positions(&mut r, b * c, 3.0);
    for opts in options() {
        let plan = Region::new(pos.view(), b, n, p, opts).unwrap();
        let mut x = complex_patches(&mut r, b, c, n);
        x[[0, 1, 3, 3]] = Complex32::new(f32::NAN, 1.0);
        x[[1, 2, 0, 7]] = Complex32::new(2.0, f32::INFINITY);
        let mut cot = Array3::from_elem((b, p, p), Complex32::new(1.0, -0.5));
        cot[[1, 0, 0]] = Complex32::new(f32::INFINITY, 0.0);
        check_case(&plan, &x, &center_mask(n), &cot, "non-finite");
    }
}

fn dot<T: Sample>(a: &[T], b: &[T]) -> f64 {
    let (a, b) = (
        bytemuck::cast_slice::<T, f32>(a),
        bytemuck::cast_slice::<T, f32>(b),
    );
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

#[test]
fn the_patch_cotangent_is_the_adjoint() {
    // With the denominator fixed (Σ u / (Σ v + ε) is linear in the patches), <R x, y> = <x, R* y>.
    let mut r = rng(5);
    let (b, c, n, p) = (3, 4, 12, 20);
    for opts in options() {
        let pos = positions(&mut r, b * c, 4.0);
        let plan = Region::new(pos.view(), b, n, p, opts).unwrap();
        let w = Array4::from_shape_fn((1, c, n, n), |_| r.random_range(0.5..1.5));
        let x = complex_patches(&mut r, b, c, n);
        let y = Array3::from_shape_fn((b, p, p), |_| {
            Complex32::new(r.random_range(-1.0..1.0), r.random_range(-1.0..1.0))
        });
        let rx = plan.reassemble(x.view(), w.view()).unwrap();
        let g = plan
            .vjp(x.view(), w.view(), None, y.view(), RegionWrt::ALL)
            .unwrap();
        let lhs = dot(rx.as_slice().unwrap(), y.as_slice().unwrap());
        let rhs = dot(
            x.as_slice().unwrap(),
            g.patches.unwrap().as_slice().unwrap(),
        );
        assert!(
            (lhs - rhs).abs() <= 1e-6 * lhs.abs().max(rhs.abs()),
            "{opts:?}: {lhs} vs {rhs}"
        );
    }
}

/// L = Σ cot·R(x; pos, w) in f64 from the f32 forward.
fn loss(plan: &Region, x: &Array4<f32>, w: &Array4<f32>, cot: &Array3<f32>) -> f64 {
    let out = oracle(plan).reassemble(x.view(), w.view()).unwrap();
    dot(out.as_slice().unwrap(), cot.as_slice().unwrap())
}

#[test]
fn position_and_weight_cotangents_match_finite_differences() {
    let mut r = rng(11);
    let (b, c, n, p) = (2, 4, 10, 18);
    // Σ u / (Σ v + 1e-9) without a support mask divides by nearly nothing at the footprints'
    // edges, where a central difference of any useful step is not a derivative: left out.
    let smooth = options()
        .into_iter()
        .filter(|o| o.denominator != Denominator::Add(1e-9));
    for opts in smooth {
        // Positions away from integers, so a small step keeps every floor; in ± pairs, so their
        // mean is exactly zero and re-centring keeps them away from integers too.
        let mut pos = Array2::from_shape_fn((b * c, 2), |_| {
            r.random_range(-3..3) as f64 + r.random_range(0.3..0.7)
        });
        for k in (1..b * c).step_by(2) {
            for axis in 0..2 {
                pos[[k, axis]] = -pos[[k - 1, axis]];
            }
        }
        let w = Array4::from_shape_fn((b, c, n, n), |_| r.random_range(0.5..1.5));
        // A smooth patch, so the bilinear kinks stay small against the step.
        let x = Array4::from_shape_fn((b, c, n, n), |(_, _, i, j)| {
            ((i as f32) * 0.3).sin() + ((j as f32) * 0.2).cos()
        });
        let cot = Array3::from_shape_fn((b, p, p), |_| r.random_range(-1.0..1.0));
        let plan = Region::new(pos.view(), b, n, p, opts).unwrap();
        let g = plan
            .vjp(x.view(), w.view(), None, cot.view(), RegionWrt::ALL)
            .unwrap();
        let gp = g.positions.unwrap();
        let h = 1e-2;
        let scale = gp.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        for k in [0, 3, 5] {
            for axis in 0..2 {
                let mut plus = pos.clone();
                plus[[k, axis]] += h;
                let mut minus = pos.clone();
                minus[[k, axis]] -= h;
                let fp = loss(
                    &Region::new(plus.view(), b, n, p, opts).unwrap(),
                    &x,
                    &w,
                    &cot,
                );
                let fm = loss(
                    &Region::new(minus.view(), b, n, p, opts).unwrap(),
                    &x,
                    &w,
                    &cot,
                );
                let fd = (fp - fm) / (2.0 * h);
                assert!(
                    (fd - gp[[k, axis]]).abs() <= 2e-2 * scale,
                    "{opts:?}: position {k} axis {axis}: fd {fd} vs {}",
                    gp[[k, axis]]
                );
            }
        }
        let gw = g.weights.unwrap();
        let wscale = gw.iter().fold(0.0_f32, |m, v| m.max(v.abs())) as f64;
        for &(bb, cc, i, j) in &[(0, 0, 4, 4), (1, 3, 2, 7), (0, 2, 6, 1)] {
            let eps = 1e-2_f32;
            let mut plus = w.clone();
            plus[[bb, cc, i, j]] += eps;
            let mut minus = w.clone();
            minus[[bb, cc, i, j]] -= eps;
            let fd =
                (loss(&plan, &x, &plus, &cot) - loss(&plan, &x, &minus, &cot)) / (2.0 * eps as f64);
            let got = gw[[bb, cc, i, j]] as f64;
            assert!(
                (fd - got).abs() <= 1e-2 * wscale.max(1e-3),
                "{opts:?}: weight ({bb},{cc},{i},{j}): fd {fd} vs {got}"
            );
        }
    }
}

#[test]
fn memory_and_shapes_are_checked() {
    let pos = Array2::<f64>::zeros((8, 2));
    let plan = Region::new(pos.view(), 2, 8, 12, RegionOptions::tensorflow()).unwrap();
    assert_eq!((plan.samples(), plan.channels(), plan.side()), (2, 4, 12));
    let bad = Array4::<f32>::zeros((2, 3, 8, 8));
    let err = plan
        .reassemble(bad.view(), center_mask(8).view())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("`patches` has shape [2, 3, 8, 8]; expected (2, 4, 8, 8)"),
        "{err}"
    );
    let x = Array4::<f32>::zeros((2, 4, 8, 8));
    let err = plan
        .reassemble(x.view(), Array4::zeros((3, 1, 8, 8)).view())
        .unwrap_err();
    assert!(err.to_string().contains("`weights`"), "{err}");
    assert!(Region::new(pos.view(), 3, 8, 12, RegionOptions::tensorflow()).is_err());
    assert!(Region::new(pos.view(), 2, 8, 6, RegionOptions::tensorflow()).is_err());
    let mut nan = pos.clone();
    nan[[3, 1]] = f64::NAN;
    let err = Region::new(nan.view(), 2, 8, 12, RegionOptions::tensorflow()).unwrap_err();
    assert!(err.to_string().contains("NaN"), "{err}");
    // A region too large for memory is an error, not an abort.
    let err = Region::new(pos.view(), 2, 8, 1 << 31, RegionOptions::tensorflow()).unwrap_err();
    assert!(
        err.to_string().contains("memory") || err.to_string().contains("GiB"),
        "{err}"
    );
}

#[test]
fn uncovered_pixels_are_zero_and_equal_patches_average_to_themselves() {
    // Full-patch weights: where any patch reaches, Σ u·1/(Σ v + 1e-9) of equal patches is the value.
    let pos =
        Array2::from_shape_vec((4, 2), vec![0.5, 0.0, -0.5, 0.0, 0.0, 0.25, 0.0, -0.25]).unwrap();
    let opts = RegionOptions {
        denominator: Denominator::Add(1e-9),
        ..RegionOptions::tensorflow()
    };
    let plan = Region::new(pos.view(), 2, 6, 12, opts).unwrap();
    let x = Array4::from_elem((2, 2, 6, 6), Complex32::new(2.0, -1.0));
    let ones = Array4::from_elem((1, 1, 6, 6), 1.0_f32);
    let out = plan.reassemble(x.view(), ones.view()).unwrap();
    assert_eq!(out[[0, 0, 0]], Complex32::new(0.0, 0.0));
    let centre = out[[1, 6, 6]];
    assert!(
        (centre - Complex32::new(2.0, -1.0)).norm() < 1e-6,
        "{centre}"
    );
}

#[test]
fn the_support_mask_is_the_denominator_above_its_threshold() {
    let mut r = rng(3);
    let (b, c, n, p) = (2, 4, 8, 14);
    let pos = positions(&mut r, b * c, 3.0);
    let plan = Region::new(pos.view(), b, n, p, RegionOptions::torch_center_mask()).unwrap();
    let w = center_mask(n);
    // The denominator is the plain sum of the translated weights: reassembling the weights as
    // patches with Σ u and no division gives it.
    let sum = Region::new(
        pos.view(),
        b,
        n,
        p,
        RegionOptions {
            numerator: Numerator::Sum,
            denominator: Denominator::One,
            support: None,
            ..RegionOptions::torch_center_mask()
        },
    )
    .unwrap();
    let as_patches = Array4::from_shape_fn((b, c, n, n), |(_, _, i, j)| w[[0, 0, i, j]]);
    let den = sum.reassemble(as_patches.view(), w.view()).unwrap();
    for (threshold, limit) in [
        (Threshold::Above(0.5), 0.5_f32),
        (
            Threshold::AboveMaxFraction(0.5),
            0.5 * den.iter().fold(0.0_f32, |m, &v| m.max(v)),
        ),
    ] {
        let mask = plan.support(w.view(), threshold).unwrap();
        assert_eq!(mask.dim(), (b, p, p));
        assert!(mask.iter().zip(den.iter()).all(|(&m, &d)| m == (d > limit)));
        assert!(mask.iter().any(|&m| m) && mask.iter().any(|&m| !m));
    }
}

#[test]
fn region_sizes_near_every_integer_width_are_errors_naming_padded_size() {
    // `P·P` overflowed usize from P = 2³²: it wrapped to a small number, passed the memory check
    // and then panicked (a zero chunk size, a slice index) or ran for ever (2⁶⁰ + 8).
    let pos = Array2::<f64>::zeros((8, 2));
    for side in [
        (1usize << 32) - 1,
        1 << 32,
        (1 << 32) + 1,
        1 << 40,
        (1 << 60) + 8,
        1 << 62,
        usize::MAX,
    ] {
        for implementation in [Implementation::Fast, Implementation::Reference] {
            let err = Region::new(pos.view(), 2, 8, side, RegionOptions::tensorflow())
                .map(|plan| plan.with_implementation(implementation))
                .unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, ptychostitch::Error::RegionTooLarge { .. }),
                "{text}"
            );
            assert!(text.contains("`padded_size`"), "{text}");
            assert!(!text.contains("offsets"), "{text}");
        }
    }
    // The figure is the real one: 2 regions of (2³² + 1)² complex pixels and their weights.
    let err =
        Region::new(pos.view(), 2, 8, (1 << 32) + 1, RegionOptions::tensorflow()).unwrap_err();
    let ptychostitch::Error::RegionTooLarge { needed_bytes, .. } = err else {
        unreachable!()
    };
    let side = ((1u64 << 32) + 1) as f64;
    assert_eq!(needed_bytes, 2.0 * side * side * 12.0);
    // No samples names the positions, not the offsets.
    let empty = Array2::<f64>::zeros((0, 2));
    let err = Region::new(empty.view(), 0, 8, 12, RegionOptions::tensorflow()).unwrap_err();
    assert!(err.to_string().contains("`positions`"), "{err}");
}

#[test]
fn normalisations_whose_result_is_undefined_are_refused_naming_the_parameter() {
    let pos = Array2::<f64>::zeros((8, 2));
    let with = |denominator, support| RegionOptions {
        convention: Convention::Torch,
        recentre: false,
        numerator: Numerator::Weighted,
        denominator,
        support,
    };
    let refused = [
        (with(Denominator::Add(0.0), None), "epsilon"),
        (with(Denominator::Add(-1e-3), None), "epsilon"),
        (with(Denominator::Add(f32::NAN), None), "epsilon"),
        (with(Denominator::Add(f32::INFINITY), None), "epsilon"),
        (with(Denominator::Clamp(0.0), None), "epsilon"),
        (with(Denominator::Clamp(-1.0), None), "epsilon"),
        (
            with(
                Denominator::Affine {
                    scale: 0.0,
                    offset: 0.0,
                },
                None,
            ),
            "epsilon",
        ),
        (
            with(
                Denominator::Affine {
                    scale: -1.0,
                    offset: 1.0,
                },
                None,
            ),
            "scale",
        ),
        (
            with(
                Denominator::Affine {
                    scale: f32::NAN,
                    offset: 1.0,
                },
                None,
            ),
            "scale",
        ),
        (
            with(
                Denominator::Regularised {
                    scale: 0.5,
                    max_fraction: 0.0,
                },
                None,
            ),
            "epsilon",
        ),
        (
            with(
                Denominator::Regularised {
                    scale: 0.5,
                    max_fraction: -0.1,
                },
                None,
            ),
            "epsilon",
        ),
        (
            with(
                Denominator::Regularised {
                    scale: 0.5,
                    max_fraction: 1.5,
                },
                None,
            ),
            "epsilon",
        ),
        (
            with(
                Denominator::Regularised {
                    scale: f32::INFINITY,
                    max_fraction: 0.5,
                },
                None,
            ),
            "scale",
        ),
        (
            with(Denominator::Add(1e-3), Some(Threshold::Above(f32::NAN))),
            "support",
        ),
        (
            with(
                Denominator::Add(1e-3),
                Some(Threshold::AboveMaxFraction(2.0)),
            ),
            "support",
        ),
        (
            with(
                Denominator::Add(1e-3),
                Some(Threshold::AboveMaxFraction(-0.5)),
            ),
            "support",
        ),
    ];
    for (options, parameter) in refused {
        let err = Region::new(pos.view(), 2, 8, 12, options).unwrap_err();
        assert!(
            matches!(err, ptychostitch::Error::Normalisation { parameter: p, .. } if p == parameter),
            "{options:?}: {err}"
        );
        assert!(err.to_string().contains(&format!("`{parameter}`")), "{err}");
    }
    // Every option the other tests use is accepted.
    for options in options() {
        Region::new(pos.view(), 2, 8, 12, options).unwrap();
    }
    // All-zero weights under the regularised form: its maximum is 0, so is its denominator
    // wherever no weight lands. An error, on both paths and in the backward, never NaN.
    let regularised = with(
        Denominator::Regularised {
            scale: 0.9,
            max_fraction: 0.1,
        },
        None,
    );
    let x = Array4::<f32>::from_elem((2, 4, 8, 8), 1.0);
    let zero = Array4::<f32>::zeros((1, 1, 8, 8));
    let cot = Array3::<f32>::ones((2, 12, 12));
    for implementation in [Implementation::Fast, Implementation::Reference] {
        let plan = Region::new(pos.view(), 2, 8, 12, regularised)
            .unwrap()
            .with_implementation(implementation);
        let err = plan.reassemble(x.view(), zero.view()).unwrap_err();
        assert!(
            matches!(err, ptychostitch::Error::ZeroDenominator { .. }),
            "{err}"
        );
        let err = plan
            .vjp(x.view(), zero.view(), None, cot.view(), RegionWrt::ALL)
            .unwrap_err();
        assert!(
            matches!(err, ptychostitch::Error::ZeroDenominator { .. }),
            "{err}"
        );
        // Non-zero weights give finite regions everywhere, covered or not.
        let out = plan.reassemble(x.view(), center_mask(8).view()).unwrap();
        assert!(out.iter().all(|v| v.is_finite()));
    }
}
