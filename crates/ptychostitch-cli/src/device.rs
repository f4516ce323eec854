//! `--device cpu|cuda`: where the fast path runs. The reference always runs on the CPU.

use anyhow::Result;
use ndarray::{Array2, ArrayView3};
use ptychostitch::{Complex32, Operation, Plan};

/// Where to run the fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Device {
    /// The CPU (all cores, or --threads).
    #[default]
    Cpu,
    /// NVIDIA GPU 0 through CUDA (driver and NVRTC loaded at run time; the patch stack must fit
    /// in GPU memory).
    Cuda,
}

/// Checks that `device` can be used, before any input is read: without a GPU, `--device cuda`
/// is the `GpuUnavailable` error at once rather than after loading the stack.
pub fn check(device: Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        #[cfg(feature = "cuda")]
        Device::Cuda => Ok(ptychostitch::gpu::cuda::available().map(|_| ())?),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => Err(ptychostitch::Error::GpuUnavailable {
            reason: "this build has no CUDA support (build with --features cuda)".into(),
        }
        .into()),
    }
}

/// `operation` of `patches` on `device`.
pub fn stitch(
    plan: &Plan,
    operation: Operation,
    patches: ArrayView3<'_, Complex32>,
    device: Device,
) -> Result<Array2<Complex32>> {
    Ok(match device {
        Device::Cpu => match operation {
            Operation::ShiftAndSum => plan.shift_and_sum(patches)?,
            Operation::ReassemblePosition => plan.reassemble_position(patches)?,
        },
        Device::Cuda => gpu_stitch(plan, operation, patches)?,
    })
}

#[cfg(feature = "cuda")]
fn gpu_stitch(
    plan: &Plan,
    operation: Operation,
    patches: ArrayView3<'_, Complex32>,
) -> ptychostitch::Result<Array2<Complex32>> {
    plan.gpu()?.run(operation, patches)
}

#[cfg(not(feature = "cuda"))]
fn gpu_stitch(
    _: &Plan,
    _: Operation,
    _: ArrayView3<'_, Complex32>,
) -> ptychostitch::Result<Array2<Complex32>> {
    Err(ptychostitch::Error::GpuUnavailable {
        reason: "this build has no CUDA support (build with --features cuda)".into(),
    })
}

/// Device and device-only medians of `runs` GPU runs (after a warm-up): (host→host seconds,
/// resident seconds).
#[cfg(feature = "cuda")]
pub fn gpu_times(
    plan: &Plan,
    operation: Operation,
    patches: ArrayView3<'_, Complex32>,
    runs: usize,
) -> Result<(f64, f64)> {
    let gpu = plan.gpu()?;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut resident = gpu.upload(patches)?;
    gpu.run_resident(operation, &mut resident)?;
    let mut device = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = std::time::Instant::now();
        gpu.run_resident(operation, &mut resident)?;
        device.push(t.elapsed().as_secs_f64());
    }
    let mut end_to_end = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = std::time::Instant::now();
        std::hint::black_box(gpu.run(operation, patches)?);
        end_to_end.push(t.elapsed().as_secs_f64());
    }
    Ok((median(end_to_end), median(device)))
}

#[cfg(not(feature = "cuda"))]
pub fn gpu_times(
    plan: &Plan,
    operation: Operation,
    patches: ArrayView3<'_, Complex32>,
    _: usize,
) -> Result<(f64, f64)> {
    // Without CUDA support this is the GpuUnavailable error.
    gpu_stitch(plan, operation, patches)?;
    Ok((f64::NAN, f64::NAN))
}
