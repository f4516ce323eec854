//! One array as stored: header facts and raw bytes, in memory or in its file; conversions.

#[allow(unused_imports)]
use super::*;

/// One array as stored: header facts plus the raw data bytes, read into memory or left in the
/// file and read a range at a time ([`in_file`]).
#[derive(Debug, Clone)]
pub struct NpyArray {
    pub(super) what: String,
    pub(super) dtype: Dtype,
    pub(super) big_endian: bool,
    pub(super) fortran_order: bool,
    pub(super) shape: Vec<usize>,
    pub(super) count: usize,
    pub(super) data: Storage,
}

/// Where an array's data bytes live.
#[derive(Debug, Clone)]
pub(super) enum Storage {
    /// Read into memory.
    Owned(Vec<u8>),
    /// A range of a file, read when asked for.
    File(in_file::FileBytes),
}

impl Storage {
    /// The bytes of data in memory. An array left in its file has none here: every public
    /// reader brings the bytes it needs into memory first ([`NpyArray::in_memory`],
    /// [`NpyArray::to_complex32_rows`]), and the element accessors run on that copy.
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Storage::Owned(v) => v,
            Storage::File(_) => &[],
        }
    }
}

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

    pub(super) fn from_parts(what: &str, header: Header, data: Storage) -> Self {
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
        let mut scratch = in_file::Scratch::default();
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
    pub(super) fn rows_shape(&self, start: usize, len: usize) -> Result<Vec<usize>, NpyError> {
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

/// Reads a `.npy` file (only the bytes its header declares).
pub fn read_npy(path: &Path) -> Result<NpyArray, NpyError> {
    let file = open_file(path)?;
    NpyArray::read_from(&path.display().to_string(), std::io::BufReader::new(file))
}

/// Opens a file to read, refusing what is not a regular file (a directory, which `File::open`
/// accepts on Linux; a FIFO, on which `open` would block; a device such as `/dev/null`).
pub(super) fn open_file(path: &Path) -> Result<File, NpyError> {
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
pub(super) fn file_kind(meta: &std::fs::Metadata) -> Option<&'static str> {
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
