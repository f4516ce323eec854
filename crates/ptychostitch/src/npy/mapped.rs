//! Memory-mapped arrays: `.npy` files and uncompressed `.npz` members (what `np.savez` writes)
//! read in place, so a patch stack larger than memory can be streamed chunk by chunk.
//!
//! The mapping is read-only. Chunks already used are handed back to the kernel
//! ([`NpyArray::release_rows`], `MADV_DONTNEED`), so the process's resident memory stays at about
//! one chunk however large the file; the page cache still keeps what it likes.
//!
//! Why our own reader rather than `ndarray-npy`'s `view_npy`: that view only accepts
//! native-endian, C- or F-order arrays of exactly the element type asked for, in a whole `.npy`
//! file. PtychoPINN's data come as `.npz` archives, patches as complex64 or complex128, from
//! either byte order; this reader maps `.npz` members at their offset, gives a zero-copy view
//! where the bytes allow it and converts chunk by chunk where they do not, with the header parser
//! that the reader already uses (and that the fuzz tests cover).

use super::{NpyArray, NpyError, Npz, Storage, open_file, read_header};
use memmap2::{Mmap, UncheckedAdvice};
use ndarray::{ArrayViewD, IxDyn};
use num_complex::Complex32;
use std::path::Path;
use std::sync::Arc;

/// A byte range of a read-only memory map.
#[derive(Debug, Clone)]
pub(super) struct MappedBytes {
    map: Arc<Mmap>,
    start: usize,
    len: usize,
}

impl MappedBytes {
    pub(super) fn bytes(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }
}

/// Maps `path` read-only.
fn map_file(path: &Path) -> Result<Arc<Mmap>, NpyError> {
    let file = open_file(path)?;
    // SAFETY: the map is only ever read, through `&[u8]`. Another process that writes the file
    // while it is mapped changes the bytes under us (as it would for any reader) and one that
    // truncates it makes later reads fault; both are outside what a read-only input can promise.
    let map = unsafe { Mmap::map(&file) }.map_err(|error| NpyError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    Ok(Arc::new(map))
}

/// The array whose `.npy` bytes start at `offset` of `map` and take at most `room` bytes.
fn array_at(what: &str, map: Arc<Mmap>, offset: usize, room: usize) -> Result<NpyArray, NpyError> {
    let bytes = &map[offset..offset + room];
    let header = read_header(what, bytes)?;
    let available = room.saturating_sub(header.header_bytes);
    if available < header.data_bytes {
        return Err(NpyError::Truncated {
            what: what.to_string(),
            shape: header.shape,
            dtype: header.dtype,
            expected: header.data_bytes,
            found: available,
        });
    }
    let data = MappedBytes {
        start: offset + header.header_bytes,
        len: header.data_bytes,
        map,
    };
    Ok(NpyArray::from_parts(what, header, Storage::Mapped(data)))
}

impl NpyArray {
    /// Maps a `.npy` file instead of reading it: nothing is read until it is used.
    pub fn map_npy(path: &Path) -> Result<Self, NpyError> {
        let map = map_file(path)?;
        let len = map.len();
        array_at(&path.display().to_string(), map, 0, len)
    }

    /// True when the data are memory-mapped rather than read into memory.
    pub fn is_mapped(&self) -> bool {
        matches!(self.data, Storage::Mapped(_))
    }

    /// The array as a `complex64` view without a copy, where its bytes allow it: complex64,
    /// little-endian, C order, 4-byte aligned. `None` otherwise (use
    /// [`NpyArray::to_complex32_rows`]).
    pub fn complex32_view(&self) -> Option<ArrayViewD<'_, Complex32>> {
        if self.dtype != super::Dtype::Complex64
            || self.big_endian
            || self.fortran_order
            || cfg!(target_endian = "big")
        {
            return None;
        }
        let values: &[Complex32] = bytemuck::try_cast_slice(self.data.bytes()).ok()?;
        ArrayViewD::from_shape(IxDyn(&self.shape), values).ok()
    }

    /// Tells the kernel that rows `start..start + len` (first axis) of a mapped array will not
    /// be needed again soon: their pages leave this process's resident memory (they are read
    /// again from the file if they are). Does nothing for arrays read into memory.
    pub fn release_rows(&self, start: usize, len: usize) {
        let Storage::Mapped(m) = &self.data else {
            return;
        };
        let Some(size) = self.dtype.size() else {
            return;
        };
        let per_row: usize = self.shape.get(1..).map_or(1, |r| r.iter().product());
        let row_bytes = per_row * size;
        let first = m.start + (start * row_bytes).min(m.len);
        let last = m.start + ((start + len) * row_bytes).min(m.len);
        // Whole pages inside the range only: a page shared with the next chunk stays.
        let page = page_size();
        let (from, to) = (first.div_ceil(page) * page, last / page * page);
        if to > from {
            // SAFETY: the map is a read-only, file-backed mapping; MADV_DONTNEED on it drops
            // the pages from this process, and a later read faults them back in from the file
            // with the same contents. No reference observes a change. The range lies inside
            // the map (`from` and `to` are within `m.start..m.start + m.len`).
            let _ = unsafe {
                m.map
                    .unchecked_advise_range(UncheckedAdvice::DontNeed, from, to - from)
            };
        }
    }
}

fn page_size() -> usize {
    #[cfg(unix)]
    {
        // SAFETY: `sysconf` only reads a configuration value.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if size > 0 {
            return size as usize;
        }
    }
    4096
}

impl Npz {
    /// Maps the array named `key` when it is stored uncompressed (`np.savez`); `None` when it
    /// is compressed (`np.savez_compressed`), which only [`Npz::read`] can read.
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
        let map = map_file(&self.path)?;
        let fits = start
            .checked_add(size)
            .is_some_and(|end| end <= map.len() as u64);
        if !fits {
            return Err(NpyError::Archive {
                path: self.path.clone(),
                reason: format!("member '{key}' runs past the end of the file"),
            });
        }
        array_at(&what, map, start as usize, size as usize).map(Some)
    }
}
