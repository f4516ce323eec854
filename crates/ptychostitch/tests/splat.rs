//! The splat (PtychoPINN's torch inference accumulators): the fast path against the literal
//! reference bit for bit, torch's arithmetic, both edge rules, and bad input.

mod common;

use common::{assert_bit_identical, rng};
use ndarray::{Array2, Array3, s};
use ptychostitch::splat::{Edge, Placed, Splat};
use ptychostitch::{Complex32, Error, Implementation, parallel_runs};
use rand::RngExt;

struct Case {
    patches: Array3<Complex32>,
    positions: Array2<f32>,
    weight: Array2<f32>,
    canvas: Array2<Complex32>,
    counts: Array2<f32>,
}

/// `n` patches of side `p` centred anywhere from beyond the top-left edge to beyond the
/// bottom-right one of an `h×w` canvas that already holds values (accumulation continues).
fn case(seed: u64, n: usize, p: usize, h: usize, w: usize) -> Case {
    let mut r = rng(seed);
    let mut values = |shape: (usize, usize, usize)| {
        Array3::from_shape_simple_fn(shape, || {
            Complex32::new(r.random_range(-1.0..1.0), r.random_range(-1.0..1.0))
        })
    };
    let patches = values((n, p, p));
    let canvas = values((1, h, w)).index_axis_move(ndarray::Axis(0), 0);
    let mut r = rng(seed + 1);
    let margin = p as f32 + 3.0;
    let positions = Array2::from_shape_fn((n, 2), |(_, axis)| {
        let side = if axis == 0 { w } else { h } as f32;
        let v: f32 = r.random_range(-margin..side + margin);
        // A quarter of the positions on whole or half pixels: zero weights and exact halves.
        match r.random_range(0..8) {
            0 => v.round(),
            1 => v.round() + 0.5,
            _ => v,
        }
    });
    let weight = Array2::from_shape_simple_fn((p, p), || r.random_range(0.0..2.0));
    let counts = Array2::from_shape_simple_fn((h, w), || r.random_range(0.0..1.0));
    Case {
        patches,
        positions,
        weight,
        canvas,
        counts,
    }
}

fn run(c: &Case, splat: Splat, weighted: bool) -> (Array2<Complex32>, Array2<f32>, Placed) {
    let (mut canvas, mut counts) = (c.canvas.clone(), c.counts.clone());
    let weight = weighted.then(|| c.weight.view());
    let placed = splat
        .run(
            canvas.view_mut(),
            counts.view_mut(),
            c.patches.view(),
            c.positions.view(),
            weight,
        )
        .unwrap();
    (canvas, counts, placed)
}

/// Splats `patches` at `positions` (no patch weight) onto a zeroed `shape` canvas.
fn splat_fresh(
    edge: Edge,
    shape: (usize, usize),
    patches: &Array3<Complex32>,
    positions: &Array2<f32>,
) -> (Array2<Complex32>, Array2<f32>, Placed) {
    let mut canvas = Array2::<Complex32>::zeros(shape);
    let mut counts = Array2::<f32>::zeros(shape);
    let placed = Splat::new(edge)
        .run(
            canvas.view_mut(),
            counts.view_mut(),
            patches.view(),
            positions.view(),
            None,
        )
        .unwrap();
    (canvas, counts, placed)
}

#[track_caller]
fn assert_same(
    a: &(Array2<Complex32>, Array2<f32>, Placed),
    b: &(Array2<Complex32>, Array2<f32>, Placed),
    what: &str,
) {
    assert_eq!(a.2, b.2, "{what}: placed");
    assert_bit_identical(&a.0, &b.0, &format!("{what}: canvas"));
    assert_bit_identical(&a.1, &b.1, &format!("{what}: weights"));
}

#[test]
fn fast_equals_reference_bit_for_bit() {
    let before = parallel_runs();
    let oracle = Splat::new(Edge::Clip).with_implementation(Implementation::Reference);
    let mut seed = 1;
    // Canvas heights around the band splits of 1, 2, 3 and 8 workers (4 bands each), patch
    // sides from one pixel up, and enough patches for several workers.
    for &(n, p, h, w) in &[
        (0, 4, 9, 9),
        (1, 1, 1, 1),
        (3, 2, 5, 7),
        (40, 7, 23, 19),
        (300, 16, 33, 40),
        (700, 16, 31, 97),
        (1100, 17, 64, 65),
    ] {
        let c = case(seed, n, p, h, w);
        seed += 10;
        for edge in [Edge::Clip, Edge::Drop] {
            for weighted in [false, true] {
                let expected = run(
                    &c,
                    oracle
                        .with_implementation(Implementation::Reference)
                        .with_edge(edge),
                    weighted,
                );
                for threads in [1, 2, 3, 8] {
                    let got = run(&c, Splat::new(edge).with_threads(threads), weighted);
                    assert_same(
                        &got,
                        &expected,
                        &format!(
                            "n={n} p={p} {h}x{w} {edge:?} weighted={weighted} threads={threads}"
                        ),
                    );
                }
            }
        }
    }
    assert!(parallel_runs() > before, "no run used more than one worker");
}

#[test]
fn strided_canvases_are_written_in_place() {
    let c = case(7, 200, 9, 30, 41);
    let expected = run(
        &c,
        Splat::new(Edge::Clip).with_implementation(Implementation::Reference),
        true,
    );
    // The same canvas as every other column of a wider array, and transposed weights.
    let mut wide = Array2::<Complex32>::zeros((30, 82));
    wide.slice_mut(s![.., ..;2]).assign(&c.canvas);
    let mut counts_t = c.counts.t().to_owned();
    let placed = Splat::new(Edge::Clip)
        .with_threads(4)
        .run(
            wide.slice_mut(s![.., ..;2]),
            counts_t.view_mut().reversed_axes(),
            c.patches.view(),
            c.positions.view(),
            Some(c.weight.view()),
        )
        .unwrap();
    let got = (
        wide.slice(s![.., ..;2]).to_owned(),
        counts_t.t().to_owned(),
        placed,
    );
    assert_same(&got, &expected, "strided");
    assert!(
        wide.slice(s![.., 1..;2])
            .iter()
            .all(|z| *z == Complex32::new(0.0, 0.0))
    );
}

#[test]
fn a_complex_times_a_real_is_torch_s_complex_product() {
    // torch: (inf + 1i) · 0.5 = inf + NaN i, and (1 + NaN i) · 0.5 = NaN + NaN i. A 2×2
    // patch with those values in its first row.
    let mut square = Array3::<Complex32>::zeros((1, 2, 2));
    square[[0, 0, 0]] = Complex32::new(f32::INFINITY, 1.0);
    square[[0, 0, 1]] = Complex32::new(1.0, f32::NAN);
    let positions = Array2::from_shape_vec((1, 2), vec![2.5_f32, 2.0]).unwrap();
    let mut canvas = Array2::<Complex32>::zeros((5, 6));
    let mut counts = Array2::<f32>::zeros((5, 6));
    Splat::new(Edge::Clip)
        .run(
            canvas.view_mut(),
            counts.view_mut(),
            square.view(),
            positions.view(),
            None,
        )
        .unwrap();
    // Corner (r, c) = (1, 1.5): the infinite value lands half at (1, 1), half at (1, 2).
    assert_eq!(canvas[[1, 1]].re, f32::INFINITY);
    assert!(canvas[[1, 1]].im.is_nan());
    assert!(canvas[[1, 3]].re.is_nan() && canvas[[1, 3]].im.is_nan());
    assert_eq!(counts[[1, 1]], 0.5);
}

#[test]
fn whole_pixel_positions_copy_the_patch() {
    let c = case(3, 1, 6, 12, 12);
    let mut canvas = Array2::<Complex32>::zeros((12, 12));
    let mut counts = Array2::<f32>::zeros((12, 12));
    // Centre (5, 4): corner (r, c) = (1, 2), every weight but w00 zero.
    let positions = Array2::from_shape_vec((1, 2), vec![5.0_f32, 4.0]).unwrap();
    Splat::new(Edge::Drop)
        .run(
            canvas.view_mut(),
            counts.view_mut(),
            c.patches.view(),
            positions.view(),
            None,
        )
        .unwrap();
    assert_eq!(canvas.slice(s![1..7, 2..8]), c.patches.slice(s![0, .., ..]));
    assert_eq!(counts.sum(), 36.0);
    assert_eq!(counts.slice(s![1..7, 2..8]).sum(), 36.0);
}

#[test]
fn the_edge_rules_are_ptychopinn_s_bounds_check_and_clipping() {
    // A 4×4 patch on a 10×12 canvas: PtychoPINN keeps corners 0 ≤ c and c + 4 + 1 < 12.
    let patches = Array3::from_elem((4, 4, 4), Complex32::new(1.0, 0.0));
    let centre = |c: f32| c + 2.0; // corner c ⇔ centre c + P/2
    let positions = Array2::from_shape_vec(
        (4, 2),
        vec![
            centre(6.0),
            3.0, // c + 5 = 11 < 12: kept by both
            centre(7.0),
            3.0, // c + 5 = 12: dropped by PtychoPINN, whole inside the canvas
            centre(-1.5),
            3.0, // partly left of the canvas
            centre(40.0),
            3.0, // far outside
        ],
    )
    .unwrap();
    let place = |edge| {
        let (_, counts, placed) = splat_fresh(edge, (10, 12), &patches, &positions);
        (placed, counts.sum())
    };
    let (drop, drop_sum) = place(Edge::Drop);
    assert_eq!(
        drop,
        Placed {
            accepted: 1,
            clipped: 0
        }
    );
    assert_eq!(drop_sum, 16.0);
    let (clip, clip_sum) = place(Edge::Clip);
    // The third patch keeps the columns from 0 on: corner −1.5 puts half of column 0 of the
    // patch at −2 + … ; what is inside the canvas is 16 − (the weight of its first column and
    // a half) = 16 − 6 = 10.
    assert_eq!(
        clip,
        Placed {
            accepted: 3,
            clipped: 1
        }
    );
    assert_eq!(clip_sum, 16.0 + 16.0 + 10.0);
}

#[test]
fn bad_arguments_are_refused_and_change_nothing() {
    let c = case(5, 3, 4, 8, 8);
    let refuse = |canvas_shape: (usize, usize),
                  counts_shape: (usize, usize),
                  positions: Array2<f32>,
                  weight: Option<Array2<f32>>| {
        let mut canvas = Array2::<Complex32>::zeros(canvas_shape);
        let mut counts = Array2::<f32>::zeros(counts_shape);
        let err = Splat::new(Edge::Clip)
            .run(
                canvas.view_mut(),
                counts.view_mut(),
                c.patches.view(),
                positions.view(),
                weight.as_ref().map(|w| w.view()),
            )
            .unwrap_err();
        assert!(canvas.iter().all(|z| *z == Complex32::new(0.0, 0.0)));
        assert!(counts.iter().all(|v| *v == 0.0));
        err
    };
    let good = c.positions.clone();
    assert!(matches!(
        refuse((8, 8), (8, 9), good.clone(), None),
        Error::RegionShape {
            what: "weights",
            ..
        }
    ));
    assert!(matches!(
        refuse((8, 8), (8, 8), good.slice(s![..2, ..]).to_owned(), None),
        Error::RegionShape {
            what: "positions",
            ..
        }
    ));
    assert!(matches!(
        refuse((8, 8), (8, 8), good.clone(), Some(Array2::ones((3, 4)))),
        Error::RegionShape {
            what: "patch_weight",
            ..
        }
    ));
    let mut nan = good.clone();
    nan[[2, 1]] = f32::NAN;
    let err = refuse((8, 8), (8, 8), nan, None);
    assert!(
        matches!(
            err,
            Error::NonFiniteOffset {
                index: 2,
                axis: "y",
                ..
            }
        ),
        "{err}"
    );
    let mut infinite = good;
    infinite[[0, 0]] = f32::NEG_INFINITY;
    assert!(matches!(
        refuse((8, 8), (8, 8), infinite, None),
        Error::NonFiniteOffset {
            index: 0,
            axis: "x",
            ..
        }
    ));
}

#[test]
fn huge_positions_place_nothing_and_do_not_overflow() {
    let patches = Array3::from_elem((2, 3, 3), Complex32::new(1.0, 0.0));
    let positions =
        Array2::from_shape_vec((2, 2), vec![3.0e38_f32, -3.0e38, -3.0e38, 1.0e20]).unwrap();
    for edge in [Edge::Clip, Edge::Drop] {
        let (_, counts, placed) = splat_fresh(edge, (6, 6), &patches, &positions);
        assert_eq!(placed, Placed::default());
        assert_eq!(counts.sum(), 0.0);
    }
}
