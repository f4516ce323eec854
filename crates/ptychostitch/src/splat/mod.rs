//! Splatting: PtychoPINN's torch inference accumulators (`ptycho_torch.reassembly`'s
//! `VectorizedBarycentricAccumulator` and `VectorizedWeightedAccumulator`), the adjoint of
//! bilinear sampling (`docs/semantics.md` §11).
//!
//! Patch `n` (`P×P`, complex) centred at `[x, y]` has its top-left corner at
//! `(x − P/2, y − P/2)`, split into a whole part `(c, r) = floor(…)` and a fraction `(fx, fy)`.
//! Each patch pixel `(i, j)` is spread over the canvas pixels `(r+i+dy, c+j+dx)`,
//! `dy, dx ∈ {0, 1}`, with the bilinear weights `w00 = (1−fy)(1−fx)`, `w01 = (1−fy)·fx`,
//! `w10 = fy·(1−fx)`, `w11 = fy·fx`, added into the canvas in place; the weight canvas gets
//! the same weights (barycentric) or the patch weight times them (weighted: PtychoPINN's
//! `|P|²`). The arithmetic is PtychoPINN's, operation for operation, all in `f32`:
//!
//! * a complex value times a real one is torch's complex product with a zero imaginary part,
//!   `(a·w − b·0) + (a·0 + b·w)i` (so an infinite part makes the other NaN, as torch does);
//! * the weighted payload is `(patch × weight) × w` and its weight `weight · w`;
//! * every canvas pixel receives its terms in torch's `scatter_add_` order: the four corners
//!   `00, 01, 10, 11` in turn, each over the patches in index order.
//!
//! So the canvas holds PtychoPINN's bits. Only the edge is a choice ([`Edge`]): PtychoPINN
//! drops a whole patch unless `c ≥ 0`, `r ≥ 0`, `c + P + 1 < W` and `r + P + 1 < H` (one pixel
//! more than the patch needs, and silently in the barycentric accumulator); ptychostitch's
//! default keeps every term that lands inside the canvas.
//!
//! A literal reference (the four scatters, one term at a time) is the oracle; the fast
//! path gives its bits for every input and thread count: threads own disjoint row bands and
//! each walks the corners and patches in the same order.

pub(crate) mod fast;
pub(crate) mod reference;

use crate::Implementation;
use crate::error::{Error, Result};
use ndarray::{ArrayView2, ArrayView3, ArrayViewMut2};
use num_complex::Complex32;

/// What happens to a patch whose terms do not all land inside the canvas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Edge {
    /// Keep every term that lands inside the canvas; drop only the terms outside it
    /// (ptychostitch's default).
    #[default]
    Clip,
    /// PtychoPINN's bounds check: drop the whole patch unless its corner `(c, r)` has `c ≥ 0`,
    /// `r ≥ 0`, `c + P + 1 < W` and `r + P + 1 < H`.
    Drop,
}

/// What a splat did with its patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Placed {
    /// Patches that added at least one term to the canvas.
    pub accepted: usize,
    /// Of those, the patches that lost terms outside the canvas (never under [`Edge::Drop`]).
    pub clipped: usize,
}

/// A patch's placement: its corner, its four bilinear weights, and whether it is placed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Corner {
    /// Canvas row and column of the patch's pixel `(0, 0)` for the `00` weight.
    pub(crate) row: i64,
    pub(crate) col: i64,
    /// `w00, w01, w10, w11`: the weights of the shifts `(0,0), (0,1), (1,0), (1,1)`.
    pub(crate) weights: [f32; 4],
    /// Whether the patch is placed at all.
    pub(crate) placed: bool,
}

/// The four corner shifts `(dy, dx)`, in torch's scatter order.
pub(crate) const SHIFTS: [(i64, i64); 4] = [(0, 0), (0, 1), (1, 0), (1, 1)];

/// Corners beyond this distance from the canvas are all the same to the splat: nothing of the
/// patch lands (canvases are far smaller), and clamping keeps the integer arithmetic exact.
const FAR: f32 = (1u64 << 40) as f32;

/// A complex value times a real one, as torch multiplies a complex tensor by a real one: the
/// real one promoted to complex with a zero imaginary part.
#[inline(always)]
pub(crate) fn times(z: Complex32, w: f32) -> Complex32 {
    Complex32::new(z.re * w - z.im * 0.0, z.re * 0.0 + z.im * w)
}

/// The payload and weight term of patch pixel value `z` (patch weight `p`, `None` for the
/// barycentric accumulator) for the bilinear weight `w`.
#[inline(always)]
pub(crate) fn term(z: Complex32, p: Option<f32>, w: f32) -> (Complex32, f32) {
    match p {
        Some(p) => (times(times(z, p), w), p * w),
        None => (times(z, w), w),
    }
}

/// PtychoPINN's placement of a patch of side `size` centred at `[x, y]` on an `h×w` canvas.
fn corner(x: f32, y: f32, size: usize, h: usize, w: usize, edge: Edge) -> Corner {
    // `size / 2` is a Python float in PtychoPINN, which torch casts to the tensor's f32.
    let half = (size as f64 / 2.0) as f32;
    let axis = |v: f32| {
        let start = v - half;
        let whole = start.floor().clamp(-FAR, FAR);
        // torch: `start − floor(start).long().float()`, exact for every f32.
        (whole as i64, start - whole)
    };
    let (col, fx) = axis(x);
    let (row, fy) = axis(y);
    let (gx, gy) = (1.0 - fx, 1.0 - fy);
    let weights = [gy * gx, gy * fx, fy * gx, fy * fx];
    let (p, h, w) = (size as i64, h as i64, w as i64);
    let placed = match edge {
        Edge::Drop => col >= 0 && row >= 0 && col + p + 1 < w && row + p + 1 < h,
        // Rows r..=r+P and columns c..=c+P receive terms.
        Edge::Clip => size > 0 && row + p >= 0 && row < h && col + p >= 0 && col < w,
    };
    Corner {
        row,
        col,
        weights,
        placed,
    }
}

/// Whether some term of a placed patch lands outside the `h×w` canvas.
fn clipped(c: &Corner, size: usize, h: usize, w: usize) -> bool {
    let p = size as i64;
    c.placed && (c.row < 0 || c.col < 0 || c.row + p >= h as i64 || c.col + p >= w as i64)
}

/// A splat: PtychoPINN's torch inference accumulation, in place.
///
/// ```
/// use ndarray::{Array2, Array3};
/// use ptychostitch::{Complex32, splat::{Edge, Splat}};
///
/// // One 2×2 patch of ones centred at x = 2.5, y = 2: corner (r, c) = (1, 1.5), so each value
/// // is split half and half between two columns.
/// let mut canvas = Array2::<Complex32>::zeros((6, 6));
/// let mut counts = Array2::<f32>::zeros((6, 6));
/// let patches = Array3::from_elem((1, 2, 2), Complex32::new(1.0, 0.0));
/// let positions = Array2::from_shape_vec((1, 2), vec![2.5_f32, 2.0]).unwrap();
/// let placed = Splat::new(Edge::Clip)
///     .run(canvas.view_mut(), counts.view_mut(), patches.view(), positions.view(), None)
///     .unwrap();
/// assert_eq!(placed.accepted, 1);
/// assert_eq!(counts[[1, 1]], 0.5);
/// assert_eq!(counts[[1, 2]], 1.0);
/// assert_eq!(canvas[[2, 3]], Complex32::new(0.5, 0.0));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Splat {
    edge: Edge,
    implementation: Implementation,
    threads: usize,
}

impl Splat {
    /// A splat with this edge rule, the fast path, all cores.
    pub fn new(edge: Edge) -> Self {
        Self {
            edge,
            ..Self::default()
        }
    }

    /// Selects the edge rule.
    pub fn with_edge(mut self, edge: Edge) -> Self {
        self.edge = edge;
        self
    }

    /// Selects the implementation (both give the same bits).
    pub fn with_implementation(mut self, implementation: Implementation) -> Self {
        self.implementation = implementation;
        self
    }

    /// Worker threads for the fast path (0 = all cores of the current rayon pool).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Adds `patches` `(N, P, P)` centred at `positions` `(N, 2)` (`[x, y]` canvas pixels,
    /// x = column) into `canvas` `(H, W)` and their weights into `weights` `(H, W)`, in place.
    /// `patch_weight` `(P, P)` weights every patch pixel (PtychoPINN's weighted accumulator);
    /// `None` is its barycentric accumulator. Nothing is changed when an argument is refused.
    pub fn run(
        &self,
        canvas: ArrayViewMut2<'_, Complex32>,
        weights: ArrayViewMut2<'_, f32>,
        patches: ArrayView3<'_, Complex32>,
        positions: ArrayView2<'_, f32>,
        patch_weight: Option<ArrayView2<'_, f32>>,
    ) -> Result<Placed> {
        let (h, w) = canvas.dim();
        let (n, p, q) = patches.dim();
        let shape = |what: &'static str, expected: String, found: &[usize]| Error::RegionShape {
            what,
            expected,
            found: found.to_vec(),
        };
        if weights.dim() != (h, w) {
            return Err(shape(
                "weights",
                format!("({h}, {w}), the canvas's shape"),
                weights.shape(),
            ));
        }
        if p != q {
            return Err(shape(
                "patches",
                "(N, P, P): square patches".into(),
                patches.shape(),
            ));
        }
        if positions.dim() != (n, 2) {
            return Err(shape(
                "positions",
                format!("({n}, 2): [x, y] for each of the {n} patches"),
                positions.shape(),
            ));
        }
        if let Some(pw) = patch_weight.as_ref().filter(|pw| pw.dim() != (p, p)) {
            return Err(shape(
                "patch_weight",
                format!("({p}, {p}), one patch's shape"),
                pw.shape(),
            ));
        }
        let mut corners = Vec::with_capacity(n);
        for (index, xy) in positions.outer_iter().enumerate() {
            for (axis, value) in [("x", xy[0]), ("y", xy[1])] {
                if !value.is_finite() {
                    return Err(Error::NonFiniteOffset {
                        index,
                        axis,
                        value: f64::from(value),
                    });
                }
            }
            corners.push(corner(xy[0], xy[1], p, h, w, self.edge));
        }
        let placed = Placed {
            accepted: corners.iter().filter(|c| c.placed).count(),
            clipped: corners.iter().filter(|c| clipped(c, p, h, w)).count(),
        };
        match self.implementation {
            Implementation::Reference => {
                reference::splat(canvas, weights, patches, &corners, patch_weight)
            }
            Implementation::Fast => fast::splat(
                canvas,
                weights,
                patches,
                &corners,
                patch_weight,
                self.threads,
            ),
        }
        Ok(placed)
    }
}
