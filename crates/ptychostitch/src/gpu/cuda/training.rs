//! The training path's operations on one GPU, for host arrays: the extraction, its backward and
//! the region reassembly. Inputs are copied in, the kernels of `kernel.cu` run on the device's
//! legacy default stream, and the outputs are copied back. The emulator tests their arithmetic in
//! CI, bit for bit against the references (`crates/ptychostitch-kernel-emu/tests`);
//! `tests/gpu.rs` runs these functions where a GPU is lent. Python does not call them yet.

#[allow(unused_imports)]
use super::*;
use crate::Extraction;
use crate::extract::image_lanes;
use crate::gpu::launch::{ExtractArgs, RegionArgs, extract_offsets_from_sums};
use crate::region::Region;
use crate::sample::c_order_lanes;
use ndarray::{Array3, ArrayView4};

// SAFETY: `ExtractArgs` is `#[repr(C)]` plain data laid out exactly as `ExtractArgs` in
// kernel.cu (checked by `launch::tests`); CUDA copies it by value.
unsafe impl DeviceRepr for ExtractArgs {}

// SAFETY: `RegionArgs` is `#[repr(C)]` plain data laid out exactly as `RegionArgs` in kernel.cu
// (checked by `launch::tests`); CUDA copies it by value.
unsafe impl DeviceRepr for RegionArgs {}

impl Gpu {
    /// [`Extraction::extract`] on this GPU: the same bits (NaN payloads are the GPU's own).
    pub fn extract<T: Sample, D: Dimension>(
        &self,
        extraction: &Extraction,
        images: ArrayView<'_, T, D>,
    ) -> Result<Array3<T>> {
        let images = extraction.check_images(images)?;
        let _keep = KeepCurrent::new();
        let stream = self.context.default_stream();
        let (count, n, _) = extraction.output_shape();
        let shifts: Vec<f32> = extraction.shifts().iter().flatten().copied().collect();
        let device_images = stream.clone_htod(&*image_lanes(images)?).map_err(driver)?;
        let device_shifts = stream.clone_htod(&shifts).map_err(driver)?;
        let mut out = stream
            .alloc_zeros::<f32>((count * n * n * T::LANES).max(1))
            .map_err(driver)?;
        let mut args = ExtractArgs::new(extraction, T::LANES);
        let s = extraction.image_side() as i64;
        (args.stride_b, args.stride_r, args.stride_c) = (s * s, s, 1);
        {
            let (images_at, _i) = device_images.device_ptr(&stream);
            let (shifts_at, _s) = device_shifts.device_ptr(&stream);
            let (out_at, _o) = out.device_ptr_mut(&stream);
            (args.images, args.shifts, args.out) = (images_at, shifts_at, out_at);
            // SAFETY: the images hold B·S·S pixels in C order (the strides set above), the
            // shifts two f32 per patch, `out` count·N·N·lanes f32; all outlive the copy back.
            unsafe {
                self.launch_args(&stream, &self.extraction[0], &args, args.grid(), (8, 8, 1))?
            };
        }
        let host = stream.clone_dtoh(&out).map_err(driver)?;
        let values: Vec<T> = bytemuck::pod_collect_to_vec(&host[..count * n * n * T::LANES]);
        Array3::from_shape_vec((count, n, n), values).map_err(driver)
    }

    /// [`Extraction::extract_vjp`] on this GPU: the same bits.
    pub fn extract_vjp<T: Sample, D: Dimension>(
        &self,
        extraction: &Extraction,
        images: ArrayView<'_, T, D>,
        cotangent: ArrayView3<'_, T>,
        wrt: Wrt,
    ) -> Result<Gradients<T>> {
        let images = extraction.check_images(images)?;
        let cot = extraction.cotangent_lanes(cotangent)?;
        let count = extraction.shifts().len();
        let _keep = KeepCurrent::new();
        let stream = self.context.default_stream();
        let (b, s) = (images.dim().0, extraction.image_side());
        let shifts: Vec<f32> = extraction.shifts().iter().flatten().copied().collect();
        let device_images = stream.clone_htod(&*image_lanes(images)?).map_err(driver)?;
        let device_shifts = stream.clone_htod(&shifts).map_err(driver)?;
        let device_cot = stream.clone_htod(&*cot).map_err(driver)?;
        let mut image_grad = stream
            .alloc_zeros::<f32>((b * s * s * T::LANES).max(1))
            .map_err(driver)?;
        let mut sums = stream
            .alloc_zeros::<f64>((count * SHIFT_SUMS_PER_PATCH).max(1))
            .map_err(driver)?;
        let mut args = ExtractArgs::new(extraction, T::LANES);
        let side = s as i64;
        (args.stride_b, args.stride_r, args.stride_c) = (side * side, side, 1);
        {
            let (images_at, _i) = device_images.device_ptr(&stream);
            let (shifts_at, _s) = device_shifts.device_ptr(&stream);
            let (cot_at, _c) = device_cot.device_ptr(&stream);
            let (grad_at, _g) = image_grad.device_ptr_mut(&stream);
            let (sums_at, _u) = sums.device_ptr_mut(&stream);
            (args.images, args.shifts, args.cot) = (images_at, shifts_at, cot_at);
            (args.image_grad, args.shift_sums) = (grad_at, sums_at);
            // SAFETY: every buffer has the size the kernels read or write (images B·S·S,
            // cotangent count·N·N pixels, image_grad B·S·S·lanes f32, sums 16 f64 per patch)
            // and outlives the copies back.
            unsafe {
                if wrt.patches {
                    self.launch_args(
                        &stream,
                        &self.extraction[1],
                        &args,
                        args.image_grid(),
                        (8, 8, 1),
                    )?;
                }
                if wrt.offsets {
                    self.launch_args(
                        &stream,
                        &self.extraction[2],
                        &args,
                        (count as u32, 1, 1),
                        (8, 1, 1),
                    )?;
                }
            }
        }
        let patches = if wrt.patches {
            let host = stream.clone_dtoh(&image_grad).map_err(driver)?;
            let values: Vec<T> = bytemuck::pod_collect_to_vec(&host[..b * s * s * T::LANES]);
            Some(Array3::from_shape_vec((b, s, s), values).map_err(driver)?)
        } else {
            None
        };
        let offsets = if wrt.offsets {
            let host = stream.clone_dtoh(&sums).map_err(driver)?;
            Some(extract_offsets_from_sums(
                &host[..count * SHIFT_SUMS_PER_PATCH],
            ))
        } else {
            None
        };
        Ok(Gradients { patches, offsets })
    }

    /// [`Region::reassemble`] on this GPU: the sums kernel, the normalisation's whole-batch
    /// facts on the host from the denominators ([`Region::normalisation`]; one copy of `B·P·P`
    /// values), the division kernel. The same bits.
    pub fn reassemble_regions<T: Sample>(
        &self,
        region: &Region,
        patches: ArrayView4<'_, T>,
        weights: ArrayView4<'_, f32>,
    ) -> Result<Array3<T>> {
        let (b, p) = (region.samples(), region.side());
        let w = weights.dim();
        RegionArgs::check_inputs(region, patches.dim(), w)?;
        let _keep = KeepCurrent::new();
        let stream = self.context.default_stream();
        let l = T::LANES;
        let shifts: Vec<f32> = region.shifts().iter().flatten().copied().collect();
        let weight_values: Vec<f32> = weights.iter().copied().collect();
        let device_patches = stream
            .clone_htod(&*c_order_lanes(patches, || "a copy of the patches".into())?)
            .map_err(driver)?;
        let device_weights = stream.clone_htod(&weight_values).map_err(driver)?;
        let device_shifts = stream.clone_htod(&shifts).map_err(driver)?;
        let mut num = stream
            .alloc_zeros::<f32>((b * p * p * l).max(1))
            .map_err(driver)?;
        let mut den = stream
            .alloc_zeros::<f32>((b * p * p).max(1))
            .map_err(driver)?;
        let mut out = stream
            .alloc_zeros::<f32>((b * p * p * l).max(1))
            .map_err(driver)?;
        let mut args = RegionArgs::new(region, l, [w.0, w.1]);
        let (patches_at, _p) = device_patches.device_ptr(&stream);
        let (weights_at, _w) = device_weights.device_ptr(&stream);
        let (shifts_at, _s) = device_shifts.device_ptr(&stream);
        let (num_at, _n) = num.device_ptr_mut(&stream);
        let (den_at, _d) = den.device_ptr_mut(&stream);
        let (out_at, _o) = out.device_ptr_mut(&stream);
        (args.patches, args.weights, args.shifts) = (patches_at, weights_at, shifts_at);
        (args.num, args.den, args.out) = (num_at, den_at, out_at);
        // SAFETY: every buffer has the size the kernels read or write (patches B·C·N·N pixels,
        // weights w0·w1·N·N, two shifts per patch, num and out B·P·P·lanes, den B·P·P) and
        // outlives the synchronisation and the copies below.
        unsafe { self.launch_args(&stream, &self.region[0], &args, args.grid(), (8, 8, 1))? };
        drop((_n, _d, _o));
        let den_host = stream.clone_dtoh(&den).map_err(driver)?;
        let (limit, g) = region.normalisation(&den_host[..b * p * p]);
        args.normalise_by(limit, g)?;
        // SAFETY: as above.
        unsafe { self.launch_args(&stream, &self.region[1], &args, args.grid(), (8, 8, 1))? };
        let host = stream.clone_dtoh(&out).map_err(driver)?;
        let values: Vec<T> = bytemuck::pod_collect_to_vec(&host[..b * p * p * l]);
        Array3::from_shape_vec((b, p, p), values).map_err(driver)
    }
}
