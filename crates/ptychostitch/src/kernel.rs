//! The arithmetic of one output pixel, shared by the reference and the fast path.
//!
//! `SPEC.md` §2 step 4 fixes it: sample the source at `s = x as f32 - a` on each axis, split
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
}

/// PtychoPINN's normalisation of one lane: `value / (weight + 1e-9)` in `f32`.
#[inline(always)]
pub fn normalise(value: f32, weight: f32) -> f32 {
    value / (weight + 1e-9_f32)
}

#[cfg(test)]
mod tests {
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
