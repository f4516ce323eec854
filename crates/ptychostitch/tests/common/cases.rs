//! Where the golden cases live and their names: shared, by path, with the CLI's and the
//! kernel emulator's test helpers (it needs nothing but std).

use std::path::PathBuf;

/// `tests/data/golden` of the repository (PtychoPINN's TensorFlow outputs; see its PROVENANCE.md).
/// `PTYCHOSTITCH_GOLDEN` overrides it, for test binaries run from another checkout (the GPU
/// check runs prebuilt binaries on another machine).
pub fn golden_dir() -> PathBuf {
    match std::env::var_os("PTYCHOSTITCH_GOLDEN") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/golden"),
    }
}

/// The golden cases of `tests/data/golden` (see its PROVENANCE.md).
pub const GOLDEN_CASES: [&str; 9] = [
    "basic4",
    "rand50",
    "spiral200",
    "oddM",
    "negbig",
    "single",
    "same",
    "integer",
    "nonfinite",
];
