//! Output paths are checked before anything is read: each must have its format's extension and
//! none may be an input or another output, whatever spelling, symlink or hard link names it.

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// One output the command will write: the flag that named it, the path, its extension.
pub struct Output<'a> {
    pub flag: &'static str,
    pub path: &'a Path,
    pub extension: &'static str,
}

/// Refuses outputs with the wrong extension, outputs that are (or would replace) an input, and
/// two outputs that are the same file.
pub fn check_outputs(inputs: &[PathBuf], outputs: &[Output<'_>]) -> Result<()> {
    for out in outputs {
        let ok = out
            .path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case(out.extension));
        if !ok {
            bail!(
                "{} {}: the file name must end in .{} (it is written in that format)",
                out.flag,
                out.path.display(),
                out.extension
            );
        }
        for input in inputs {
            if same_file(out.path, input) {
                bail!(
                    "{} {} is the input {}: refusing to overwrite an input",
                    out.flag,
                    out.path.display(),
                    input.display()
                );
            }
        }
    }
    for (i, a) in outputs.iter().enumerate() {
        for b in &outputs[i + 1..] {
            if same_file(a.path, b.path) {
                bail!(
                    "{} and {} both name {}: give them different files",
                    a.flag,
                    b.flag,
                    a.path.display()
                );
            }
        }
    }
    for out in outputs {
        check_writable(out)?;
    }
    Ok(())
}

/// Refuses an output whose directory cannot take a new file (missing, read-only, not a
/// directory), before any input is read: outputs are written as a temporary file beside the
/// target and renamed, so that is what is tried here, with a probe file removed at once.
fn check_writable(out: &Output<'_>) -> Result<()> {
    let dir = match out.path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let probe = dir.join(format!(".ptychostitch-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => bail!(
            "{} {}: cannot write in {}: {e}",
            out.flag,
            out.path.display(),
            dir.display()
        ),
    }
}

/// True when `a` and `b` are, or would be, the same file: the same device and inode where both
/// exist (hard links, symlinks), else the same canonical directory and file name.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return ma.dev() == mb.dev() && ma.ino() == mb.ino();
        }
    }
    identity(a) == identity(b)
}

/// The canonical form of a path that may not exist yet: its canonical directory joined with its
/// file name (or the path as given where even the directory cannot be resolved).
fn identity(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match (dir.canonicalize(), path.file_name()) {
        (Ok(d), Some(name)) => d.join(name),
        _ => path.to_path_buf(),
    }
}
