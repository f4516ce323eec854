//! The backward kernels on one GPU, for host arrays ([`GpuPlan::vjp`]): copies in, the device
//! composition ([`GpuPlan::enqueue_vjp`]), copies out.

#[allow(unused_imports)]
use super::*;

impl GpuPlan {
    /// The vector–Jacobian product of `operation` on the GPU, for host arrays (`output`: the
    /// forward's result, needed for `reassemble_position`'s offsets; recomputed on the GPU when
    /// `None`): copies in, runs [`compose::reassembly_vjp`] (quotient, patch pixels, offset sums,
    /// the offsets' fold; no atomics), copies out. Bit-identical to [`Plan::shift_and_sum_vjp`] /
    /// [`Plan::reassemble_position_vjp`] (NaN payloads are the GPU's own), the same from run to
    /// run.
    pub fn vjp<T: Sample, D: Dimension>(
        &self,
        operation: Operation,
        patches: ArrayView<'_, T, D>,
        output: Option<ndarray::ArrayView2<'_, T>>,
        cotangent: ndarray::ArrayView2<'_, T>,
        wrt: Wrt,
    ) -> Result<Gradients<T>> {
        let g = &*self.geometry;
        let (side, n, l, count) = (g.side(), g.patch_size(), T::LANES, g.len());
        let cot_host = canvas_lanes(side, "cotangent", cotangent)?;
        let out_host = output
            .map(|o| canvas_lanes(side, "output", o))
            .transpose()?;
        let _keep = KeepCurrent::new();
        let stream = &self.stream;
        let resident = self.upload(patches)?;
        let cot = stream.clone_htod(&*cot_host).map_err(driver)?;
        let out = out_host
            .map(|o| stream.clone_htod(&*o).map_err(driver))
            .transpose()?;
        let mut patch_grad = zeros::<f32>(stream, count * n * n * l)?;
        let mut offsets = zeros::<f64>(stream, count * 2)?;
        {
            let (cot_at, _c) = cot.device_ptr(stream);
            let out_at = out.as_ref().map(|o| o.device_ptr(stream));
            let (grad_at, _g) = patch_grad.device_ptr_mut(stream);
            let (off_at, _o) = offsets.device_ptr_mut(stream);
            let io = compose::ReassemblyVjp {
                stack: resident.stack(),
                cot: cot_at,
                output: out_at.as_ref().map_or(0, |(at, _)| *at),
                patch_grad: if wrt.patches { grad_at } else { 0 },
                offsets_grad: if wrt.offsets { off_at } else { 0 },
            };
            // SAFETY: the stack is `resident`'s, the canvases S·S·lanes f32, the patches'
            // cotangent n·N·N·lanes f32, the offsets' n·2 f64, all on this plan's GPU and alive
            // until the copies back below, which follow the work on the same stream.
            unsafe {
                self.enqueue_vjp(
                    &GpuStream {
                        stream: Arc::clone(stream),
                    },
                    operation,
                    io,
                )?
            };
        }
        let gradients =
            download_gradients(stream, wrt, (&patch_grad, (count, n, n)), (&offsets, count))?;
        self.synchronize()?;
        drop(resident);
        Ok(gradients)
    }
}
