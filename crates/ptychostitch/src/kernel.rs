//! The arithmetic of one output pixel, shared by the reference and the fast path.
//!
//! `docs/semantics.md` §2 step 4 fixes it: sample the source at `s = x as f32 - a` on each axis, split
//! `s` into `floor(s)` and the fraction `w`, form the four bilinear weights as single `f32`
//! products, and combine the four neighbours with three correctly rounded fused multiply-adds
//! in a fixed order. Nothing else in the crate does interpolation arithmetic: both
//! implementations call these functions, which is what makes them bit-identical.

/// Where output coordinate `coord` samples the source along one axis, for a patch shifted by
/// `shift` pixels: `(floor(s), s - floor(s))` with `s = coord as f32 - shift` in `f32`.
#[inline(always)]
pub fn sample_axis(coord: usize, shift: f32) -> (i64, f32) {
    let s = coord as f32 - shift;
    let floor = s.floor();
    (floor as i64, s - floor)
}

/// The four bilinear weights of one output pixel, each a single `f32` product.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// `(1 - wx)·(1 - wy)`, for `I[y0, x0]`.
    pub a: f32,
    /// `wx·(1 - wy)`, for `I[y0, x0 + 1]`.
    pub b: f32,
    /// `(1 - wx)·wy`, for `I[y0 + 1, x0]`.
    pub c: f32,
    /// `wx·wy`, for `I[y0 + 1, x0 + 1]`.
    pub d: f32,
}

impl Weights {
    /// Weights from the fractional sample positions `wx` (column) and `wy` (row).
    #[inline(always)]
    pub fn new(wx: f32, wy: f32) -> Self {
        Self::from_factors(1.0 - wx, wx, 1.0 - wy, wy)
    }

    /// Weights from precomputed factors `ux = 1 - wx`, `wx`, `uy = 1 - wy`, `wy`.
    ///
    /// The fast path keeps the per-column factors in tables; the products are the same.
    #[inline(always)]
    pub fn from_factors(ux: f32, wx: f32, uy: f32, wy: f32) -> Self {
        Self {
            a: ux * uy,
            b: wx * uy,
            c: ux * wy,
            d: wx * wy,
        }
    }

    /// The interpolated value `fma(d, i11, fma(c, i10, fma(a, i00, b·i01)))`.
    #[inline(always)]
    pub fn apply(self, i00: f32, i01: f32, i10: f32, i11: f32) -> f32 {
        self.d
            .mul_add(i11, self.c.mul_add(i10, self.a.mul_add(i00, self.b * i01)))
    }

    /// PyTorch's CPU `grid_sample` order: `fma(d, i11, fma(c, i10, fma(b, i01, a·i00)))`.
    #[inline(always)]
    pub fn apply_torch(self, i00: f32, i01: f32, i10: f32, i11: f32) -> f32 {
        self.d
            .mul_add(i11, self.c.mul_add(i10, self.b.mul_add(i01, self.a * i00)))
    }
}

/// Whose translation arithmetic a bilinear sample follows: where an output pixel samples the
/// source, and how the four neighbours are combined. Both give the same value up to `f32`
/// rounding; each gives its framework's bits (`docs/semantics.md` §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Convention {
    /// PtychoPINN's TensorFlow `Translation` (`translate_xla`): the sample is
    /// `s = coord as f32 − shift` ([`sample_axis`]) and the neighbours are combined by
    /// [`Weights::apply`].
    #[default]
    TensorFlow,
    /// PtychoPINN's torch `Translation` (`affine_grid` + `grid_sample(align_corners=True)`,
    /// as PyTorch computes them on CPU): the sample is
    /// `s = (lin(coord) + (−shift)·nf + 1)·((side − 1)/2)` with `lin` torch's
    /// `linspace(−1, 1, side)` and `nf = 2/(side − 1)` rounded to `f32`, and the neighbours are
    /// combined by [`Weights::apply_torch`].
    Torch,
}

impl Convention {
    /// `(floor(s), s − floor(s))` of the sample of output coordinate `coord` for a source of
    /// `side` pixels whose content is moved by `shift` pixels (`side ≥ 2` for [`Convention::Torch`]).
    #[inline(always)]
    pub fn sample_axis(self, coord: usize, shift: f32, side: usize) -> (i64, f32) {
        match self {
            Convention::TensorFlow => sample_axis(coord, shift),
            Convention::Torch => {
                let last = (side - 1) as f32;
                // torch.linspace(-1, 1, side) on CPU: a fused multiply-add from the nearer end.
                let step = 2.0_f32 / last;
                let base = if coord < side / 2 {
                    step.mul_add(coord as f32, -1.0)
                } else {
                    (-step).mul_add((side - 1 - coord) as f32, 1.0)
                };
                let nf = (2.0_f64 / (side - 1) as f64) as f32;
                let grid = base + (-shift) * nf;
                let s = (grid + 1.0) * (last / 2.0);
                let floor = s.floor();
                (floor as i64, s - floor)
            }
        }
    }

    /// One interpolated lane from the four neighbours, in this convention's order.
    #[inline(always)]
    pub fn apply(self, w: Weights, i00: f32, i01: f32, i10: f32, i11: f32) -> f32 {
        match self {
            Convention::TensorFlow => w.apply(i00, i01, i10, i11),
            Convention::Torch => w.apply_torch(i00, i01, i10, i11),
        }
    }
}

/// The denominator of a normalised reassembly, `g(Σ w)` (`docs/semantics.md` §10).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Denominator {
    /// `Σ w + ε` (PtychoPINN's TensorFlow `mk_norm`: `ε = 0.001`).
    Add(f32),
    /// `max(Σ w, ε)` (torch's `clamp(min=ε)`; NaN stays NaN).
    Clamp(f32),
    /// `1`: no division, the plain sum of the translated patches (PtychoPINN's position
    /// reassemblers, `fn_reassemble_real`). Dividing by `1` is exact.
    One,
    /// `scale·Σ w + offset` (two products' sum in `f32`; `scale = 1` gives [`Denominator::Add`]'s
    /// bits).
    Affine {
        /// Factor of `Σ w`.
        scale: f32,
        /// Added constant.
        offset: f32,
    },
    /// `scale·Σ w + max_fraction·max(Σ w)`, the maximum over every sample's region: the
    /// iterative codes' regularised object update, `(1−α)·Σ|P|² + α·max` (tike, PtyLab:
    /// `scale = 1 − α`, `max_fraction = α`) or `Σ + δ·max` (PtychoShelves). Its gradient
    /// reaches the maximum's pixel too (the first, in sample-major row-major order).
    Regularised {
        /// Factor of `Σ w`.
        scale: f32,
        /// Factor of the maximum.
        max_fraction: f32,
    },
}

impl Denominator {
    /// `g(den)`.
    #[inline(always)]
    pub fn apply(self, den: f32) -> f32 {
        match self {
            Denominator::Add(eps) => den + eps,
            Denominator::Clamp(eps) => {
                if den < eps {
                    eps
                } else {
                    den
                }
            }
            Denominator::One => 1.0,
            Denominator::Affine { scale, offset } => scale * den + offset,
            // Resolved against the maximum before it is applied (`Region` does).
            Denominator::Regularised { scale, .. } => scale * den,
        }
    }

    /// `g'(den)`: 1, or 0 where the clamp holds (torch passes the gradient where `den ≥ ε`).
    #[inline(always)]
    pub fn slope(self, den: f32) -> f32 {
        match self {
            Denominator::Add(_) => 1.0,
            Denominator::Clamp(eps) => {
                if den >= eps {
                    1.0
                } else {
                    0.0
                }
            }
            Denominator::One => 0.0,
            Denominator::Affine { scale, .. } | Denominator::Regularised { scale, .. } => scale,
        }
    }

    /// For [`Denominator::Regularised`]: the [`Denominator::Affine`] it is at maximum `max`.
    /// Every other form is returned as it is.
    pub fn at_max(self, max: f32) -> Denominator {
        match self {
            Denominator::Regularised {
                scale,
                max_fraction,
            } => Denominator::Affine {
                scale,
                offset: max_fraction * max,
            },
            other => other,
        }
    }
}

/// The support mask's factor for a pixel whose denominator is `den`: `Some(1.0)` above `limit`,
/// `Some(0.0)` at or below it (NaN included), `None` where no mask is applied.
#[inline(always)]
pub fn support_factor(applied: bool, den: f32, limit: f32) -> Option<f32> {
    applied.then_some(if den > limit { 1.0 } else { 0.0 })
}

/// One normalised pixel of a region: `out = num·k / g(den)` per lane, where `k` is `Some(1.0)`
/// or `Some(0.0)` when a support mask is applied (torch multiplies by its boolean mask first)
/// and `None` when not (TensorFlow divides directly).
#[inline(always)]
pub fn region_normalise(num: &[f32], den: f32, keep: Option<f32>, g: Denominator, out: &mut [f32]) {
    let d = g.apply(den);
    for (o, &v) in out.iter_mut().zip(num) {
        *o = match keep {
            Some(k) => (v * k) / d,
            None => v / d,
        };
    }
}

/// The quotient rule of [`region_normalise`]: from the cotangent `cot` and the output `out` of
/// one pixel, the numerator's cotangent into `dnum` (`G/g`, times `k` where a mask is applied)
/// and the returned denominator's cotangent `−(Σ_lanes G·R)/g · g'(den)` (lanes summed in order
/// from `0.0`).
#[inline(always)]
pub fn region_cotangent(
    cot: &[f32],
    out: &[f32],
    den: f32,
    keep: Option<f32>,
    g: Denominator,
    dnum: &mut [f32],
) -> f32 {
    let d = g.apply(den);
    for (dn, &c) in dnum.iter_mut().zip(cot) {
        *dn = match keep {
            Some(k) => (c / d) * k,
            None => c / d,
        };
    }
    region_g_cotangent(cot, out, den, g) * g.slope(den)
}

/// Values each block of a fixed-order reduction sums ([`blocked_sum`];
/// `PTYCHOSTITCH_REDUCTION_BLOCK` in `kernel.cu`).
pub const REDUCTION_BLOCK: usize = 1024;

/// `Σ value(i)` for `i < n` in `f64`, in a fixed order a GPU runs in parallel: each block of
/// [`REDUCTION_BLOCK`] consecutive values summed in index order from `+0`, then the block sums
/// in block order from `+0` (one thread per block, then one thread). For `n` ≤ the block it
/// is the plain sequential sum, to the bit. Every path (reference, fast, GPU) that reduces a
/// scan-sized array to one number sums this way: the offsets' re-centring mean and the
/// regularised maximum's cotangent.
pub fn blocked_sum(n: usize, value: impl Fn(usize) -> f64) -> f64 {
    let mut total = 0.0_f64;
    for start in (0..n).step_by(REDUCTION_BLOCK) {
        let mut block = 0.0_f64;
        for i in start..(start + REDUCTION_BLOCK).min(n) {
            block += value(i);
        }
        total += block;
    }
    total
}

/// The cotangent of one pixel's denominator value `g(den)`: `−(Σ_lanes G·R)/g` (lanes summed in
/// order from `0.0`). [`region_cotangent`] is this times `g'(den)`.
#[inline(always)]
pub fn region_g_cotangent(cot: &[f32], out: &[f32], den: f32, g: Denominator) -> f32 {
    let d = g.apply(den);
    let mut dot = 0.0_f32;
    for (&c, &o) in cot.iter().zip(out) {
        dot += c * o;
    }
    -dot / d
}

/// `∂v/∂wx` of the interpolated value `v` (one lane): `(1 - wy)·(i01 - i00) + wy·(i11 - i10)`,
/// evaluated as `fma(wy, i11 - i10, uy·(i01 - i00))` with `uy = 1 - wy`.
///
/// The derivative of [`Weights::apply`] with the integer part of the sample position held
/// constant (`docs/semantics.md` §8); the sample moves by `-1` per pixel of offset, so the
/// offset's derivative is the negative of this.
#[inline(always)]
pub fn d_dwx(uy: f32, wy: f32, i00: f32, i01: f32, i10: f32, i11: f32) -> f32 {
    wy.mul_add(i11 - i10, uy * (i01 - i00))
}

/// `∂v/∂wy` of the interpolated value (one lane): `fma(wx, i11 - i01, ux·(i10 - i00))`.
#[inline(always)]
pub fn d_dwy(ux: f32, wx: f32, i00: f32, i01: f32, i10: f32, i11: f32) -> f32 {
    wx.mul_add(i11 - i01, ux * (i10 - i00))
}

/// Number of partial sums an offset gradient keeps ([`ShiftGradient`]).
pub const SHIFT_SLOTS: usize = 8;

/// The fixed-order reduction behind every offset gradient (`docs/semantics.md` §8).
///
/// One term per lane of every pixel a patch reaches: the cotangent times [`d_dwx`] (or
/// [`d_dwy`]), an exact product in `f64`. The term of lane `l` of canvas column `x` goes to
/// partial sum `(x·LANES + l) mod 8`; pixels arrive in row-major order; the eight sums are
/// combined as `((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7))`. The order depends only on canvas
/// coordinates, so the reference, the fast path and the GPU kernel emulator reproduce each
/// other's bits, and eight independent sums let the fast path vectorise.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ShiftGradient {
    /// Partial sums of `cot·∂v/∂wx`.
    pub x: [f64; SHIFT_SLOTS],
    /// Partial sums of `cot·∂v/∂wy`.
    pub y: [f64; SHIFT_SLOTS],
}

impl ShiftGradient {
    /// Adds the terms of one lane: `slot = (x·LANES + lane) mod 8`.
    #[inline(always)]
    pub fn add(&mut self, slot: usize, cot: f32, dwx: f32, dwy: f32) {
        let s = slot % SHIFT_SLOTS;
        self.x[s] += cot as f64 * dwx as f64;
        self.y[s] += cot as f64 * dwy as f64;
    }

    /// Adds a run of terms whose slots are consecutive: term `i` (`cot[i]·dwx[i]`,
    /// `cot[i]·dwy[i]`) goes to slot `(first + i) mod 8`, in order, exactly as `add` called
    /// for each in turn would (the same exact products, each slot's sum in the same order).
    /// The eight sums are held rotated so that term `i` lands in lane `i mod 8`: a loop the
    /// compiler vectorises, where `add`'s slot index is known only at run time.
    #[inline(always)]
    pub fn add_run(&mut self, first: usize, cot: &[f32], dwx: &[f32], dwy: &[f32]) {
        let len = cot.len().min(dwx.len()).min(dwy.len());
        let (cot, dwx, dwy) = (&cot[..len], &dwx[..len], &dwy[..len]);
        let r = first % SHIFT_SLOTS;
        let mut ax = [0.0_f64; SHIFT_SLOTS];
        let mut ay = [0.0_f64; SHIFT_SLOTS];
        for k in 0..SHIFT_SLOTS {
            ax[k] = self.x[(r + k) % SHIFT_SLOTS];
            ay[k] = self.y[(r + k) % SHIFT_SLOTS];
        }
        let full = len - len % SHIFT_SLOTS;
        for ((c, x), y) in cot[..full]
            .chunks_exact(SHIFT_SLOTS)
            .zip(dwx[..full].chunks_exact(SHIFT_SLOTS))
            .zip(dwy[..full].chunks_exact(SHIFT_SLOTS))
        {
            for k in 0..SHIFT_SLOTS {
                ax[k] += c[k] as f64 * x[k] as f64;
                ay[k] += c[k] as f64 * y[k] as f64;
            }
        }
        for k in 0..len - full {
            let i = full + k;
            ax[k] += cot[i] as f64 * dwx[i] as f64;
            ay[k] += cot[i] as f64 * dwy[i] as f64;
        }
        for k in 0..SHIFT_SLOTS {
            self.x[(r + k) % SHIFT_SLOTS] = ax[k];
            self.y[(r + k) % SHIFT_SLOTS] = ay[k];
        }
    }

    /// The two sets of partial sums added slot by slot (`self`'s first): one gradient from the
    /// terms of two sources that move together (a patch and its weight).
    pub fn merged(&self, other: &ShiftGradient) -> ShiftGradient {
        let mut out = *self;
        for s in 0..SHIFT_SLOTS {
            out.x[s] += other.x[s];
            out.y[s] += other.y[s];
        }
        out
    }

    /// `[∂L/∂a_x, ∂L/∂a_y]`: the combined sums, negated (the sample is `x - a_x`).
    pub fn shift_gradient(&self) -> [f64; 2] {
        let tree = |s: &[f64; SHIFT_SLOTS]| {
            ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))
        };
        [-tree(&self.x), -tree(&self.y)]
    }
}

/// Offset terms waiting to be added to a [`ShiftGradient`] as one run of consecutive slots
/// ([`ShiftGradient::add_run`]). Terms arrive in the order `add` would take them; a term whose
/// slot does not follow the last one's (or a full buffer) first adds the run so far, so the
/// sums are `add`'s, term for term. [`ShiftRun::flush`] before reading the sums.
pub(crate) struct ShiftRun {
    start: usize,
    len: usize,
    cot: Vec<f32>,
    dwx: Vec<f32>,
    dwy: Vec<f32>,
}

impl ShiftRun {
    /// A buffer for runs of up to `capacity` terms (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            start: 0,
            len: 0,
            cot: vec![0.0; capacity],
            dwx: vec![0.0; capacity],
            dwy: vec![0.0; capacity],
        }
    }

    /// The term `cot·dwx`, `cot·dwy` for `slot` (taken mod 8, as `add` does).
    #[inline(always)]
    pub(crate) fn push(
        &mut self,
        sum: &mut ShiftGradient,
        slot: usize,
        cot: f32,
        dwx: f32,
        dwy: f32,
    ) {
        if self.len > 0 && (self.start + self.len != slot || self.len == self.cot.len()) {
            self.flush(sum);
        }
        if self.len == 0 {
            self.start = slot;
        }
        self.cot[self.len] = cot;
        self.dwx[self.len] = dwx;
        self.dwy[self.len] = dwy;
        self.len += 1;
    }

    /// Adds the waiting terms to `sum`.
    #[inline(always)]
    pub(crate) fn flush(&mut self, sum: &mut ShiftGradient) {
        let n = self.len;
        if n > 0 {
            sum.add_run(self.start, &self.cot[..n], &self.dwx[..n], &self.dwy[..n]);
            self.len = 0;
        }
    }
}

/// PtychoPINN's normalisation of a real pixel: `value / (weight + 1e-9)` in `f32`.
#[inline(always)]
pub fn normalise(value: f32, weight: f32) -> f32 {
    value / (weight + 1e-9_f32)
}

/// PtychoPINN's normalisation of a complex pixel `re + i·im`: TensorFlow's complex division by
/// `d + 0i`, `d = weight + 1e-9` (`f32`).
///
/// TensorFlow (Eigen, on CPU) divides `x / y` as `(x · conj(y / s)) / |y / s|² / s` with
/// `s = max(|Re y|, |Im y|)`. For `y = d + 0i` that is `x · (1 - 0i)` followed by two divisions,
/// by `1` and by `d`. The complex product is where the parts meet:
/// `re' = re·1 - im·(-0)`, `im' = re·(-0) + im·1`. For finite values the zero products vanish
/// and each part is just divided by `d`; where one part is NaN or ±inf, its product with zero
/// is NaN and turns the *other* part NaN too (`inf + 0.36i` becomes `inf + NaN i`). Every
/// step is exact except the last division, so this reproduces TensorFlow's bits, NaN payloads
/// included on x86-64 (`tests/data/golden/nonfinite.npz`).
#[inline(always)]
pub fn normalise_complex(re: f32, im: f32, weight: f32) -> (f32, f32) {
    let d = weight + 1e-9_f32;
    ((re - im * -0.0) / d, (re * -0.0 + im) / d)
}

/// The cotangent of the weight canvas at one pixel of `R = I / (1e-9 + W)`:
/// `−(Σ_lanes G·R) / (W + 1e-9)` (`f32`, lanes summed in order from `0.0`).
///
/// This is the quotient rule's `−G·conj(I) / d²` written with the forward's output `R = I / d`;
/// only its real part reaches the offsets, since the weight canvas is real.
#[inline(always)]
pub fn weight_cotangent(cot: &[f32], output: &[f32], weight: f32) -> f32 {
    let d = weight + 1e-9_f32;
    let mut dot = 0.0_f32;
    for (c, o) in cot.iter().zip(output) {
        dot += c * o;
    }
    -dot / d
}

// --- Extraction: sampling a translated image (PtychoPINN's `extract_patches_position`) -------

/// One output pixel of patch `j`: image pixel `(y, x)` of the translated image, `I = 0`
/// outside. Extraction's arithmetic, shared by its reference and fast path.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn sample_pixel(
    conv: Convention,
    image: &[f32],
    side: usize,
    l: usize,
    y: usize,
    x: usize,
    [ax, ay]: [f32; 2],
    out: &mut [f32],
) {
    let (y0, wy) = conv.sample_axis(y, ay, side);
    let (x0, wx) = conv.sample_axis(x, ax, side);
    let w = Weights::new(wx, wy);
    for (lane, o) in out.iter_mut().enumerate() {
        let at = |cy: i64, cx: i64| pixel(image, side, l, cy, cx, lane);
        *o = conv.apply(
            w,
            at(y0, x0),
            at(y0, x0 + 1),
            at(y0 + 1, x0),
            at(y0 + 1, x0 + 1),
        );
    }
}

/// Lane `lane` of image pixel `(y, x)`, zero outside the `side×side` image.
#[inline(always)]
pub(crate) fn pixel(image: &[f32], side: usize, l: usize, y: i64, x: i64, lane: usize) -> f32 {
    if (0..side as i64).contains(&y) && (0..side as i64).contains(&x) {
        image[(y as usize * side + x as usize) * l + lane]
    } else {
        0.0
    }
}

/// Offset terms of output pixel `(y, x)` of a translated image into `sum`, when the pixel
/// reads at least one image pixel. Extraction's arithmetic, shared by its reference and fast path.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_offset_terms(
    conv: Convention,
    sum: &mut ShiftGradient,
    image: &[f32],
    side: usize,
    l: usize,
    (y, x): (usize, usize),
    [ax, ay]: [f32; 2],
    cot: &[f32],
) {
    let rows = conv.sample_axis(y, ay, side);
    let cols = conv.sample_axis(x, ax, side);
    add_offset_terms_sampled(sum, image, side, l, x, rows, cols, cot);
}

/// [`add_offset_terms`] with the pixel's samples `(y0, wy)` and `(x0, wx)` already taken (a
/// fast path takes each row's and column's once per patch): the same arithmetic, with the four
/// corners read without a bounds test where they all lie inside the image.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_offset_terms_sampled(
    sum: &mut ShiftGradient,
    image: &[f32],
    side: usize,
    l: usize,
    x: usize,
    (y0, wy): (i64, f32),
    (x0, wx): (i64, f32),
    cot: &[f32],
) {
    let on = |v: i64| (-1..side as i64).contains(&v);
    if !(on(y0) && on(x0)) {
        return;
    }
    let inside = y0 >= 0 && x0 >= 0 && (y0 as usize) + 1 < side && (x0 as usize) + 1 < side;
    for (lane, &g) in cot.iter().enumerate() {
        let [i00, i01, i10, i11] = image_corners(image, (side, l), (y0, x0), lane, inside);
        sum.add(
            x * l + lane,
            g,
            d_dwx(1.0 - wy, wy, i00, i01, i10, i11),
            d_dwy(1.0 - wx, wx, i00, i01, i10, i11),
        );
    }
}

/// The four corners of a run of `len` lanes as contiguous slices `[i00, i01, i10, i11]`: from
/// lane `top` of a plane whose rows are `stride` lanes apart, with `l` lanes a pixel (`i01` is
/// the next pixel, `i10` the next row).
#[inline(always)]
pub(crate) fn corner_slices(
    plane: &[f32],
    top: usize,
    stride: usize,
    l: usize,
    len: usize,
) -> [&[f32]; 4] {
    let bottom = top + stride;
    [
        &plane[top..top + len],
        &plane[top + l..top + l + len],
        &plane[bottom..bottom + len],
        &plane[bottom + l..bottom + l + len],
    ]
}

/// Each fraction `w` and `1 − w` repeated for the `l` lanes of its pixel, into `wx` and `ux`
/// (cleared first): the per-lane factor tables of a row kernel.
pub(crate) fn lane_factors(
    fractions: impl Iterator<Item = f32>,
    l: usize,
    (wx, ux): (&mut Vec<f32>, &mut Vec<f32>),
) {
    wx.clear();
    ux.clear();
    for f in fractions {
        for _ in 0..l {
            wx.push(f);
            ux.push(1.0 - f);
        }
    }
}

/// Lane `lane` of the four pixels `(y0, x0)`, `(y0, x0+1)`, `(y0+1, x0)`, `(y0+1, x0+1)` of a
/// `side×side` image of `l` lanes, zero outside it; `inside`: all four lie in the image (read
/// without a bounds test each).
#[inline(always)]
pub(crate) fn image_corners(
    image: &[f32],
    (side, l): (usize, usize),
    (y0, x0): (i64, i64),
    lane: usize,
    inside: bool,
) -> [f32; 4] {
    if inside {
        let at = (y0 as usize * side + x0 as usize) * l + lane;
        let below = at + side * l;
        return [image[at], image[at + l], image[below], image[below + l]];
    }
    let at = |cy: i64, cx: i64| pixel(image, side, l, cy, cx, lane);
    [
        at(y0, x0),
        at(y0, x0 + 1),
        at(y0 + 1, x0),
        at(y0 + 1, x0 + 1),
    ]
}

/// The four corners `(row, column, weight)` an output pixel reads, in the order a, b, c, d.
#[inline(always)]
pub(crate) fn corners(
    conv: Convention,
    side: usize,
    y: usize,
    x: usize,
    [ax, ay]: [f32; 2],
) -> [(i64, i64, f32); 4] {
    let (y0, wy) = conv.sample_axis(y, ay, side);
    let (x0, wx) = conv.sample_axis(x, ax, side);
    let w = Weights::new(wx, wy);
    [
        (y0, x0, w.a),
        (y0, x0 + 1, w.b),
        (y0 + 1, x0, w.c),
        (y0 + 1, x0 + 1, w.d),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn blocked_sum_is_the_sequential_sum_up_to_a_block_and_fixed_by_blocks_beyond() {
        // 1e16 then ones: added one at a time to 1e16 each 1 is lost (half an ulp, to even);
        // summed in a block of their own they count.
        let values: Vec<f64> = (0..3 * REDUCTION_BLOCK + 17)
            .map(|i| if i == 0 { 1e16 } else { 1.0 })
            .collect();
        let sequential = |n: usize| values[..n].iter().fold(0.0_f64, |s, v| s + v);
        for n in [0, 1, 2, REDUCTION_BLOCK - 1, REDUCTION_BLOCK] {
            assert_eq!(
                blocked_sum(n, |i| values[i]).to_bits(),
                sequential(n).to_bits(),
                "{n}"
            );
        }
        let n = values.len();
        let by_blocks = values
            .chunks(REDUCTION_BLOCK)
            .map(|b| b.iter().fold(0.0_f64, |s, v| s + v))
            .fold(0.0_f64, |s, v| s + v);
        assert_eq!(blocked_sum(n, |i| values[i]).to_bits(), by_blocks.to_bits());
        // The order is what fixes the bits: here the plain sequential sum differs.
        assert_ne!(by_blocks.to_bits(), sequential(n).to_bits());
    }

    use super::*;

    #[test]
    fn sample_axis_splits_integer_and_fraction() {
        assert_eq!(sample_axis(5, 0.25), (4, 0.75));
        assert_eq!(sample_axis(0, 1.5), (-2, 0.5));
        assert_eq!(sample_axis(3, -2.0), (5, 0.0));
    }

    #[test]
    fn weights_form_a_partition_of_unity_for_dyadic_fractions() {
        let w = Weights::new(0.25, 0.5);
        assert_eq!(w.a + w.b + w.c + w.d, 1.0);
        assert_eq!(w.apply(1.0, 1.0, 1.0, 1.0), 1.0);
        // Exact for dyadic data: 0.375·2 + 0.125·4 + 0.375·8 + 0.125·16 = 6.25
        assert_eq!(w.apply(2.0, 4.0, 8.0, 16.0), 6.25);
    }

    #[test]
    fn complex_normalisation_follows_tensorflow() {
        let bits = |(a, b): (f32, f32)| (a.to_bits(), b.to_bits());
        // Finite: each part divided by (w + 1e-9), as a per-part division would.
        let (re, im) = normalise_complex(3.0, -1.5, 2.0);
        assert_eq!((re, im), (normalise(3.0, 2.0), normalise(-1.5, 2.0)));
        // Uncovered pixels stay exactly zero.
        assert_eq!(bits(normalise_complex(0.0, 0.0, 0.0)), (0, 0));
        // A non-finite part makes the other part NaN (x86-64's default NaN where inf·0 made it).
        let (re, im) = normalise_complex(f32::INFINITY, 0.36, 1.0);
        assert_eq!(re, f32::INFINITY);
        assert!(im.is_nan());
        let (re, im) = normalise_complex(0.5, f32::NEG_INFINITY, 1.0);
        assert!(re.is_nan());
        assert_eq!(im, f32::NEG_INFINITY);
        let (re, im) = normalise_complex(f32::NAN, -0.86, 1.0);
        assert!(re.is_nan() && im.is_nan());
        // At run time (not constant-folded, which gives the compiler's NaN), x86-64 makes
        // inf·0 its default NaN 0xffc00000 and passes a NaN operand's payload on, as TF's do.
        #[cfg(target_arch = "x86_64")]
        {
            let run = |re: f32, im: f32| {
                let (re, im) = normalise_complex(
                    std::hint::black_box(re),
                    std::hint::black_box(im),
                    std::hint::black_box(1.0),
                );
                (re.to_bits(), im.to_bits())
            };
            assert_eq!(run(f32::INFINITY, 1.0), (0x7f80_0000, 0xffc0_0000));
            assert_eq!(run(f32::NAN, 1.0), (0x7fc0_0000, 0x7fc0_0000));
            assert_eq!(run(0.5, f32::NEG_INFINITY), (0xffc0_0000, 0xff80_0000));
        }
    }

    #[test]
    fn apply_uses_fused_multiply_add() {
        // (1 + 2^-23)(1 - 2^-23) - 1 = -2^-46 only when the last product is fused with the sum;
        // a separately rounded product gives 1.0 and the difference 0.
        let eps = f32::EPSILON;
        let w = Weights {
            a: 1.0,
            b: 0.0,
            c: 0.0,
            d: 1.0 + eps,
        };
        let got = w.apply(-1.0, 0.0, 0.0, 1.0 - eps);
        assert_eq!(got, -(2.0_f32).powi(-46));
    }
}
