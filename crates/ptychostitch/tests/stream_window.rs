//! Streaming and windows against the one-shot fast path (itself tested against the reference):
//! every chunking and every tiling gives the same bits, for 1, 2 and 7 threads and both
//! operations, on golden cases and randomised scans.

mod common;

use common::{GOLDEN_CASES, assert_bit_identical, golden, random_patches, rng};
use ndarray::{Array2, Array3, Axis, s};
use ptychostitch::{Complex32, Error, Operation, Plan};
use rand::RngExt;

const OPERATIONS: [Operation; 2] = [Operation::ShiftAndSum, Operation::ReassemblePosition];

fn one_shot(plan: &Plan, op: Operation, patches: &Array3<Complex32>) -> Array2<Complex32> {
    match op {
        Operation::ShiftAndSum => plan.shift_and_sum(patches.view()).unwrap(),
        Operation::ReassemblePosition => plan.reassemble_position(patches.view()).unwrap(),
    }
}

/// Chunk lengths covering `n`: ones, a prime, all at once, and random uneven ones.
fn chunkings(n: usize, r: &mut impl RngExt) -> Vec<Vec<usize>> {
    let fixed = |len: usize| {
        let mut v = vec![len; n / len];
        if !n.is_multiple_of(len) {
            v.push(n % len);
        }
        v
    };
    let mut uneven = Vec::new();
    let mut left = n;
    while left > 0 {
        let len = r.random_range(1..=left.min(97));
        uneven.push(len);
        left -= len;
    }
    vec![fixed(1), fixed(7), fixed(13), vec![n], uneven]
}

fn check_stream(
    label: &str,
    patches: &Array3<Complex32>,
    offsets: &Array2<f64>,
    crop: i64,
    seed: u64,
) {
    let mut r = rng(seed);
    let n = patches.dim().0;
    for threads in [1, 2, 7] {
        let plan = Plan::new(offsets.view(), patches.dim().1, crop)
            .unwrap()
            .with_threads(threads)
            .with_min_pixels_per_worker(0);
        for op in OPERATIONS {
            let expected = one_shot(&plan, op, patches);
            for chunks in chunkings(n, &mut r) {
                let mut acc = plan.accumulator::<Complex32>(op).unwrap();
                let mut start = 0;
                for len in &chunks {
                    acc.add(start, patches.slice(s![start..start + len, .., ..]))
                        .unwrap();
                    start += len;
                }
                let what = format!(
                    "{label}: {op:?}, {threads} threads, {} chunks",
                    chunks.len()
                );
                assert_bit_identical(&acc.finish().unwrap(), &expected, &what);
            }
        }
    }
}

fn check_windows(label: &str, patches: &Array3<Complex32>, offsets: &Array2<f64>, crop: i64) {
    let plan = Plan::new(offsets.view(), patches.dim().1, crop)
        .unwrap()
        .with_min_pixels_per_worker(0);
    let side = plan.canvas_shape().0;
    for op in OPERATIONS {
        let expected = one_shot(&plan, op, patches);
        for tile in [1, 7, 13, side / 2 + 1, side, side + 5] {
            if tile == 1 && side > 40 {
                continue; // 1×1 tiles on a small canvas only (below)
            }
            let mut tiled = Array2::from_elem((side, side), Complex32::new(f32::NAN, f32::NAN));
            for r0 in (0..side).step_by(tile) {
                for c0 in (0..side).step_by(tile) {
                    let (rows, cols) = (r0..(r0 + tile).min(side), c0..(c0 + tile).min(side));
                    let indices = plan.window_patches(rows.clone(), cols.clone()).unwrap();
                    let stack = patches.select(Axis(0), &indices);
                    let w = plan
                        .window(op, rows.clone(), cols.clone(), stack.view(), &indices)
                        .unwrap();
                    tiled.slice_mut(s![rows.clone(), cols.clone()]).assign(&w);
                    // The same window from runs of the scan as they lie: fixed-length chunks
                    // that touch it, and the chunks clipped to the first and last touching patch.
                    let n = patches.dim().0;
                    for len in [1, 5, n] {
                        let mut runs = Vec::new();
                        for start in (0..n).step_by(len) {
                            let end = (start + len).min(n);
                            let touching: Vec<usize> = indices
                                .iter()
                                .copied()
                                .filter(|k| (start..end).contains(k))
                                .collect();
                            let (Some(&a), Some(&b)) = (touching.first(), touching.last()) else {
                                continue;
                            };
                            let (a, b) = if len == 5 { (a, b + 1) } else { (start, end) };
                            runs.push((a, patches.slice(s![a..b, .., ..])));
                        }
                        let from_runs = plan
                            .window_runs(op, rows.clone(), cols.clone(), &runs)
                            .unwrap();
                        assert_bit_identical(
                            &from_runs,
                            &w,
                            &format!("{label}: {op:?}, tile {rows:?}×{cols:?}, runs of {len}"),
                        );
                    }
                }
            }
            assert_bit_identical(
                &tiled,
                &expected,
                &format!("{label}: {op:?}, tiles of {tile}"),
            );
        }
    }
}

#[test]
fn streams_equal_one_shot_on_random_scans() {
    let mut r = rng(0xc4a1);
    for (case, (n, size, crop, spread)) in [
        (1, 16, 8, 0.0),
        (40, 32, 16, 9.0),
        (333, 24, 11, 30.0),
        (1200, 64, 20, 60.0),
    ]
    .into_iter()
    .enumerate()
    {
        let patches = random_patches(&mut r, n, size);
        let offsets = Array2::from_shape_fn((n, 2), |_| r.random_range(-spread..=spread + 0.01));
        check_stream(
            &format!("random case {case}"),
            &patches,
            &offsets,
            crop,
            case as u64,
        );
    }
}

#[test]
fn windows_tile_the_canvas_exactly() {
    let mut r = rng(0x7113);
    for (case, (n, size, crop, spread)) in
        [(3, 16, 8, 2.0), (60, 32, 16, 12.0), (400, 32, 11, 40.0)]
            .into_iter()
            .enumerate()
    {
        let patches = random_patches(&mut r, n, size);
        let offsets = Array2::from_shape_fn((n, 2), |_| r.random_range(-spread..=spread));
        check_windows(&format!("random case {case}"), &patches, &offsets, crop);
    }
}

#[test]
fn golden_cases_stream_and_tile_exactly() {
    for name in GOLDEN_CASES {
        let common::Golden {
            obj,
            offsets: off,
            m,
            ..
        } = golden(name);
        check_stream(name, &obj, &off, m, 1);
        if name != "negbig" {
            check_windows(name, &obj, &off, m);
        }
    }
}

#[test]
fn one_by_one_tiles_and_empty_windows() {
    let mut r = rng(5);
    let patches = random_patches(&mut r, 6, 16);
    // Two clusters far apart: windows between them are touched by no patch.
    let offsets = Array2::from_shape_fn(
        (6, 2),
        |(k, _)| if k < 3 { k as f64 } else { 30.0 + k as f64 },
    );
    let plan = Plan::new(offsets.view(), 16, 8).unwrap();
    let side = plan.canvas_shape().0;
    assert!(side <= 60);
    check_windows("two clusters", &patches, &offsets, 8);
    let full = plan.reassemble_position(patches.view()).unwrap();
    let mut found_empty = false;
    for y in 0..side {
        for x in 0..side {
            let idx = plan.window_patches(y..y + 1, x..x + 1).unwrap();
            let w = plan
                .window(
                    Operation::ReassemblePosition,
                    y..y + 1,
                    x..x + 1,
                    patches.select(Axis(0), &idx).view(),
                    &idx,
                )
                .unwrap();
            assert_eq!(
                w[[0, 0]].re.to_bits(),
                full[[y, x]].re.to_bits(),
                "({y}, {x})"
            );
            assert_eq!(
                w[[0, 0]].im.to_bits(),
                full[[y, x]].im.to_bits(),
                "({y}, {x})"
            );
            if idx.is_empty() {
                found_empty = true;
                assert_eq!(w[[0, 0]], Complex32::new(0.0, 0.0));
            }
        }
    }
    assert!(found_empty, "the scan has windows no patch touches");
}

#[test]
fn streams_and_windows_refuse_misuse() {
    let mut r = rng(6);
    let patches = random_patches(&mut r, 10, 16);
    let offsets = Array2::from_shape_fn((10, 2), |_| r.random_range(-5.0..5.0));
    let plan = Plan::new(offsets.view(), 16, 8).unwrap();
    let mut acc = plan
        .accumulator::<Complex32>(Operation::ShiftAndSum)
        .unwrap();
    assert!(matches!(
        acc.add(3, patches.slice(s![3..5, .., ..])),
        Err(Error::ChunkOrder {
            expected: 0,
            found: 3
        })
    ));
    acc.add(0, patches.slice(s![..4, .., ..])).unwrap();
    assert!(matches!(
        acc.add(4, patches.view()),
        Err(Error::ChunkTooLong {
            start: 4,
            len: 10,
            n: 10
        })
    ));
    assert_eq!(acc.added(), 4);
    assert!(matches!(
        acc.finish(),
        Err(Error::Incomplete {
            added: 4,
            expected: 10
        })
    ));
    let side = plan.canvas_shape().0;
    assert!(matches!(
        plan.window_patches(0..side + 1, 0..1),
        Err(Error::WindowOutOfRange { .. })
    ));
    assert!(matches!(
        plan.window_patches(3..3, 0..1),
        Err(Error::WindowOutOfRange { .. })
    ));
    let all: Vec<usize> = (0..10).collect();
    let rows = 0..side;
    let err = plan
        .window(
            Operation::ShiftAndSum,
            rows.clone(),
            0..side,
            patches.slice(s![1.., .., ..]),
            &all[1..],
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("patch 0 touches the window"),
        "{err}"
    );
    let backwards = [1, 0];
    let err = plan
        .window(
            Operation::ShiftAndSum,
            rows,
            0..side,
            patches.slice(s![..2, .., ..]),
            &backwards,
        )
        .unwrap_err();
    assert!(err.to_string().contains("strictly increasing"), "{err}");

    let window = |runs: &[(usize, ndarray::ArrayView3<'_, Complex32>)]| {
        plan.window_runs(Operation::ReassemblePosition, 0..side, 0..side, runs)
            .unwrap_err()
            .to_string()
    };
    let (head, tail) = (
        patches.slice(s![..6, .., ..]),
        patches.slice(s![6.., .., ..]),
    );
    let err = window(&[(0, head), (5, tail)]);
    assert!(
        err.contains("run 1 starts at 5, before the previous one ends (6)"),
        "{err}"
    );
    let err = window(&[(0, head), (6, tail), (10, patches.slice(s![..1, .., ..]))]);
    assert!(
        err.contains("run 2 holds patches 10..11; the plan has 10"),
        "{err}"
    );
    let err = window(&[(0, head), (7, patches.slice(s![7.., .., ..]))]);
    assert!(
        err.contains("patch 6 touches the window but is in no run"),
        "{err}"
    );
    let err = window(&[(1, patches.slice(s![1.., .., ..]))]);
    assert!(
        err.contains("patch 0 touches the window but is in no run"),
        "{err}"
    );
    let whole = plan
        .window_runs(
            Operation::ReassemblePosition,
            0..side,
            0..side,
            &[(0, head), (6, tail)],
        )
        .unwrap();
    assert_bit_identical(
        &whole,
        &plan.reassemble_position(patches.view()).unwrap(),
        "two runs",
    );
}
