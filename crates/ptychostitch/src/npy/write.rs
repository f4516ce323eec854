//! Writing `.npy` and `.npz` files (atomically, through [`crate::atomic`]).

#[allow(unused_imports)]
use super::*;

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
pub(super) struct SeekableBuf<'a>(&'a mut BufWriter<File>);

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
