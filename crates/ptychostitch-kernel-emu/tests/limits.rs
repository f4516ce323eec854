//! CUDA's launch limits (issue 34, item 1): gridDim.y and gridDim.z stop at 65,535, so a
//! kernel that put one patch (or image, or sample) per z failed to launch for n ≥ 65,536 on a
//! GPU while the emulator, looping over any grid, passed. The emulator now refuses what CUDA
//! refuses (`Launch::checked_shape`), and the kernels fold the planes into gridDim.x: these
//! calls beyond 65,535 planes run and give the library's bits.

#[path = "../../ptychostitch/tests/common/mod.rs"]
mod common;

use common::{offsets_from, random_patches, rng};
use ndarray::Array2;
use ptychostitch::gpu::compose::{ENTRY_POINTS, Launch};
use ptychostitch::gpu::launch::{ExtractArgs, check_grid};
use ptychostitch::{Complex32, Extraction, Operation, Plan, Wrt};
use rand::RngExt;

const BEYOND_Z: usize = 70_000;

#[test]
fn the_limits_are_cudas() {
    assert!(check_grid("k", (i32::MAX as u32, 65_535, 65_535), (32, 32, 1)).is_ok());
    let refused = [
        ((i32::MAX as u32 + 1, 1, 1), (8, 8, 1)),
        ((1, 65_536, 1), (8, 8, 1)),
        ((1, 1, 65_536), (8, 8, 1)),
        ((1, 1, 1), (64, 32, 1)),
        ((1, 1, 1), (1, 1, 65)),
        ((1, 1, 1), (1025, 1, 1)),
    ];
    for (grid, block) in refused {
        let e = check_grid("ptychostitch_patch_vjp", grid, block).unwrap_err();
        assert!(e.to_string().contains("beyond CUDA's limits"), "{e}");
    }
}

#[test]
fn every_plane_grid_keeps_y_and_z_within_the_limits() {
    // One extraction of 70,000 patches: its kernels' grids fold the patches into x.
    let mut args = ExtractArgs {
        count: BEYOND_Z as i32,
        per_image: 1,
        side: 20,
        patch_size: 12,
        ..ExtractArgs::default()
    };
    let (x, y, z) = args.grid();
    assert_eq!((x, y, z), (2 * BEYOND_Z as u32, 2, 1));
    args.side = 9;
    assert_eq!(args.image_grid(), (2 * BEYOND_Z as u32, 2, 1));
    for launch in [
        Launch::Extract(ptychostitch::gpu::compose::ExtractKernel::Forward, args),
        Launch::Extract(ptychostitch::gpu::compose::ExtractKernel::Images, args),
    ] {
        let (grid, _) = launch.checked_shape().unwrap();
        assert!(
            grid.1 <= 65_535 && grid.2 <= 65_535,
            "{}: {grid:?}",
            ENTRY_POINTS[launch.entry()]
        );
    }
}

#[test]
fn a_reassembly_backward_of_70000_patches_runs_with_the_librarys_bits() {
    let mut r = rng(34);
    let (n, size, crop) = (BEYOND_Z, 4, 2);
    let offsets = offsets_from(n, |_| {
        [r.random_range(-3.0..3.0), r.random_range(-3.0..3.0)]
    });
    let plan = Plan::new(offsets.view(), size, crop).unwrap();
    // Alike patches on a sloped cotangent: every patch's raw offset gradient is near the same
    // value, so the re-centring mean (a sum over 69 blocks, kernel::blocked_sum) shows in
    // every bit of the result.
    let patches =
        random_patches(&mut r, n, size).mapv(|v| Complex32::new(1.0 + 0.01 * v.re, 0.01 * v.im));
    let side = plan.canvas_shape().0;
    let cot = Array2::from_shape_fn((side, side), |(i, j)| {
        Complex32::new(i as f32 - 1.5, 0.25 * j as f32)
    });
    let cpu = plan
        .shift_and_sum_vjp(patches.view(), cot.view(), Wrt::ALL)
        .unwrap();
    let sum = plan.shift_and_sum(patches.view()).unwrap();
    let gpu = ptychostitch_kernel_emu::vjp(
        &plan,
        Operation::ShiftAndSum,
        patches.view(),
        Some(sum.view()),
        cot.view(),
        Wrt::ALL,
    )
    .unwrap();
    assert_eq!(gpu.patches, cpu.patches);
    let (a, b) = (gpu.offsets.unwrap(), cpu.offsets.unwrap());
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
fn an_extraction_of_70000_patches_and_its_backward_run_with_the_librarys_bits() {
    let mut r = rng(35);
    let (images, per, side, size) = (BEYOND_Z / 4, 4, 6, 4);
    let offsets = offsets_from(images * per, |_| {
        [r.random_range(-1.0..1.0), r.random_range(-1.0..1.0)]
    });
    let ext = Extraction::new(offsets.view(), per, side, size).unwrap();
    let imgs = random_patches(&mut r, images, side);
    assert_eq!(
        ptychostitch_kernel_emu::extract(&ext, imgs.view()).unwrap(),
        ext.extract(imgs.view()).unwrap()
    );
    let cot = random_patches(&mut r, images * per, size);
    let cpu = ext.extract_vjp(imgs.view(), cot.view(), Wrt::ALL).unwrap();
    let gpu =
        ptychostitch_kernel_emu::extract_vjp(&ext, imgs.view(), cot.view(), Wrt::ALL).unwrap();
    assert_eq!(gpu.patches, cpu.patches);
    let (a, b) = (gpu.offsets.unwrap(), cpu.offsets.unwrap());
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
}
