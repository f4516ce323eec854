//! Arrays read in place from their file: `.npy` files and uncompressed `.npz` members (what
//! `np.savez` writes), so that a patch stack larger than memory can be streamed chunk by chunk.
//!
//! Nothing is memory-mapped. Each chunk is read with positional reads (`pread`) into a buffer
//! of this process, after and before which the file's identity (size, modification time,
//! inode) is checked. So:
//! - a file truncated or rewritten while it is read (`np.save` over an input a pipeline still
//!   reads) gives one error naming the file, never a `SIGBUS` (touching a mapped page past a
//!   truncation kills the process) and never a result mixed from two versions;
//! - an address-space limit (`ulimit -v`) smaller than the file does not matter: only one chunk
//!   is ever in memory;
//! - a member at any offset (`np.savez` puts data at unaligned offsets) is read into aligned
//!   memory and used without a further conversion.
//!
//! The copy costs one pass over the chunk's bytes, which the stitching reads anyway.
//!
//! Why our own reader rather than `ndarray-npy`'s: that reads only native-endian arrays of the
//! exact element type asked for, whole, from `.npy` files. PtychoPINN's data come as `.npz`
//! archives, patches as complex64 or complex128, from either byte order; this reader reads
//! `.npz` members at their offset, a row range at a time, with the header parser the in-memory
//! reader uses (and that the fuzz tests cover).

use super::{Dtype, NpyArray, NpyError, Npz, Storage, open_file, read_header};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use num_complex::Complex32;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// A byte range of a file, and what the file was when it was opened.
#[derive(Debug, Clone)]
pub(super) struct FileBytes {
    file: Arc<File>,
    path: PathBuf,
    start: u64,
    stamp: Stamp,
}

/// What identifies one version of a file: a truncation, an in-place rewrite or a replacement
/// changes at least one of these.
#[derive(Debug, Clone, PartialEq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn stamp(file: &File, path: &Path) -> Result<Stamp, NpyError> {
    let meta = file.metadata().map_err(|error| NpyError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Ok(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    })
}

/// Reads exactly `buf.len()` bytes at `offset`; `Ok(false)` when the file ends first.
fn read_exact_at(file: &File, mut offset: u64, mut buf: &mut [u8]) -> std::io::Result<bool> {
    while !buf.is_empty() {
        #[cfg(unix)]
        let n = std::os::unix::fs::FileExt::read_at(file, buf, offset);
        #[cfg(windows)]
        let n = std::os::windows::fs::FileExt::seek_read(file, buf, offset);
        match n {
            Ok(0) => return Ok(false),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// A `Read` over a file from a position, by positional reads (for the header parser).
struct ReaderAt<'f> {
    file: &'f File,
    at: u64,
}

impl Read for ReaderAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        #[cfg(unix)]
        let n = std::os::unix::fs::FileExt::read_at(self.file, buf, self.at)?;
        #[cfg(windows)]
        let n = std::os::windows::fs::FileExt::seek_read(self.file, buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

impl FileBytes {
    /// Checks that the file is still the version that was opened.
    fn check(&self, what: &str) -> Result<(), NpyError> {
        let now = stamp(&self.file, &self.path)?;
        if now == self.stamp {
            return Ok(());
        }
        let how = if now.len < self.stamp.len {
            format!("was truncated from {} to {} bytes", self.stamp.len, now.len)
        } else {
            "was rewritten".to_string()
        };
        Err(NpyError::Changed {
            what: what.to_string(),
            path: self.path.clone(),
            how,
        })
    }

    /// Bytes `offset..offset + buf.len()` of the range into `buf`, from an unchanged file.
    fn read(&self, what: &str, offset: usize, buf: &mut [u8]) -> Result<(), NpyError> {
        self.check(what)?;
        let complete =
            read_exact_at(&self.file, self.start + offset as u64, buf).map_err(|error| {
                NpyError::Io {
                    path: self.path.clone(),
                    error,
                }
            })?;
        // A change during the read shows here; a short read is a truncation the stamp shows.
        self.check(what)?;
        if !complete {
            return Err(NpyError::Changed {
                what: what.to_string(),
                path: self.path.clone(),
                how: "ended early".into(),
            });
        }
        Ok(())
    }
}

/// Opens `path` for positional reads.
fn open(path: &Path) -> Result<(Arc<File>, Stamp), NpyError> {
    let file = open_file(path)?;
    let stamp = stamp(&file, path)?;
    Ok((Arc::new(file), stamp))
}

/// The array whose `.npy` bytes start at `offset` of the file and take at most `room` bytes.
fn array_at(
    what: &str,
    path: &Path,
    (file, stamp): (Arc<File>, Stamp),
    offset: u64,
    room: u64,
) -> Result<NpyArray, NpyError> {
    let header = read_header(
        what,
        ReaderAt {
            file: &file,
            at: offset,
        }
        .take(room),
    )?;
    let available = room.saturating_sub(header.header_bytes as u64);
    if available < header.data_bytes as u64 {
        return Err(NpyError::Truncated {
            what: what.to_string(),
            shape: header.shape,
            dtype: header.dtype,
            expected: header.data_bytes,
            found: available as usize,
        });
    }
    let data = FileBytes {
        file,
        path: path.to_path_buf(),
        start: offset + header.header_bytes as u64,
        stamp,
    };
    Ok(NpyArray::from_parts(what, header, Storage::File(data)))
}

impl NpyArray {
    /// Opens a `.npy` file for reading in place: only the header is read now; rows are read
    /// when they are asked for ([`NpyArray::to_complex32_rows`]).
    pub fn map_npy(path: &Path) -> Result<Self, NpyError> {
        let opened = open(path)?;
        let len = opened.1.len;
        array_at(&path.display().to_string(), path, opened, 0, len)
    }

    /// True when the data stay in the file (read a chunk at a time) rather than in memory.
    pub fn is_mapped(&self) -> bool {
        matches!(self.data, Storage::File(_))
    }

    /// The array as a `complex64` view without a copy, for an array in memory whose bytes allow
    /// it: complex64, little-endian, C order, 4-byte aligned. `None` otherwise (use
    /// [`NpyArray::to_complex32_rows`]), always for arrays read in place.
    pub fn complex32_view(&self) -> Option<ArrayViewD<'_, Complex32>> {
        if !self.is_native_complex64() || self.is_mapped() {
            return None;
        }
        let values: &[Complex32] = bytemuck::try_cast_slice(self.data.bytes()).ok()?;
        ArrayViewD::from_shape(IxDyn(&self.shape), values).ok()
    }

    /// Complex64 bytes as this machine reads them: little-endian, C order.
    fn is_native_complex64(&self) -> bool {
        self.dtype == Dtype::Complex64
            && !self.big_endian
            && !self.fortran_order
            && cfg!(target_endian = "little")
    }

    /// A zeroed buffer of `len` values for this array's data, or its out-of-memory error.
    fn buffer<T: bytemuck::Zeroable>(&self, len: usize) -> Result<Vec<T>, NpyError> {
        bytemuck::allocation::try_zeroed_vec(len).map_err(|()| NpyError::OutOfMemory {
            what: self.what.clone(),
            bytes: len as f64 * std::mem::size_of::<T>() as f64,
        })
    }

    /// An array read in place, with the bytes of elements `first..first + count` (raw order)
    /// read into memory as an array of `shape`; `None` for an array already in memory.
    pub(super) fn read_range(
        &self,
        wanted: &'static str,
        first: usize,
        count: usize,
        shape: Vec<usize>,
    ) -> Result<Option<NpyArray>, NpyError> {
        let Storage::File(f) = &self.data else {
            return Ok(None);
        };
        let size = self.dtype.size().ok_or_else(|| NpyError::Dtype {
            what: self.what.clone(),
            dtype: self.dtype.clone(),
            wanted,
        })?;
        let mut buf = self.buffer::<u8>(count * size)?;
        f.read(&self.what, first * size, &mut buf)?;
        Ok(Some(NpyArray {
            what: self.what.clone(),
            dtype: self.dtype.clone(),
            big_endian: self.big_endian,
            fortran_order: self.fortran_order,
            shape,
            count,
            data: Storage::Owned(buf),
        }))
    }

    /// Rows of a C-order little-endian complex64 array read in place straight into a
    /// `complex64` array (no conversion); `None` for any other array.
    pub(super) fn read_complex32_rows(
        &self,
        first: usize,
        count: usize,
        shape: &[usize],
    ) -> Result<Option<ArrayD<Complex32>>, NpyError> {
        let Storage::File(f) = &self.data else {
            return Ok(None);
        };
        if !self.is_native_complex64() {
            return Ok(None);
        }
        let mut values = self.buffer::<Complex32>(count)?;
        f.read(&self.what, first * 8, bytemuck::cast_slice_mut(&mut values))?;
        Ok(ArrayD::from_shape_vec(IxDyn(shape), values).ok())
    }

    /// The data bytes in memory: this array itself, or (read in place) a copy read whole.
    pub(super) fn in_memory(
        &self,
        wanted: &'static str,
    ) -> Result<std::borrow::Cow<'_, NpyArray>, NpyError> {
        match self.read_range(wanted, 0, self.count, self.shape.clone())? {
            Some(owned) => Ok(std::borrow::Cow::Owned(owned)),
            None => Ok(std::borrow::Cow::Borrowed(self)),
        }
    }
}

impl Npz {
    /// Opens the array named `key` for reading in place when it is stored uncompressed
    /// (`np.savez`); `None` when it is compressed (`np.savez_compressed`), which only
    /// [`Npz::read`] can read.
    pub fn map(&mut self, key: &str) -> Result<Option<NpyArray>, NpyError> {
        let what = format!("{}[{key}]", self.path.display());
        if !self.contains(key) {
            return Err(self.missing(key));
        }
        let path = self.path.clone();
        let (start, size) = {
            let entry =
                self.archive
                    .by_name(&format!("{key}.npy"))
                    .map_err(|e| NpyError::Archive {
                        path,
                        reason: e.to_string(),
                    })?;
            if entry.compression() != zip::CompressionMethod::Stored || entry.encrypted() {
                return Ok(None);
            }
            match entry.data_start() {
                Some(start) => (start, entry.size()),
                None => return Ok(None),
            }
        };
        let opened = open(&self.path)?;
        let fits = start
            .checked_add(size)
            .is_some_and(|end| end <= opened.1.len);
        if !fits {
            return Err(NpyError::Archive {
                path: self.path.clone(),
                reason: format!("member '{key}' runs past the end of the file"),
            });
        }
        array_at(&what, &self.path.clone(), opened, start, size).map(Some)
    }
}
