//! `center_channels`: PtychoPINN's `tf_helper.center_channels` (`_kernels.CenterChannels`):
//! channels `(B, N, N, C)`, offsets `(B, 1, 2, C)` `[x, y]` -> each channel translated by minus
//! its offset in its own `N×N` frame, `(B, N, N, C)`.

use crate::{
    Operand, Outcome, Output, Spec, Typed, arg, channel_format, channel_pairs, copy, input,
    operator, output, put_f64, ret, text,
};
use ndarray::{Array3, ArrayD, ArrayViewD, Ix4};
use ptychostitch::{Extraction, Wrt};

pub struct CenterChannels;

/// `(B, N, N, C)` as the images `(B·C, N, N)`, row `b·C + c` (a copy in that order).
fn flat<T: Typed>(x: &ArrayViewD<'_, T>) -> Result<Array3<T>, String> {
    let x4 = x
        .clone()
        .into_dimensionality::<Ix4>()
        .map_err(|_| format!("channels have shape {:?}; expected (B, N, N, C)", x.shape()))?;
    let (b, n, m, c) = x4.dim();
    if n != m {
        return Err(format!(
            "channels have shape {:?}; expected (B, N, N, C)",
            x.shape()
        ));
    }
    let values: Vec<T> = x4.permuted_axes([0, 3, 1, 2]).iter().copied().collect();
    Array3::from_shape_vec((b * c, n, n), values).map_err(|e| e.to_string())
}

/// The translation of the flat images by the negated offsets (`CenterChannels.plan`).
fn plan(shape: &[usize], offsets: &ArrayD<f64>, spec: &Spec) -> Result<Extraction, String> {
    let (b, n, c) = (shape[0], shape[1], shape[3]);
    if offsets.shape() != [b, 1, 2, c] {
        return Err(format!(
            "offsets_xy have shape {:?}; expected ({b}, 1, 2, {c}) [x, y] in channel format",
            offsets.shape()
        ));
    }
    let pairs = channel_pairs(offsets, b, c, true)?;
    let threads = spec.count("threads")?;
    Ok(Extraction::translation(pairs.view(), n)
        .map_err(text)?
        .with_threads(threads))
}

/// `(B·C, N, N)` as `(B, N, N, C)` (a view; its iteration is that layout's row-major order).
fn channels<'a, T>(
    flat: &'a Array3<T>,
    shape: &[usize],
) -> Result<ndarray::ArrayView4<'a, T>, String> {
    let (b, n, c) = (shape[0], shape[1], shape[3]);
    let grid = flat
        .view()
        .into_shape_with_order((b, c, n, n))
        .map_err(|e| e.to_string())?;
    Ok(grid.permuted_axes([0, 2, 3, 1]))
}

fn forward<T: Typed>(spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome {
    let x = input::<T>(args, 0, "channels")?;
    let offsets = crate::offsets(arg(args, 1, "offsets_xy")?, "offsets_xy")?;
    let images = flat(x)?;
    let moved = plan(x.shape(), &offsets, spec)?
        .run(images.view())
        .map_err(text)?;
    let values = channels(&moved, x.shape())?;
    copy(output::<T>(rets, 0, "channels")?, values.iter().copied())
}

fn backward<T: Typed>(spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome {
    let x = input::<T>(args, 0, "channels")?;
    let offsets = crate::offsets(arg(args, 1, "offsets_xy")?, "offsets_xy")?;
    let cot = input::<T>(args, 3, "cotangent")?;
    let g = plan(x.shape(), &offsets, spec)?
        .vjp(flat(x)?.view(), flat(cot)?.view(), Wrt::ALL)
        .map_err(text)?;
    let dflat = g
        .patches
        .ok_or("the channels' cotangent was not computed")?;
    let values = channels(&dflat, x.shape())?;
    copy(
        output::<T>(rets, 0, "channels' cotangent")?,
        values.iter().copied(),
    )?;
    // The rows of the negated offsets -> minus them, as (B, 1, 2, C).
    let (b, c) = (x.shape()[0], x.shape()[3]);
    let d = g.offsets.ok_or("the offsets' cotangent was not computed")?;
    put_f64(
        ret(rets, 1, "offsets' cotangent")?,
        channel_format(d, b, c, true)?.view(),
    )
}

operator!(CenterChannels, "center_channels", "channels");
