//! The fast path against the reference oracle: bit-identical on randomised inputs with fixed
//! seeds, for 1, 2 and 7 threads, both kernels, into garbage-filled output buffers.

mod common;

use common::{assert_bit_identical, offsets_from, random_patches, rng};
use ndarray::{Array2, Array3};
use ptychostitch::kernel::sample_axis;
use ptychostitch::{Complex32, Plan, Simd};
use rand::RngExt;

const THREADS: [usize; 3] = [1, 2, 7];
const KERNELS: [Simd; 3] = [Simd::Auto, Simd::Avx2, Simd::Portable];

/// Checks shift_and_sum, reassemble_position and the weights of every fast configuration
/// against the reference, writing into buffers pre-filled with garbage.
fn check(label: &str, patches: &Array3<Complex32>, offsets: &Array2<f64>, crop: i64) {
    let n = patches.dim().1;
    let plan = Plan::new(offsets.view(), n, crop).unwrap();
    let ss_ref = plan.shift_and_sum_reference(patches.view()).unwrap();
    let rp_ref = plan.reassemble_position_reference(patches.view()).unwrap();
    let w_ref = plan.weights_reference().unwrap();
    let garbage = Complex32::new(f32::NAN, -7.5e30);
    for threads in THREADS {
        for simd in KERNELS {
            let what = format!("{label} (threads={threads}, kernel={simd:?})");
            let plan = Plan::new(offsets.view(), n, crop)
                .unwrap()
                .with_threads(threads)
                .with_simd(simd)
                .with_min_pixels_per_worker(0);
            let mut out = Array2::from_elem(plan.canvas_shape(), garbage);
            plan.shift_and_sum_into(patches.view(), out.view_mut())
                .unwrap();
            assert_bit_identical(&out, &ss_ref, &format!("{what} shift_and_sum"));

            // First call computes the weights in the same pass, the second uses the cache.
            for pass in ["fresh weights", "cached weights"] {
                let mut out = Array2::from_elem(plan.canvas_shape(), garbage);
                plan.reassemble_position_into(patches.view(), out.view_mut())
                    .unwrap();
                assert_bit_identical(
                    &out,
                    &rp_ref,
                    &format!("{what} reassemble_position, {pass}"),
                );
            }
            assert_bit_identical(plan.weights().unwrap(), &w_ref, &format!("{what} weights"));
        }
    }
}

fn uniform(rng: &mut impl RngExt, lo: f64, hi: f64) -> f64 {
    rng.random_range(lo..hi)
}

#[test]
fn random_offsets_crops_and_sizes() {
    let mut r = rng(0x5eed);
    // (n, N, M, offset range)
    let cases = [
        (1, 16, 8, 0.0),
        (2, 16, 16, 3.0),
        (3, 9, 2, 5.0),
        (5, 17, 17, 2.5),
        (50, 32, 11, 10.0),
        (64, 24, 20, 30.0),
        (300, 20, 7, 12.0),
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
        );
    }
}

#[test]
fn crops_around_vector_and_band_boundaries() {
    // Kept sides around the 8-lane vector width and its multiples, on small canvases where the
    // band count is clamped by the canvas side.
    let mut r = rng(7);
    for crop in [2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33] {
        let size = crop as usize + 3;
        let n = 6;
        let patches = random_patches(&mut r, n, size);
        let offsets = offsets_from(n, |_| {
            [uniform(&mut r, -4.0, 4.0), uniform(&mut r, -4.0, 4.0)]
        });
        check(&format!("M={crop}"), &patches, &offsets, crop);
    }
}

#[test]
fn special_offset_patterns() {
    let mut r = rng(42);
    let patches = random_patches(&mut r, 40, 16);
    type Pattern = Box<dyn Fn(usize) -> [f64; 2]>;
    let patterns: [(&str, Pattern); 6] = [
        (
            "integer",
            Box::new(|k| [(k % 7) as f64 * 3.0 - 9.0, (k / 7) as f64 * 2.0]),
        ),
        (
            "half-integer",
            Box::new(|k| [(k % 5) as f64 * 2.5 + 0.5, (k / 5) as f64 * 1.5]),
        ),
        (
            "negative",
            Box::new(|k| [-50.0 - (k % 6) as f64 * 1.3, -40.0 - (k / 6) as f64 * 0.7]),
        ),
        (
            "wide-ranging",
            Box::new(|k| {
                [
                    ((k * 37) % 40) as f64 * 4.1 - 80.0,
                    ((k * 11) % 40) as f64 * -3.3,
                ]
            }),
        ),
        ("all equal", Box::new(|_| [12.345, -6.5])),
        (
            "large common offset",
            Box::new(|k| {
                [
                    1.0e5 + (k % 8) as f64 * 0.37,
                    -2.0e5 + (k / 8) as f64 * 0.61,
                ]
            }),
        ),
    ];
    for (label, draw) in patterns {
        let offsets = offsets_from(40, draw);
        check(label, &patches, &offsets, 10);
    }
}

/// Shifts of ±2⁻²³ make `f32` rounding skip a source column (`x - a` rounds from just below 2
/// to exactly 3), which sends the fast path through its gather kernel.
#[test]
fn rounding_edge_shifts_take_the_gather_path() {
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
    check("rounding edge", &random_patches(&mut r, 4, 12), &offsets, 8);
}

/// A footprint's columns share one fraction `wx` when `x - a` is exact in `f32` (the bench
/// grid: every patch), and the fast path then computes each row's weights once; positions with
/// many fraction bits far from the origin make `x - a` round, and the fraction differs from
/// column to column. Both kinds are here (checked), and both give the reference's bits.
#[test]
fn uniform_and_varying_column_fractions() {
    let mut r = rng(0x0f4a);
    // A scan a few pixels wide: the canvas's padding is small, so a patch's shift `a` is small
    // beside the columns `x` it covers, and with many fraction bits `x - a` rounds; quarter
    // pixels keep it exact.
    let offsets = offsets_from(60, |k| {
        if k % 2 == 0 {
            [(k % 7) as f64 * 0.25, (k % 5) as f64 * 0.5]
        } else {
            [
                uniform(&mut r, -1.0, 1.0) * std::f64::consts::PI,
                uniform(&mut r, -1.0, 1.0) * std::f64::consts::E,
            ]
        }
    });
    let plan = Plan::new(offsets.view(), 16, 10).unwrap();
    let g = plan.geometry();
    let (mut same, mut varying) = (0, 0);
    for (f, s) in g.footprints().iter().zip(g.shifts()) {
        let fractions: Vec<u32> = (f.cols.start..f.cols.end)
            .map(|x| sample_axis(x, s[0]).1.to_bits())
            .collect();
        if fractions.windows(2).all(|w| w[0] == w[1]) {
            same += 1;
        } else {
            varying += 1;
        }
    }
    assert!(same > 0 && varying > 0, "{same} uniform, {varying} varying");
    check(
        "uniform and varying fractions",
        &random_patches(&mut r, 60, 16),
        &offsets,
        10,
    );
}

#[test]
fn thousands_of_patches_on_a_jittered_grid() {
    let mut r = rng(2024);
    for (n, size, crop) in [(1000, 16, 8), (2500, 12, 6)] {
        let cols = (n as f64).sqrt().ceil() as usize;
        let patches = random_patches(&mut r, n, size);
        let offsets = offsets_from(n, |k| {
            [
                (k % cols) as f64 * 1.7 + uniform(&mut r, -0.5, 0.5),
                (k / cols) as f64 * 1.7 + uniform(&mut r, -0.5, 0.5),
            ]
        });
        check(&format!("grid n={n}"), &patches, &offsets, crop);
    }
}

#[test]
fn non_finite_patch_values_propagate_identically() {
    let mut r = rng(9);
    let mut patches = random_patches(&mut r, 12, 16);
    patches[[0, 8, 8]] = Complex32::new(f32::NAN, 1.0);
    patches[[3, 6, 9]] = Complex32::new(f32::INFINITY, f32::NEG_INFINITY);
    patches[[7, 5, 5]] = Complex32::new(-0.0, -0.0);
    let offsets = offsets_from(12, |k| [(k % 4) as f64 * 2.25, (k / 4) as f64 * 3.5]);
    check("NaN and inf values", &patches, &offsets, 10);
    let out = ptychostitch::shift_and_sum(patches.view(), offsets.view(), 10).unwrap();
    assert!(
        out.iter().any(|v| v.re.is_nan()),
        "NaN must reach the output"
    );
}

#[test]
fn real_patches_match_the_real_part_of_complex_ones() {
    let mut r = rng(11);
    let complex = random_patches(&mut r, 30, 20);
    let real = complex.mapv(|c| c.re);
    let as_complex = real.mapv(|v| Complex32::new(v, 0.0));
    let offsets = offsets_from(30, |_| {
        [uniform(&mut r, -6.0, 6.0), uniform(&mut r, -6.0, 6.0)]
    });
    for threads in THREADS {
        let plan = Plan::new(offsets.view(), 20, 16)
            .unwrap()
            .with_threads(threads);
        let fast_real = plan.reassemble_position(real.view()).unwrap();
        let ref_real = plan.reassemble_position_reference(real.view()).unwrap();
        assert_bit_identical(&fast_real, &ref_real, "real reassemble_position");
        let from_complex = plan
            .reassemble_position(as_complex.view())
            .unwrap()
            .mapv(|c| c.re);
        assert_bit_identical(
            &fast_real,
            &from_complex,
            "real vs complex with zero imaginary part",
        );
    }
}

#[test]
fn strided_and_four_dimensional_inputs_give_the_same_bits() {
    let mut r = rng(5);
    let big = random_patches(&mut r, 20, 24);
    // Every other patch, transposed rows/cols swapped back: a non-contiguous view.
    let strided = big.slice(ndarray::s![..;2, .., ..]);
    let contiguous = strided.to_owned();
    let four_d = contiguous.clone().insert_axis(ndarray::Axis(3));
    let offsets = offsets_from(10, |_| {
        [uniform(&mut r, -5.0, 5.0), uniform(&mut r, -5.0, 5.0)]
    });
    let plan = Plan::new(offsets.view(), 24, 12).unwrap();
    let a = plan.shift_and_sum(contiguous.view()).unwrap();
    assert_bit_identical(&plan.shift_and_sum(strided).unwrap(), &a, "strided view");
    assert_bit_identical(
        &plan.shift_and_sum(four_d.view()).unwrap(),
        &a,
        "(n, N, N, 1) input",
    );
    let offsets4 = offsets
        .clone()
        .into_shape_with_order((10, 1, 1, 2))
        .unwrap();
    let plan4 = Plan::new(offsets4.view(), 24, 12).unwrap();
    assert_bit_identical(
        &plan4.shift_and_sum(contiguous.view()).unwrap(),
        &a,
        "(n, 1, 1, 2) offsets",
    );
}
