//! Typed errors for every bad input (`docs/semantics.md`, "Bad input").
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

    /// `offsets` is not `n` leading followed by axes that hold exactly two values `[x, y]`.
    #[error(
        "`offsets` has shape {shape:?}; expected n positions first and exactly two values [x, y] per position after it: (n, 2), (n, 1, 1, 2), (n, 1, 2, 1) or any (n, ...) whose trailing axes multiply to 2"
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

    /// Summing the offsets to find their mean overflows `f32` (PtychoPINN centres in `f32`).
    #[error(
        "`offsets` are too large for float32: the sum of the {axis} values, taken to find their mean, overflows at offsets[{index}] = {value:e} (offsets are [x, y] in pixels, x = column, y = row; PtychoPINN centres them in float32)"
    )]
    CenterOverflow {
        /// Index of the patch whose offset made the sum overflow.
        index: usize,
        /// `"x"` (column) or `"y"` (row).
        axis: &'static str,
        /// That offset.
        value: f64,
    },

    /// The offsets span so much that the canvas would not fit in memory.
    #[error(
        "the offsets span too far: a {side}×{side}-pixel canvas needs {}, more than the {} this process may use ({limit_source})",
        human_bytes(*needed_bytes),
        human_bytes(*limit_bytes),
        side = human_count(*side)
    )]
    CanvasTooLarge {
        /// Canvas side `S` in pixels (a float: it can exceed every integer type).
        side: f64,
        /// Bytes the canvas would need (image and weights, and whatever the caller adds).
        needed_bytes: f64,
        /// The limit that was exceeded.
        limit_bytes: f64,
        /// Where the limit comes from: physical memory, the cgroup or the address-space limit.
        limit_source: &'static str,
    },

    /// The canvas alone would fit, but not beside what the process already holds (an input
    /// read whole: a compressed `.npz` member, a Fortran-order stack).
    #[error(
        "out of memory: the {side}×{side}-pixel canvas and its working memory need {} more, but this process already holds {} of the {} it may use ({limit_source}); inputs read whole (compressed .npz members, Fortran-order stacks) count",
        human_bytes(*needed_bytes),
        human_bytes(*held_bytes),
        human_bytes(*limit_bytes),
        side = human_count(*side)
    )]
    MemoryHeld {
        /// Canvas side `S` in pixels.
        side: f64,
        /// Bytes still to allocate.
        needed_bytes: f64,
        /// Resident bytes the process holds already.
        held_bytes: f64,
        /// The whole limit.
        limit_bytes: f64,
        /// Where the limit comes from.
        limit_source: &'static str,
    },

    /// A large allocation failed.
    #[error("out of memory: could not allocate {} for {what}", human_bytes(*bytes))]
    OutOfMemory {
        /// What the memory was for (e.g. "a 388×388 canvas").
        what: String,
        /// Bytes that were asked for.
        bytes: f64,
    },

    /// A streamed chunk does not start where the previous one ended.
    #[error(
        "chunks must arrive in patch order without gaps: expected a chunk starting at patch {expected}, got one starting at {found}"
    )]
    ChunkOrder {
        /// The first patch not yet added.
        expected: usize,
        /// Where the chunk said it starts.
        found: usize,
    },

    /// A streamed chunk runs past the plan's last patch.
    #[error("a chunk of {len} patches starting at patch {start} runs past the plan's {n} patches")]
    ChunkTooLong {
        /// Where the chunk starts.
        start: usize,
        /// Its number of patches.
        len: usize,
        /// Patches in the plan.
        n: usize,
    },

    /// A stream was finished before every patch was added.
    #[error("the stream was finished after {added} of the plan's {expected} patches")]
    Incomplete {
        /// Patches added.
        added: usize,
        /// Patches in the plan.
        expected: usize,
    },

    /// A window is empty or reaches outside the canvas.
    #[error(
        "window rows {rows:?}, columns {cols:?} must be non-empty and inside the {side}×{side} canvas (rows are y, columns are x)"
    )]
    WindowOutOfRange {
        /// Rows asked for.
        rows: std::ops::Range<usize>,
        /// Columns asked for.
        cols: std::ops::Range<usize>,
        /// Canvas side.
        side: usize,
    },

    /// The patch indices given for a window are not usable.
    #[error("window patch indices: {reason}")]
    WindowIndices {
        /// What is wrong.
        reason: String,
    },

    /// No GPU can be used: no driver, no device, no NVRTC, or this build has no CUDA support.
    #[error("GpuUnavailable: {reason}")]
    GpuUnavailable {
        /// Why.
        reason: String,
    },

    /// The CUDA driver reported an error while running.
    #[error("GPU error: {reason}")]
    Gpu {
        /// What the driver said.
        reason: String,
    },

    /// The run was interrupted (e.g. Ctrl-C) through the plan's interrupt check.
    #[error("interrupted")]
    Interrupted,

    /// An output buffer passed to an `_into` function has the wrong shape or layout.
    #[error("`out` has shape {found:?}; expected a C-contiguous ({expected}, {expected}) array")]
    OutputShape {
        /// Canvas side the plan produces.
        expected: usize,
        /// Shape that was given.
        found: Vec<usize>,
    },

    /// A cotangent (the gradient flowing back into an operation) has the wrong shape.
    #[error(
        "`{what}` has shape {found:?}; expected {expected:?}, the shape of the operation's output"
    )]
    CotangentShape {
        /// Which argument.
        what: &'static str,
        /// The shape the operation's output has.
        expected: Vec<usize>,
        /// The shape that was given.
        found: Vec<usize>,
    },

    /// `images` for extraction are not `(B, S, S)` or `(B, S, S, 1)` with `B ≥ 1`.
    #[error(
        "`imgs` has shape {shape:?}; expected (B, S, S, 1) or (B, S, S): B ≥ 1 square images, one per solution region"
    )]
    ImageShape {
        /// The shape that was given.
        shape: Vec<usize>,
    },

    /// The extracted patch side does not fit the image side.
    #[error(
        "cannot extract {patch}×{patch} patches from {side}×{side} images: expected N < S with S - N even (PtychoPINN trims (S - N)/2 from each side; it returns an empty array for S = N and {wrong}×{wrong} patches for an odd S - N)",
        wrong = patch + 1
    )]
    ExtractSize {
        /// Image side `S`.
        side: usize,
        /// Patch side `N`.
        patch: usize,
    },

    /// Extraction offsets do not give `C` positions to each image.
    #[error(
        "`offsets_xy` holds {offsets} positions for {images} images; expected {per_image} per image (gridsize² = {per_image}), {expected} in all"
    )]
    ExtractCount {
        /// Number of images `B`.
        images: usize,
        /// Positions per image `C`.
        per_image: usize,
        /// Positions given.
        offsets: usize,
        /// `B·C`.
        expected: usize,
    },

    /// A region is smaller than its patches.
    #[error(
        "cannot reassemble {patch}×{patch} patches onto {side}×{side} regions: expected 1 <= N <= P (the padded size) and P >= 2"
    )]
    RegionSize {
        /// Region side `P`.
        side: usize,
        /// Patch side `N`.
        patch: usize,
    },

    /// A region reassembly was given no samples.
    #[error(
        "no samples: `patches` and `positions` hold B = 0 samples; at least one sample of C >= 1 patches is needed"
    )]
    NoSamples,

    /// The regions would not fit in memory (or their size overflows every integer type).
    #[error(
        "the padded size P = {side} (`padded_size`) is too large: {samples} regions of {side}×{side} pixels need {}, more than the {} this process may use ({limit_source})",
        human_bytes(*needed_bytes),
        human_bytes(*limit_bytes),
        side = human_count(*side)
    )]
    RegionTooLarge {
        /// Region side `P`.
        side: f64,
        /// Number of samples `B`.
        samples: usize,
        /// Bytes the regions and their working memory would need.
        needed_bytes: f64,
        /// The limit that was exceeded.
        limit_bytes: f64,
        /// Where the limit comes from.
        limit_source: &'static str,
    },

    /// A normalisation parameter is outside the range where the result is defined.
    #[error("`{parameter}` = {value:?} {reason}; expected {expected}")]
    Normalisation {
        /// The parameter's name (as the Python functions spell it).
        parameter: &'static str,
        /// The value given.
        value: f32,
        /// What goes wrong with it.
        reason: &'static str,
        /// The allowed range.
        expected: &'static str,
    },

    /// The regularised denominator's maximum is zero: the denominator would be zero (the
    /// result NaN) wherever no weight lands.
    #[error(
        "the weights' reassembly is zero everywhere (max Σw = {max:?}): the regularised denominator scale·Σw + epsilon·max(Σw) would be 0 and every region NaN; pass non-zero weights, or denominator='add' for Σw + ε"
    )]
    ZeroDenominator {
        /// The maximum of the denominators.
        max: f32,
    },

    /// The positions do not split evenly over the samples.
    #[error(
        "`positions` holds {positions} [x, y] pairs for {samples} samples; expected C per sample, B·C in all"
    )]
    RegionCount {
        /// Number of samples `B`.
        samples: usize,
        /// Positions given.
        positions: usize,
    },

    /// A region-reassembly argument has the wrong shape.
    #[error("`{what}` has shape {found:?}; expected {expected}")]
    RegionShape {
        /// Which argument.
        what: &'static str,
        /// The shapes it may have.
        expected: String,
        /// The shape that was given.
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

/// Formats a pixel count for messages: exact below 10¹², scientific above.
pub fn human_count(value: f64) -> String {
    if value.is_finite() && value < 1e12 {
        format!("{value:.0}")
    } else {
        format!("{value:.3e}")
    }
}

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
    use super::{human_bytes, human_count};

    #[test]
    fn human_bytes_picks_units() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
        assert!(human_bytes(1e30).ends_with("EiB"));
        assert_eq!(human_count(388.0), "388");
        assert_eq!(human_count(2e30), "2.000e30");
    }
}
