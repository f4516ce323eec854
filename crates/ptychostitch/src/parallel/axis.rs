//! The sampling table of one axis of a footprint: for every canvas coordinate the patch's
//! lower neighbour and the bilinear factors `1 − w`, `w` (the kernel's own `sample_axis`).
//! One type, filled the same way, for the forward drivers and the gradient kernels.

use crate::geometry::Span;
use crate::kernel::sample_axis;

/// The table of one footprint axis (rows or columns).
#[derive(Debug, Default)]
pub(crate) struct Axis {
    /// Per footprint coordinate: the index of its lower neighbour in the zero-bordered patch
    /// (kept index + 1), in `0..=m`.
    pub(crate) neighbour: Vec<usize>,
    /// Per footprint coordinate: `1 − w`.
    pub(crate) u: Vec<f32>,
    /// Per footprint coordinate: the fraction `w`.
    pub(crate) w: Vec<f32>,
    /// The first neighbour when they are consecutive (`first + j` for coordinate `j`): always,
    /// except where `f32` rounding skips or repeats a sample.
    pub(crate) consecutive: Option<usize>,
}

impl Axis {
    /// An empty table for footprints up to `len` long.
    pub(crate) fn with_capacity(len: usize) -> Self {
        Self {
            neighbour: Vec::with_capacity(len),
            u: Vec::with_capacity(len),
            w: Vec::with_capacity(len),
            consecutive: None,
        }
    }

    /// The table of `span` for a patch shifted by `shift` on a canvas padded by `pad`.
    /// Inlined so that its `floor` compiles to one instruction in the vector kernels.
    #[inline(always)]
    pub(crate) fn fill(&mut self, span: Span, shift: f32, pad: usize) {
        self.neighbour.clear();
        self.u.clear();
        self.w.clear();
        for c in span.start..span.end {
            let (c0, w) = sample_axis(c, shift);
            // c0 ∈ [p-1, p+m-1] inside the footprint, so this index is in 0..=m.
            self.neighbour.push((c0 + 1 - pad as i64) as usize);
            self.u.push(1.0 - w);
            self.w.push(w);
        }
        self.consecutive = self.neighbour.first().copied().filter(|&first| {
            self.neighbour
                .iter()
                .enumerate()
                .all(|(j, &c)| c == first + j)
        });
    }

    /// True when every coordinate has the same `1 − w` and `w`, bit for bit (`x − shift` exact
    /// in `f32`: every patch of the bench grid), so a row's weights can be computed once.
    pub(crate) fn uniform(&self) -> bool {
        match (self.u.first(), self.w.first()) {
            (Some(&u), Some(&w)) => {
                self.u.iter().all(|v| v.to_bits() == u.to_bits())
                    && self.w.iter().all(|v| v.to_bits() == w.to_bits())
            }
            _ => false,
        }
    }
}
