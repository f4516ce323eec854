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
use thiserror::Error;

mod array;
mod dtype;
mod header;
pub mod in_file;
mod npz;
mod write;

#[allow(unused_imports)]
use crate::atomic::{Fill, write_atomically, write_files_atomically};
pub use array::{NpyArray, read_npy};
#[allow(unused_imports)]
use array::{Storage, open_file};
pub use dtype::Dtype;
#[allow(unused_imports)]
use header::{Header, MAX_HEADER, read_header, standard};
pub use in_file::{FileIdentity, RowReader};
pub use npz::Npz;
pub use write::{NpyView, npy_header, npz_fill, write_npy, write_npz};

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
            let in_file = NpyArray::open_in_place(&path).unwrap();
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
        let array = NpyArray::open_in_place(&path).unwrap();
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
        let in_file = NpyArray::open_in_place(&path).unwrap();
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
