//! The backward kernels on one GPU, for host arrays ([`GpuPlan::vjp`]).

#[allow(unused_imports)]
use super::*;

impl GpuPlan {
    /// The vector–Jacobian product of `operation` on the GPU, for host arrays (`output`: the
    /// forward's result, needed for `reassemble_position`'s offsets; recomputed on the GPU when
    /// `None`): copies in, runs the backward kernels (quotient, patch pixels, offset sums; no
    /// atomics), copies out, re-centres the offsets on the host. Bit-identical to
    /// [`Plan::shift_and_sum_vjp`] / [`Plan::reassemble_position_vjp`] (NaN payloads are the
    /// GPU's own), the same from run to run.
    pub fn vjp<T: Sample, D: Dimension>(
        &self,
        operation: Operation,
        patches: ArrayView<'_, T, D>,
        output: Option<ndarray::ArrayView2<'_, T>>,
        cotangent: ndarray::ArrayView2<'_, T>,
        wrt: Wrt,
    ) -> Result<Gradients<T>> {
        let g = &*self.geometry;
        let (side, n, l) = (g.side(), g.patch_size(), T::LANES);
        let cot_host = canvas_lanes(side, "cotangent", cotangent)?;
        let _keep = KeepCurrent::new();
        let stream = &self.stream;
        let resident = self.upload(patches)?;
        let cot = stream.clone_htod(&*cot_host).map_err(driver)?;
        let reassemble = operation == Operation::ReassemblePosition;
        // Weights (and, when not given, the forward's output) from the forward kernel.
        let mut weights = stream.alloc_zeros::<f32>(side * side).map_err(driver)?;
        let out = match output {
            Some(o) => stream
                .clone_htod(&*canvas_lanes(side, "output", o)?)
                .map_err(driver)?,
            None => stream.alloc_zeros::<f32>(side * side * l).map_err(driver)?,
        };
        let mut out = out;
        if reassemble {
            let stack = resident.stack();
            let (w_at, _w) = weights.device_ptr_mut(stream);
            let mut scratch = stream.alloc_zeros::<f32>(side * side * l).map_err(driver)?;
            let target = if output.is_none() {
                &mut out
            } else {
                &mut scratch
            };
            let (image_at, _i) = target.device_ptr_mut(stream);
            // SAFETY: the stack is `resident`'s, the canvas and weights hold S·S·lanes and S·S
            // f32; all outlive the synchronisation at the end of this function.
            unsafe { self.launch(stream, Operation::ReassemblePosition, stack, image_at, w_at)? };
        }
        let (shifts_at, _h) = self.shifts.device_ptr(stream);
        let (fp_at, _f) = self.footprints.device_ptr(stream);
        let stack = resident.stack();
        let mut args = VjpArgs::new(g, l);
        args.patches = stack.address;
        args.stride_n = stack.strides[0];
        args.stride_r = stack.strides[1];
        args.stride_c = stack.strides[2];
        args.shifts = shifts_at;
        args.footprints = fp_at;
        let (cot_at, _c) = cot.device_ptr(stream);
        args.cot = cot_at;
        let mut cot_image = stream.alloc_zeros::<f32>(side * side * l).map_err(driver)?;
        let mut cot_weights = stream.alloc_zeros::<f32>(side * side).map_err(driver)?;
        if reassemble {
            let mut q = args;
            let (o_at, _o) = out.device_ptr(stream);
            let (w_at, _w) = weights.device_ptr(stream);
            let (ci_at, _ci) = cot_image.device_ptr_mut(stream);
            let (cw_at, _cw) = cot_weights.device_ptr_mut(stream);
            (q.output, q.weights, q.cot_image, q.cot_weights) = (o_at, w_at, ci_at, cw_at);
            let (gx, gy) = q.canvas_grid();
            // SAFETY: every address is a live device buffer of the size the kernel reads or
            // writes; they outlive the synchronisation below.
            unsafe {
                self.launch_vjp(
                    stream,
                    VjpKernel::Quotient,
                    q,
                    (gx, gy, 1),
                    (BLOCK, BLOCK, 1),
                )?
            };
            args.cot = ci_at;
        }
        let mut patch_grad = if wrt.patches {
            Some(
                stream
                    .alloc_zeros::<f32>(g.len() * n * n * l)
                    .map_err(driver)?,
            )
        } else {
            None
        };
        if let Some(buffer) = patch_grad.as_mut() {
            let mut a = args;
            let (at, _p) = buffer.device_ptr_mut(stream);
            // (the guard records the kernel on the buffer for the copy back)
            a.patch_grad = at;
            // SAFETY: as above; `buffer` holds n·N·N·lanes f32.
            unsafe {
                self.launch_vjp(
                    stream,
                    VjpKernel::Patches,
                    a,
                    a.patch_grid(),
                    (BLOCK, BLOCK, 1),
                )?
            };
        }
        let mut sums = Vec::new();
        if wrt.offsets {
            let passes: &[bool] = if reassemble { &[false, true] } else { &[false] };
            for &ones in passes {
                let mut buffer = stream
                    .alloc_zeros::<f64>(g.len() * SHIFT_SUMS_PER_PATCH)
                    .map_err(driver)?;
                let mut a = args;
                if ones {
                    let (cw_at, _cw) = cot_weights.device_ptr(stream);
                    (a.patches, a.lanes, a.cot) = (0, 1, cw_at);
                }
                {
                    let (at, _s) = buffer.device_ptr_mut(stream);
                    a.shift_sums = at;
                    // SAFETY: as above; `buffer` holds SHIFT_SUMS_PER_PATCH f64 per patch.
                    unsafe {
                        self.launch_vjp(
                            stream,
                            VjpKernel::Shifts,
                            a,
                            (g.len() as u32, 1, 1),
                            (8, 1, 1),
                        )?
                    };
                }
                sums.push(buffer);
            }
        }
        let patches = match patch_grad {
            Some(buffer) => {
                let host = stream.clone_dtoh(&buffer).map_err(driver)?;
                let values: Vec<T> = bytemuck::pod_collect_to_vec(&host);
                Some(ndarray::Array3::from_shape_vec((g.len(), n, n), values).map_err(driver)?)
            }
            None => None,
        };
        let offsets = if wrt.offsets {
            let host: Vec<Vec<f64>> = sums
                .iter()
                .map(|b| stream.clone_dtoh(b).map_err(driver))
                .collect::<Result<_>>()?;
            Some(offsets_from_sums(&host[0], host.get(1).map(Vec::as_slice)))
        } else {
            None
        };
        self.synchronize()?;
        drop(resident);
        Ok(Gradients { patches, offsets })
    }

    /// Launches backward kernel `which` with `args` on `stream`.
    ///
    /// # Safety
    /// Every address in `args` must be a live buffer of this GPU of the size the kernel reads
    /// or writes, until `stream` has run it.
    unsafe fn launch_vjp(
        &self,
        stream: &Arc<CudaStream>,
        which: VjpKernel,
        args: VjpArgs,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
    ) -> Result<()> {
        // SAFETY: the addresses in `args` are valid per this function's contract.
        unsafe {
            self.gpu
                .launch_args(stream, &self.gpu.vjp[which as usize], &args, grid, block)
        }
    }
}
