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
