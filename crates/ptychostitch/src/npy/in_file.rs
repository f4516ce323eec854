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

impl Stamp {
    fn identity(&self) -> FileIdentity {
        let modified_ns = self
            .modified
            .map(|t| match t.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(after) => after.as_nanos() as i128,
                Err(before) => -(before.duration().as_nanos() as i128),
            });
        FileIdentity {
            len: self.len,
            modified_ns,
            inode: self.inode,
        }
    }
}

/// One version of a file as `os.stat` tells it apart: size, modification time (nanoseconds
/// since the epoch, `st_mtime_ns`; `None` where the system keeps none) and inode (`st_ino`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    /// Size in bytes.
    pub len: u64,
    /// Modification time, nanoseconds since 1970-01-01 UTC.
    pub modified_ns: Option<i128>,
    /// Inode number (0 where the system has none).
    pub inode: u64,
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
fn read_exact_at(file: &File, offset: u64, mut buf: &mut [u8]) -> std::io::Result<bool> {
    let mut reader = ReaderAt { file, at: offset };
    while !buf.is_empty() {
        match reader.read(buf) {
            Ok(0) => return Ok(false),
            Ok(n) => buf = &mut buf[n..],
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
        self.read_pieces(what, std::iter::once((offset, buf)))
    }

    /// Each `(offset, buffer)` piece filled from that offset of the range, from a file unchanged
    /// over the whole read (checked before and after, not between pieces: a change shows in the
    /// stamp afterwards just the same).
    fn read_pieces<'b>(
        &self,
        what: &str,
        pieces: impl Iterator<Item = (usize, &'b mut [u8])>,
    ) -> Result<(), NpyError> {
        self.check(what)?;
        for (at, piece) in pieces {
            self.read_unchecked(what, at, piece)?;
        }
        self.check(what)
    }

    /// Bytes `at..at + piece.len()` of the range into `piece`, the file's identity not checked
    /// around it (the caller checks before and after its reads); a file that ends first is
    /// [`NpyError::Changed`].
    fn read_unchecked(&self, what: &str, at: usize, piece: &mut [u8]) -> Result<(), NpyError> {
        let complete =
            read_exact_at(&self.file, self.start + at as u64, piece).map_err(|error| {
                NpyError::Io {
                    path: self.path.clone(),
                    error,
                }
            })?;
        if !complete {
            self.check(what)?;
            return Err(NpyError::Changed {
                what: what.to_string(),
                path: self.path.clone(),
                how: "ended early".into(),
            });
        }
        Ok(())
    }

    /// [`FileBytes::read_pieces`] with up to `readers` reads in flight: the pieces split into
    /// that many consecutive groups, each read on a thread of its own (a disk serves
    /// concurrent reads faster than one after another).
    fn read_pieces_concurrently(
        &self,
        what: &str,
        mut pieces: Vec<(usize, &mut [u8])>,
        readers: usize,
    ) -> Result<(), NpyError> {
        let per = pieces.len().div_ceil(readers.max(1)).max(1);
        self.on_readers(pieces.chunks_mut(per), |group| {
            self.read_pieces(what, group.iter_mut().map(|(at, b)| (*at, &mut **b)))
        })
    }

    /// `read(group)` for every group, each on a reader thread of its own; the first error (a
    /// reader thread that panicked is one too).
    fn on_readers<G: Send>(
        &self,
        groups: impl Iterator<Item = G>,
        read: impl Fn(G) -> Result<(), NpyError> + Sync,
    ) -> Result<(), NpyError> {
        let read = &read;
        std::thread::scope(|scope| {
            let handles: Vec<_> = groups
                .map(|group| scope.spawn(move || read(group)))
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(NpyError::Io {
                        path: self.path.clone(),
                        error: std::io::Error::other("a reader thread failed"),
                    })
                })
            })
        })
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
    pub fn open_in_place(path: &Path) -> Result<Self, NpyError> {
        let opened = open(path)?;
        let len = opened.1.len;
        array_at(&path.display().to_string(), path, opened, 0, len)
    }

    /// True when the data stay in the file (read a chunk at a time) rather than in memory.
    pub fn is_in_file(&self) -> bool {
        matches!(self.data, Storage::File(_))
    }

    /// The array as a `complex64` view without a copy, for an array in memory whose bytes allow
    /// it: complex64, little-endian, C order, 4-byte aligned. `None` otherwise (use
    /// [`NpyArray::to_complex32_rows`]), always for arrays read in place.
    pub fn complex32_view(&self) -> Option<ArrayViewD<'_, Complex32>> {
        if !self.is_native_complex64() || self.is_in_file() {
            return None;
        }
        let values: &[Complex32] = bytemuck::try_cast_slice(self.data.bytes()).ok()?;
        ArrayViewD::from_shape(IxDyn(&self.shape), values).ok()
    }

    /// Complex64 bytes as this machine reads them: little-endian, C order.
    fn is_native_complex64(&self) -> bool {
        self.has_native_complex64_values() && !self.fortran_order
    }

    /// Complex64 values as this machine reads them (little-endian), in either order.
    fn has_native_complex64_values(&self) -> bool {
        self.dtype == Dtype::Complex64 && !self.big_endian && cfg!(target_endian = "little")
    }

    /// Bytes per element, or the error for a dtype that is not `wanted`.
    fn element_size(&self, wanted: &'static str) -> Result<usize, NpyError> {
        self.dtype.size().ok_or_else(|| NpyError::Dtype {
            what: self.what.clone(),
            dtype: self.dtype.clone(),
            wanted,
        })
    }

    /// A zeroed buffer of `len` values for this array's data, or its out-of-memory error.
    fn buffer<T: bytemuck::Zeroable>(&self, len: usize) -> Result<Vec<T>, NpyError> {
        let v: Vec<T> =
            bytemuck::allocation::try_zeroed_vec(len).map_err(|()| NpyError::OutOfMemory {
                what: self.what.clone(),
                bytes: len as f64 * std::mem::size_of::<T>() as f64,
            })?;
        // Chunk buffers are large and fresh: a fault per 2 MiB page instead of per 4 KiB.
        crate::memory::advise_huge_pages(v.as_ptr().cast(), len * std::mem::size_of::<T>());
        Ok(v)
    }

    /// Rows `start..start + len` of a Fortran-order array, in C order. With the trailing axes'
    /// Fortran-order flat index `j`, element (row `i`, `j`) sits at raw index `i + rows·j`: the
    /// chunk is one run of `len` elements per trailing index. The runs are read (one positional
    /// read each, `len` elements long: large for chunks of many patches) in the C order of the
    /// trailing index, which makes a `(trailing, len)` block whose transpose is the chunk.
    /// Memory: the chunk about twice, never the whole array.
    pub(super) fn fortran_rows(
        &self,
        start: usize,
        len: usize,
        scratch: &mut Scratch,
    ) -> Result<(), NpyError> {
        let rows = self.shape[0];
        let trailing = &self.shape[1..];
        let per_row: usize = trailing.iter().product();
        let count = len * per_row;
        let size = self.element_size("complex")?;
        let fill = |bytes: &mut [u8]| -> Result<(), NpyError> {
            let runs = (0..per_row).map(|t| (start + rows * fortran_index(t, trailing)) * size);
            let pieces = runs.zip(bytes.chunks_mut((len * size).max(1)));
            match &self.data {
                Storage::File(f) => f.read_pieces(&self.what, pieces),
                Storage::Owned(all) => {
                    for (at, piece) in pieces {
                        piece.copy_from_slice(&all[at..at + piece.len()]);
                    }
                    Ok(())
                }
            }
        };
        if self.has_native_complex64_values() {
            // Read straight into aligned values: no conversion.
            fill(bytemuck::cast_slice_mut(
                self.grown(&mut scratch.block, count)?,
            ))?;
        } else {
            let mut bytes = self.buffer::<u8>(count * size)?;
            fill(&mut bytes)?;
            let block = NpyArray {
                what: self.what.clone(),
                dtype: self.dtype.clone(),
                big_endian: self.big_endian,
                fortran_order: false,
                shape: vec![per_row, len],
                count,
                data: Storage::Owned(bytes),
            };
            scratch.block = block.to_complex32()?.into_raw_vec_and_offset().0;
        }
        let out = self.grown(&mut scratch.out, count)?;
        transpose(&scratch.block[..count], per_row, len, out);
        Ok(())
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
        let size = self.element_size(wanted)?;
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

    /// Rows `start..start + len` (a valid range) as `complex64` into `scratch.out[..len·row]`,
    /// where this array has a direct path: a C-order little-endian complex64 array read in
    /// place (read straight into the values), or any Fortran-order array. `Ok(false)` for the
    /// others (converted by [`NpyArray::to_complex32_rows`]).
    ///
    /// `lines`: read only these lines (second-axis indices) of each row, one positional read per
    /// row, where the array is read in place as C-order complex64; the other lines keep
    /// whatever the buffer held (zeros, or lines no one reads).
    pub(super) fn rows_into(
        &self,
        start: usize,
        len: usize,
        scratch: &mut Scratch,
        lines: Option<std::ops::Range<usize>>,
    ) -> Result<bool, NpyError> {
        if self.fortran_order {
            self.fortran_rows(start, len, scratch)?;
            return Ok(true);
        }
        let Storage::File(f) = &self.data else {
            return Ok(false);
        };
        if !self.is_native_complex64() {
            return Ok(false);
        }
        let per_row: usize = self.shape[1..].iter().product();
        let out = self.grown(&mut scratch.out, len * per_row)?;
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(out);
        match lines.filter(|l| self.shape.len() >= 2 && l.end <= self.shape[1] && !l.is_empty()) {
            Some(lines) if lines.len() < self.shape[1] => {
                let line = per_row / self.shape[1] * 8;
                let row = per_row * 8;
                let pieces = bytes
                    .chunks_mut(row)
                    .enumerate()
                    .map(|(k, patch)| {
                        let kept = &mut patch[lines.start * line..lines.end * line];
                        ((start + k) * row + lines.start * line, kept)
                    })
                    .collect();
                // Sixteen reads in flight: one after another was slower from a cold cache
                // (100,000 patches: 8.6-10.0 s against 2.9-3.9 s).
                f.read_pieces_concurrently(&self.what, pieces, 16)?;
            }
            _ => f.read(&self.what, start * per_row * 8, bytes)?,
        }
        Ok(true)
    }

    /// The first `len` values of `v`, which is replaced by a larger buffer first if it is
    /// shorter.
    fn grown<'v>(
        &self,
        v: &'v mut Vec<Complex32>,
        len: usize,
    ) -> Result<&'v mut [Complex32], NpyError> {
        if v.len() < len {
            *v = Vec::new(); // free the smaller one first
            *v = self.buffer(len)?;
        }
        Ok(&mut v[..len])
    }

    /// A reader of consecutive chunks of rows that keeps its buffers from one chunk to the
    /// next: a fresh large buffer costs a page fault and a zeroing per page on every chunk
    /// (two thirds of the time of a Fortran-order stream, measured).
    pub fn row_reader(&self) -> RowReader<'_> {
        RowReader {
            array: self,
            scratch: Scratch::default(),
            converted: None,
            lines: None,
        }
    }

    /// The identity of the version of the file this array is read from, as it was when it was
    /// opened (`None` for an array in memory): compare it with one recorded earlier to know that
    /// the file is still the same version.
    pub fn file_identity(&self) -> Option<FileIdentity> {
        match &self.data {
            Storage::File(f) => Some(f.stamp.identity()),
            Storage::Owned(_) => None,
        }
    }

    /// The `kept × kept` crops at line and column `start` of the patches `indices` of a C-order
    /// patch stack `(n, N, N, …)`, as raw bytes in the file's dtype and byte order, into `out`
    /// (`indices.len() · kept² · pixel` bytes, a pixel being the trailing axes' elements): one
    /// positional read of the `kept` consecutive lines per patch, sixteen in flight, a batch of
    /// patches at a time; only those lines are read. A file that changes (truncated, rewritten)
    /// during the reads is [`NpyError::Changed`], never a signal.
    ///
    /// This is how a Dask tile reads the patches it needs (`ptychostitch.dask.from_npy`):
    /// mapping the file instead is as fast, but a truncation while the map is read kills the
    /// process with `SIGBUS`.
    pub fn read_crops(
        &self,
        indices: &[usize],
        start: usize,
        kept: usize,
        out: &mut [u8],
    ) -> Result<(), NpyError> {
        let format = |reason: String| NpyError::Format {
            what: self.what.clone(),
            reason,
        };
        if self.fortran_order || self.shape.len() < 3 {
            return Err(format(format!(
                "crops are read from C-order stacks of patches (n, N, N, ...); this is {:?}{}",
                self.shape,
                if self.fortran_order {
                    " in Fortran order"
                } else {
                    ""
                }
            )));
        }
        let size = self.element_size("a patch stack")?;
        let pixel = self.shape[3..].iter().product::<usize>() * size;
        let line = self.shape[2] * pixel;
        let row = self.shape[1] * line;
        let end = start.checked_add(kept);
        if end.is_none_or(|end| end > self.shape[1] || end > self.shape[2]) {
            return Err(format(format!(
                "a {kept}×{kept} crop from line {start} does not fit {}×{} patches",
                self.shape[1], self.shape[2]
            )));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.shape[0]) {
            return Err(format(format!(
                "patch {bad} asked for; the stack has {}",
                self.shape[0]
            )));
        }
        let crop = kept * pixel;
        if out.len() != indices.len() * kept * crop {
            return Err(format(format!(
                "the output holds {} bytes; {} crops of {kept}×{kept} need {}",
                out.len(),
                indices.len(),
                indices.len() * kept * crop
            )));
        }
        if kept == 0 || indices.is_empty() {
            return Ok(());
        }
        // Sixteen readers, each with its share of the patches and of `out`: a patch's kept lines
        // are read into the reader's own small buffer (cache-resident) and their columns cut
        // out from there at once.
        let lines = kept * line;
        let at = |i: usize| i * row + start * line;
        let cut = |from: &[u8], to: &mut [u8]| {
            for (from, to) in from.chunks(line).zip(to.chunks_mut(crop)) {
                to.copy_from_slice(&from[start * pixel..start * pixel + crop]);
            }
        };
        match &self.data {
            Storage::File(f) => {
                let readers = if indices.len() < 32 { 1 } else { 16 };
                let per = indices.len().div_ceil(readers);
                let groups = indices.chunks(per).zip(out.chunks_mut(per * kept * crop));
                f.on_readers(groups, |(patches, out)| {
                    let mut buf = self.buffer::<u8>(lines)?;
                    f.check(&self.what)?;
                    for (&i, out) in patches.iter().zip(out.chunks_mut(kept * crop)) {
                        f.read_unchecked(&self.what, at(i), &mut buf)?;
                        cut(&buf, out);
                    }
                    f.check(&self.what)
                })?;
            }
            Storage::Owned(all) => {
                for (&i, out) in indices.iter().zip(out.chunks_mut(kept * crop)) {
                    cut(&all[at(i)..at(i) + lines], out);
                }
            }
        }
        Ok(())
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
    pub fn open_in_place(&mut self, key: &str) -> Result<Option<NpyArray>, NpyError> {
        let what = format!("{}[{key}]", self.path.display());
        if !self.contains(key) {
            return Err(self.missing(key));
        }
        let path = self.path.clone();
        let (start, size, crc) = {
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
                Some(start) => (start, entry.size(), entry.crc32()),
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
        check_crc(&opened.0, start, size, crc).map_err(|reason| NpyError::Archive {
            path: self.path.clone(),
            reason: format!("member '{key}' is corrupt: {reason}"),
        })?;
        array_at(&what, &self.path.clone(), opened, start, size).map(Some)
    }
}

/// Checks a stored member's CRC-32 against its `size` bytes at `start`, read once in 1 MiB
/// pieces (NumPy refuses a member whose bytes do not match it; a stored member read in place is
/// not checked by the zip reader).
fn check_crc(file: &File, start: u64, size: u64, expected: u32) -> Result<(), String> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0_u8; (1 << 20).min(size as usize)];
    let mut at = 0_u64;
    while at < size {
        let piece = &mut buf[..((size - at) as usize).min(1 << 20)];
        match read_exact_at(file, start + at, piece) {
            Ok(true) => {}
            Ok(false) => return Err("it ends before its declared size".into()),
            Err(e) => return Err(format!("reading it: {e}")),
        }
        hasher.update(piece);
        at += piece.len() as u64;
    }
    let found = hasher.finalize();
    if found == expected {
        Ok(())
    } else {
        Err(format!(
            "its CRC-32 is {found:08x}, the archive says {expected:08x}"
        ))
    }
}

/// The buffers a chunk of rows is read into (`out`) and through (`block`: a Fortran-order
/// chunk before its transpose).
#[derive(Debug, Default)]
pub(super) struct Scratch {
    pub(super) out: Vec<Complex32>,
    block: Vec<Complex32>,
}

/// Consecutive chunks of rows of a patch stack as `complex64`, read into buffers kept from one
/// chunk to the next ([`NpyArray::row_reader`]).
#[derive(Debug)]
pub struct RowReader<'a> {
    array: &'a NpyArray,
    scratch: Scratch,
    converted: Option<ArrayD<Complex32>>,
    lines: Option<std::ops::Range<usize>>,
}

impl RowReader<'_> {
    /// Reads only `lines` (indices along the second axis: the rows of a patch that the crop
    /// keeps) of each patch, where the stack is read in place as C-order complex64: one read
    /// of `lines.len()` contiguous lines per patch instead of the whole patch. The other lines
    /// of the returned rows are then not the file's (zeros or stale lines): give this only to
    /// code that reads no other line, as the stitching kernels, which read the kept rows alone.
    pub fn keeping_lines(mut self, lines: std::ops::Range<usize>) -> Self {
        self.lines = Some(lines);
        self
    }

    /// Rows `start..start + len` along the first axis, as [`NpyArray::to_complex32_rows`]
    /// gives them, valid until the next call: a view of the array itself where it is in memory
    /// as complex64 already ([`NpyArray::complex32_view`]), else read into the reader's buffers.
    pub fn rows(
        &mut self,
        start: usize,
        len: usize,
    ) -> Result<ArrayViewD<'_, Complex32>, NpyError> {
        let shape = self.array.rows_shape(start, len)?;
        if let Some(all) = self.array.complex32_view() {
            return Ok(all.slice_axis_move(ndarray::Axis(0), (start..start + len).into()));
        }
        if self
            .array
            .rows_into(start, len, &mut self.scratch, self.lines.clone())?
        {
            let count = shape.iter().product();
            return ArrayViewD::from_shape(IxDyn(&shape), &self.scratch.out[..count]).map_err(
                |e| NpyError::Format {
                    what: self.array.what.clone(),
                    reason: e.to_string(),
                },
            );
        }
        let converted = self
            .converted
            .insert(self.array.to_complex32_rows(start, len)?);
        Ok(converted.view())
    }
}

/// The Fortran-order flat index of the element whose C-order flat index is `c` in `shape`.
fn fortran_index(mut c: usize, shape: &[usize]) -> usize {
    let (mut f, mut stride) = (0, 1);
    let mut strides = Vec::with_capacity(shape.len());
    for &d in shape {
        strides.push(stride);
        stride *= d;
    }
    for (&d, &s) in shape.iter().zip(&strides).rev() {
        f += (c % d.max(1)) * s;
        c /= d.max(1);
    }
    f
}

/// `dst` (`cols × rows`, row-major) = the transpose of `src` (`rows × cols`, row-major), in
/// square tiles so that both sides stay in cache, bands of `dst` rows on the worker threads.
fn transpose<T: Copy + Send + Sync>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    use rayon::prelude::*;
    const TILE: usize = 32;
    if rows == 0 || cols == 0 {
        return;
    }
    dst.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(band, out)| {
            let c0 = band * TILE;
            let width = out.len() / rows;
            for r0 in (0..rows).step_by(TILE) {
                for c in c0..c0 + width {
                    let line = &mut out[(c - c0) * rows..][..rows];
                    for r in r0..(r0 + TILE).min(rows) {
                        line[r] = src[r * cols + c];
                    }
                }
            }
        });
}
