//! The CUDA kernel's source, run on the CPU, against the reference: every golden case and
//! randomised scans (fixed seeds), both operations, complex and real, strided stacks — bit for
//! bit. NaN values are compared by position: a GPU's NaN payloads are its own (CUDA's default
//! NaN is 0x7fffffff), so only where NaN appears is part of the contract.

// The library's test helpers (golden cases, seeded generators), shared by path.
#[path = "../../ptychostitch/tests/common/mod.rs"]
mod common;

use common::{GOLDEN_CASES, golden, golden_output};
use ndarray::{Array2, Array3, s};
use ptychostitch::gpu::launch::Stack;
use ptychostitch::{Complex32, Operation, Plan, Sample};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn bits<T: Sample>(a: &Array2<T>) -> Vec<u32> {
    let lanes: &[f32] = ptychostitch_lanes(a);
    lanes
        .iter()
        .map(|v| if v.is_nan() { u32::MAX } else { v.to_bits() })
        .collect()
}

fn ptychostitch_lanes<T: Sample>(a: &Array2<T>) -> &[f32] {
    let s = a.as_slice().unwrap();
    // SAFETY: `Sample` types are plain `f32` lanes (`f32` or `repr(C)` `Complex32`).
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), s.len() * T::LANES) }
}

fn check<T: Sample>(what: &str, plan: &Plan, patches: ndarray::ArrayView3<'_, T>) {
    for op in [Operation::ShiftAndSum, Operation::ReassemblePosition] {
        let reference = match op {
            Operation::ShiftAndSum => plan.shift_and_sum_reference(patches).unwrap(),
            Operation::ReassemblePosition => plan.reassemble_position_reference(patches).unwrap(),
        };
        let kernel = ptychostitch_kernel_emu::stitch(plan, op, patches).unwrap();
        assert_eq!(kernel.dim(), reference.dim());
        let (a, b) = (bits(&kernel), bits(&reference));
        if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
            panic!(
                "{what}, {op:?}: lane {i} differs: kernel {} vs reference {}",
                f32::from_bits(a[i]),
                f32::from_bits(b[i])
            );
        }
    }
}

#[test]
fn golden_cases_are_bit_identical() {
    for name in GOLDEN_CASES {
        let mut case = golden(name);
        let plan = Plan::new(case.offsets.view(), case.obj.dim().1, case.m).unwrap();
        check(name, &plan, case.obj.view());
        // The file's own TF arrays, to close the loop.
        let expected = golden_output(&mut case, "reassemble_position_old").unwrap();
        let got =
            ptychostitch_kernel_emu::stitch(&plan, Operation::ReassemblePosition, case.obj.view())
                .unwrap();
        assert_eq!(bits(&got), bits(&expected), "{name}: kernel vs TF");
    }
}

#[test]
fn randomised_scans_are_bit_identical() {
    let mut r = ChaCha8Rng::seed_from_u64(0x6b65_726e);
    for (case, (n, size, crop, spread)) in [
        (1, 8, 2, 0.0_f64),
        (7, 16, 9, 3.0),
        (64, 32, 16, 11.0),
        (300, 24, 20, 25.0),
        (900, 64, 20, 40.0),
    ]
    .into_iter()
    .enumerate()
    {
        let patches = Array3::from_shape_simple_fn((n, size, size), || {
            Complex32::new(r.random_range(-1.0..1.0), r.random_range(-1.0..1.0))
        });
        let offsets = Array2::from_shape_fn((n, 2), |_| {
            // Some exact integers and halves among the fractions.
            match r.random_range(0..4) {
                0 => r.random_range(-spread..=spread).round(),
                1 => (r.random_range(-spread..=spread) * 2.0).round() / 2.0,
                _ => r.random_range(-spread..=spread),
            }
        });
        let plan = Plan::new(offsets.view(), size, crop).unwrap();
        check(&format!("case {case}"), &plan, patches.view());
        let real = patches.mapv(|c| c.re);
        check(&format!("case {case}, real"), &plan, real.view());
        // A strided stack: every other patch of a bigger one, columns reversed.
        let mut big = Array3::from_elem((2 * n, size, size), Complex32::new(f32::NAN, 7.0));
        big.slice_mut(s![..;2, .., ..;-1]).assign(&patches);
        let strided = big.slice(s![..;2, .., ..;-1]);
        check(&format!("case {case}, strided"), &plan, strided);
    }
}

#[test]
fn stacks_described_as_dlpack_describes_them_are_read_the_same() {
    // What the GPU driver receives from torch: an address, a shape and strides in elements.
    // A transposed view `(n, N, N, 1)` with strides (N·N, 1, N, any) must give the reference's
    // bits for the patches it shows.
    let mut r = ChaCha8Rng::seed_from_u64(0x646c_7061);
    let (n, size, crop) = (120, 24, 16);
    let patches = Array3::from_shape_simple_fn((n, size, size), || {
        Complex32::new(r.random_range(-1.0..1.0), r.random_range(-1.0..1.0))
    });
    let offsets = Array2::from_shape_fn((n, 2), |_| r.random_range(-12.0..=12.0));
    let plan = Plan::new(offsets.view(), size, crop).unwrap();
    let stored = patches
        .view()
        .permuted_axes([0, 2, 1])
        .as_standard_layout()
        .into_owned();
    let (n_, s_) = (n as i64, size as i64);
    let stack = Stack::from_layout(
        stored.as_ptr() as u64,
        &[n_, s_, s_, 1],
        Some(&[s_ * s_, 1, s_, 12345]),
        2,
    )
    .unwrap();
    for op in [Operation::ShiftAndSum, Operation::ReassemblePosition] {
        let reference = match op {
            Operation::ShiftAndSum => plan.shift_and_sum_reference(patches.view()),
            Operation::ReassemblePosition => plan.reassemble_position_reference(patches.view()),
        }
        .unwrap();
        // SAFETY: `stack` describes `stored` (n·N·N complex pixels, alive for the call).
        let got: Array2<Complex32> =
            unsafe { ptychostitch_kernel_emu::stitch_stack(&plan, op, stack) }.unwrap();
        assert_eq!(bits(&got), bits(&reference), "{op:?}");
    }
    // A stack that is not the plan's is refused, not read.
    let mut short = stack;
    short.count -= 1;
    // SAFETY: refused before anything is read.
    let refused = unsafe {
        ptychostitch_kernel_emu::stitch_stack::<Complex32>(&plan, Operation::ShiftAndSum, short)
    };
    assert!(refused.is_err());
}
