//! `ptychostitch reassemble`: stitch a scan from NumPy files.

use crate::input::ScanArgs;
use crate::paths::{Output, check_outputs};
use crate::{picture, progress};
use anyhow::{Context, Result};
use ndarray::{Array1, Array2, arr0};
use ptychostitch::geometry::{BYTES_PER_CANVAS_PIXEL, patch_stack};
use ptychostitch::memory;
use ptychostitch::npy::{NpyView, npz_fill, write_files_atomically};
use ptychostitch::{Complex32, Plan};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The plain sum of translated patches (PtychoPINN's shift_and_sum).
    ShiftAndSum,
    /// The sum divided by the weight canvas (PtychoPINN's reassemble_position).
    Reassemble,
}

/// Arguments of `reassemble`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub scan: ScanArgs,
    /// Crop: keep the centre M×M of each patch (an odd M keeps M-1, as PtychoPINN does).
    #[arg(
        short = 'M',
        long = "crop",
        default_value_t = 20,
        allow_negative_numbers = true
    )]
    pub crop: i64,
    /// What to compute.
    #[arg(long, value_enum, default_value_t = Mode::Reassemble)]
    pub mode: Mode,
    /// Output .npz: `image` (S, S) complex64, `weights` (S, S) float32, `pad`, `center` [x, y],
    /// `M`, `canvas_size`. Defaults to INPUT's name with `_reassembled.npz`.
    #[arg(short, long, value_name = "OUT.npz")]
    pub output: Option<PathBuf>,
    /// Also write a picture: amplitude and phase side by side.
    #[arg(long, value_name = "FILE.png")]
    pub png: Option<PathBuf>,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// The result of one reassembly, as written to `.npz`.
pub struct Stitched {
    pub plan: Plan,
    pub image: Array2<Complex32>,
}

impl Stitched {
    /// Writes image, weights and geometry to `npz` and, when asked, the amplitude/phase picture
    /// to `png`: both replaced together or not at all.
    pub fn write(&self, npz: &Path, png: Option<(&Path, &str)>) -> Result<()> {
        let weights = self.plan.weights()?;
        let g = self.plan.geometry();
        let center = Array1::from(vec![g.center()[0] as f64, g.center()[1] as f64]);
        let scalar = |v: usize| arr0(v as i64).into_dyn();
        let (pad, crop, side) = (scalar(g.pad()), scalar(g.crop()), scalar(g.side()));
        let arrays = [
            ("image", NpyView::Complex64(self.image.view().into_dyn())),
            ("weights", NpyView::Float32(weights.view().into_dyn())),
            ("pad", NpyView::Int64(pad.view())),
            ("center", NpyView::Float64(center.view().into_dyn())),
            ("M", NpyView::Int64(crop.view())),
            ("canvas_size", NpyView::Int64(side.view())),
        ];
        let picture = match png {
            Some((_, title)) => {
                let covered = weights.mapv(|w| w > 0.0);
                Some(picture::amplitude_phase(&self.image, &covered, title))
            }
            None => None,
        };
        let mut files = vec![(npz, npz_fill(&arrays))];
        if let (Some((path, _)), Some(picture)) = (png, &picture) {
            files.push((path, picture.png_fill()));
        }
        let names: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
        write_files_atomically(files).with_context(|| format!("writing {}", names.join(" and ")))
    }
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.scan.inputs[0]));
    let mut outputs = vec![Output {
        flag: "-o",
        path: &output,
        extension: "npz",
    }];
    if let Some(png) = &args.png {
        outputs.push(Output {
            flag: "--png",
            path: png,
            extension: "png",
        });
    }
    check_outputs(&args.scan.inputs, &outputs)?;

    let steps = progress::bar(3, "loading");
    let scan = args.scan.load()?;
    steps.inc(1);
    steps.set_message("stitching");
    let (_, size, _) = patch_stack(scan.patches.view())?.dim();
    let plan = Plan::new(scan.offsets.view(), size, args.crop)?.with_threads(args.threads);
    for warning in plan.warnings() {
        steps.suspend(|| eprintln!("warning: {warning}"));
    }
    // Everything this command allocates from here on: image and weights, and the picture.
    let side = plan.canvas_shape().0;
    let picture = if args.png.is_some() {
        picture::bytes_for(side)
    } else {
        0.0
    };
    memory::check_additional(
        (side * side) as f64 * BYTES_PER_CANVAS_PIXEL + picture,
        side as f64,
    )?;
    let compute = Instant::now();
    let image = match args.mode {
        Mode::ShiftAndSum => plan.shift_and_sum(scan.patches.view())?,
        Mode::Reassemble => plan.reassemble_position(scan.patches.view())?,
    };
    let compute = compute.elapsed();
    drop(scan);
    steps.inc(1);
    steps.set_message("writing");
    let stitched = Stitched { plan, image };
    stitched.write(&output, args.png.as_deref().map(|p| (p, "")))?;
    steps.finish_and_clear();
    let g = stitched.plan.geometry();
    println!(
        "reassembled {} patches ({n}×{n}, M={m}) onto a {s}×{s} canvas (pad {p}, centre x={cx}, y={cy}) in {:.2} ms; wrote {}{} ({:.2} s in all)",
        g.len(),
        compute.as_secs_f64() * 1e3,
        output.display(),
        args.png
            .as_ref()
            .map(|p| format!(" and {}", p.display()))
            .unwrap_or_default(),
        started.elapsed().as_secs_f64(),
        n = g.patch_size(),
        m = g.crop(),
        s = g.side(),
        p = g.pad(),
        cx = g.center()[0],
        cy = g.center()[1],
    );
    Ok(())
}

fn default_output(input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scan".into());
    PathBuf::from(format!("{stem}_reassembled.npz"))
}
