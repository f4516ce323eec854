//! `.npz` archives: members read whole, or in place when stored uncompressed.

#[allow(unused_imports)]
use super::*;

/// Bytes after a member's array that are still read (to check the member's CRC-32); a member
/// with more after its array is not read past it.
const DRAIN_LIMIT: u64 = 1 << 20;

/// A reader that counts the bytes it has given.
struct Counted<R> {
    inner: R,
    bytes: u64,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// An open `.npz` archive.
pub struct Npz {
    pub(super) path: PathBuf,
    pub(super) archive: zip::ZipArchive<File>,
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
        self.read_counted(key).map(|(array, _)| array)
    }

    /// As [`Npz::read`], with the number of bytes inflated from the member. Those are its header
    /// and data and, where at most 1 MiB follows them, the rest of the member,
    /// read to its end so that the zip reader checks its CRC-32 (NumPy refuses a member whose
    /// bytes do not match it, and so do we). More bytes after the array — a decompression
    /// bomb's padding — are not inflated at all, as NumPy does not read them either.
    pub fn read_counted(&mut self, key: &str) -> Result<(NpyArray, u64), NpyError> {
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
        let declared = entry.size();
        let mut counted = Counted {
            inner: &mut entry,
            bytes: 0,
        };
        let array = NpyArray::read_from(&what, &mut counted)?;
        if declared.saturating_sub(counted.bytes) <= DRAIN_LIMIT {
            std::io::copy(&mut counted, &mut std::io::sink()).map_err(|e| NpyError::Archive {
                path,
                reason: format!("member '{key}' is corrupt: {e}"),
            })?;
        }
        Ok((array, counted.bytes))
    }

    pub(super) fn missing(&self, key: &str) -> NpyError {
        NpyError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
            available: self.keys(),
        }
    }
}
