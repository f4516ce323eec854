//! Golden parity: our reference and fast path against PtychoPINN's own TensorFlow outputs.
//!
//! Against the `_old` arrays (sequential sums, docs/semantics.md §2's arithmetic) agreement is exact; against
//! the new batched functions (chunked partial sums) it is to docs/semantics.md §3's tolerance.

mod common;

use common::{GOLDEN_CASES, assert_bit_identical, assert_exact_bits, golden, golden_output};
use ndarray::Array2;
use ptychostitch::{Complex32, Plan};

/// Largest difference over lanes finite in both (non-finite lanes are compared by position).
fn max_abs_diff(a: &Array2<Complex32>, b: &Array2<Complex32>) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| [(x.re, y.re), (x.im, y.im)])
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn max_abs(a: &Array2<Complex32>) -> f32 {
    a.iter()
        .flat_map(|x| [x.re.abs(), x.im.abs()])
        .filter(|v| v.is_finite())
        .fold(0.0, f32::max)
}

#[test]
fn every_golden_case_matches_ptychopinn() {
    for name in GOLDEN_CASES {
        let mut case = golden(name);
        let plan = Plan::new(case.offsets.view(), case.obj.shape()[1], case.m).unwrap();
        let outputs = [
            (
                "shift_and_sum",
                plan.shift_and_sum_reference(case.obj.view()).unwrap(),
                plan.shift_and_sum(case.obj.view()).unwrap(),
            ),
            (
                "reassemble_position",
                plan.reassemble_position_reference(case.obj.view()).unwrap(),
                plan.reassemble_position(case.obj.view()).unwrap(),
            ),
        ];
        for (function, reference, fast) in outputs {
            let old = golden_output(&mut case, &format!("{function}_old"))
                .unwrap_or_else(|| panic!("{name}: no {function}_old"));
            // Every bit, NaN payloads included, where the CPU is TF's (x86-64); NaN positions
            // (not payloads) elsewhere.
            let exact = if cfg!(target_arch = "x86_64") {
                assert_exact_bits::<Complex32>
            } else {
                assert_bit_identical::<Complex32>
            };
            exact(
                &reference,
                &old,
                &format!("{name}: reference {function} vs TF _old"),
            );
            exact(&fast, &old, &format!("{name}: fast {function} vs TF _old"));
            for threads in [1, 2, 7] {
                let banded = Plan::new(case.offsets.view(), case.obj.shape()[1], case.m)
                    .unwrap()
                    .with_threads(threads)
                    .with_min_pixels_per_worker(0);
                let again = if function == "shift_and_sum" {
                    banded.shift_and_sum(case.obj.view()).unwrap()
                } else {
                    banded.reassemble_position(case.obj.view()).unwrap()
                };
                exact(
                    &again,
                    &old,
                    &format!("{name}: {function}, {threads} threads"),
                );
            }
            match golden_output(&mut case, function) {
                Some(new) => {
                    let tol = 1e-5 * max_abs(&new) + 1e-6;
                    let diff = max_abs_diff(&fast, &new);
                    assert!(diff <= tol, "{name}: {function} vs TF new: {diff} > {tol}");
                    let nan = |a: &Array2<Complex32>| -> Vec<bool> {
                        a.iter()
                            .flat_map(|v| [v.re.is_nan(), v.im.is_nan()])
                            .collect()
                    };
                    assert_eq!(
                        nan(&fast),
                        nan(&new),
                        "{name}: {function}: NaN positions vs TF new"
                    );
                }
                // TF's new function fails for odd M (docs/semantics.md §3); the file records its error.
                None => assert!(
                    case.npz.contains(&format!("error_{function}")),
                    "{name}: neither {function} nor error_{function}"
                ),
            }
        }
    }
}
