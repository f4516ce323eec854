//! The CUDA region kernels' source (`ptychostitch_region_sums`, `ptychostitch_region_normalise`),
//! run on the CPU, against the library's reference region reassembly: bit for bit for every
//! normalisation option (TensorFlow's centre mask, torch's `|P|²`, clamp, none, affine, the
//! regularised form resolved at the maximum, support masks), both conventions, complex and real,
//! every weight shape, regions of one and of several 8×8 blocks, footprints partly outside,
//! non-finite values.

#[path = "../../ptychostitch/tests/common/mod.rs"]
mod common;
mod support;

use common::rng;
use ndarray::Array4;
use ptychostitch::region::{Convention, Denominator, Numerator, Region, RegionOptions, Threshold};
use ptychostitch::{Complex32, Implementation};
use rand::RngExt;
use support::assert_lanes as assert_same;

fn options() -> Vec<RegionOptions> {
    let custom = |convention, recentre, numerator, denominator, support| RegionOptions {
        convention,
        recentre,
        numerator,
        denominator,
        support,
    };
    vec![
        RegionOptions::tensorflow(),
        RegionOptions::torch_center_mask(),
        custom(
            Convention::Torch,
            false,
            Numerator::Weighted,
            Denominator::Clamp(1e-12),
            Some(Threshold::AboveMaxFraction(1e-6)),
        ),
        custom(
            Convention::TensorFlow,
            true,
            Numerator::Sum,
            Denominator::Add(1e-9),
            Some(Threshold::Above(0.3)),
        ),
        custom(
            Convention::Torch,
            true,
            Numerator::Sum,
            Denominator::One,
            None,
        ),
        custom(
            Convention::Torch,
            false,
            Numerator::Weighted,
            Denominator::Regularised {
                scale: 0.9,
                max_fraction: 0.1,
            },
            None,
        ),
        custom(
            Convention::TensorFlow,
            true,
            Numerator::Weighted,
            Denominator::Affine {
                scale: 1.0,
                offset: 0.05,
            },
            None,
        ),
    ]
}

#[test]
fn the_region_kernels_are_the_reference_bit_for_bit() {
    let mut r = rng(91);
    // (B, C, N, P, spread): one block, several blocks with partial edges, P − N odd, far out.
    for (b, c, n, p, spread) in [
        (2, 4, 8, 12, 2.5),
        (1, 9, 6, 19, 9.0),
        (3, 1, 7, 7, 1.5),
        (2, 3, 5, 9, 40.0),
    ] {
        for (o, opts) in options().into_iter().enumerate() {
            let positions =
                ndarray::Array2::from_shape_fn((b * c, 2), |_| r.random_range(-spread..spread));
            let plan = Region::new(positions.view(), b, n, p, opts).unwrap();
            let oracle = plan.clone().with_implementation(Implementation::Reference);
            let weight_shapes = [(1, 1), (b, 1), (1, c), (b, c)];
            for (k, &(wb, wc)) in weight_shapes.iter().enumerate() {
                let what = format!("B {b} C {c} N {n} P {p}, options {o}, weights {k}");
                let w = Array4::from_shape_fn((wb, wc, n, n), |_| r.random_range(0.0..2.0_f32));
                let mut x = Array4::from_shape_fn((b, c, n, n), |_| {
                    Complex32::new(r.random_range(-1.0..1.0), r.random_range(-1.0..1.0))
                });
                if o == 0 && k == 0 {
                    x[[0, 0, n / 2, n / 2]] =
                        Complex32::new(f32::from_bits(0x7fc0_0042), f32::INFINITY);
                }
                let kernel = ptychostitch_kernel_emu::region(&plan, x.view(), w.view()).unwrap();
                let reference = oracle.reassemble(x.view(), w.view()).unwrap();
                assert_same(&kernel, &reference, &format!("{what}, complex"));
                let x = x.map(|v| v.re);
                let kernel = ptychostitch_kernel_emu::region(&plan, x.view(), w.view()).unwrap();
                let reference = oracle.reassemble(x.view(), w.view()).unwrap();
                assert_same(&kernel, &reference, &format!("{what}, real"));
            }
        }
    }
}

/// The region backward kernels (`ptychostitch_region_cot`, `_region_patch_vjp`,
/// `_region_shift_vjp` and the positions' fold) through the driver's composition, against the
/// reference adjoint: the patches' and positions' cotangents bit for bit, for every option
/// (the regularised maximum's term included), weight shape, both element types, NaN payloads;
/// and the positions in PtychoPINN's channel layout.
#[test]
fn the_region_backward_kernels_are_the_reference_bit_for_bit() {
    use ndarray::Array3;
    use ptychostitch::region::RegionWrt;
    let wrt = RegionWrt {
        patches: true,
        positions: true,
        weights: false,
    };
    let mut r = rng(92);
    // The last two sum more than one block (kernel::REDUCTION_BLOCK) in the fixed-order
    // reductions: 1,728 region pixels (the regularised maximum's cotangent), 1,040 positions
    // (their re-centring mean).
    for (b, c, n, p, spread) in [
        (2, 4, 8, 12, 2.5),
        (1, 9, 6, 19, 9.0),
        (2, 3, 5, 9, 40.0),
        (3, 2, 8, 24, 3.0),
        (260, 4, 4, 6, 1.5),
    ] {
        for (o, opts) in options().into_iter().enumerate() {
            let positions =
                ndarray::Array2::from_shape_fn((b * c, 2), |_| r.random_range(-spread..spread));
            let plan = Region::new(positions.view(), b, n, p, opts).unwrap();
            let oracle = plan.clone().with_implementation(Implementation::Reference);
            for (k, &(wb, wc)) in [(1, 1), (b, c)].iter().enumerate() {
                let what = format!("B {b} C {c} N {n} P {p}, options {o}, weights {k}");
                let w = Array4::from_shape_fn((wb, wc, n, n), |_| r.random_range(0.0..2.0_f32));
                let x = Array4::from_shape_fn((b, c, n, n), |_| {
                    Complex32::new(r.random_range(-1.0..1.0), r.random_range(-1.0..1.0))
                });
                let mut cot = Array3::from_shape_fn((b, p, p), |_| {
                    Complex32::new(r.random_range(-1.0..1.0), r.random_range(-1.0..1.0))
                });
                if o == 1 && k == 0 {
                    cot[[0, p / 2, p / 2]] = Complex32::new(f32::from_bits(0x7fc0_0042), -0.0);
                }
                let reference = match oracle.vjp(x.view(), w.view(), None, cot.view(), wrt) {
                    Ok(reference) => reference,
                    Err(error) => {
                        // The regularised form with every patch outside its region: a zero
                        // maximum, refused by the driver's composition as by the reference.
                        assert!(
                            matches!(error, ptychostitch::Error::ZeroDenominator { .. }),
                            "{what}: {error}"
                        );
                        let emulated = ptychostitch_kernel_emu::region_vjp(
                            &plan,
                            x.view(),
                            w.view(),
                            cot.view(),
                            false,
                        );
                        assert_eq!(emulated.unwrap_err(), error, "{what}");
                        continue;
                    }
                };
                let (dx, dpos) = ptychostitch_kernel_emu::region_vjp(
                    &plan,
                    x.view(),
                    w.view(),
                    cot.view(),
                    false,
                )
                .unwrap();
                assert_same(
                    &dx,
                    reference.patches.as_ref().unwrap(),
                    &format!("{what}: patches"),
                );
                let want = reference.positions.as_ref().unwrap();
                assert_positions(&dpos, want.as_slice().unwrap(), &what);
                // Real patches and cotangent; positions in the channel layout (B, 1, 2, C).
                let (x, cot) = (x.map(|v| v.re), cot.map(|v| v.im));
                let reference = oracle
                    .vjp(x.view(), w.view(), None, cot.view(), wrt)
                    .unwrap();
                let (dx, channels) = ptychostitch_kernel_emu::region_vjp(
                    &plan,
                    x.view(),
                    w.view(),
                    cot.view(),
                    true,
                )
                .unwrap();
                assert_same(
                    &dx,
                    reference.patches.as_ref().unwrap(),
                    &format!("{what}: real patches"),
                );
                let rows = reference.positions.unwrap();
                for j in 0..b * c {
                    for axis in 0..2 {
                        let got = channels[(j / c * 2 + axis) * c + j % c];
                        assert_positions(
                            &[got],
                            &[rows[[j, axis]]],
                            &format!("{what}: channel layout {j} {axis}"),
                        );
                    }
                }
            }
        }
    }
}

/// Bit for bit, except that where two NaNs meet in one addition (the torch form's denominator
/// cotangent `dden + Σ dnum·u` when the cotangent holds a NaN: one NaN reaches `dden` negated,
/// the other not) either may propagate: IEEE 754 leaves it open and C++ compilers treat `+` as
/// commutative (GCC swaps these operands), so the emulation cannot pin the sign. A GPU
/// returns its canonical NaN there anyway ("NaN payloads are the GPU's own").
#[track_caller]
fn assert_positions(kernel: &[f64], reference: &[f64], what: &str) {
    assert_eq!(kernel.len(), reference.len(), "{what}");
    for (i, (x, y)) in kernel.iter().zip(reference).enumerate() {
        assert!(
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            "{what}: position lane {i}: kernel {x} vs reference {y}"
        );
    }
}

/// PtychoPINN's own normalisations (TensorFlow's, and torch's fixed support threshold) read
/// nothing back to the host on the way: only a threshold relative to the maximum and the
/// regularised form need the batch's denominators there.
#[test]
fn only_batch_relative_normalisations_read_the_denominators_back() {
    use ptychostitch::gpu::compose;
    use ptychostitch_kernel_emu::Emulator;
    let mut r = rng(93);
    let (b, c, n, p) = (2, 4, 8, 12);
    let positions = ndarray::Array2::from_shape_fn((b * c, 2), |_| r.random_range(-2.0..2.0));
    let x = vec![0.5_f32; b * c * n * n];
    let w = vec![1.0_f32; n * n];
    let mut out = vec![0.0_f32; b * p * p];
    for (o, opts) in options().into_iter().enumerate() {
        let plan = Region::new(positions.view(), b, n, p, opts).unwrap();
        let mut emulator = Emulator::default();
        // SAFETY: host buffers of the sizes the composition reads and writes, alive for it.
        unsafe {
            compose::region(
                &mut emulator,
                &plan,
                compose::RegionInputs {
                    patches: x.as_ptr() as u64,
                    lanes: 1,
                    weights: w.as_ptr() as u64,
                    weight_shape: [1, 1],
                    shifts: compose::Shifts::Planned,
                },
                out.as_mut_ptr() as u64,
            )
            .unwrap()
        };
        let relative = matches!(opts.support, Some(Threshold::AboveMaxFraction(_)))
            || matches!(opts.denominator, Denominator::Regularised { .. });
        assert_eq!(
            emulator.read,
            if relative { b * p * p } else { 0 },
            "options {o}"
        );
        if o < 2 {
            assert_eq!(emulator.read, 0, "PtychoPINN's options {o}");
        }
    }
}
