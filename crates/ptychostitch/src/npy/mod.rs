//! Reading and writing NumPy `.npy` and `.npz` files (PtychoPINN's data layout).
//!
//! Arrays are read raw and converted on request ([`NpyArray::to_complex32`],
//! [`NpyArray::to_f64`], …), so a file can be inspected before deciding what it holds. Every
//! problem is an [`NpyError`] that names the file, the key and what was wrong: truncated data,
//! a corrupt header or archive, a missing key (with the keys that exist), a dtype that cannot
//! be converted. Writes are atomic: a temporary file beside the target, then a rename, so a
//! failed write never leaves a half-written file in place of a good one.

use ndarray::{ArrayD, ArrayViewD, IxDyn, ShapeBuilder};
use num_complex::{Complex32, Complex64};
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use thiserror::Error;

pub mod mapped;
pub use mapped::FileIdentity;

/// Errors from reading or writing `.npy` / `.npz` files.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NpyError {
    /// The file could not be opened, read or written.
    ///
    /// The message already holds the operating system's reason, so the I/O error is not also
    /// reported as a `source` (error-chain printers would show it twice).
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// The path names something that is not a file on a disk (a FIFO, a device, a socket, a
    /// directory): arrays are read at positions, which only a regular file allows.
    #[error("{path}: not a regular file ({kind}); arrays are read from files on a disk")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Memory for the array could not be allocated.
    #[error("{what}: out of memory: could not allocate {} for the array", crate::error::human_bytes(*bytes))]
    OutOfMemory {
        /// The file, or `file[key]`.
        what: String,
        /// Bytes asked for.
        bytes: f64,
    },
    /// The bytes are not a valid `.npy` array.
    #[error("{what}: not a valid .npy array: {reason}")]
    Format {
        /// The file, or `file[key]` inside an archive.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// The data section is shorter than the header promises.
    #[error(
        "{what}: truncated: shape {shape:?} of {dtype} needs {expected} data bytes, the file has {found}"
    )]
    Truncated {
        /// The file, or `file[key]`.
        what: String,
        /// Shape from the header.
        shape: Vec<usize>,
        /// Dtype from the header.
        dtype: Dtype,
        /// Bytes needed.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// The file changed while it was being read (truncated, rewritten or replaced): nothing
    /// read from it can be trusted to come from one version.
    #[error(
        "{what}: the file {how} while it was being read; nothing was written (read it again once it is complete)"
    )]
    Changed {
        /// The file, or `file[key]`.
        what: String,
        /// The file.
        path: PathBuf,
        /// What happened: "was truncated from A to B bytes", "was rewritten", "ended early".
        how: String,
    },
    /// The `.npz` archive is corrupt.
    #[error("{path}: not a readable .npz archive: {reason}")]
    Archive {
        /// The file.
        path: PathBuf,
        /// What the zip reader said.
        reason: String,
    },
    /// The key is not in the archive.
    #[error("{path}: no array named '{key}'; the file has: {}", available.join(", "))]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The key asked for.
        key: String,
        /// Keys that exist.
        available: Vec<String>,
    },
    /// The dtype cannot be converted to what was asked.
    #[error("{what}: dtype {dtype} cannot be read as {wanted}")]
    Dtype {
        /// The file, or `file[key]`.
        what: String,
        /// The dtype found.
        dtype: Dtype,
        /// What was asked for.
        wanted: &'static str,
    },
}

/// Element types this module understands (`Other` is kept for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dtype {
    /// `complex64`: two `f32`.
    Complex64,
    /// `complex128`: two `f64`.
    Complex128,
    /// `float32`.
    Float32,
    /// `float64`.
    Float64,
    /// `float16` (IEEE half precision).
    Float16,
    /// Signed integer of this many bytes (1, 2, 4, 8).
    Int(usize),
    /// Unsigned integer of this many bytes (1, 2, 4, 8).
    UInt(usize),
    /// `bool`.
    Bool,
    /// Anything else, as the header spells it (e.g. `<U6`).
    Other(String),
}

impl Dtype {
    fn parse(descr: &str) -> (Dtype, bool) {
        let big = descr.starts_with('>');
        let code = descr.trim_start_matches(['<', '>', '|', '=']);
        let dtype = match code {
            "c8" => Dtype::Complex64,
            "c16" => Dtype::Complex128,
            "f2" => Dtype::Float16,
            "f4" => Dtype::Float32,
            "f8" => Dtype::Float64,
            "b1" | "?" => Dtype::Bool,
            _ => {
                let width = code.get(1..).and_then(|w| w.parse::<usize>().ok());
                match (code.as_bytes().first(), width) {
                    (Some(b'i'), Some(n @ (1 | 2 | 4 | 8))) => Dtype::Int(n),
                    (Some(b'u'), Some(n @ (1 | 2 | 4 | 8))) => Dtype::UInt(n),
                    _ => Dtype::Other(descr.to_string()),
                }
            }
        };
        (dtype, big)
    }

    /// Bytes per element, where known.
    pub fn size(&self) -> Option<usize> {
        Some(match self {
            Dtype::Complex64 => 8,
            Dtype::Complex128 => 16,
            Dtype::Float32 => 4,
            Dtype::Float64 => 8,
            Dtype::Float16 => 2,
            Dtype::Int(n) | Dtype::UInt(n) => *n,
            Dtype::Bool => 1,
            Dtype::Other(_) => return None,
        })
    }

    /// True for `complex64` and `complex128`.
    pub fn is_complex(&self) -> bool {
        matches!(self, Dtype::Complex64 | Dtype::Complex128)
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dtype::Complex64 => f.write_str("complex64"),
            Dtype::Complex128 => f.write_str("complex128"),
            Dtype::Float32 => f.write_str("float32"),
            Dtype::Float64 => f.write_str("float64"),
            Dtype::Float16 => f.write_str("float16"),
            Dtype::Int(n) => write!(f, "int{}", n * 8),
            Dtype::UInt(n) => write!(f, "uint{}", n * 8),
            Dtype::Bool => f.write_str("bool"),
            Dtype::Other(s) => write!(f, "'{s}'"),
        }
    }
}

/// One array as stored: header facts plus the raw data bytes, read into memory or left in the
/// file and read a range at a time ([`mapped`]).
#[derive(Debug, Clone)]
pub struct NpyArray {
    what: String,
    dtype: Dtype,
    big_endian: bool,
    fortran_order: bool,
    shape: Vec<usize>,
    count: usize,
    data: Storage,
}

/// Where an array's data bytes live.
#[derive(Debug, Clone)]
enum Storage {
    /// Read into memory.
    Owned(Vec<u8>),
    /// A range of a file, read when asked for.
    File(mapped::FileBytes),
}

impl Storage {
    /// The bytes of data in memory. An array left in its file has none here: every public
    /// reader brings the bytes it needs into memory first ([`NpyArray::in_memory`],
    /// [`NpyArray::to_complex32_rows`]), and the element accessors run on that copy.
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Owned(v) => v,
            Storage::File(_) => &[],
        }
    }
}

/// The facts of a `.npy` header, and how many bytes header and data take.
struct Header {
    dtype: Dtype,
    big_endian: bool,
    fortran_order: bool,
    shape: Vec<usize>,
    count: usize,
    /// Bytes of the header, magic included.
    header_bytes: usize,
    /// Bytes of data the header declares.
    data_bytes: usize,
}

/// The most header bytes accepted (NumPy itself writes a few hundred).
const MAX_HEADER: usize = 1 << 20;

impl NpyArray {
    /// Parses a whole `.npy` file's bytes; `what` names it in errors.
    pub fn from_bytes(what: &str, bytes: Vec<u8>) -> Result<Self, NpyError> {
        Self::read_from(what, &bytes[..])
    }

    /// Reads one `.npy` array from a stream: the header, then exactly the data bytes the header
    /// declares and no more (trailing bytes are never read, so a stream that claims a small
    /// array cannot make this read or allocate more). `what` names it in errors.
    pub fn read_from(what: &str, mut reader: impl Read) -> Result<Self, NpyError> {
        let header = read_header(what, &mut reader)?;
        let expected = header.data_bytes;
        let mut data = Vec::new();
        data.try_reserve_exact(expected)
            .map_err(|_| NpyError::OutOfMemory {
                what: what.to_string(),
                bytes: expected as f64,
            })?;
        (&mut reader)
            .take(expected as u64)
            .read_to_end(&mut data)
            .map_err(|e| NpyError::Format {
                what: what.to_string(),
                reason: format!("reading: {e}"),
            })?;
        if data.len() < expected {
            return Err(NpyError::Truncated {
                what: what.to_string(),
                shape: header.shape,
                dtype: header.dtype,
                expected,
                found: data.len(),
            });
        }
        Ok(Self::from_parts(what, header, Storage::Owned(data)))
    }

    fn from_parts(what: &str, header: Header, data: Storage) -> Self {
        Self {
            what: what.to_string(),
            dtype: header.dtype,
            big_endian: header.big_endian,
            fortran_order: header.fortran_order,
            shape: header.shape,
            count: header.count,
            data,
        }
    }

    /// The element type.
    pub fn dtype(&self) -> &Dtype {
        &self.dtype
    }

    /// True for an array stored in Fortran (column-major) order: its rows are not contiguous
    /// (a chunk of rows is read as one run per trailing index).
    pub fn is_fortran_order(&self) -> bool {
        self.fortran_order
    }

    /// The shape from the header.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the array holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn element_bytes(&self, i: usize, size: usize) -> [u8; 8] {
        let mut b = [0_u8; 8];
        b[..size].copy_from_slice(&self.data.bytes()[i * size..(i + 1) * size]);
        if self.big_endian {
            b[..size].reverse();
        }
        b
    }

    /// Element `i` (raw order) of a real array as `f64`; `None` for complex or unknown dtypes.
    fn real_at(&self, i: usize) -> Option<f64> {
        let b = |size| self.element_bytes(i, size);
        Some(match self.dtype {
            Dtype::Float32 => f32::from_le_bytes(b(4)[..4].try_into().ok()?) as f64,
            Dtype::Float64 => f64::from_le_bytes(b(8)),
            Dtype::Float16 => {
                half::f16::from_bits(u16::from_le_bytes(b(2)[..2].try_into().ok()?)).to_f64()
            }
            Dtype::Int(n) => {
                let raw = i64::from_le_bytes(b(n));
                let shift = 64 - 8 * n as u32;
                ((raw << shift) >> shift) as f64
            }
            Dtype::UInt(n) => u64::from_le_bytes(b(n)) as f64,
            Dtype::Bool => (self.data.bytes()[i] != 0) as u8 as f64,
            _ => return None,
        })
    }

    fn collect<T>(
        &self,
        wanted: &'static str,
        f: impl FnMut(usize) -> Option<T>,
    ) -> Result<ArrayD<T>, NpyError> {
        self.collect_in(wanted, 0, self.count, self.shape.clone(), f)
    }

    /// Elements `first..first + count` (raw order), converted by `f`, as an array of `shape`.
    fn collect_in<T>(
        &self,
        wanted: &'static str,
        first: usize,
        count: usize,
        shape: Vec<usize>,
        mut f: impl FnMut(usize) -> Option<T>,
    ) -> Result<ArrayD<T>, NpyError> {
        let dtype_error = || NpyError::Dtype {
            what: self.what.clone(),
            dtype: self.dtype.clone(),
            wanted,
        };
        // Checked before allocating, so an impossible conversion is reported as such.
        if self.dtype.size().is_none() || (count > 0 && f(first).is_none()) {
            return Err(dtype_error());
        }
        let mut values = Vec::new();
        values
            .try_reserve_exact(count)
            .map_err(|_| NpyError::OutOfMemory {
                what: self.what.clone(),
                bytes: count as f64 * std::mem::size_of::<T>() as f64,
            })?;
        for i in first..first + count {
            values.push(f(i).ok_or_else(dtype_error)?);
        }
        let shape = IxDyn(&shape);
        let array = if self.fortran_order {
            ArrayD::from_shape_vec(shape.f(), values)
        } else {
            ArrayD::from_shape_vec(shape, values)
        };
        array.map_err(|e| NpyError::Format {
            what: self.what.clone(),
            reason: e.to_string(),
        })
    }

    /// The array as `complex64` (from complex64, complex128, or any real dtype with zero
    /// imaginary part). C order.
    pub fn to_complex32(&self) -> Result<ArrayD<Complex32>, NpyError> {
        let a = self.in_memory("complex")?;
        Ok(standard(a.collect("complex", |i| a.complex32_at(i))?))
    }

    /// Rows `start..start + len` along the first axis, as `complex64` (as
    /// [`NpyArray::to_complex32`]): one chunk of a patch stack, converted without touching the
    /// rest. A Fortran-order array's rows are read as one run per trailing index (see
    /// `fortran_rows`), also without touching the rest.
    pub fn to_complex32_rows(
        &self,
        start: usize,
        len: usize,
    ) -> Result<ArrayD<Complex32>, NpyError> {
        let shape = self.rows_shape(start, len)?;
        let per_row: usize = self.shape[1..].iter().product();
        let (first, count) = (start * per_row, len * per_row);
        let mut scratch = mapped::Scratch::default();
        if self.rows_into(start, len, &mut scratch, None)? {
            let mut values = scratch.out;
            values.truncate(count);
            return ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| NpyError::Format {
                what: self.what.clone(),
                reason: e.to_string(),
            });
        }
        if let Some(rows) = self.read_range("complex", first, count, shape.clone())? {
            return rows.to_complex32();
        }
        self.collect_in("complex", first, count, shape, |i| self.complex32_at(i))
    }

    /// The shape of rows `start..start + len`, or the error for a range past the end.
    fn rows_shape(&self, start: usize, len: usize) -> Result<Vec<usize>, NpyError> {
        let rows = self.shape.first().copied().unwrap_or(0);
        if start.checked_add(len).is_none_or(|end| end > rows) {
            return Err(NpyError::Format {
                what: self.what.clone(),
                reason: format!(
                    "rows {start}..{} of an array with {rows}",
                    start.saturating_add(len)
                ),
            });
        }
        let mut shape = self.shape.clone();
        shape[0] = len;
        Ok(shape)
    }

    fn complex32_at(&self, i: usize) -> Option<Complex32> {
        match self.dtype {
            Dtype::Complex64 => {
                let b = &self.data.bytes()[i * 8..i * 8 + 8];
                let part = |s: &[u8]| {
                    let mut w: [u8; 4] = s.try_into().unwrap_or_default();
                    if self.big_endian {
                        w.reverse();
                    }
                    f32::from_le_bytes(w)
                };
                Some(Complex32::new(part(&b[..4]), part(&b[4..])))
            }
            Dtype::Complex128 => {
                let c = self.complex128_at(i);
                Some(Complex32::new(c.re as f32, c.im as f32))
            }
            _ => self.real_at(i).map(|v| Complex32::new(v as f32, 0.0)),
        }
    }

    fn complex128_at(&self, i: usize) -> Complex64 {
        let b = &self.data.bytes()[i * 16..i * 16 + 16];
        let part = |s: &[u8]| {
            let mut w: [u8; 8] = s.try_into().unwrap_or_default();
            if self.big_endian {
                w.reverse();
            }
            f64::from_le_bytes(w)
        };
        Complex64::new(part(&b[..8]), part(&b[8..]))
    }

    /// The array as `float64` (from any real dtype). C order.
    pub fn to_f64(&self) -> Result<ArrayD<f64>, NpyError> {
        let a = self.in_memory("real numbers")?;
        Ok(standard(a.collect("real numbers", |i| a.real_at(i))?))
    }

    /// The array as `float32` (from any real dtype). C order.
    pub fn to_f32(&self) -> Result<ArrayD<f32>, NpyError> {
        let a = self.in_memory("real numbers")?;
        Ok(standard(a.collect("real numbers", |i| {
            a.real_at(i).map(|v| v as f32)
        })?))
    }

    /// A 0-d or one-element array as an integer (e.g. PtychoPINN's stored `M`).
    pub fn to_scalar_i64(&self) -> Result<i64, NpyError> {
        let err = || NpyError::Dtype {
            what: self.what.clone(),
            dtype: self.dtype.clone(),
            wanted: "one integer",
        };
        if self.len() != 1 {
            return Err(err());
        }
        match self.in_memory("one integer")?.real_at(0) {
            Some(v) if v.fract() == 0.0 => Ok(v as i64),
            _ => Err(err()),
        }
    }
}

/// Reads and checks a `.npy` header from a stream (nothing past it).
fn read_header(what: &str, mut reader: impl Read) -> Result<Header, NpyError> {
    let format = |reason: &str| NpyError::Format {
        what: what.to_string(),
        reason: reason.to_string(),
    };
    let read_err = |e: std::io::Error| format(&format!("reading: {e}"));
    let mut preamble = [0_u8; 8];
    read_up_to(&mut reader, &mut preamble).map_err(read_err)?;
    if &preamble[..6] != b"\x93NUMPY" {
        return Err(format("missing the \\x93NUMPY magic"));
    }
    let (header_len, prefix) = match preamble[6] {
        1 => {
            let mut b = [0_u8; 2];
            read_exactly(&mut reader, &mut b, || format("header length is truncated"))?;
            (u16::from_le_bytes(b) as usize, 10)
        }
        2 | 3 => {
            let mut b = [0_u8; 4];
            read_exactly(&mut reader, &mut b, || format("header length is truncated"))?;
            (u32::from_le_bytes(b) as usize, 12)
        }
        v => return Err(format(&format!("unknown format version {v}"))),
    };
    if header_len > MAX_HEADER {
        return Err(format(&format!(
            "header of {header_len} bytes; at most {MAX_HEADER} are accepted"
        )));
    }
    let mut header = vec![0_u8; header_len];
    read_exactly(&mut reader, &mut header, || {
        format("header runs past the end of the file")
    })?;
    let header = std::str::from_utf8(&header).map_err(|_| format("header is not text"))?;
    let descr = dict_value(header, "descr")
        .map(|v| v.trim().trim_matches(['\'', '"']).to_string())
        .ok_or_else(|| format("header has no 'descr'"))?;
    let fortran_order = match dict_value(header, "fortran_order").map(str::trim) {
        Some("True") => true,
        Some("False") => false,
        _ => return Err(format("header has no valid 'fortran_order'")),
    };
    let shape_text = dict_value(header, "shape").ok_or_else(|| format("header has no 'shape'"))?;
    let shape = shape_text
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format(&format!("bad shape {shape_text}")))?;
    let count = shape
        .iter()
        .try_fold(1_usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format("shape overflows"))?;
    let (dtype, big_endian) = Dtype::parse(&descr);
    // An unknown dtype has no known size: nothing is read, and converting it is an error.
    let data_bytes = match dtype.size() {
        Some(size) => count
            .checked_mul(size)
            .ok_or_else(|| format("shape overflows"))?,
        None => 0,
    };
    Ok(Header {
        dtype,
        big_endian,
        fortran_order,
        shape,
        count,
        header_bytes: prefix + header_len,
        data_bytes,
    })
}

fn standard<T: Clone>(a: ArrayD<T>) -> ArrayD<T> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

/// The text of `'key': value` in a Python dict literal, up to the next top-level comma.
fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?;
    let mut depth = 0_i32;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(&rest[..i]),
            _ => {}
        }
    }
    None
}

/// Fills `buf` as far as the stream goes (short at end of stream; the rest stays zero).
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(k) => filled += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn read_exactly(
    reader: &mut impl Read,
    buf: &mut [u8],
    short: impl FnOnce() -> NpyError,
) -> Result<(), NpyError> {
    match read_up_to(reader, buf) {
        Ok(k) if k == buf.len() => Ok(()),
        _ => Err(short()),
    }
}

/// Reads a `.npy` file (only the bytes its header declares).
pub fn read_npy(path: &Path) -> Result<NpyArray, NpyError> {
    let file = open_file(path)?;
    NpyArray::read_from(&path.display().to_string(), std::io::BufReader::new(file))
}

/// Opens a file to read, refusing what is not a regular file (a directory, which `File::open`
/// accepts on Linux; a FIFO, on which `open` would block; a device such as `/dev/null`).
fn open_file(path: &Path) -> Result<File, NpyError> {
    let io = |error| NpyError::Io {
        path: path.to_path_buf(),
        error,
    };
    let regular = |meta: &std::fs::Metadata| match file_kind(meta) {
        None => Ok(()),
        Some(kind) => Err(NpyError::NotAFile {
            path: path.to_path_buf(),
            kind,
        }),
    };
    // Checked on the path first, so a FIFO is refused before `open` could wait for a writer.
    regular(&std::fs::metadata(path).map_err(io)?)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        // A path swapped for a FIFO between the check and the open must not block either
        // (O_NONBLOCK changes nothing for a regular file).
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(io)?;
    regular(&file.metadata().map_err(io)?)?;
    Ok(file)
}

/// What a path is when it is not a regular file.
fn file_kind(meta: &std::fs::Metadata) -> Option<&'static str> {
    let kind = meta.file_type();
    if kind.is_file() {
        return None;
    }
    if kind.is_dir() {
        return Some("a directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return Some("a FIFO");
        }
        if kind.is_char_device() {
            return Some("a character device");
        }
        if kind.is_block_device() {
            return Some("a block device");
        }
        if kind.is_socket() {
            return Some("a socket");
        }
    }
    Some("not a file")
}

/// An open `.npz` archive.
pub struct Npz {
    path: PathBuf,
    archive: zip::ZipArchive<File>,
}

impl Npz {
    /// Opens an `.npz` file (stored or deflated, as `np.savez` / `np.savez_compressed` write).
    pub fn open(path: &Path) -> Result<Self, NpyError> {
        let file = open_file(path)?;
        let archive = zip::ZipArchive::new(file).map_err(|e| NpyError::Archive {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            archive,
        })
    }

    /// Array names in the archive, in archive order.
    pub fn keys(&self) -> Vec<String> {
        self.archive
            .file_names()
            .filter_map(Result::ok)
            .map(|n| n.strip_suffix(".npy").unwrap_or(&n).to_string())
            .collect()
    }

    /// True if the archive holds an array named `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.keys().iter().any(|k| k == key)
    }

    /// Reads the array named `key` (only the bytes its header declares).
    pub fn read(&mut self, key: &str) -> Result<NpyArray, NpyError> {
        let what = format!("{}[{key}]", self.path.display());
        if !self.contains(key) {
            return Err(self.missing(key));
        }
        let path = self.path.clone();
        let mut entry =
            self.archive
                .by_name(&format!("{key}.npy"))
                .map_err(|e| NpyError::Archive {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
        let array = NpyArray::read_from(&what, &mut entry)?;
        // The member read to its end: the zip reader checks its CRC-32 there (NumPy refuses a
        // member whose bytes do not match it, and so do we).
        std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| NpyError::Archive {
            path,
            reason: format!("member '{key}' is corrupt: {e}"),
        })?;
        Ok(array)
    }

    fn missing(&self, key: &str) -> NpyError {
        NpyError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
            available: self.keys(),
        }
    }
}

/// An array to write, borrowed.
#[derive(Debug, Clone)]
pub enum NpyView<'a> {
    /// `complex64`.
    Complex64(ArrayViewD<'a, Complex32>),
    /// `float32`.
    Float32(ArrayViewD<'a, f32>),
    /// `float64`.
    Float64(ArrayViewD<'a, f64>),
    /// `int64`.
    Int64(ArrayViewD<'a, i64>),
}

impl NpyView<'_> {
    fn descr(&self) -> &'static str {
        match self {
            NpyView::Complex64(_) => "<c8",
            NpyView::Float32(_) => "<f4",
            NpyView::Float64(_) => "<f8",
            NpyView::Int64(_) => "<i8",
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            NpyView::Complex64(a) => a.shape(),
            NpyView::Float32(a) => a.shape(),
            NpyView::Float64(a) => a.shape(),
            NpyView::Int64(a) => a.shape(),
        }
    }

    fn element_size(&self) -> usize {
        match self {
            NpyView::Complex64(_) | NpyView::Float64(_) | NpyView::Int64(_) => 8,
            NpyView::Float32(_) => 4,
        }
    }

    /// The `.npy` header: magic, version 1.0, the dict, padded to a multiple of 64 bytes.
    fn header(&self) -> Vec<u8> {
        npy_header(self.descr(), self.shape())
    }

    /// Size of the whole `.npy` file in bytes.
    pub fn npy_len(&self) -> u64 {
        let count: usize = self.shape().iter().product();
        self.header().len() as u64 + (count * self.element_size()) as u64
    }

    /// Writes the `.npy` file (header, then data in C order, little-endian) to `w`, streaming:
    /// nothing the size of the array is allocated.
    pub fn write_npy_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&self.header())?;
        let mut buf = Vec::with_capacity(1 << 16);
        let flush = |buf: &mut Vec<u8>, w: &mut dyn Write| -> std::io::Result<()> {
            if buf.len() + 16 > buf.capacity() {
                w.write_all(buf)?;
                buf.clear();
            }
            Ok(())
        };
        match self {
            NpyView::Complex64(a) => {
                for c in a.iter() {
                    buf.extend_from_slice(&c.re.to_le_bytes());
                    buf.extend_from_slice(&c.im.to_le_bytes());
                    flush(&mut buf, w)?;
                }
            }
            NpyView::Float32(a) => {
                for v in a.iter() {
                    buf.extend_from_slice(&v.to_le_bytes());
                    flush(&mut buf, w)?;
                }
            }
            NpyView::Float64(a) => {
                for v in a.iter() {
                    buf.extend_from_slice(&v.to_le_bytes());
                    flush(&mut buf, w)?;
                }
            }
            NpyView::Int64(a) => {
                for v in a.iter() {
                    buf.extend_from_slice(&v.to_le_bytes());
                    flush(&mut buf, w)?;
                }
            }
        }
        w.write_all(&buf)
    }

    /// The whole `.npy` file as bytes (for small arrays and tests; files are streamed).
    pub fn to_npy_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_npy_to(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }
}

/// Fills one output file's contents.
pub type Fill<'a> = Box<dyn FnOnce(&mut BufWriter<File>) -> std::io::Result<()> + 'a>;

/// Temporary files being written now, so that a signal handler can remove them.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A `.npy` version 1.0 header for C-order data of type `descr` (`"<c8"`, `"<f8"`, …) and
/// `shape`, padded to a multiple of 64 bytes: write it, then the data, to make a `.npy` file of
/// any size in pieces.
pub fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let shape = match shape {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

/// Writes `path` atomically: `fill` writes into a temporary file beside it, which is renamed
/// over `path` only when everything succeeded.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<(), NpyError> {
    write_files_atomically(vec![(path, Box::new(fill))])
}

/// Writes several files so that they are replaced together or not at all: each is written to a
/// temporary file beside its target; only when all are complete and synced are they renamed
/// over their targets, one after the other, while [`abandon_pending_writes`] waits. A failure
/// removes every temporary file and leaves every target as it was.
pub fn write_files_atomically(files: Vec<(&Path, Fill<'_>)>) -> Result<(), NpyError> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let mut written: Vec<(PathBuf, &Path)> = Vec::with_capacity(files.len());
    let mut failure = None;
    for (path, fill) in files {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        pending().push(tmp.clone());
        let result = (|| {
            let mut writer = BufWriter::new(File::create(&tmp)?);
            fill(&mut writer)?;
            let file = writer.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()
        })();
        written.push((tmp, path));
        if let Err(error) = result {
            failure = Some(NpyError::Io {
                path: path.to_path_buf(),
                error,
            });
            break;
        }
    }
    let mut registry = pending();
    // Files written together are renamed under an exclusive lock on their folders, so that two
    // processes writing the same pair cannot interleave their renames (one's image beside the
    // other's picture): each pair lands whole, the later one last.
    let _locks = (failure.is_none() && written.len() > 1).then(|| lock_folders(&written));
    if failure.is_none() {
        for (tmp, path) in &written {
            if let Err(error) = std::fs::rename(tmp, path) {
                failure = Some(NpyError::Io {
                    path: path.to_path_buf(),
                    error,
                });
                break;
            }
        }
    }
    for (tmp, _) in &written {
        if failure.is_some() {
            let _ = std::fs::remove_file(tmp);
        }
        registry.retain(|p| p != tmp);
    }
    failure.map_or(Ok(()), Err)
}

/// Exclusive advisory locks (`flock`) on the folders of `written`'s temporary files, taken in
/// one order (so two writers cannot deadlock) and released when the handles drop. Best effort:
/// a folder that cannot be opened or locked (a file system without `flock`) is left unlocked.
fn lock_folders(written: &[(PathBuf, &Path)]) -> Vec<File> {
    let mut folders: Vec<PathBuf> = written
        .iter()
        .filter_map(|(tmp, _)| tmp.parent())
        .map(|d| {
            let d = if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            };
            d.canonicalize().unwrap_or_else(|_| d.to_path_buf())
        })
        .collect();
    folders.sort();
    folders.dedup();
    let mut locks = Vec::with_capacity(folders.len());
    for folder in folders {
        let Ok(handle) = File::open(&folder) else {
            continue;
        };
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            loop {
                // SAFETY: `handle` owns an open descriptor for the whole call; flock only takes
                // a lock on it and touches no memory of ours.
                let rc = unsafe { libc::flock(handle.as_raw_fd(), libc::LOCK_EX) };
                if rc == 0
                    || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
                {
                    break;
                }
            }
        }
        locks.push(handle);
    }
    locks
}

/// For a signal handler that is about to end the process: waits for a commit in progress (so
/// files written together stay together), removes every temporary file still being written, and
/// blocks all later commits for the rest of the process's life.
pub fn abandon_pending_writes() {
    let registry = pending();
    for tmp in registry.iter() {
        let _ = std::fs::remove_file(tmp);
    }
    // Keep the lock: no write may commit after this.
    std::mem::forget(registry);
}

/// The writer of an uncompressed `.npz` file (as `np.savez`) holding `arrays`, for
/// [`write_files_atomically`].
pub fn npz_fill<'a>(arrays: &'a [(&str, NpyView<'_>)]) -> Fill<'a> {
    Box::new(move |w| {
        let mut zip = zip::ZipWriter::new(SeekableBuf(w));
        let written = (|| {
            for (name, array) in arrays {
                let options = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored)
                    .large_file(array.npy_len() >= u32::MAX as u64);
                zip.start_file(format!("{name}.npy"), options)
                    .map_err(std::io::Error::other)?;
                array.write_npy_to(&mut zip)?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            // The temporary file is discarded. Dropping the writer would try to finish the
            // archive on the failed file (a full disk, say) and print "ZipWriter::drop: failed
            // to finalize archive" to stderr beside our own error line; forgetting it leaks only
            // the entries' small metadata, once, on this error path.
            std::mem::forget(zip);
            return Err(e);
        }
        zip.finish().map_err(std::io::Error::other)?;
        Ok(())
    })
}

/// Writes one array as a `.npy` file, atomically.
pub fn write_npy(path: &Path, array: &NpyView<'_>) -> Result<(), NpyError> {
    write_atomically(path, |w| array.write_npy_to(w))
}

/// Writes named arrays as an uncompressed `.npz` file (as `np.savez`), atomically.
pub fn write_npz(path: &Path, arrays: &[(&str, NpyView<'_>)]) -> Result<(), NpyError> {
    write_files_atomically(vec![(path, npz_fill(arrays))])
}

/// `BufWriter<File>` with `Seek`, which the zip writer needs.
struct SeekableBuf<'a>(&'a mut BufWriter<File>);

impl Write for SeekableBuf<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Seek for SeekableBuf<'_> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.0.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, arr2};

    #[test]
    fn npy_round_trip_complex_and_real() {
        let a = arr2(&[[Complex32::new(1.0, -2.0), Complex32::new(3.5, 0.25)]]).into_dyn();
        let bytes = NpyView::Complex64(a.view()).to_npy_bytes();
        assert_eq!((bytes.len() - 16) % 64, 0, "header padded to 64 bytes");
        let back = NpyArray::from_bytes("t", bytes).unwrap();
        assert_eq!(back.dtype(), &Dtype::Complex64);
        assert_eq!(back.to_complex32().unwrap(), a);
        let r = Array2::from_shape_fn((3, 2), |(i, j)| (i * 2 + j) as f64).into_dyn();
        let back = NpyArray::from_bytes("t", NpyView::Float64(r.view()).to_npy_bytes()).unwrap();
        assert_eq!(back.to_f64().unwrap(), r);
        assert_eq!(
            back.to_complex32().unwrap()[[2, 1]],
            Complex32::new(5.0, 0.0)
        );
    }

    #[test]
    fn truncated_and_garbage_are_errors() {
        let r = Array2::<f64>::zeros((4, 4)).into_dyn();
        let mut bytes = NpyView::Float64(r.view()).to_npy_bytes();
        bytes.truncate(bytes.len() - 3);
        let err = NpyArray::from_bytes("x.npy", bytes).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        let err = NpyArray::from_bytes("y.npy", b"hello world".to_vec()).unwrap_err();
        assert!(err.to_string().contains("not a valid .npy"), "{err}");
    }

    #[test]
    fn fortran_order_rows_equal_the_whole_arrays_rows() {
        // Element (i, j, k) of a 7×3×5 stack is i + 10j + 100k (+ i/4 imaginary), stored in
        // Fortran order in three dtypes; every row range, read in memory, from the file and
        // through one reader reused across ranges of different sizes, equals the whole array's.
        let shape = [7_usize, 3, 5];
        let value = |i: usize, j: usize, k: usize| {
            Complex32::new((i + 10 * j + 100 * k) as f32, i as f32 / 4.0)
        };
        let dir = tempfile::tempdir().unwrap();
        for descr in ["<c8", ">c16", "<f4"] {
            let header =
                format!("{{'descr': '{descr}', 'fortran_order': True, 'shape': (7, 3, 5), }}");
            let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
            bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
            bytes.extend_from_slice(header.as_bytes());
            for k in 0..shape[2] {
                for j in 0..shape[1] {
                    for i in 0..shape[0] {
                        let v = value(i, j, k);
                        match descr {
                            "<c8" => {
                                bytes.extend_from_slice(&v.re.to_le_bytes());
                                bytes.extend_from_slice(&v.im.to_le_bytes());
                            }
                            ">c16" => {
                                bytes.extend_from_slice(&(v.re as f64).to_be_bytes());
                                bytes.extend_from_slice(&(v.im as f64).to_be_bytes());
                            }
                            _ => bytes.extend_from_slice(&v.re.to_le_bytes()),
                        }
                    }
                }
            }
            let path = dir.path().join(format!("f{}.npy", &descr[1..]));
            std::fs::write(&path, &bytes).unwrap();
            let owned = NpyArray::from_bytes("f", bytes).unwrap();
            let in_file = NpyArray::map_npy(&path).unwrap();
            let whole = owned.to_complex32().unwrap();
            for (i, j, k) in indices(shape) {
                let want = if descr == "<f4" {
                    Complex32::new(value(i, j, k).re, 0.0)
                } else {
                    value(i, j, k)
                };
                assert_eq!(whole[[i, j, k]], want, "{descr}");
            }
            let mut reader = in_file.row_reader();
            for (start, len) in [(0, 7), (2, 3), (6, 1), (0, 1), (1, 6), (3, 0)] {
                let want = whole.slice_axis(ndarray::Axis(0), (start..start + len).into());
                assert_eq!(
                    owned.to_complex32_rows(start, len).unwrap(),
                    want,
                    "{descr}"
                );
                assert_eq!(
                    in_file.to_complex32_rows(start, len).unwrap(),
                    want,
                    "{descr}"
                );
                assert_eq!(reader.rows(start, len).unwrap(), want, "{descr}");
            }
            assert!(in_file.to_complex32_rows(5, 3).is_err());
        }
    }

    /// A reader keeping lines 2..5 of each 7×6 row reads those lines as the file has them and
    /// leaves the others zero, over chunks of several sizes (the buffer reused), and equals a
    /// whole read on the kept lines.
    #[test]
    fn kept_lines_are_the_files_and_only_they_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.npy");
        let stack = ndarray::Array3::from_shape_fn((40, 7, 6), |(k, r, c)| {
            Complex32::new((k * 100 + r * 10 + c) as f32, -(k as f32))
        });
        write_npy(&path, &NpyView::Complex64(stack.view().into_dyn())).unwrap();
        let array = NpyArray::map_npy(&path).unwrap();
        let mut reader = array.row_reader().keeping_lines(2..5);
        for (start, len) in [(0, 40), (3, 17), (39, 1), (20, 20)] {
            let rows = reader.rows(start, len).unwrap();
            for ((k, r, c), v) in rows
                .into_dimensionality::<ndarray::Ix3>()
                .unwrap()
                .indexed_iter()
            {
                let want = if (2..5).contains(&r) {
                    stack[[start + k, r, c]]
                } else {
                    Complex32::new(0.0, 0.0)
                };
                assert_eq!(*v, want, "rows {start}+{len}: ({k}, {r}, {c})");
            }
        }
    }

    /// Crops read from a file (by position, in batches, concurrently) are the stack's own
    /// crops, equal to the same crops of the array read into memory, for any index order and
    /// repeats, crops at every offset; a file truncated after it was opened is `Changed`; bad
    /// requests are errors, never panics.
    #[test]
    fn crops_are_the_files_and_a_truncation_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.npy");
        let stack = ndarray::Array3::from_shape_fn((300, 9, 8), |(k, r, c)| {
            Complex32::new((k * 100 + r * 10 + c) as f32, -(k as f32))
        });
        write_npy(&path, &NpyView::Complex64(stack.view().into_dyn())).unwrap();
        let in_file = NpyArray::map_npy(&path).unwrap();
        let in_memory = read_npy(&path).unwrap();
        let id = in_file.file_identity().unwrap();
        assert_eq!(id.len, std::fs::metadata(&path).unwrap().len());
        assert!(in_memory.file_identity().is_none());
        let picked: Vec<usize> = (0..200)
            .map(|j| (j * 37 + 5) % 300)
            .chain([299, 0, 0])
            .collect();
        for (start, kept) in [(0, 8), (2, 5), (3, 1), (0, 0)] {
            let mut got = vec![0_u8; picked.len() * kept * kept * 8];
            in_file.read_crops(&picked, start, kept, &mut got).unwrap();
            let mut from_memory = vec![1_u8; got.len()];
            in_memory
                .read_crops(&picked, start, kept, &mut from_memory)
                .unwrap();
            assert_eq!(got, from_memory);
            let values: Vec<Complex32> = got.chunks(8).map(bytemuck::pod_read_unaligned).collect();
            for (j, &i) in picked.iter().enumerate() {
                for r in 0..kept {
                    for c in 0..kept {
                        let v = values[(j * kept + r) * kept + c];
                        assert_eq!(v, stack[[i, start + r, start + c]], "{i} {r} {c}");
                    }
                }
            }
        }
        let mut out = vec![0_u8; 8];
        for (picked, start, kept) in [(vec![300], 0, 1), (vec![0], 8, 2), (vec![0, 1], 0, 1)] {
            assert!(matches!(
                in_file.read_crops(&picked, start, kept, &mut out),
                Err(NpyError::Format { .. })
            ));
        }
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(id.len / 2).unwrap();
        let mut out = vec![0_u8; 300 * 4 * 8];
        let all: Vec<usize> = (0..300).collect();
        let err = in_file.read_crops(&all, 0, 2, &mut out).unwrap_err();
        assert!(matches!(err, NpyError::Changed { .. }), "{err}");
    }

    fn indices(shape: [usize; 3]) -> impl Iterator<Item = (usize, usize, usize)> {
        (0..shape[0]).flat_map(move |i| {
            (0..shape[1]).flat_map(move |j| (0..shape[2]).map(move |k| (i, j, k)))
        })
    }

    #[test]
    fn fortran_order_and_big_endian_are_converted() {
        // 2×3 float64 in Fortran order, big-endian.
        let header = "{'descr': '>f8', 'fortran_order': True, 'shape': (2, 3), }";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        for v in [0.0_f64, 3.0, 1.0, 4.0, 2.0, 5.0] {
            bytes.extend_from_slice(&v.to_be_bytes());
        }
        let a = NpyArray::from_bytes("f", bytes).unwrap().to_f64().unwrap();
        assert_eq!(a, arr2(&[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]).into_dyn());
    }

    #[test]
    fn complex_is_not_real() {
        let a = arr2(&[[Complex32::new(1.0, 1.0)]]).into_dyn();
        let back = NpyArray::from_bytes("c", NpyView::Complex64(a.view()).to_npy_bytes()).unwrap();
        let err = back.to_f64().unwrap_err();
        assert!(
            err.to_string().contains("complex64 cannot be read as real"),
            "{err}"
        );
    }

    #[test]
    fn npz_round_trip_and_missing_key_lists_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npz");
        let m = ndarray::arr0(20_i64).into_dyn();
        let x = ndarray::arr1(&[1.5_f64, 2.5]).into_dyn();
        write_npz(
            &path,
            &[
                ("M", NpyView::Int64(m.view())),
                ("x", NpyView::Float64(x.view())),
            ],
        )
        .unwrap();
        let mut npz = Npz::open(&path).unwrap();
        assert_eq!(npz.keys(), vec!["M", "x"]);
        assert_eq!(npz.read("M").unwrap().to_scalar_i64().unwrap(), 20);
        assert_eq!(npz.read("x").unwrap().to_f64().unwrap(), x);
        let err = npz.read("Y").unwrap_err().to_string();
        assert!(
            err.contains("no array named 'Y'") && err.contains("M, x"),
            "{err}"
        );
    }
}
