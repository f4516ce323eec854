//! Typed errors for every bad input of `SPEC.md` §7.
//!
//! Every message names the argument, what it was and what was expected. Positions are always
//! spelled `[x, y]`: x is the column (second array axis), y the row (first array axis).

use thiserror::Error;

/// Everything that can go wrong when planning or running a reassembly.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum Error {
    /// No patches (and no offsets) were given.
    #[error("no patches: `patches` and `offsets` are empty, at least one patch is needed")]
    NoPatches,

    /// `patches` and `offsets` disagree on the number of patches.
    #[error(
        "`patches` has {patches} patches but `offsets` has {offsets} positions; they must have one [x, y] position per patch"
    )]
    CountMismatch {
        /// Number of patches.
        patches: usize,
        /// Number of offsets.
        offsets: usize,
    },

    /// `patches` does not have shape `(n, N, N)` or `(n, N, N, 1)`.
    #[error(
        "`patches` has shape {shape:?}; expected (n, N, N) or (n, N, N, 1) with square N×N patches"
    )]
    PatchShape {
        /// The shape that was given.
        shape: Vec<usize>,
    },

    /// The patches are not the size the plan was built for.
    #[error(
        "`patches` are {found}×{found} but the plan was built for {expected}×{expected} patches"
    )]
    PatchSize {
        /// Patch side the plan expects.
        expected: usize,
        /// Patch side that was given.
        found: usize,
    },

    /// `offsets` does not have shape `(n, 2)` or `(n, 1, 1, 2)`.
    #[error(
        "`offsets` has shape {shape:?}; expected (n, 2) or (n, 1, 1, 2) with the last axis [x, y]"
    )]
    OffsetShape {
        /// The shape that was given.
        shape: Vec<usize>,
    },

    /// The crop parameter `M` is outside `2..=N`.
    #[error("`M` = {m} is out of range for {n}×{n} patches; expected 2 <= M <= N = {n}")]
    CropOutOfRange {
        /// The crop that was asked for.
        m: i64,
        /// The patch side `N`.
        n: usize,
    },

    /// An offset is NaN or infinite (also after the cast to `f32`).
    #[error(
        "`offsets[{index}]` has a non-finite {axis} = {value:?} (offsets are [x, y] in pixels, x = column, y = row); every offset must be finite in float32"
    )]
    NonFiniteOffset {
        /// Index of the patch.
        index: usize,
        /// `"x"` (column) or `"y"` (row).
        axis: &'static str,
        /// The offending value.
        value: f64,
    },

    /// The offsets span so much that the canvas would not fit in memory.
    #[error(
        "the offsets span too far: the canvas would be {side}×{side} pixels and need {} for the image and the weight canvas, more than {}",
        human_bytes(*needed_bytes),
        human_bytes(*limit_bytes)
    )]
    CanvasTooLarge {
        /// Canvas side `S` (saturated at `u64::MAX`).
        side: u64,
        /// Bytes the output and weight canvas would need.
        needed_bytes: f64,
        /// The limit that was exceeded (physical memory where known).
        limit_bytes: f64,
    },

    /// Allocating an output canvas failed.
    #[error("could not allocate {} for a {side}×{side} canvas: out of memory", human_bytes(*bytes))]
    OutOfMemory {
        /// Canvas side `S`.
        side: usize,
        /// Bytes that were asked for.
        bytes: f64,
    },

    /// An output buffer passed to an `_into` function has the wrong shape or layout.
    #[error("`out` has shape {found:?}; expected a C-contiguous ({expected}, {expected}) array")]
    OutputShape {
        /// Canvas side the plan produces.
        expected: usize,
        /// Shape that was given.
        found: Vec<usize>,
    },

    /// A worker pool with the requested number of threads could not be created.
    #[error("could not start {threads} worker threads: {reason}")]
    ThreadPool {
        /// Requested thread count.
        threads: usize,
        /// What the operating system said.
        reason: String,
    },
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Formats a byte count with a binary unit, for messages.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[unit])
    } else if value >= 1024.0 {
        format!("{value:.3e} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn human_bytes_picks_units() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
        assert!(human_bytes(1e30).ends_with("EiB"));
    }
}
