//! Writing files atomically: each output goes to a temporary file beside it, renamed over the
//! real name only once everything was written, so a failure or a signal never leaves a
//! half-written file (the `.npy`/`.npz` writers and the command line's pictures use it).

use crate::npy::NpyError;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Fills one output file's contents.
pub type Fill<'a> = Box<dyn FnOnce(&mut BufWriter<File>) -> std::io::Result<()> + 'a>;

/// Temporary files being written now, so that a signal handler can remove them.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes `path` atomically: `fill` writes into a temporary file beside it, which is renamed
/// over `path` only when everything succeeded.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<(), NpyError> {
    write_files_atomically(vec![(path, Box::new(fill))])
}

/// Writes several files so that they are replaced together or not at all: each is written to a
/// temporary file beside its target; only when all are complete and synced are they renamed
/// over their targets, one after the other, while [`abandon_pending_writes`] waits. A failure
/// removes every temporary file and leaves every target as it was.
pub fn write_files_atomically(files: Vec<(&Path, Fill<'_>)>) -> Result<(), NpyError> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let mut written: Vec<(PathBuf, &Path)> = Vec::with_capacity(files.len());
    let mut failure = None;
    for (path, fill) in files {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        pending().push(tmp.clone());
        let result = (|| {
            let mut writer = BufWriter::new(File::create(&tmp)?);
            fill(&mut writer)?;
            let file = writer.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()
        })();
        written.push((tmp, path));
        if let Err(error) = result {
            failure = Some(NpyError::Io {
                path: path.to_path_buf(),
                error,
            });
            break;
        }
    }
    let mut registry = pending();
    // Files written together are renamed under an exclusive lock on their folders, so that two
    // processes writing the same pair cannot interleave their renames (one's image beside the
    // other's picture): each pair lands whole, the later one last.
    let _locks = (failure.is_none() && written.len() > 1).then(|| lock_folders(&written));
    if failure.is_none() {
        for (tmp, path) in &written {
            if let Err(error) = std::fs::rename(tmp, path) {
                failure = Some(NpyError::Io {
                    path: path.to_path_buf(),
                    error,
                });
                break;
            }
        }
    }
    for (tmp, _) in &written {
        if failure.is_some() {
            let _ = std::fs::remove_file(tmp);
        }
        registry.retain(|p| p != tmp);
    }
    failure.map_or(Ok(()), Err)
}

/// Exclusive advisory locks (`flock`) on the folders of `written`'s temporary files, taken in
/// one order (so two writers cannot deadlock) and released when the handles drop. Best effort:
/// a folder that cannot be opened or locked (a file system without `flock`) is left unlocked.
fn lock_folders(written: &[(PathBuf, &Path)]) -> Vec<File> {
    let mut folders: Vec<PathBuf> = written
        .iter()
        .filter_map(|(tmp, _)| tmp.parent())
        .map(|d| {
            let d = if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            };
            d.canonicalize().unwrap_or_else(|_| d.to_path_buf())
        })
        .collect();
    folders.sort();
    folders.dedup();
    let mut locks = Vec::with_capacity(folders.len());
    for folder in folders {
        let Ok(handle) = File::open(&folder) else {
            continue;
        };
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            loop {
                // SAFETY: `handle` owns an open descriptor for the whole call; flock only takes
                // a lock on it and touches no memory of ours.
                let rc = unsafe { libc::flock(handle.as_raw_fd(), libc::LOCK_EX) };
                if rc == 0
                    || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
                {
                    break;
                }
            }
        }
        locks.push(handle);
    }
    locks
}

/// For a signal handler that is about to end the process: waits for a commit in progress (so
/// files written together stay together), removes every temporary file still being written, and
/// blocks all later commits for the rest of the process's life.
pub fn abandon_pending_writes() {
    let registry = pending();
    for tmp in registry.iter() {
        let _ = std::fs::remove_file(tmp);
    }
    // Keep the lock: no write may commit after this.
    std::mem::forget(registry);
}
