//! The x86-64 instruction sets of the direct kernel: AVX-512F (16 lanes, mask registers) and
//! AVX2 + FMA (8 lanes).

use super::Isa;
use std::arch::x86_64::*;

/// AVX-512F: 16 lanes, mask registers.
#[derive(Clone, Copy)]
pub(crate) struct Avx512;

impl Isa for Avx512 {
    const WIDTH: usize = 16;
    type V = __m512;
    type M = __mmask16;

    #[inline(always)]
    unsafe fn range(lo: isize, hi: isize) -> __mmask16 {
        let (lo, hi) = (lo.clamp(0, 16) as u32, hi.clamp(0, 16) as u32);
        let below = |k: u32| ((1_u32 << k) - 1) as __mmask16;
        below(hi) & !below(lo)
    }
    #[inline(always)]
    unsafe fn none() -> __mmask16 {
        0
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load(mask: __mmask16, p: *const f32) -> __m512 {
        // SAFETY: the contract: `p` is valid for the lanes of `mask`; masked-off lanes are
        // neither read nor able to fault.
        unsafe { _mm512_maskz_loadu_ps(mask, p) }
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn ones(mask: __mmask16) -> __m512 {
        _mm512_maskz_mov_ps(mask, _mm512_set1_ps(1.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store(mask: __mmask16, p: *mut f32, v: __m512) {
        // SAFETY: the contract: `p` is valid for the lanes of `mask`, the only ones written.
        unsafe { _mm512_mask_storeu_ps(p, mask, v) }
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_full(p: *const f32) -> __m512 {
        // SAFETY: the contract: `p` is valid for 16 lanes.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_full(p: *mut f32, v: __m512) {
        // SAFETY: the contract: `p` is valid for 16 lanes.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }
}

/// AVX2 + FMA: 8 lanes, masks as vectors.
#[derive(Clone, Copy)]
pub(crate) struct Avx2;

impl Isa for Avx2 {
    const WIDTH: usize = 8;
    type V = __m256;
    type M = __m256i;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn range(lo: isize, hi: isize) -> __m256i {
        let (lo, hi) = (lo.clamp(-1, 9) as i32, hi.clamp(-1, 9) as i32);
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_and_si256(
            _mm256_cmpgt_epi32(lane, _mm256_set1_epi32(lo - 1)),
            _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), lane),
        )
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn none() -> __m256i {
        _mm256_setzero_si256()
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load(mask: __m256i, p: *const f32) -> __m256 {
        // SAFETY: the contract: `p` is valid for the lanes of `mask`; `vmaskmovps` neither
        // reads nor faults on the others.
        unsafe { _mm256_maskload_ps(p, mask) }
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn ones(mask: __m256i) -> __m256 {
        _mm256_and_ps(_mm256_castsi256_ps(mask), _mm256_set1_ps(1.0))
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn store(mask: __m256i, p: *mut f32, v: __m256) {
        // SAFETY: the contract: `p` is valid for the lanes of `mask`, the only ones written.
        unsafe { _mm256_maskstore_ps(p, mask, v) }
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load_full(p: *const f32) -> __m256 {
        // SAFETY: the contract: `p` is valid for 8 lanes.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn store_full(p: *mut f32, v: __m256) {
        // SAFETY: the contract: `p` is valid for 8 lanes.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
}
