//! Loading a scan (patches and `[x, y]` offsets) from `.npz`, a directory of `.npy` files, or a
//! pair of `.npy` files, with PtychoPINN's coordinate options.

use anyhow::{Context, Result, bail};
use ndarray::{Array2, ArrayD};
use ptychostitch::npy::{NpyArray, Npz, read_npy};
use std::path::{Path, PathBuf};

/// Where the arrays come from and how to interpret positions.
#[derive(Debug, Clone, clap::Args)]
pub struct ScanArgs {
    /// An `.npz` file, a directory of `.npy` files, or two `.npy` files (patches, then offsets).
    #[arg(required = true, num_args = 1..=2, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Key of the patches [default: Y]: shape (n, N, N) or (n, N, N, 1); complex64, complex128,
    /// float16/32/64, integer or bool (converted to complex64).
    #[arg(long, value_name = "KEY")]
    pub patches: Option<String>,
    /// Key of the offsets: n leading, then two values [x, y] in pixels — (n, 2), (n, 1, 1, 2),
    /// (n, 1, 2, 1), … When not given, positions come from --x and --y.
    #[arg(long, value_name = "KEY")]
    pub offsets: Option<String>,
    /// Key of the x (column) positions [default: xcoords], shape (n,), in pixels.
    #[arg(long = "x", value_name = "KEY")]
    pub x_key: Option<String>,
    /// Key of the y (row) positions [default: ycoords], shape (n,), in pixels.
    #[arg(long = "y", value_name = "KEY")]
    pub y_key: Option<String>,
    /// Swap x and y (for files that store [row, column]). Applied first.
    #[arg(long)]
    pub transpose: bool,
    /// Negate x (mirror the scan left–right). Applied after --transpose.
    #[arg(long)]
    pub flip_x: bool,
    /// Negate y (mirror the scan top–bottom). Applied after --transpose.
    #[arg(long)]
    pub flip_y: bool,
    /// Multiply positions by this factor (e.g. metres to pixels). Applied last.
    #[arg(long, default_value_t = 1.0, value_name = "FACTOR")]
    pub coord_scale: f64,
}

/// A scan ready to stitch: patches memory-mapped where the file allows (an `.npy` file or an
/// uncompressed `.npz` member), read into memory otherwise; offsets in memory.
pub struct Scan {
    /// Patches, `(n, N, N)` or `(n, N, N, 1)`, any supported dtype, not yet converted.
    pub patches: NpyArray,
    /// What the patches are called, for messages.
    pub patches_name: String,
    /// Offsets `(n, 2)`, `[x, y]` in pixels, after the coordinate options.
    pub offsets: Array2<f64>,
    /// What the coordinate options did that was probably not meant (for `warning:` lines).
    pub warnings: Vec<String>,
}

/// Reads named arrays from whichever input form was given.
enum Source {
    Npz(Npz),
    Dir(PathBuf),
    Pair(PathBuf, PathBuf),
}

/// A regular file that starts as `.npy` files do (`\x93NUMPY`). Anything else (a FIFO, whose
/// `open` would wait for a writer; a device; a missing file) is left to the reader's own checks.
fn is_npy(path: &std::path::Path) -> bool {
    use std::io::Read;
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut magic = [0u8; 6];
    match std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)) {
        Ok(()) => &magic == b"\x93NUMPY",
        Err(_) => false,
    }
}

impl Source {
    fn open(inputs: &[PathBuf]) -> Result<Self> {
        match inputs {
            [one] if one.is_dir() => Ok(Source::Dir(one.clone())),
            [one] if is_npy(one) => bail!(
                "{}: a .npy file holds the patches only; give the offsets file after it \
                 (reassemble PATCHES.npy OFFSETS.npy, offsets (n, 2) [x, y]) or one .npz with Y, xcoords and ycoords",
                one.display()
            ),
            [one] => Ok(Source::Npz(Npz::open(one)?)),
            [patches, offsets] => Ok(Source::Pair(patches.clone(), offsets.clone())),
            _ => bail!("give one .npz file or directory, or two .npy files (patches, offsets)"),
        }
    }

    fn read(&mut self, key: &str) -> Result<NpyArray> {
        Ok(match self {
            Source::Npz(npz) => npz.read(key)?,
            Source::Dir(dir) => {
                let file = dir.join(format!("{key}.npy"));
                if !file.exists() {
                    bail!(
                        "{}: no array named '{key}' ({key}.npy); the directory has: {}",
                        dir.display(),
                        npy_names(dir).join(", ")
                    );
                }
                read_npy(&file)?
            }
            Source::Pair(..) => unreachable!("pairs are read positionally"),
        })
    }

    /// The patch array, memory-mapped when it is stored uncompressed.
    fn patches(&mut self, key: &str) -> Result<NpyArray> {
        Ok(match self {
            Source::Npz(npz) => match npz.open_in_place(key)? {
                Some(mapped) => mapped,
                None => npz.read(key)?,
            },
            Source::Dir(dir) => {
                let file = dir.join(format!("{key}.npy"));
                if !file.exists() {
                    return self.read(key);
                }
                NpyArray::open_in_place(&file)?
            }
            Source::Pair(p, _) => NpyArray::open_in_place(p)?,
        })
    }

    fn has(&self, key: &str) -> bool {
        match self {
            Source::Npz(npz) => npz.contains(key),
            Source::Dir(dir) => dir.join(format!("{key}.npy")).exists(),
            Source::Pair(..) => false,
        }
    }
}

fn npy_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_suffix(".npy")
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

impl ScanArgs {
    /// Loads patches and offsets and applies the coordinate options.
    pub fn load(&self) -> Result<Scan> {
        let mut source = Source::open(&self.inputs)?;
        let pair = match &source {
            Source::Pair(p, o) => Some((p.clone(), o.clone())),
            _ => None,
        };
        let (patches, patches_name, offsets) = if let Some((p, o)) = pair {
            let keys = [
                ("--patches", &self.patches),
                ("--offsets", &self.offsets),
                ("--x", &self.x_key),
                ("--y", &self.y_key),
            ];
            if let Some((flag, _)) = keys.iter().find(|(_, v)| v.is_some()) {
                bail!(
                    "{flag} names an array inside an .npz file or a directory; with two .npy files (patches, then offsets) there are no keys to choose"
                );
            }
            let offsets = offsets_from(read_npy(&o)?.to_f64()?, &o.display().to_string())?;
            let name = p.display().to_string();
            (source.patches(&name)?, name, offsets)
        } else {
            let patches_key = self.patches.as_deref().unwrap_or("Y");
            let x_key = self.x_key.as_deref().unwrap_or("xcoords");
            let y_key = self.y_key.as_deref().unwrap_or("ycoords");
            let patches = source.patches(patches_key)?;
            let offsets = match &self.offsets {
                Some(key) => offsets_from(source.read(key)?.to_f64()?, key)?,
                None if !source.has(x_key) && source.has("offsets") => {
                    bail!(
                        "no '{x_key}' positions; this file has an 'offsets' array: pass --offsets offsets"
                    )
                }
                None => {
                    let x = source.read(x_key)?.to_f64()?;
                    let y = source.read(y_key)?.to_f64()?;
                    xy_offsets(x, y, x_key, y_key)?
                }
            };
            (patches, patches_key.to_string(), offsets)
        };
        let distinct = distinct_f32(&offsets);
        let offsets = self.transform(offsets);
        let mut warnings = Vec::new();
        if distinct && !distinct_f32(&offsets) {
            warnings.push(format!(
                "--coord-scale {:?} puts all {} positions on one point (they differ before it): every patch lands on the same pixels; the scale should turn positions into pixels (for metres: pixels per metre)",
                self.coord_scale,
                offsets.nrows()
            ));
        }
        Ok(Scan {
            patches,
            patches_name,
            offsets,
            warnings,
        })
    }

    fn transform(&self, mut offsets: Array2<f64>) -> Array2<f64> {
        for mut row in offsets.rows_mut() {
            let (mut x, mut y) = (row[0], row[1]);
            if self.transpose {
                std::mem::swap(&mut x, &mut y);
            }
            if self.flip_x {
                x = -x;
            }
            if self.flip_y {
                y = -y;
            }
            row[0] = x * self.coord_scale;
            row[1] = y * self.coord_scale;
        }
        offsets
    }
}

/// True when the positions, as the library reads them (`f32`), are not all the same.
fn distinct_f32(offsets: &Array2<f64>) -> bool {
    let mut rows = offsets.rows().into_iter();
    let Some(first) = rows.next() else {
        return false;
    };
    let key = |r: ndarray::ArrayView1<'_, f64>| [r[0] as f32, r[1] as f32];
    let first = key(first);
    rows.any(|r| key(r) != first)
}

/// Offsets in any layout the library accepts (n leading, two values [x, y] after it) as `(n, 2)`.
fn offsets_from(array: ArrayD<f64>, key: &str) -> Result<Array2<f64>> {
    let pairs = ptychostitch::geometry::offset_pairs(array.view())
        .with_context(|| format!("offsets '{key}'"))?;
    let mut flat: Vec<f64> = ptychostitch::memory::try_with_capacity(pairs.len() * 2, || {
        format!("the offsets '{key}'")
    })?;
    flat.extend(pairs.iter().flatten());
    Ok(Array2::from_shape_vec((pairs.len(), 2), flat)?)
}

fn xy_offsets(x: ArrayD<f64>, y: ArrayD<f64>, x_key: &str, y_key: &str) -> Result<Array2<f64>> {
    if x.ndim() != 1 || y.ndim() != 1 || x.len() != y.len() {
        bail!(
            "positions '{x_key}' {:?} and '{y_key}' {:?} must both have shape (n,)",
            x.shape(),
            y.shape()
        );
    }
    let zeros = ptychostitch::memory::try_zeroed_vec::<f64>(x.len() * 2, || {
        format!("the positions '{x_key}' and '{y_key}'")
    })?;
    let mut offsets = Array2::from_shape_vec((x.len(), 2), zeros)?;
    for (k, (xv, yv)) in x.iter().zip(&y).enumerate() {
        offsets[[k, 0]] = *xv;
        offsets[[k, 1]] = *yv;
    }
    Ok(offsets)
}
