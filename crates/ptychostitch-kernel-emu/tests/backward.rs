//! The CUDA backward kernels' source (patch, shift and quotient kernels), run on the CPU and
//! composed as the GPU driver composes them, against the library's gradients: bit for bit on
//! golden cases and randomised scans (fixed seeds), both operations, complex and real, strided
//! stacks, irregular column tables. NaN is compared by position.

#[path = "../../ptychostitch/tests/common/mod.rs"]
mod common;

use common::{GOLDEN_CASES, golden, offsets_from, random_patches, rng};
use ndarray::{Array2, s};
use ptychostitch::{Complex32, Gradients, Operation, Plan, Sample, Wrt};
use rand::RngExt;

fn lane_bits<T: Sample>(values: &[T]) -> Vec<u32> {
    bytemuck::cast_slice::<T, f32>(values)
        .iter()
        .map(|v| if v.is_nan() { u32::MAX } else { v.to_bits() })
        .collect()
}

#[track_caller]
fn assert_same<T: Sample>(gpu: &Gradients<T>, cpu: &Gradients<T>, what: &str) {
    let (a, b) = (gpu.patches.as_ref().unwrap(), cpu.patches.as_ref().unwrap());
    let (a, b) = (
        lane_bits(a.as_slice().unwrap()),
        lane_bits(b.as_slice().unwrap()),
    );
    if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!(
            "{what}: patch cotangent lane {i}: kernel {} vs library {}",
            f32::from_bits(a[i]),
            f32::from_bits(b[i])
        );
    }
    let (a, b) = (gpu.offsets.as_ref().unwrap(), cpu.offsets.as_ref().unwrap());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            "{what}: offset {i}: kernel {x} vs library {y}"
        );
    }
}

fn check<T: Sample>(
    what: &str,
    plan: &Plan,
    patches: ndarray::ArrayView3<'_, T>,
    cot: ndarray::ArrayView2<'_, T>,
) {
    let sum = plan.shift_and_sum(patches).unwrap();
    let cpu = plan.shift_and_sum_vjp(patches, cot, Wrt::ALL).unwrap();
    let gpu = ptychostitch_kernel_emu::vjp(
        plan,
        Operation::ShiftAndSum,
        patches,
        Some(sum.view()),
        cot,
        Wrt::ALL,
    )
    .unwrap();
    assert_same(&gpu, &cpu, &format!("{what}, shift_and_sum"));
    let out = plan.reassemble_position(patches).unwrap();
    let cpu = plan
        .reassemble_position_vjp(patches, Some(out.view()), cot, Wrt::ALL)
        .unwrap();
    let gpu = ptychostitch_kernel_emu::vjp(
        plan,
        Operation::ReassemblePosition,
        patches,
        Some(out.view()),
        cot,
        Wrt::ALL,
    )
    .unwrap();
    assert_same(&gpu, &cpu, &format!("{what}, reassemble_position"));
    // Without the forward's output the composition recomputes it on the device.
    let gpu = ptychostitch_kernel_emu::vjp(
        plan,
        Operation::ReassemblePosition,
        patches,
        None,
        cot,
        Wrt::ALL,
    )
    .unwrap();
    assert_same(
        &gpu,
        &cpu,
        &format!("{what}, reassemble_position, output recomputed"),
    );
}

fn random_cot(r: &mut rand_chacha::ChaCha8Rng, side: usize) -> Array2<Complex32> {
    Array2::from_shape_simple_fn((side, side), || {
        Complex32::new(r.random_range(-1.0..1.0), r.random_range(-1.0..1.0))
    })
}

#[test]
fn golden_cases() {
    let mut r = rng(17);
    for name in GOLDEN_CASES {
        let case = golden(name);
        let plan = Plan::new(case.offsets.view(), case.obj.dim().1, case.m).unwrap();
        let cot = random_cot(&mut r, plan.canvas_shape().0);
        check(name, &plan, case.obj.view(), cot.view());
    }
}

#[test]
fn random_scans_complex_real_and_strided() {
    let mut r = rng(0xbac);
    for (n, size, crop, spread) in [
        (1, 16, 8, 0.0),
        (7, 12, 7, 4.0),
        (40, 32, 11, 10.0),
        (60, 24, 20, 30.0),
        (5, 17, 17, 2.5),
    ] {
        let patches = random_patches(&mut r, n, size);
        let offsets = offsets_from(n, |_| {
            [
                r.random_range(-spread - 1e-9..spread + 1e-9),
                r.random_range(-spread - 1e-9..spread + 1e-9),
            ]
        });
        let plan = Plan::new(offsets.view(), size, crop).unwrap();
        let cot = random_cot(&mut r, plan.canvas_shape().0);
        let what = format!("n={n} N={size} M={crop}");
        check(&what, &plan, patches.view(), cot.view());
        let real = patches.mapv(|c| c.re);
        check(
            &format!("{what} real"),
            &plan,
            real.view(),
            cot.mapv(|c| c.im).view(),
        );
        // A strided stack: every patch's rows and columns reversed.
        let flipped = patches.slice(s![.., ..;-1, ..;-1]).to_owned();
        let view = flipped.slice(s![.., ..;-1, ..;-1]);
        check(&format!("{what} strided"), &plan, view, cot.view());
    }
}

#[test]
fn rounding_edge_and_canvas_edge_shifts() {
    let tiny = 2.0_f64.powi(-23);
    let offsets = offsets_from(4, |k| {
        [
            [-tiny, tiny, 0.5 - tiny, -0.5 + tiny][k],
            [tiny, -tiny, 0.0, 0.25][k],
        ]
    });
    let mut r = rng(3);
    let plan = Plan::new(offsets.view(), 12, 8).unwrap();
    check(
        "rounding edge",
        &plan,
        random_patches(&mut r, 4, 12).view(),
        random_cot(&mut r, plan.canvas_shape().0).view(),
    );
    let edge = offsets_from(6, |k| {
        [
            if k % 2 == 0 { 4.0 } else { -4.0 },
            if k % 3 == 0 { -4.0 } else { 4.0 },
        ]
    });
    let plan = Plan::new(edge.view(), 16, 10).unwrap();
    check(
        "canvas edge",
        &plan,
        random_patches(&mut r, 6, 16).view(),
        random_cot(&mut r, plan.canvas_shape().0).view(),
    );
}
