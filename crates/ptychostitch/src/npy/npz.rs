//! `.npz` archives: members read whole, or in place when stored uncompressed.

#[allow(unused_imports)]
use super::*;

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

    pub(super) fn missing(&self, key: &str) -> NpyError {
        NpyError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
            available: self.keys(),
        }
    }
}
