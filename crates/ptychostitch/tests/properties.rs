//! Mathematical properties of reassembly that hold whatever the implementation.

mod common;

use common::{offsets_from, random_patches, rng};
use ndarray::{Array2, Array3};
use ptychostitch::{Complex32, Plan};
use rand::RngExt;

fn max_diff(a: &Array2<Complex32>, b: &Array2<Complex32>) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).norm())
        .fold(0.0, f32::max)
}

#[test]
fn shift_and_sum_is_linear_in_the_patches() {
    let mut r = rng(1);
    let a = random_patches(&mut r, 40, 24);
    let b = random_patches(&mut r, 40, 24);
    let offsets = offsets_from(40, |_| {
        [r.random_range(-9.0..9.0), r.random_range(-9.0..9.0)]
    });
    let plan = Plan::new(offsets.view(), 24, 16).unwrap();
    let (alpha, beta) = (Complex32::new(0.75, -1.5), Complex32::new(-2.0, 0.25));
    let combined = &a.mapv(|v| v * alpha) + &b.mapv(|v| v * beta);
    let lhs = plan.shift_and_sum(combined.view()).unwrap();
    let sa = plan.shift_and_sum(a.view()).unwrap();
    let sb = plan.shift_and_sum(b.view()).unwrap();
    let rhs = &sa.mapv(|v| v * alpha) + &sb.mapv(|v| v * beta);
    let scale = rhs.iter().map(|v| v.norm()).fold(0.0, f32::max);
    let diff = max_diff(&lhs, &rhs);
    assert!(
        diff <= 1e-5 * scale,
        "linearity broken: {diff} vs scale {scale}"
    );
    assert!(scale > 1.0, "the test must move real data");
}

#[test]
fn a_common_offset_changes_nothing() {
    let mut r = rng(2);
    let patches = random_patches(&mut r, 30, 20);
    let offsets = offsets_from(30, |_| {
        [r.random_range(-7.0..7.0), r.random_range(-7.0..7.0)]
    });
    let base = ptychostitch::reassemble_position(patches.view(), offsets.view(), 12).unwrap();
    for shift in [[1.0, 0.0], [0.0, -3.0], [123.25, -77.5], [1000.0, 2000.0]] {
        let moved = offsets.mapv(|v| v) + &ndarray::arr1(&shift);
        let out = ptychostitch::reassemble_position(patches.view(), moved.view(), 12).unwrap();
        assert_eq!(out.dim(), base.dim(), "canvas size changed under {shift:?}");
        let diff = max_diff(&out, &base);
        assert!(
            diff < 2e-3,
            "common offset {shift:?} changed the image by {diff}"
        );
    }
}

/// On an integer grid with an integer mean, each patch lands as an exact copy where docs/semantics.md §2
/// says: kept pixel (r, c) at canvas (r + a_y + p, c + a_x + p); the weights count overlaps.
#[test]
fn integer_grid_places_exact_copies_and_counts_overlaps() {
    let mut r = rng(3);
    let (n, size, crop) = (9, 16, 10);
    // 3×3 grid with step 4 around 0: mean is exactly (4, 4).
    let offsets = offsets_from(n, |k| [(k % 3) as f64 * 4.0, (k / 3) as f64 * 4.0]);
    let plan = Plan::new(offsets.view(), size, crop).unwrap();
    let g = plan.geometry();
    let (p, m, c0) = (g.pad(), g.kept(), g.crop_start());
    let mut count = Array2::<f32>::zeros(plan.canvas_shape());
    for k in 0..n {
        let mut only_k = Array3::<Complex32>::zeros((n, size, size));
        let patch = random_patches(&mut r, 1, size);
        only_k
            .slice_mut(ndarray::s![k, .., ..])
            .assign(&patch.slice(ndarray::s![0, .., ..]));
        let out = plan.shift_and_sum(only_k.view()).unwrap();
        let [ax, ay] = g.shifts()[k];
        assert_eq!((ax.fract(), ay.fract()), (0.0, 0.0));
        let (top, left) = (
            (ay as i64 + p as i64) as usize,
            (ax as i64 + p as i64) as usize,
        );
        let mut expected = Array2::<Complex32>::zeros(plan.canvas_shape());
        for rr in 0..m {
            for cc in 0..m {
                expected[[top + rr, left + cc]] = patch[[0, c0 + rr, c0 + cc]];
                count[[top + rr, left + cc]] += 1.0;
            }
        }
        assert_eq!(
            out, expected,
            "patch {k} is not an exact copy at (row {top}, col {left})"
        );
    }
    assert_eq!(plan.weights().unwrap(), &count);
}

#[test]
fn constant_patches_reassemble_to_the_constant_wherever_covered() {
    let mut r = rng(4);
    let value = Complex32::new(2.5, -1.25);
    let patches = Array3::from_elem((25, 32, 32), value);
    let offsets = offsets_from(25, |_| {
        [r.random_range(-10.0..10.0), r.random_range(-10.0..10.0)]
    });
    let plan = Plan::new(offsets.view(), 32, 20).unwrap();
    let out = plan.reassemble_position(patches.view()).unwrap();
    let w = plan.weights().unwrap();
    let mut covered = 0;
    for (v, &w) in out.iter().zip(w) {
        if w == 0.0 {
            assert_eq!(
                *v,
                Complex32::new(0.0, 0.0),
                "uncovered pixels must be exactly 0"
            );
        } else if w > 1e-3 {
            covered += 1;
            assert!(
                (v - value).norm() <= 1e-5 * value.norm(),
                "{v} != {value} at weight {w}"
            );
        }
    }
    assert!(covered > 400);
}

#[test]
fn positive_offsets_move_content_right_and_down() {
    let mut patches = Array3::<Complex32>::zeros((2, 16, 16));
    patches[[0, 8, 8]] = Complex32::new(1.0, 0.0);
    patches[[1, 8, 8]] = Complex32::new(2.0, 0.0);
    let find = |out: &Array2<Complex32>, value: f32| {
        out.indexed_iter()
            .find(|(_, v)| v.re == value)
            .map(|(i, _)| i)
            .unwrap()
    };
    // Second patch 4 px further in x (columns).
    let x = offsets_from(2, |k| [4.0 * k as f64, 0.0]);
    let out = ptychostitch::shift_and_sum(patches.view(), x.view(), 8).unwrap();
    let (a, b) = (find(&out, 1.0), find(&out, 2.0));
    assert_eq!((b.0, b.1), (a.0, a.1 + 4), "x is the column");
    // Second patch 6 px further in y (rows).
    let y = offsets_from(2, |k| [0.0, 6.0 * k as f64]);
    let out = ptychostitch::shift_and_sum(patches.view(), y.view(), 8).unwrap();
    let (a, b) = (find(&out, 1.0), find(&out, 2.0));
    assert_eq!((b.0, b.1), (a.0 + 6, a.1), "y is the row");
}

#[test]
fn a_single_patch_with_a_half_pixel_shift_is_the_two_tap_average() {
    // Two patches at x = 0 and x = 1: shifts ∓0.5; the first patch samples halfway between
    // columns, so each output is the mean of two neighbours.
    let mut r = rng(6);
    let mut patches = random_patches(&mut r, 2, 8);
    patches
        .slice_mut(ndarray::s![1, .., ..])
        .fill(Complex32::new(0.0, 0.0));
    let offsets = offsets_from(2, |k| [k as f64, 0.0]);
    let plan = Plan::new(offsets.view(), 8, 8).unwrap();
    assert_eq!(plan.pad(), 2);
    let out = plan.shift_and_sum(patches.view()).unwrap();
    let [ax, _] = plan.geometry().shifts()[0];
    assert_eq!(ax, -0.5);
    // Output column x samples source column x + 0.5 of the padded image (patch at p = 2).
    for row in 0..8 {
        for col in 0..7 {
            let expected = (patches[[0, row, col]] + patches[[0, row, col + 1]]) * 0.5;
            let got = out[[row + 2, col + 2]];
            assert!(
                (got - expected).norm() < 1e-6,
                "({row}, {col}): {got} vs {expected}"
            );
        }
    }
}
