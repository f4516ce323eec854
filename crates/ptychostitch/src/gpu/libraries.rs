//! Where NVRTC, the CUDA runtime compiler the kernel is built with, is found, and in what order
//! of preference. Pure path logic, tested without a GPU; `cuda` loads what it names.
//!
//! The loader's own search (`LD_LIBRARY_PATH`, `ldconfig`) does not see the NVRTC that pip
//! installs with torch, JAX or CuPy (`site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12`,
//! `nvidia/cu13/lib/libnvrtc.so.13`), so these folders are searched first: those the Python
//! package registers ([`add_search_dirs`]: its environment's `nvidia/*/lib`), those named in
//! `PTYCHOSTITCH_NVRTC_DIRS` (`:`-separated), then the CUDA toolkit's. Each library found is
//! ranked by its major version: the newest the driver can run first (a PTX or CUBIN made by an
//! NVRTC newer than the driver does not load), newer ones after, unversioned names last.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static REGISTERED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Adds folders to search for NVRTC before the others (the Python package's `nvidia/*/lib`).
pub fn add_search_dirs(dirs: impl IntoIterator<Item = PathBuf>) {
    let mut registered = REGISTERED.lock().unwrap_or_else(|p| p.into_inner());
    for dir in dirs {
        if !registered.contains(&dir) {
            registered.push(dir);
        }
    }
}

/// The folders searched, in order (see the module documentation).
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = REGISTERED.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(list) = std::env::var_os("PTYCHOSTITCH_NVRTC_DIRS") {
        dirs.extend(std::env::split_paths(&list));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = std::env::var_os(var) {
            dirs.push(Path::new(&home).join("lib64"));
        }
    }
    dirs.push("/usr/local/cuda/lib64".into());
    dirs.push("/usr/local/cuda/targets/x86_64-linux/lib".into());
    dirs
}

/// The major version in an NVRTC file name: 12 for `libnvrtc.so.12` or `libnvrtc.so.12.8.93`;
/// `None` for `libnvrtc.so` and for names that are not NVRTC (`libnvrtc-builtins.so.12`).
fn major_of(name: &str) -> Option<Option<u32>> {
    let rest = name.strip_prefix("libnvrtc.so")?;
    if rest.is_empty() {
        return Some(None);
    }
    let major = rest.strip_prefix('.')?.split('.').next()?.parse().ok()?;
    Some(Some(major))
}

/// The rank of a major version for a driver of CUDA `driver_major` (smaller is better).
fn rank(major: Option<u32>, driver_major: Option<u32>) -> (u8, i64) {
    match (major, driver_major) {
        (Some(m), Some(d)) if m <= d => (0, -(m as i64)),
        (Some(m), Some(_)) => (1, m as i64),
        (Some(m), None) => (0, -(m as i64)),
        (None, _) => (2, 0),
    }
}

/// The NVRTC libraries to try, best first: the files found in `dirs`, then the bare names the
/// loader resolves itself. `driver_major` is the CUDA major version the driver supports
/// (`cuDriverGetVersion() / 1000`), `None` where unknown.
pub fn nvrtc_candidates(dirs: &[PathBuf], driver_major: Option<u32>) -> Vec<PathBuf> {
    let mut found: Vec<(Option<u32>, usize, PathBuf)> = Vec::new();
    for (order, dir) in dirs.iter().enumerate() {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut names: Vec<(Option<u32>, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                major_of(&name).map(|major| (major, e.path()))
            })
            .collect();
        // One file per major and folder: the shortest name (the soname's link, not the
        // fully versioned file it points to).
        names.sort_by_key(|(major, path)| (*major, path.as_os_str().len()));
        names.dedup_by_key(|(major, _)| *major);
        found.extend(names.into_iter().map(|(major, path)| (major, order, path)));
    }
    found.sort_by_key(|(major, order, _)| (rank(*major, driver_major), *order));
    let mut candidates: Vec<PathBuf> = found.into_iter().map(|(_, _, path)| path).collect();
    let mut bare: Vec<Option<u32>> = vec![Some(13), Some(12), Some(11), None];
    bare.sort_by_key(|major| rank(*major, driver_major));
    candidates.extend(bare.into_iter().map(|major| match major {
        Some(m) => PathBuf::from(format!("libnvrtc.so.{m}")),
        None => PathBuf::from("libnvrtc.so"),
    }));
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), b"").unwrap();
    }

    fn names(paths: &[PathBuf], root: &Path) -> Vec<String> {
        paths
            .iter()
            .map(|p| match p.strip_prefix(root) {
                Ok(rel) => rel.display().to_string(),
                Err(_) => p.display().to_string(),
            })
            .collect()
    }

    /// A fake `site-packages/nvidia` tree as pip lays it out for CUDA 12 and 13 NVRTC, and a
    /// toolkit folder: the driver's major first, newer after, the loader's names last.
    #[test]
    fn pip_nvidia_trees_are_searched_and_ranked_by_the_driver() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let cu12 = r.join("nvidia/cuda_nvrtc/lib");
        let cu13 = r.join("nvidia/cu13/lib");
        let toolkit = r.join("cuda/lib64");
        touch(&cu12, "libnvrtc.so.12");
        touch(&cu12, "libnvrtc-builtins.so.12.8");
        touch(&cu13, "libnvrtc.so.13");
        touch(&cu13, "libnvrtc.so.13.0.88");
        touch(&toolkit, "libnvrtc.so");
        touch(&toolkit, "libnvrtc.so.11.2");
        let dirs = [
            cu13.clone(),
            cu12.clone(),
            toolkit.clone(),
            r.join("missing"),
        ];
        // A CUDA 12 driver cannot load what NVRTC 13 makes: 12 first, then 11, then 13.
        assert_eq!(
            names(&nvrtc_candidates(&dirs, Some(12)), r),
            [
                "nvidia/cuda_nvrtc/lib/libnvrtc.so.12",
                "cuda/lib64/libnvrtc.so.11.2",
                "nvidia/cu13/lib/libnvrtc.so.13",
                "cuda/lib64/libnvrtc.so",
                "libnvrtc.so.12",
                "libnvrtc.so.11",
                "libnvrtc.so.13",
                "libnvrtc.so",
            ]
        );
        // A CUDA 13 driver: 13 first.
        let ranked = names(&nvrtc_candidates(&dirs, Some(13)), r);
        assert_eq!(ranked[0], "nvidia/cu13/lib/libnvrtc.so.13");
        assert_eq!(ranked[1], "nvidia/cuda_nvrtc/lib/libnvrtc.so.12");
    }

    /// Nothing is remembered between searches: a library installed after a failed search (say
    /// `pip install nvidia-cuda-nvrtc-cu12` after a first GPU call) is found by the next one.
    #[test]
    fn a_library_installed_later_is_found() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("nvidia/cuda_nvrtc/lib");
        std::fs::create_dir_all(&dir).unwrap();
        let before = nvrtc_candidates(std::slice::from_ref(&dir), Some(12));
        assert!(before.iter().all(|p| !p.starts_with(root.path())));
        touch(&dir, "libnvrtc.so.12");
        let after = nvrtc_candidates(std::slice::from_ref(&dir), Some(12));
        assert_eq!(after[0], dir.join("libnvrtc.so.12"));
    }

    #[test]
    fn registered_and_environment_folders_come_first() {
        add_search_dirs([PathBuf::from("/registered/nvidia/cu13/lib")]);
        let dirs = search_dirs();
        assert_eq!(dirs[0], PathBuf::from("/registered/nvidia/cu13/lib"));
        assert!(dirs.ends_with(&[
            PathBuf::from("/usr/local/cuda/lib64"),
            PathBuf::from("/usr/local/cuda/targets/x86_64-linux/lib")
        ]));
        assert_eq!(major_of("libnvrtc-builtins.so.12"), None);
        assert_eq!(major_of("libnvrtc.so.12.8.93"), Some(Some(12)));
        assert_eq!(major_of("libnvrtc.so"), Some(None));
    }
}
