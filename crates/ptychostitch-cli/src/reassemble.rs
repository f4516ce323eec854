//! `ptychostitch reassemble`: stitch a scan from NumPy files.

use crate::device::{self, Device};
use crate::input::{Scan, ScanArgs};
use crate::paths::{Output, check_outputs};
use crate::{picture, progress};
use anyhow::{Context, Result};
use ndarray::{Array1, Array2, arr0};
use ptychostitch::atomic::{Fill, write_files_atomically};
use ptychostitch::geometry::{BYTES_PER_CANVAS_PIXEL, patch_stack, stack_shape};
use ptychostitch::memory;
use ptychostitch::npy::{Dtype, NpyView, npz_fill};
use ptychostitch::{Complex32, Operation, Plan};
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

/// `-M` when it is not given: what PtychoPINN's call sites pass (`reassemble_position(..., M=20)`).
pub const DEFAULT_CROP: i64 = 20;

/// Arguments of `reassemble`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub scan: ScanArgs,
    /// Crop: keep the centre M×M of each patch (an odd M keeps M-1, as PtychoPINN does).
    /// Default 20, what PtychoPINN's call sites pass (its functions' own default, and the
    /// Python package's, is 10); the output line says which M was used.
    #[arg(short = 'M', long = "crop", allow_negative_numbers = true)]
    pub crop: Option<i64>,
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
    #[arg(long, default_value_t = 0, value_parser = crate::args::threads, allow_hyphen_values = true)]
    pub threads: usize,
    /// Patches per streamed chunk. Inputs are read in place where the file allows (.npy files,
    /// uncompressed .npz members), a chunk at a time, and stitched chunk by chunk: peak memory
    /// is the canvas plus one chunk, whatever the number of patches. The result does not depend
    /// on it.
    #[arg(
        long,
        default_value_t = 4096,
        value_name = "PATCHES",
        value_parser = crate::args::count,
        allow_hyphen_values = true
    )]
    pub chunk: usize,
    /// Where to run: the CPU, or an NVIDIA GPU (the whole stack is copied to it: no streaming).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
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
        self.write_with(npz, png, Vec::new())
    }

    /// [`Stitched::write`] together with `others`: every file replaced together or none.
    pub fn write_with<'a>(
        &'a self,
        npz: &'a Path,
        png: Option<(&'a Path, &str)>,
        others: Vec<(&'a Path, Fill<'a>)>,
    ) -> Result<()> {
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
        files.extend(others);
        // The error names the file that failed.
        Ok(write_files_atomically(files)?)
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

    device::check(args.device)?;
    let scan = args.scan.load()?;
    let (n, size) = stack_shape(scan.patches.shape())
        .with_context(|| format!("patches '{}'", scan.patches_name))?;
    let plan = Plan::new(scan.offsets.view(), size, args.crop.unwrap_or(DEFAULT_CROP))?
        .with_threads(args.threads);
    if plan.len() != n {
        return Err(ptychostitch::Error::CountMismatch {
            patches: n,
            offsets: plan.len(),
        }
        .into());
    }
    for warning in &scan.warnings {
        eprintln!("warning: {warning}");
    }
    for warning in plan.warnings() {
        let advice = match warning {
            ptychostitch::ScanWarning::SubPixelSpan { .. } => "; --coord-scale multiplies them",
            _ => "",
        };
        eprintln!("warning: {warning}{advice}");
    }
    // Everything this command allocates from here on: image and weights, one converted chunk
    // and the picture.
    let side = plan.canvas_shape().0;
    let chunk = args.chunk.min(n);
    let chunk_bytes = if scan.patches.complex32_view().is_some() {
        0.0
    } else {
        // One chunk read (in its own dtype) and converted; a Fortran-order chunk is transposed
        // once more.
        let raw = scan.patches.dtype().size().unwrap_or(8);
        let copies = if scan.patches.is_fortran_order() {
            2
        } else {
            1
        };
        (chunk * size * size) as f64 * (raw + copies * std::mem::size_of::<Complex32>()) as f64
    };
    let picture = if args.png.is_some() {
        picture::bytes_for(side)
    } else {
        0.0
    };
    memory::check_additional(
        (side * side) as f64 * BYTES_PER_CANVAS_PIXEL + chunk_bytes + picture,
        side as f64,
    )?;
    let operation = match args.mode {
        Mode::ShiftAndSum => Operation::ShiftAndSum,
        Mode::Reassemble => Operation::ReassemblePosition,
    };
    let compute = Instant::now();
    let image = match args.device {
        Device::Cpu => stitch_in_chunks(&plan, operation, &scan, chunk)?,
        Device::Cuda => {
            let patches = scan.patches.to_complex32()?;
            let stack = patch_stack(patches.view())?;
            device::stitch(&plan, operation, stack, Device::Cuda)?
        }
    };
    let compute = compute.elapsed();
    drop(scan);
    let stitched = Stitched { plan, image };
    stitched.write(&output, args.png.as_deref().map(|p| (p, "")))?;
    let g = stitched.plan.geometry();
    out!(
        "reassembled {} patches ({n}×{n}, M={m}{default}) onto a {s}×{s} canvas (pad {p}, centre x={cx}, y={cy}) in {:.2} ms; wrote {}{} ({:.2} s in all)",
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
        default = if args.crop.is_none() {
            ", the default: -M sets it"
        } else {
            ""
        },
        s = g.side(),
        p = g.pad(),
        cx = g.center()[0],
        cy = g.center()[1],
    )?;
    Ok(())
}

/// Adds the patches to an accumulator `chunk` at a time: in place where they are in memory as
/// complex64 already, otherwise read from the file (and converted) chunk by chunk into buffers
/// reused from chunk to chunk (Fortran-order stacks too: one read per patch pixel per chunk). A progress
/// bar in patches (rate, ETA) shows on a terminal.
fn stitch_in_chunks(
    plan: &Plan,
    operation: Operation,
    scan: &Scan,
    chunk: usize,
) -> Result<Array2<Complex32>> {
    let n = plan.len();
    let bar = progress::patches_bar(n as u64);
    let mut acc = plan.accumulator::<Complex32>(operation)?;
    // The kernels read only the kept rows of each patch: only those are read from the file
    // (M/N of its bytes, one read per patch).
    let g = plan.geometry();
    let mut reader = scan
        .patches
        .row_reader()
        .keeping_lines(g.crop_start()..g.crop_start() + g.kept());
    let mut noted = false;
    for start in (0..n).step_by(chunk) {
        let len = chunk.min(n - start);
        let rows = reader.rows(start, len)?;
        if !noted && *scan.patches.dtype() != Dtype::Complex64 {
            noted = true;
            bar.suspend(|| {
                eprintln!(
                    "note: patches '{}' are {}; converted to complex64",
                    scan.patches_name,
                    scan.patches.dtype()
                )
            });
        }
        acc.add(start, rows)?;
        bar.inc(len as u64);
    }
    bar.finish_and_clear();
    Ok(acc.finish()?)
}

/// `STEM_reassembled.npz` in the working folder, the stem's bytes kept as they are (a name that
/// is not UTF-8 gives its own output name, never another input's).
fn default_output(input: &Path) -> PathBuf {
    let mut name = input
        .file_stem()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_else(|| "scan".into());
    name.push("_reassembled.npz");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::default_output;
    use std::path::{Path, PathBuf};

    #[test]
    fn default_output_names_keep_the_stem() {
        assert_eq!(
            default_output(Path::new("dir/scan.npz")),
            PathBuf::from("scan_reassembled.npz")
        );
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            // Two stems that differ only in bytes that are not UTF-8 (both read as U+FFFD).
            let a = default_output(Path::new(std::ffi::OsStr::from_bytes(b"x\xff.npz")));
            let b = default_output(Path::new(std::ffi::OsStr::from_bytes(b"x\xfe.npz")));
            assert_ne!(a, b);
            assert_eq!(a.as_os_str().as_bytes(), b"x\xff_reassembled.npz");
        }
    }
}
