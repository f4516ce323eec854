//! Reading patch stacks from files for `ptychostitch.dask.from_npy`: positional reads, checked
//! against the version of the file the Dask graph was built from.

use numpy::{PyReadonlyArray1, PyReadwriteArray1};
use ptychostitch::npy::{NpyArray, NpyError};
use pyo3::exceptions::{PyMemoryError, PyValueError};
use pyo3::prelude::*;
use std::path::PathBuf;

/// Fills `out` (uint8, C-contiguous) with the `kept × kept` crops at line and column `start` of
/// the patches `indices` of the C-order `.npy` stack at `path`, raw bytes in the file's dtype:
/// one positional read of the kept lines per patch, sixteen in flight, GIL released.
/// `identity` is `(st_size, st_mtime_ns, st_ino)` of the version of the file the caller expects;
/// a file that is another version now, or that changes during the reads, raises `ValueError`
/// naming it (never a signal, never bytes from two versions).
#[pyfunction]
#[pyo3(signature = (path, identity, indices, start, kept, out))]
pub(crate) fn read_npy_crops(
    py: Python<'_>,
    path: PathBuf,
    identity: (u64, i64, u64),
    indices: PyReadonlyArray1<'_, i64>,
    start: usize,
    kept: usize,
    mut out: PyReadwriteArray1<'_, u8>,
) -> PyResult<()> {
    let indices: Vec<usize> = indices
        .as_array()
        .iter()
        .map(|&i| usize::try_from(i))
        .collect::<Result<_, _>>()
        .map_err(|_| PyValueError::new_err("`indices` holds a negative index"))?;
    let out = out
        .as_slice_mut()
        .map_err(|_| PyValueError::new_err("`out` must be C-contiguous"))?;
    let read = py.detach(|| -> Result<bool, NpyError> {
        let array = NpyArray::open_in_place(&path)?;
        let now = array.file_identity();
        let same = now.is_some_and(|now| {
            (now.len, now.modified_ns, now.inode)
                == (identity.0, Some(i128::from(identity.1)), identity.2)
        });
        if !same {
            return Ok(false);
        }
        array.read_crops(&indices, start, kept, out)?;
        Ok(true)
    });
    match read {
        Ok(true) => Ok(()),
        Ok(false) => Err(PyValueError::new_err(format!(
            "{} changed while the computation read it (its size, modification time or inode \
             differ from when the graph was built): recompute on the new file",
            path.display()
        ))),
        Err(e @ NpyError::OutOfMemory { .. }) => Err(PyMemoryError::new_err(e.to_string())),
        Err(e) => Err(PyValueError::new_err(e.to_string())),
    }
}
