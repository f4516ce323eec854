//! Every bad input of docs/semantics.md §7 gives a typed error whose message names the problem.

use ndarray::{Array1, Array2, Array3, Array4};
use ptychostitch::{Complex32, Error, Plan};

fn patches(n: usize, size: usize) -> Array3<Complex32> {
    Array3::from_elem((n, size, size), Complex32::new(1.0, 0.0))
}

fn grid(n: usize) -> Array2<f64> {
    Array2::from_shape_fn((n, 2), |(k, axis)| (k * (axis + 1)) as f64)
}

#[track_caller]
fn expect_message<T: std::fmt::Debug>(result: Result<T, Error>, parts: &[&str]) -> Error {
    let err = result.expect_err("bad input must be rejected");
    let message = err.to_string();
    for part in parts {
        assert!(message.contains(part), "message {message:?} lacks {part:?}");
    }
    err
}

#[test]
fn zero_patches() {
    let err = expect_message(
        ptychostitch::shift_and_sum(patches(0, 8).view(), grid(0).view(), 4),
        &["no patches"],
    );
    assert_eq!(err, Error::NoPatches);
    expect_message(Plan::new(grid(0).view(), 8, 4), &["no patches"]);
}

#[test]
fn mismatched_counts() {
    let err = expect_message(
        ptychostitch::reassemble_position(patches(3, 8).view(), grid(4).view(), 4),
        &["3 patches", "4 positions"],
    );
    assert_eq!(
        err,
        Error::CountMismatch {
            patches: 3,
            offsets: 4
        }
    );
    let plan = Plan::new(grid(4).view(), 8, 4).unwrap();
    expect_message(
        plan.shift_and_sum(patches(5, 8).view()),
        &["5 patches", "4 positions"],
    );
}

#[test]
fn bad_patch_shapes() {
    let rect = Array3::from_elem((2, 8, 9), Complex32::new(0.0, 0.0));
    expect_message(
        ptychostitch::shift_and_sum(rect.view(), grid(2).view(), 4),
        &["[2, 8, 9]", "square"],
    );
    let channels = Array4::from_elem((2, 8, 8, 3), Complex32::new(0.0, 0.0));
    expect_message(
        ptychostitch::shift_and_sum(channels.view(), grid(2).view(), 4),
        &["[2, 8, 8, 3]"],
    );
    let flat = Array2::from_elem((8, 8), Complex32::new(0.0, 0.0));
    expect_message(
        ptychostitch::shift_and_sum(flat.view(), grid(2).view(), 4),
        &["[8, 8]", "(n, N, N)"],
    );
    let plan = Plan::new(grid(2).view(), 8, 4).unwrap();
    expect_message(plan.shift_and_sum(patches(2, 16).view()), &["16×16", "8×8"]);
}

#[test]
fn bad_offset_shapes() {
    let three = Array2::<f64>::zeros((2, 3));
    expect_message(
        ptychostitch::shift_and_sum(patches(2, 8).view(), three.view(), 4),
        &["[2, 3]", "[x, y]"],
    );
    let one_d = Array1::<f64>::zeros(4);
    expect_message(Plan::new(one_d.view(), 8, 4), &["[4]", "(n, 2)"]);
}

#[test]
fn crop_out_of_range() {
    for m in [-3, 0, 1] {
        expect_message(
            Plan::new(grid(2).view(), 8, m),
            &[&format!("`M` = {m}"), "2 <= M <= N = 8"],
        );
    }
    expect_message(Plan::new(grid(2).view(), 8, 9), &["`M` = 9", "N = 8"]);
    assert!(Plan::new(grid(2).view(), 8, 8).is_ok());
    assert!(Plan::new(grid(2).view(), 8, 2).is_ok());
}

#[test]
fn non_finite_offsets() {
    for (value, shown) in [(f64::NAN, "NaN"), (f64::INFINITY, "inf"), (-1e39, "-1e39")] {
        let mut o = grid(3);
        o[[2, 1]] = value;
        let err = expect_message(
            Plan::new(o.view(), 8, 4),
            &["offsets[2]", "y =", shown, "x = column"],
        );
        assert!(matches!(
            err,
            Error::NonFiniteOffset {
                index: 2,
                axis: "y",
                ..
            }
        ));
    }
}

#[test]
fn canvas_too_large_says_how_much() {
    let mut o = grid(2);
    o[[1, 0]] = 1e15;
    let err = expect_message(
        Plan::new(o.view(), 8, 4),
        &[
            "1.000e15×1.000e15-pixel canvas",
            "needs",
            "more than",
            "this process may use",
        ],
    );
    assert!(matches!(err, Error::CanvasTooLarge { .. }));
    // Beyond every integer type: the side is shown in scientific notation, never saturated.
    o[[1, 0]] = 1e30;
    expect_message(
        Plan::new(o.view(), 8, 4),
        &["1.000e30×1.000e30-pixel canvas"],
    );
    // f32 sum overflow in the mean: finite offsets whose centre is not.
    let huge = Array2::from_shape_vec((2, 2), vec![3e38, 0.0, 3e38, 0.0]).unwrap();
    let err = expect_message(
        Plan::new(huge.view(), 8, 4),
        &[
            "too large for float32",
            "sum of the x values",
            "offsets[1] = 3e38",
        ],
    );
    assert!(!err.to_string().contains("inf"), "{err}");
}

#[test]
fn wrong_output_buffers() {
    let plan = Plan::new(grid(2).view(), 8, 4).unwrap();
    let (s, _) = plan.canvas_shape();
    let mut small = Array2::from_elem((s - 1, s), Complex32::new(0.0, 0.0));
    expect_message(
        plan.shift_and_sum_into(patches(2, 8).view(), small.view_mut()),
        &["`out`", &format!("({s}, {s})")],
    );
    let mut wide = Array2::from_elem((s, 2 * s), Complex32::new(0.0, 0.0));
    let strided = wide.slice_mut(ndarray::s![.., ..;2]);
    expect_message(
        plan.reassemble_position_into(patches(2, 8).view(), strided),
        &["C-contiguous"],
    );
}
