//! The CUDA backend. Without a GPU (CI) the tests check that asking for one is a clear
//! `GpuUnavailable` error, never a crash, and say on stderr that the GPU runs were skipped and
//! why; with a GPU they run in full: golden cases and randomised scans, bit for bit against the
//! reference (NaN by position: a GPU's NaN payloads are its own), repeated runs identical.
#![cfg(feature = "cuda")]

mod common;

use common::{GOLDEN_CASES, assert_bit_identical, golden, random_patches, rng};
use ndarray::{Array2, Array3};
use ptychostitch::gpu::cuda;
use ptychostitch::{Complex32, Error, Operation, Plan, Wrt};
use rand::RngExt;
use std::io::Write;

/// The GPU's name, or `None` after saying on stderr (uncaptured) why the test is skipped. With
/// `PTYCHOSTITCH_REQUIRE_GPU=1` (`scripts/gpu_check.sh` sets it) no GPU fails the test instead:
/// a skip must never read as a pass where the GPU is the point.
fn gpu(test: &str) -> Option<String> {
    match cuda::available() {
        Ok(name) => Some(name),
        Err(e) if std::env::var_os("PTYCHOSTITCH_REQUIRE_GPU").is_some_and(|v| v == "1") => {
            panic!("{test}: PTYCHOSTITCH_REQUIRE_GPU=1 but no GPU can be used ({e})")
        }
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

#[test]
fn large_host_stacks_go_through_pinned_staging() {
    if gpu("large_host_stacks_go_through_pinned_staging").is_none() {
        return;
    }
    let mut r = rng(0x57a6);
    // 1500 patches of 64×64 complex64 = 49 MB: over the staging threshold, in several chunks
    // of both buffers; also as a transposed (non-contiguous) view.
    let (n, size, crop) = (1500, 64, 20);
    assert!(n * size * size * 8 >= ptychostitch::gpu::staging::THRESHOLD_BYTES);
    let patches = random_patches(&mut r, n, size);
    let offsets = Array2::from_shape_fn((n, 2), |_| r.random_range(-50.0..=50.0));
    let plan = Plan::new(offsets.view(), size, crop).unwrap();
    let expected = plan.reassemble_position(patches.view()).unwrap();
    let gpu = plan.gpu().unwrap();
    let got = gpu
        .run(Operation::ReassemblePosition, patches.view())
        .unwrap();
    assert_bit_identical(&got, &expected, "staged");
    let transposed = patches.view().permuted_axes([0, 2, 1]).to_owned();
    let back = transposed.view().permuted_axes([0, 2, 1]);
    let got = gpu.run(Operation::ReassemblePosition, back).unwrap();
    assert_bit_identical(&got, &expected, "staged from a strided view");
}

#[test]
fn device_memory_strided_on_a_borrowed_stream() {
    if gpu("device_memory_strided_on_a_borrowed_stream").is_none() {
        return;
    }
    let mut r = rng(0xde5e);
    let (n, size, crop) = (200, 32, 16);
    let patches = random_patches(&mut r, n, size);
    let offsets = Array2::from_shape_fn((n, 2), |_| r.random_range(-20.0..=20.0));
    let plan = Plan::new(offsets.view(), size, crop).unwrap();
    let gpu_plan = plan.gpu().unwrap();
    for op in [Operation::ShiftAndSum, Operation::ReassemblePosition] {
        let expected = match op {
            Operation::ShiftAndSum => plan.shift_and_sum_reference(patches.view()),
            Operation::ReassemblePosition => plan.reassemble_position_reference(patches.view()),
        }
        .unwrap();
        // The stack as uploaded, and its transpose described by swapped strides.
        let resident = gpu_plan.upload(patches.view()).unwrap();
        let transposed = patches.view().permuted_axes([0, 2, 1]).to_owned();
        let resident_t = gpu_plan.upload(transposed.view()).unwrap();
        let mut swapped = resident_t.stack();
        swapped.strides = [swapped.strides[0], swapped.strides[2], swapped.strides[1]];
        // SAFETY: the handle 0 is the legacy default stream, always alive.
        let stream = unsafe { gpu_plan.gpu().borrow_stream(0) };
        for (stack, what) in [(resident.stack(), "contiguous"), (swapped, "strided")] {
            let canvas = gpu_plan.alloc_canvas(2, &stream).unwrap();
            // SAFETY: `stack` describes the resident stacks, alive to the end of the loop, and
            // `canvas` is this plan's side with two lanes.
            unsafe { gpu_plan.enqueue(&stream, op, stack, canvas.address()) }.unwrap();
            let got = canvas.to_host::<Complex32>().unwrap();
            assert_bit_identical(&got, &expected, &format!("{op:?}, {what}, device memory"));
        }
        // A stack that is not the plan's is refused before anything runs.
        let mut wrong = resident.stack();
        wrong.count -= 1;
        let canvas = gpu_plan.alloc_canvas(2, &stream).unwrap();
        // SAFETY: refused before launch: nothing is read or written.
        let refused = unsafe { gpu_plan.enqueue(&stream, op, wrong, canvas.address()) };
        assert!(matches!(refused, Err(Error::CountMismatch { .. })));
    }
}

/// Plans dropped right after queuing their kernel on a non-blocking stream (what the Python free
/// functions do on torch's stream): each plan's tables are freed only after its kernel, so the
/// next plan's tables, allocated at once, cannot overwrite them under it. Every canvas exact.
#[test]
fn plans_dropped_under_a_running_kernel_free_their_tables_after_it() {
    if gpu("plans_dropped_under_a_running_kernel_free_their_tables_after_it").is_none() {
        return;
    }
    let mut r = rng(0x0dd5);
    let (n, size, crop) = (3000, 32, 16);
    let patches = random_patches(&mut r, n, size);
    let first = Plan::new(
        Array2::from_shape_fn((n, 2), |_| r.random_range(-40.0..=40.0)).view(),
        size,
        crop,
    )
    .unwrap();
    let uploader = first.gpu().unwrap();
    let resident = uploader.upload(patches.view()).unwrap();
    uploader.synchronize().unwrap();
    let stream = uploader.gpu().new_stream().unwrap();
    let mut queued = Vec::new();
    for _ in 0..30 {
        let offsets = Array2::from_shape_fn((n, 2), |_| r.random_range(-40.0..=40.0));
        let plan = Plan::new(offsets.view(), size, crop).unwrap();
        let gpu_plan = plan.gpu().unwrap();
        let canvas = gpu_plan.alloc_canvas(2, &stream).unwrap();
        // SAFETY: the resident stack (alive to the end of the test) is this plan's count and
        // size; `canvas` is its side with two lanes.
        unsafe {
            gpu_plan.enqueue(
                &stream,
                Operation::ReassemblePosition,
                resident.stack(),
                canvas.address(),
            )
        }
        .unwrap();
        drop(gpu_plan);
        queued.push((plan, canvas));
    }
    stream.synchronize().unwrap();
    for (k, (plan, canvas)) in queued.iter().enumerate() {
        let expected = plan.reassemble_position_reference(patches.view()).unwrap();
        let got = canvas.to_host::<Complex32>().unwrap();
        assert_bit_identical(
            &got,
            &expected,
            &format!("plan {k}, dropped under its kernel"),
        );
    }
}

/// The backward kernels on the GPU against the library's gradients: patches' cotangent bit for
/// bit (NaN by position), offsets' too, and the same from run to run.
#[test]
fn gradients_on_the_gpu() {
    if gpu("gradients_on_the_gpu").is_none() {
        return;
    }
    let mut r = rng(404);
    let mut cases: Vec<(String, Plan, Array3<Complex32>)> = GOLDEN_CASES
        .iter()
        .map(|name| {
            let case = golden(name);
            let plan = Plan::new(case.offsets.view(), case.obj.dim().1, case.m).unwrap();
            (name.to_string(), plan, case.obj)
        })
        .collect();
    for (n, size, crop) in [(300, 32, 20), (2000, 64, 20)] {
        let patches = random_patches(&mut r, n, size);
        let cols = (n as f64).sqrt().ceil() as usize;
        let offsets = common::offsets_from(n, |k| {
            [
                (k % cols) as f64 * 3.7 + r.random_range(-0.5..0.5),
                (k / cols) as f64 * 3.7 + r.random_range(-0.5..0.5),
            ]
        });
        cases.push((
            format!("grid n={n}"),
            Plan::new(offsets.view(), size, crop).unwrap(),
            patches,
        ));
    }
    for (what, plan, patches) in cases {
        let side = plan.canvas_shape().0;
        let cot = Array2::from_shape_simple_fn((side, side), || {
            Complex32::new(r.random_range(-1.0..1.0), r.random_range(-1.0..1.0))
        });
        let gpu = plan.gpu().unwrap();
        for op in [Operation::ShiftAndSum, Operation::ReassemblePosition] {
            let out = match op {
                Operation::ShiftAndSum => plan.shift_and_sum(patches.view()).unwrap(),
                Operation::ReassemblePosition => plan.reassemble_position(patches.view()).unwrap(),
            };
            let cpu = match op {
                Operation::ShiftAndSum => {
                    plan.shift_and_sum_vjp(patches.view(), cot.view(), Wrt::ALL)
                }
                Operation::ReassemblePosition => plan.reassemble_position_vjp(
                    patches.view(),
                    Some(out.view()),
                    cot.view(),
                    Wrt::ALL,
                ),
            }
            .unwrap();
            let first = gpu
                .vjp(op, patches.view(), Some(out.view()), cot.view(), Wrt::ALL)
                .unwrap();
            let again = gpu
                .vjp(op, patches.view(), None, cot.view(), Wrt::ALL)
                .unwrap();
            for got in [&first, &again] {
                let (a, b) = (got.patches.as_ref().unwrap(), cpu.patches.as_ref().unwrap());
                for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                    let same =
                        |p: f32, q: f32| p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan());
                    assert!(
                        same(x.re, y.re) && same(x.im, y.im),
                        "{what} {op:?}: patch pixel {i}: {x} vs {y}"
                    );
                }
                let (a, b) = (got.offsets.as_ref().unwrap(), cpu.offsets.as_ref().unwrap());
                for (x, y) in a.iter().zip(b.iter()) {
                    assert!(
                        x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                        "{what} {op:?}: {x} vs {y}"
                    );
                }
            }
        }
    }
}

/// The training path's operations on the GPU (`Gpu::extract`, `Gpu::extract_vjp`,
/// `Gpu::reassemble_regions`, `Gpu::region_vjp`), host arrays in and out, against the references: bit for bit
/// (NaN by position), both conventions, complex and real.
#[test]
fn extraction_and_regions_on_the_gpu() {
    use ptychostitch::Extraction;
    use ptychostitch::region::{Convention, Region, RegionOptions};
    if gpu("extraction_and_regions_on_the_gpu").is_none() {
        return;
    }
    let device = cuda::Gpu::get().unwrap();
    let mut r = rng(61);
    let nan_bits = |v: &[f32]| -> Vec<u32> {
        v.iter()
            .map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() })
            .collect()
    };
    let lanes = |a: &Array3<Complex32>| -> Vec<f32> {
        let v: Vec<Complex32> = a.iter().copied().collect();
        bytemuck::cast_slice::<Complex32, f32>(&v).to_vec()
    };
    for convention in [Convention::TensorFlow, Convention::Torch] {
        let offsets = Array2::from_shape_fn((8, 2), |_| r.random_range(-5.0..5.0));
        let ext = Extraction::new_in(convention, offsets.view(), 4, 41, 17).unwrap();
        let images = random_patches(&mut r, 2, 41);
        let gpu_out = device.extract(&ext, images.view()).unwrap();
        let cpu_out = ext.extract_reference(images.view()).unwrap();
        assert_eq!(
            nan_bits(&lanes(&gpu_out)),
            nan_bits(&lanes(&cpu_out)),
            "{convention:?} extract"
        );
        let cot = random_patches(&mut r, 8, 17);
        let g = device
            .extract_vjp(&ext, images.view(), cot.view(), Wrt::ALL)
            .unwrap();
        let want = ext
            .extract_vjp_reference(images.view(), cot.view(), Wrt::ALL)
            .unwrap();
        assert_eq!(
            nan_bits(&lanes(g.patches.as_ref().unwrap())),
            nan_bits(&lanes(want.patches.as_ref().unwrap())),
            "{convention:?} extract_vjp images"
        );
        assert_eq!(
            g.offsets, want.offsets,
            "{convention:?} extract_vjp offsets"
        );
        let opts = if convention == Convention::TensorFlow {
            RegionOptions::tensorflow()
        } else {
            RegionOptions::torch_center_mask()
        };
        let positions = Array2::from_shape_fn((3 * 4, 2), |_| r.random_range(-4.0..4.0));
        let region = Region::new(positions.view(), 3, 16, 26, opts).unwrap();
        let patches = ndarray::Array4::from_shape_fn((3, 4, 16, 16), |_| {
            Complex32::new(r.random_range(-1.0..1.0), r.random_range(-1.0..1.0))
        });
        let weights =
            ndarray::Array4::from_shape_fn((1, 1, 16, 16), |_| r.random_range(0.0..2.0_f32));
        let gpu_regions = device
            .reassemble_regions(&region, patches.view(), weights.view())
            .unwrap();
        let cpu_regions = region
            .clone()
            .with_implementation(ptychostitch::Implementation::Reference)
            .reassemble(patches.view(), weights.view())
            .unwrap();
        assert_eq!(
            nan_bits(&lanes(&gpu_regions)),
            nan_bits(&lanes(&cpu_regions)),
            "{convention:?} regions"
        );
        let cot = random_patches(&mut r, 3, 26);
        let (gpu_dx, gpu_dpos) = device
            .region_vjp(&region, patches.view(), weights.view(), cot.view())
            .unwrap();
        let want = region
            .clone()
            .with_implementation(ptychostitch::Implementation::Reference)
            .vjp(
                patches.view(),
                weights.view(),
                None,
                cot.view(),
                ptychostitch::region::RegionWrt {
                    patches: true,
                    positions: true,
                    weights: false,
                },
            )
            .unwrap();
        let flat = |a: &ndarray::Array4<Complex32>| -> Vec<f32> {
            let v: Vec<Complex32> = a.iter().copied().collect();
            bytemuck::cast_slice::<Complex32, f32>(&v).to_vec()
        };
        assert_eq!(
            nan_bits(&flat(&gpu_dx)),
            nan_bits(&flat(want.patches.as_ref().unwrap())),
            "{convention:?} region_vjp patches"
        );
        assert_eq!(
            Some(gpu_dpos),
            want.positions,
            "{convention:?} region_vjp positions"
        );
    }
}

/// Beyond gridDim.z's 65,535 (issue 34, item 1): a reassembly backward of 70,000 patches and
/// an extraction of B·C = 70,000 patches with its backward launch (the planes folded into
/// gridDim.x) and give the CPU's bits. The emulator runs the same grids in CI
/// (`crates/ptychostitch-kernel-emu/tests/limits.rs`); only hardware shows the driver takes them.
#[test]
fn seventy_thousand_planes_launch_on_the_gpu() {
    if gpu("seventy_thousand_planes_launch_on_the_gpu").is_none() {
        return;
    }
    let mut r = rng(34);
    let n = 70_000;
    let offsets = Array2::from_shape_fn((n, 2), |_| r.random_range(-20.0..20.0));
    let plan = Plan::new(offsets.view(), 16, 8).unwrap();
    let patches = random_patches(&mut r, n, 16);
    let side = plan.canvas_shape().0;
    let cot = Array2::from_shape_fn((side, side), |(i, j)| {
        Complex32::new(i as f32 * 0.01 - 0.5, 0.02 * j as f32)
    });
    let cpu = plan
        .shift_and_sum_vjp(patches.view(), cot.view(), Wrt::ALL)
        .unwrap();
    let got = plan
        .gpu()
        .unwrap()
        .vjp(
            Operation::ShiftAndSum,
            patches.view(),
            None,
            cot.view(),
            Wrt::ALL,
        )
        .unwrap();
    assert_eq!(got.patches, cpu.patches, "n = 70,000 backward: patches");
    let (a, b) = (got.offsets.unwrap(), cpu.offsets.unwrap());
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "n = 70,000 backward: offsets"
    );

    let (images, per, image_side, size) = (n / 4, 4, 24, 16);
    let offsets = Array2::from_shape_fn((images * per, 2), |_| r.random_range(-3.0..3.0));
    let ext = ptychostitch::Extraction::new(offsets.view(), per, image_side, size).unwrap();
    let imgs = random_patches(&mut r, images, image_side);
    let device = cuda::Gpu::get().unwrap();
    assert_eq!(
        device.extract(&ext, imgs.view()).unwrap(),
        ext.extract(imgs.view()).unwrap()
    );
    let cot = random_patches(&mut r, images * per, size);
    let cpu = ext.extract_vjp(imgs.view(), cot.view(), Wrt::ALL).unwrap();
    let got = device
        .extract_vjp(&ext, imgs.view(), cot.view(), Wrt::ALL)
        .unwrap();
    assert_eq!(
        got.patches, cpu.patches,
        "B·C = 70,000 extraction backward: images"
    );
    let (a, b) = (got.offsets.unwrap(), cpu.offsets.unwrap());
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "B·C = 70,000: offsets"
    );
}

/// Issue 34, item 5: every entry leaves the calling thread's current CUDA context as it found
/// it (the CUDA runtime's current device is that context's: torch's `current_device` must not
/// move under it). A fresh thread has none, and keeps none after a plan's GPU calls.
#[test]
fn calls_leave_the_threads_context_as_they_found_it() {
    if gpu("calls_leave_the_threads_context_as_they_found_it").is_none() {
        return;
    }
    std::thread::spawn(|| {
        use cudarc::driver::result::ctx;
        let mut r = rng(5);
        let offsets = Array2::from_shape_fn((64, 2), |_| r.random_range(-10.0..10.0));
        let plan = Plan::new(offsets.view(), 16, 8).unwrap();
        let patches = random_patches(&mut r, 64, 16);
        assert_eq!(ctx::get_current().unwrap(), None, "a fresh thread");
        let gpu = plan.gpu().unwrap();
        assert_eq!(ctx::get_current().unwrap(), None, "after GpuPlan");
        gpu.run(Operation::ShiftAndSum, patches.view()).unwrap();
        assert_eq!(ctx::get_current().unwrap(), None, "after run");
        let mut resident = gpu.upload(patches.view()).unwrap();
        assert_eq!(ctx::get_current().unwrap(), None, "after upload");
        gpu.run_resident(Operation::ReassemblePosition, &mut resident)
            .unwrap();
        assert_eq!(ctx::get_current().unwrap(), None, "after run_resident");
        let _: Array2<Complex32> = gpu.download(&mut resident).unwrap();
        assert_eq!(ctx::get_current().unwrap(), None, "after download");
    })
    .join()
    .unwrap();
}

/// Issue 34, item 3: a plan's tables are freed with its own context bound, whatever is current
/// on the dropping thread. Dropped on a thread with no context, cudarc's free used to fail and
/// keep the failure for the context's next call; now the next call succeeds and the thread is
/// left with no context.
#[test]
fn a_plan_dropped_on_a_thread_without_a_context_frees_cleanly() {
    if gpu("a_plan_dropped_on_a_thread_without_a_context_frees_cleanly").is_none() {
        return;
    }
    let mut r = rng(6);
    let offsets = Array2::from_shape_fn((64, 2), |_| r.random_range(-10.0..10.0));
    let plan = Plan::new(offsets.view(), 16, 8).unwrap();
    let patches = random_patches(&mut r, 64, 16);
    let want = plan.shift_and_sum(patches.view()).unwrap();
    let made = plan.gpu().unwrap();
    made.run(Operation::ShiftAndSum, patches.view()).unwrap();
    std::thread::spawn(move || {
        use cudarc::driver::result::ctx;
        assert_eq!(ctx::get_current().unwrap(), None);
        drop(made);
        assert_eq!(
            ctx::get_current().unwrap(),
            None,
            "the drop left a context bound"
        );
    })
    .join()
    .unwrap();
    let again = plan.gpu().unwrap();
    let got = again.run(Operation::ShiftAndSum, patches.view()).unwrap();
    assert_bit_identical(&got, &want, "after a plan dropped on another thread");
}
