//! `ptychostitch demo`: a synthetic experiment end to end, on built-in data.
//!
//! A complex test object (a sinusoidal Siemens star in amplitude, the field's standard
//! resolution target, and a smooth phase pattern) is scanned on a Fermat spiral with sub-pixel
//! positions; a patch is cut at every position with bilinear interpolation; the patches are
//! reassembled; the reassembly is compared with the object over the scanned interior.

use crate::picture;
use crate::reassemble::Stitched;
use anyhow::{Context, Result, bail};
use ndarray::{Array1, Array2, Array3};
use ptychostitch::memory::try_zeroed_vec;
use ptychostitch::npy::{NpyView, npz_fill};
use ptychostitch::{Complex32, Plan};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder for the pictures and arrays (created if missing).
    #[arg(long, default_value = "demo-out")]
    pub out: PathBuf,
    /// Number of scan positions on the Fermat spiral.
    #[arg(long, default_value_t = 800, value_parser = crate::args::count, allow_hyphen_values = true)]
    pub positions: usize,
}

const OBJECT: usize = 256;
const PATCH: usize = 64;
const CROP: i64 = 20;
/// Spiral spacing: the mean distance between neighbouring positions is about 2 px.
const SPIRAL_C: f64 = 1.9;

/// The object at fractional pixel `(y, x)` (row, column), with its centre at `OBJECT / 2`.
pub fn object_at(y: f64, x: f64) -> Complex32 {
    let (dy, dx) = (y - OBJECT as f64 / 2.0, x - OBJECT as f64 / 2.0);
    let r = dy.hypot(dx);
    let theta = dy.atan2(dx);
    // Sinusoidal star with 16 spoke pairs, faded out in the centre (where the spokes would
    // be finer than the pixels) and towards the rim.
    let spokes = (16.0 * theta).cos();
    let inner = ((r - 14.0) / 12.0).clamp(0.0, 1.0);
    let outer = ((110.0 - r) / 10.0).clamp(0.0, 1.0);
    let amplitude = 0.6 + 0.35 * spokes * inner * outer;
    let phase =
        1.2 * (std::f64::consts::TAU * x / 70.0).sin() * (std::f64::consts::TAU * y / 90.0).cos();
    Complex32::from_polar(amplitude as f32, phase as f32)
}

/// Bilinear sample of the object grid at fractional `(y, x)`.
fn sample(object: &Array2<Complex32>, y: f64, x: f64) -> Complex32 {
    let (y0, x0) = (y.floor(), x.floor());
    let (wy, wx) = ((y - y0) as f32, (x - x0) as f32);
    let at = |r: f64, c: f64| {
        object
            .get([r as usize, c as usize])
            .copied()
            .filter(|_| r >= 0.0 && c >= 0.0)
            .unwrap_or_default()
    };
    at(y0, x0) * (1.0 - wx) * (1.0 - wy)
        + at(y0, x0 + 1.0) * wx * (1.0 - wy)
        + at(y0 + 1.0, x0) * (1.0 - wx) * wy
        + at(y0 + 1.0, x0 + 1.0) * wx * wy
}

/// Fermat-spiral `[x, y]` positions around the object centre.
pub fn spiral(n: usize) -> Array2<f64> {
    let golden = std::f64::consts::PI * (3.0 - 5.0_f64.sqrt());
    let mut offsets = Array2::zeros((n, 2));
    for k in 0..n {
        let r = SPIRAL_C * (k as f64 + 0.5).sqrt();
        let t = k as f64 * golden;
        offsets[[k, 0]] = OBJECT as f64 / 2.0 + r * t.cos();
        offsets[[k, 1]] = OBJECT as f64 / 2.0 + r * t.sin();
    }
    offsets
}

/// Patches cut from `object` at `offsets` (patch centre at the offset), bilinear.
pub fn cut_patches(
    object: &Array2<Complex32>,
    offsets: &Array2<f64>,
) -> ptychostitch::Result<Array3<Complex32>> {
    let n = offsets.nrows();
    let len = n.saturating_mul(PATCH * PATCH);
    let mut values =
        try_zeroed_vec::<Complex32>(len, || format!("{n} demo patches of {PATCH}×{PATCH}"))?;
    let half = (PATCH / 2) as f64;
    for (i, v) in values.iter_mut().enumerate() {
        let (k, r, c) = (i / (PATCH * PATCH), (i / PATCH) % PATCH, i % PATCH);
        *v = sample(
            object,
            offsets[[k, 1]] + r as f64 - half,
            offsets[[k, 0]] + c as f64 - half,
        );
    }
    Ok(Array3::from_shape_vec((n, PATCH, PATCH), values).expect("n·N·N values"))
}

/// The demo's measurements.
pub struct Outcome {
    pub relative_rms_error: f64,
    pub misregistered_error: f64,
    pub interior_pixels: usize,
    pub seconds: f64,
}

/// Runs the experiment, writes pictures and arrays to `out`, returns the error.
pub fn experiment(args: &Args) -> Result<Outcome> {
    // The patches (complex64), their positions and the scan file's copy of both: refused in one
    // line before anything is allocated when they cannot fit.
    let bytes = args.positions as f64 * ((PATCH * PATCH * 8 + 16) * 2) as f64;
    let limit = ptychostitch::memory::limit();
    if bytes > limit.bytes {
        bail!(
            "--positions {}: the demo's patches would need {}, more than the {} ({}) allows",
            args.positions,
            ptychostitch::error::human_bytes(bytes),
            ptychostitch::error::human_bytes(limit.bytes),
            limit.source
        );
    }
    let object = Array2::from_shape_fn((OBJECT, OBJECT), |(y, x)| object_at(y as f64, x as f64));
    let offsets = spiral(args.positions);
    let patches = cut_patches(&object, &offsets)?;

    let t = Instant::now();
    let plan = Plan::new(offsets.view(), PATCH, CROP)?;
    let image = plan.reassemble_position(patches.view())?;
    let seconds = t.elapsed().as_secs_f64();

    // docs/semantics.md §2: canvas(y, x) ≈ O(y - p - M/2 + com_y, x - p - M/2 + com_x).
    let g = plan.geometry();
    let lift = g.pad() as f64 + (CROP / 2) as f64;
    let [cx, cy] = g.center().map(f64::from);
    let truth = Array2::from_shape_fn(image.dim(), |(y, x)| {
        sample(&object, y as f64 - lift + cy, x as f64 - lift + cx)
    });
    let weights = plan.weights()?;
    // Scanned interior: every pixel fully covered by at least two patches.
    let (mut err2, mut ref2, mut count) = (0.0_f64, 0.0_f64, 0);
    for ((v, t), &w) in image.iter().zip(&truth).zip(weights) {
        if w >= 2.0 {
            err2 += (v - t).norm_sqr() as f64;
            ref2 += t.norm_sqr() as f64;
            count += 1;
        }
    }
    let relative_rms_error = (err2 / ref2.max(f64::MIN_POSITIVE)).sqrt();
    // For scale: the same comparison against the object one pixel to the right.
    let mut miss2 = 0.0_f64;
    for ((y, x), &w) in weights.indexed_iter() {
        if w >= 2.0 {
            let t = sample(&object, y as f64 - lift + cy, x as f64 + 1.0 - lift + cx);
            miss2 += (image[[y, x]] - t).norm_sqr() as f64;
        }
    }
    let misregistered_error = (miss2 / ref2.max(f64::MIN_POSITIVE)).sqrt();

    // The folder is made only now that there is something to put in it.
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let covered = weights.mapv(|w| w > 0.0);
    let object_picture = picture::amplitude_phase(&truth, &covered, "OBJECT");
    let difference = &image - &truth;
    let difference_picture = picture::amplitude_phase(&difference, &covered, "DIFFERENCE");
    let stitched = Stitched { plan, image };
    // The scan in PtychoPINN's layout, ready for `ptychostitch reassemble`.
    let (x, y) = (offsets.column(0).to_owned(), offsets.column(1).to_owned());
    let positions = Array1::from(vec![args.positions as f64]);
    let scan = [
        ("Y", NpyView::Complex64(patches.view().into_dyn())),
        ("xcoords", NpyView::Float64(x.view().into_dyn())),
        ("ycoords", NpyView::Float64(y.view().into_dyn())),
        ("objectGuess", NpyView::Complex64(object.view().into_dyn())),
        (
            "truth_on_canvas",
            NpyView::Complex64(truth.view().into_dyn()),
        ),
        ("positions", NpyView::Float64(positions.view().into_dyn())),
    ];
    let (object_png, difference_png, scan_npz) = (
        args.out.join("object.png"),
        args.out.join("difference.png"),
        args.out.join("scan.npz"),
    );
    // All five files replaced together, or none of them.
    stitched.write_with(
        &args.out.join("reassembly.npz"),
        Some((&args.out.join("reassembly.png"), "REASSEMBLY")),
        vec![
            (&object_png, object_picture.png_fill()),
            (&difference_png, difference_picture.png_fill()),
            (&scan_npz, npz_fill(&scan)),
        ],
    )?;
    Ok(Outcome {
        relative_rms_error,
        misregistered_error,
        interior_pixels: count,
        seconds,
    })
}

/// Runs the demo; `program` is the command as it was started, for the suggested next line.
pub fn run(args: Args, program: &str) -> Result<()> {
    let existed = args.out.exists();
    let outcome = experiment(&args).inspect_err(|_| {
        if !existed {
            // A folder this run made and could not fill goes again (only if empty).
            let _ = std::fs::remove_dir(&args.out);
        }
    })?;
    out!(
        "demo: {} patches ({PATCH}×{PATCH}, M={CROP}) cut from a {OBJECT}×{OBJECT} Siemens-star object on a Fermat spiral, reassembled in {:.2} ms",
        args.positions,
        outcome.seconds * 1e3
    )?;
    out!(
        "relative RMS error over the scanned interior ({} px): {:.2e} (bilinear cut + bilinear shift; bound 2e-2; a one-pixel misregistration would give {:.2e})",
        outcome.interior_pixels,
        outcome.relative_rms_error,
        outcome.misregistered_error
    )?;
    out!(
        "wrote {0}/object.png, {0}/reassembly.png, {0}/difference.png, {0}/reassembly.npz, {0}/scan.npz",
        args.out.display()
    )?;
    // The command as it was started (`target/release/ptychostitch` after `cargo run`, the
    // console command's path when installed), so the line runs as written.
    out!(
        "try: {program} reassemble {}/scan.npz --png scan.png",
        args.out.display()
    )?;
    Ok(())
}
