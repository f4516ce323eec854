//! What callers hand in: offsets in every layout PtychoPINN uses, scans that deserve a warning,
//! interrupts, and thread counts that must not leave threads behind.

mod common;

use common::{assert_bit_identical, random_patches, rng};
use ndarray::{Array2, ArrayD, IxDyn};
use ptychostitch::{Error, Interrupt, Plan, ScanWarning};
use rand::RngExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn positions(n: usize) -> Array2<f64> {
    let mut r = rng(11);
    Array2::from_shape_fn((n, 2), |_| r.random_range(-9.0..9.0))
}

#[test]
fn every_offset_layout_gives_the_same_bits() {
    let n = 23;
    let base = positions(n);
    let flat: Vec<f64> = base.iter().copied().collect();
    let patches = random_patches(&mut rng(3), n, 24);
    let expected = ptychostitch::reassemble_position(patches.view(), base.view(), 16).unwrap();
    for shape in [
        vec![n, 2],
        vec![n, 1, 1, 2],
        vec![n, 1, 2, 1],
        vec![n, 2, 1],
        vec![n, 1, 1, 1, 2],
    ] {
        let offsets = ArrayD::from_shape_vec(IxDyn(&shape), flat.clone()).unwrap();
        let got = ptychostitch::reassemble_position(patches.view(), offsets.view(), 16).unwrap();
        assert_bit_identical(&got, &expected, &format!("offsets {shape:?}"));
        let plan = Plan::new(offsets.view(), 24, 16).unwrap();
        assert_bit_identical(
            &plan.shift_and_sum(patches.view()).unwrap(),
            &ptychostitch::shift_and_sum(patches.view(), base.view(), 16).unwrap(),
            &format!("plan, offsets {shape:?}"),
        );
    }
    // A non-contiguous (n, 1, 2, 1) view: logical order, not memory order.
    let t = ArrayD::from_shape_vec(IxDyn(&[1, 2, n, 1]), {
        let mut v = Vec::new();
        for axis in 0..2 {
            v.extend(base.column(axis).iter().copied());
        }
        v
    })
    .unwrap();
    let view = t.view().permuted_axes(IxDyn(&[2, 0, 1, 3]));
    assert_eq!(view.shape(), &[n, 1, 2, 1]);
    let got = ptychostitch::reassemble_position(patches.view(), view, 16).unwrap();
    assert_bit_identical(&got, &expected, "strided (n, 1, 2, 1)");
    for bad in [vec![n, 3], vec![n], vec![n, 2, 2], vec![n, 1, 1, 3]] {
        let offsets = ArrayD::<f64>::zeros(IxDyn(&bad));
        let err = Plan::new(offsets.view(), 24, 16).unwrap_err();
        assert!(matches!(err, Error::OffsetShape { .. }), "{bad:?}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("(n, 2), (n, 1, 1, 2), (n, 1, 2, 1)"),
            "{text}"
        );
    }
}

#[test]
fn an_outlier_and_a_sub_pixel_scan_are_warned_about() {
    // Nine patches on a small grid, one far away: the canvas grows ~100×.
    let mut o = Array2::from_shape_fn((10, 2), |(k, axis)| {
        if axis == 0 {
            (k % 3) as f64 * 3.7
        } else {
            (k / 3) as f64 * 3.7
        }
    });
    o[[9, 0]] = 6000.0;
    let plan = Plan::new(o.view(), 64, 20).unwrap();
    let warnings = plan.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    match &warnings[0] {
        ScanWarning::Outlier {
            index,
            side,
            side_without,
            ..
        } => {
            assert_eq!(*index, 9);
            assert_eq!(*side, plan.canvas_shape().0);
            assert!(*side_without < 50, "{side_without}");
        }
        w => panic!("{w}"),
    }
    assert!(
        warnings[0]
            .to_string()
            .contains("patch 9 at [x, y] = [6000")
    );
    // The same scan without the outlier: no warning.
    let plan = Plan::new(o.slice(ndarray::s![..9, ..]), 64, 20).unwrap();
    assert!(plan.warnings().is_empty(), "{:?}", plan.warnings());
    // A spiral scan of 200 positions: no warning.
    let spiral = Array2::from_shape_fn((200, 2), |(k, axis)| {
        let (r, t) = (1.9 * (k as f64 + 0.5).sqrt(), k as f64 * 2.39996);
        if axis == 0 { r * t.cos() } else { r * t.sin() }
    });
    assert!(
        Plan::new(spiral.view(), 64, 20)
            .unwrap()
            .warnings()
            .is_empty()
    );
    // Positions in metres (a forgotten scale factor): all within a micrometre.
    let metres = spiral.mapv(|v| v * 1e-7);
    let warnings = Plan::new(metres.view(), 64, 20).unwrap().warnings();
    assert!(
        matches!(
            warnings.as_slice(),
            [ScanWarning::SubPixelSpan { n: 200, .. }]
        ),
        "{warnings:?}"
    );
    assert!(
        warnings[0]
            .to_string()
            .contains("divide positions in metres by the pixel size")
    );
}

#[test]
fn the_reference_stops_when_interrupted() {
    let o = positions(40);
    let patches = random_patches(&mut rng(5), 40, 32);
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let plan = Plan::new(o.view(), 32, 16)
        .unwrap()
        .with_interrupt(Interrupt::new(move || {
            seen.fetch_add(1, Ordering::Relaxed) >= 50
        }));
    let err = plan
        .reassemble_position_reference(patches.view())
        .unwrap_err();
    assert_eq!(err, Error::Interrupted);
    assert_eq!(
        calls.load(Ordering::Relaxed),
        51,
        "stopped at the first check that said so"
    );
    // The fast path is not affected, and an interrupt that never fires changes nothing.
    let calm = Plan::new(o.view(), 32, 16)
        .unwrap()
        .with_interrupt(Interrupt::new(|| false));
    assert_bit_identical(
        &calm.reassemble_position_reference(patches.view()).unwrap(),
        &plan.reassemble_position(patches.view()).unwrap(),
        "uninterrupted reference vs fast",
    );
}

#[cfg(target_os = "linux")]
fn threads_now() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[cfg(target_os = "linux")]
#[test]
fn any_sequence_of_thread_counts_leaves_no_threads_behind() {
    let o = positions(300);
    let patches = random_patches(&mut rng(9), 300, 32);
    let expected = ptychostitch::shift_and_sum(patches.view(), o.view(), 16).unwrap();
    // Start the global pool first, so that its threads are not counted as new.
    let _ = Plan::new(o.view(), 32, 16)
        .unwrap()
        .with_min_pixels_per_worker(0)
        .shift_and_sum(patches.view())
        .unwrap();
    let before = threads_now();
    for threads in 1..=64 {
        let plan = Plan::new(o.view(), 32, 16)
            .unwrap()
            .with_threads(threads)
            .with_min_pixels_per_worker(0);
        let got = plan.shift_and_sum(patches.view()).unwrap();
        assert_bit_identical(&got, &expected, &format!("{threads} threads"));
    }
    // Other tests of this binary run in parallel and may start threads of their own; 64 pools
    // would add hundreds.
    let after = threads_now();
    assert!(
        after <= before + 8,
        "threads: {before} before, {after} after"
    );
}
