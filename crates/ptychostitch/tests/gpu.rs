//! The CUDA backend. Without a GPU (CI) the tests check that asking for one is a clear
//! `GpuUnavailable` error, never a crash, and say on stderr that the GPU runs were skipped and
//! why; with a GPU they run in full: golden cases and randomised scans, bit for bit against the
//! reference (NaN by position: a GPU's NaN payloads are its own), repeated runs identical.
#![cfg(feature = "cuda")]

mod common;

use common::{GOLDEN_CASES, assert_bit_identical, golden, random_patches, rng};
use ndarray::{Array2, Array3};
use ptychostitch::gpu::cuda;
use ptychostitch::{Complex32, Error, Operation, Plan};
use rand::RngExt;
use std::io::Write;

/// The GPU's name, or `None` after saying on stderr (uncaptured) why the test is skipped.
fn gpu(test: &str) -> Option<String> {
    match cuda::available() {
        Ok(name) => Some(name),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: no GPU here ({e})");
            None
        }
    }
}

#[test]
fn no_gpu_is_a_clear_error_not_a_crash() {
    match cuda::available() {
        Ok(name) => assert!(!name.is_empty()),
        Err(e) => {
            assert!(matches!(e, Error::GpuUnavailable { .. }), "{e}");
            assert!(e.to_string().starts_with("GpuUnavailable: "), "{e}");
            // Asking again gives the same answer, and a plan's GPU path the same error.
            assert_eq!(cuda::available().unwrap_err(), e);
            let offsets = Array2::<f64>::zeros((2, 2));
            let plan = Plan::new(offsets.view(), 16, 8).unwrap();
            assert!(matches!(plan.gpu(), Err(Error::GpuUnavailable { .. })));
            // The CPU path is unaffected.
            assert!(
                plan.reassemble_position(Array3::<Complex32>::zeros((2, 16, 16)).view())
                    .is_ok()
            );
        }
    }
}

fn check(plan: &Plan, patches: ndarray::ArrayView3<'_, Complex32>, what: &str) {
    let gpu = plan.gpu().unwrap();
    for (op, reference) in [
        (
            Operation::ShiftAndSum,
            plan.shift_and_sum_reference(patches).unwrap(),
        ),
        (
            Operation::ReassemblePosition,
            plan.reassemble_position_reference(patches).unwrap(),
        ),
    ] {
        let first = gpu.run(op, patches).unwrap();
        assert_bit_identical(&first, &reference, &format!("{what}: {op:?} on the GPU"));
        let again = gpu.run(op, patches).unwrap();
        assert_bit_identical(&again, &first, &format!("{what}: {op:?} repeated"));
    }
}

#[test]
fn golden_cases_on_the_gpu() {
    let Some(name) = gpu("golden_cases_on_the_gpu") else {
        return;
    };
    eprintln!("GPU: {name}");
    for case in GOLDEN_CASES {
        let common::Golden {
            obj,
            offsets: off,
            m,
            ..
        } = golden(case);
        check(
            &Plan::new(off.view(), obj.dim().1, m).unwrap(),
            obj.view(),
            case,
        );
    }
}

#[test]
fn randomised_scans_on_the_gpu() {
    if gpu("randomised_scans_on_the_gpu").is_none() {
        return;
    }
    let mut r = rng(0x6770);
    for (n, size, crop, spread) in [(1, 8, 2, 0.0), (37, 32, 16, 9.0), (2500, 64, 20, 60.0)] {
        let patches = random_patches(&mut r, n, size);
        let offsets = Array2::from_shape_fn((n, 2), |_| r.random_range(-spread..=spread + 0.01));
        check(
            &Plan::new(offsets.view(), size, crop).unwrap(),
            patches.view(),
            &format!("n={n}"),
        );
    }
}
