//! The training path's operations on one GPU: the extraction, its backward and the region
//! reassembly, for memory already on the device ([`Gpu::enqueue_extract`],
//! [`Gpu::enqueue_extract_vjp`], [`Gpu::enqueue_region`], on any stream) and for host arrays
//! (copied in, the same composition on the device's legacy default stream, copied back). The
//! compositions are [`compose`]'s, which the emulator runs in CI bit for bit against the
//! references (`crates/ptychostitch-kernel-emu/tests`); `tests/gpu.rs` runs these functions where
//! a GPU is lent.

#[allow(unused_imports)]
use super::*;
use crate::Extraction;
use crate::extract::image_lanes;
use crate::gpu::compose::{ExtractVjp, Images, RegionInputs, RegionVjp, Shifts};
use crate::gpu::launch::RegionArgs;
use crate::region::Region;
use crate::sample::c_order_lanes;
use ndarray::{Array3, ArrayView4};

impl Gpu {
    /// Queues [`Extraction::extract`] of `images` into `out` (`B·C·N·N·lanes` `f32`, C order) on
    /// `stream`. Returns once queued.
    ///
    /// # Safety
    /// `images` must describe memory of this GPU holding the `B` images its strides reach, `out`
    /// the patches; both alive and `out` unused by others until `stream` has run the work.
    pub unsafe fn enqueue_extract(
        &self,
        stream: &GpuStream,
        extraction: &Extraction,
        images: Images,
        shifts: Shifts,
        out: u64,
    ) -> Result<()> {
        let mut launcher = StreamLauncher::new(self, stream)?;
        // SAFETY: forwarded from this function's contract.
        unsafe { compose::extract(&mut launcher, extraction, images, shifts, out) }
    }

    /// Queues [`Extraction::extract_vjp`] on `stream`, into the buffers of `io`.
    ///
    /// # Safety
    /// As [`Gpu::enqueue_extract`], for every buffer of `io` ([`ExtractVjp`] names the sizes).
    pub unsafe fn enqueue_extract_vjp(
        &self,
        stream: &GpuStream,
        extraction: &Extraction,
        io: ExtractVjp,
    ) -> Result<()> {
        let mut launcher = StreamLauncher::new(self, stream)?;
        // SAFETY: forwarded from this function's contract.
        unsafe { compose::extract_vjp(&mut launcher, extraction, io) }
    }

    /// Queues [`Region::reassemble`] of `inputs` on `stream`, the regions into `out`
    /// (`B·P·P·lanes` `f32`).
    /// Waits for the denominators when the normalisation needs the whole batch's
    /// ([`Region::needs_batch_facts`]).
    ///
    /// # Safety
    /// The addresses must be memory of this GPU of those sizes, alive and `out` unused by others
    /// until `stream` has run the work.
    pub unsafe fn enqueue_region(
        &self,
        stream: &GpuStream,
        region: &Region,
        inputs: RegionInputs,
        out: u64,
    ) -> Result<()> {
        let mut launcher = StreamLauncher::new(self, stream)?;
        // SAFETY: forwarded from this function's contract.
        unsafe { compose::region(&mut launcher, region, inputs, out) }
    }

    /// Queues [`Region::support`] of the region's own support threshold on `stream`, the mask
    /// into `out` (`B·P·P` bytes, 0 or 1). Waits for the denominators when the threshold is
    /// relative to their maximum.
    ///
    /// # Safety
    /// As [`Gpu::enqueue_region`], with `out` `B·P·P` bytes.
    pub unsafe fn enqueue_region_support(
        &self,
        stream: &GpuStream,
        region: &Region,
        inputs: RegionInputs,
        out: u64,
    ) -> Result<()> {
        let mut launcher = StreamLauncher::new(self, stream)?;
        // SAFETY: forwarded from this function's contract.
        unsafe { compose::region_support(&mut launcher, region, inputs, out) }
    }

    /// Queues the vector–Jacobian product of [`Region::reassemble`] (patches and positions)
    /// on `stream`, into the buffers of `io` ([`compose::region_vjp`]).
    ///
    /// # Safety
    /// As [`Gpu::enqueue_region`], for every buffer of `io` ([`RegionVjp`] names the sizes).
    pub unsafe fn enqueue_region_vjp(
        &self,
        stream: &GpuStream,
        region: &Region,
        io: RegionVjp,
    ) -> Result<()> {
        let mut launcher = StreamLauncher::new(self, stream)?;
        // SAFETY: forwarded from this function's contract.
        unsafe { compose::region_vjp(&mut launcher, region, io) }
    }

    /// [`Region::vjp`] on this GPU for host arrays, the patches' `(B, C, N, N)` and positions'
    /// `(B·C, 2)` cotangents: the same bits.
    pub fn region_vjp<T: Sample>(
        &self,
        region: &Region,
        patches: ArrayView4<'_, T>,
        weights: ArrayView4<'_, f32>,
        cotangent: ArrayView3<'_, T>,
    ) -> Result<(ndarray::Array4<T>, Array2<f64>)> {
        let (b, c, n, l) = (
            region.samples(),
            region.channels(),
            region.patch_size(),
            T::LANES,
        );
        let w = weights.dim();
        RegionArgs::check_inputs(region, patches.dim(), w)?;
        let cot = region.cotangent_lanes(cotangent)?;
        let _keep = KeepCurrent::new();
        let on = self.default_stream();
        let stream = &on.stream;
        let weight_values: Vec<f32> = weights.iter().copied().collect();
        let copy = || "a copy of the patches".into();
        let device_patches = stream
            .clone_htod(&*c_order_lanes(patches, copy)?)
            .map_err(driver)?;
        let device_weights = stream.clone_htod(&weight_values).map_err(driver)?;
        let device_cot = stream.clone_htod(&*cot).map_err(driver)?;
        let mut patch_grad = zeros::<f32>(stream, b * c * n * n * l)?;
        let mut positions = zeros::<f64>(stream, b * c * 2)?;
        {
            let (patches_at, _p) = device_patches.device_ptr(stream);
            let (weights_at, _w) = device_weights.device_ptr(stream);
            let (cot_at, _c) = device_cot.device_ptr(stream);
            let (grad_at, _g) = patch_grad.device_ptr_mut(stream);
            let (pos_at, _o) = positions.device_ptr_mut(stream);
            let io = RegionVjp {
                inputs: RegionInputs {
                    patches: patches_at,
                    lanes: l,
                    weights: weights_at,
                    weight_shape: [w.0, w.1],
                    shifts: Shifts::Planned,
                },
                cot: cot_at,
                patch_grad: grad_at,
                positions_grad: pos_at,
                channel_layout: false,
            };
            // SAFETY: every buffer has the size `io` names and outlives the copies back on the
            // same stream.
            unsafe { self.enqueue_region_vjp(&on, region, io)? };
        }
        let patches = download(stream, &patch_grad, (b, c, n, n))?;
        let positions = download_rows(stream, &positions, b * c)?;
        Ok((patches, positions))
    }

    /// [`Extraction::extract`] on this GPU for host images: the same bits (NaN payloads are the
    /// GPU's own).
    pub fn extract<T: Sample, D: Dimension>(
        &self,
        extraction: &Extraction,
        images: ArrayView<'_, T, D>,
    ) -> Result<Array3<T>> {
        let images = extraction.check_images(images)?;
        let _keep = KeepCurrent::new();
        let on = self.default_stream();
        let stream = &on.stream;
        let (count, n, _) = extraction.output_shape();
        let device_images = stream.clone_htod(&*image_lanes(images)?).map_err(driver)?;
        let mut out = zeros::<f32>(stream, count * n * n * T::LANES)?;
        {
            let (images_at, _i) = device_images.device_ptr(stream);
            let (out_at, _o) = out.device_ptr_mut(stream);
            // SAFETY: the images hold B·S·S pixels in C order, `out` count·N·N·lanes f32; both
            // outlive the copy back on the same stream.
            unsafe {
                self.enqueue_extract(
                    &on,
                    extraction,
                    Images::c_order(images_at, extraction.image_side(), T::LANES),
                    Shifts::Planned,
                    out_at,
                )?
            };
        }
        download(stream, &out, (count, n, n))
    }

    /// [`Extraction::extract_vjp`] on this GPU for host arrays: the same bits.
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
        let on = self.default_stream();
        let stream = &on.stream;
        let (b, s, l) = (images.dim().0, extraction.image_side(), T::LANES);
        let device_images = stream.clone_htod(&*image_lanes(images)?).map_err(driver)?;
        let device_cot = stream.clone_htod(&*cot).map_err(driver)?;
        let mut image_grad = zeros::<f32>(stream, b * s * s * l)?;
        let mut offsets = zeros::<f64>(stream, count * 2)?;
        {
            let (images_at, _i) = device_images.device_ptr(stream);
            let (cot_at, _c) = device_cot.device_ptr(stream);
            let (grad_at, _g) = image_grad.device_ptr_mut(stream);
            let (off_at, _o) = offsets.device_ptr_mut(stream);
            // SAFETY: every buffer has the size the kernels read or write and outlives the
            // copies back on the same stream.
            unsafe {
                self.enqueue_extract_vjp(
                    &on,
                    extraction,
                    ExtractVjp {
                        images: Images::c_order(images_at, s, l),
                        cot: cot_at,
                        image_grad: if wrt.patches { grad_at } else { 0 },
                        offsets_grad: if wrt.offsets { off_at } else { 0 },
                        channel_layout: false,
                        shifts: Shifts::Planned,
                    },
                )?
            };
        }
        download_gradients(stream, wrt, (&image_grad, (b, s, s)), (&offsets, count))
    }

    /// [`Region::reassemble`] on this GPU for host arrays: the same bits.
    pub fn reassemble_regions<T: Sample>(
        &self,
        region: &Region,
        patches: ArrayView4<'_, T>,
        weights: ArrayView4<'_, f32>,
    ) -> Result<Array3<T>> {
        let (b, p, l) = (region.samples(), region.side(), T::LANES);
        let w = weights.dim();
        RegionArgs::check_inputs(region, patches.dim(), w)?;
        let _keep = KeepCurrent::new();
        let on = self.default_stream();
        let stream = &on.stream;
        let weight_values: Vec<f32> = weights.iter().copied().collect();
        let device_patches = stream
            .clone_htod(&*c_order_lanes(patches, || "a copy of the patches".into())?)
            .map_err(driver)?;
        let device_weights = stream.clone_htod(&weight_values).map_err(driver)?;
        let mut out = zeros::<f32>(stream, b * p * p * l)?;
        {
            let (patches_at, _p) = device_patches.device_ptr(stream);
            let (weights_at, _w) = device_weights.device_ptr(stream);
            let (out_at, _o) = out.device_ptr_mut(stream);
            // SAFETY: patches B·C·N·N pixels, weights w0·w1·N·N, `out` B·P·P·lanes f32; all
            // outlive the copy back on the same stream.
            unsafe {
                self.enqueue_region(
                    &on,
                    region,
                    RegionInputs {
                        patches: patches_at,
                        lanes: l,
                        weights: weights_at,
                        weight_shape: [w.0, w.1],
                        shifts: Shifts::Planned,
                    },
                    out_at,
                )?
            };
        }
        download(stream, &out, (b, p, p))
    }
}
