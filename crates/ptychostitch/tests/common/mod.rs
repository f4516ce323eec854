//! Helpers shared by the integration tests: seeded random inputs and bit-level comparison.
#![allow(dead_code)]

use ndarray::{Array2, Array3};
use ptychostitch::{Complex32, Sample};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod cases;
#[allow(unused_imports)] // not every test binary that shares these helpers uses it
pub use cases::{GOLDEN_CASES, golden_dir};

/// A golden case's inputs: patches `(n, N, N)`, offsets `(n, 2)`, `M`, and the open archive
/// (for its TF outputs).
pub struct Golden {
    pub obj: ndarray::Array3<Complex32>,
    pub offsets: Array2<f64>,
    pub m: i64,
    pub npz: ptychostitch::npy::Npz,
}

pub fn golden(name: &str) -> Golden {
    let path = golden_dir().join(format!("{name}.npz"));
    let mut npz = ptychostitch::npy::Npz::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let obj = npz.read("obj").unwrap().to_complex32().unwrap();
    let obj = obj
        .index_axis_move(ndarray::Axis(3), 0)
        .into_dimensionality()
        .unwrap();
    let offsets = npz.read("offsets").unwrap().to_f64().unwrap();
    let n = offsets.shape()[0];
    let offsets = offsets.into_shape_with_order((n, 2)).unwrap();
    let m = npz.read("M").unwrap().to_scalar_i64().unwrap();
    Golden {
        obj,
        offsets,
        m,
        npz,
    }
}

/// A golden `(S, S, 1)` output as `(S, S)`, or `None` when the file does not hold it.
pub fn golden_output(case: &mut Golden, key: &str) -> Option<Array2<Complex32>> {
    if !case.npz.contains(key) {
        return None;
    }
    let a = case.npz.read(key).unwrap().to_complex32().unwrap();
    Some(
        a.index_axis_move(ndarray::Axis(2), 0)
            .into_dimensionality()
            .unwrap(),
    )
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `n` complex patches with values uniform in [-1, 1) on both parts.
pub fn random_patches(rng: &mut ChaCha8Rng, n: usize, size: usize) -> Array3<Complex32> {
    Array3::from_shape_simple_fn((n, size, size), || {
        Complex32::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0))
    })
}

/// Offsets `[x, y]` drawn by `draw`.
pub fn offsets_from(n: usize, mut draw: impl FnMut(usize) -> [f64; 2]) -> Array2<f64> {
    let mut a = Array2::zeros((n, 2));
    for k in 0..n {
        let [x, y] = draw(k);
        a[[k, 0]] = x;
        a[[k, 1]] = y;
    }
    a
}

/// The lanes of a canvas as bit patterns, with every NaN mapped to one pattern.
pub fn bits<T: Sample>(a: &Array2<T>) -> Vec<u32> {
    let lanes: &[f32] = bytemuck_lanes(a);
    lanes
        .iter()
        .map(|v| if v.is_nan() { 0x7fc0_0000 } else { v.to_bits() })
        .collect()
}

fn bytemuck_lanes<T: Sample>(a: &Array2<T>) -> &[f32] {
    let s = a.as_slice().expect("standard layout");
    // SAFETY: `Sample` types are `Pod` made of `f32` lanes (`f32` or `Complex32`, which is
    // `repr(C)` with two `f32`), so the slice's bytes are exactly `len · LANES` valid `f32`s.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len() * T::LANES) }
}

/// Asserts two canvases are bit-identical (NaNs of any payload count as equal).
#[track_caller]
pub fn assert_bit_identical<T: Sample>(fast: &Array2<T>, reference: &Array2<T>, what: &str) {
    assert_eq!(fast.dim(), reference.dim(), "{what}: shapes differ");
    first_difference(&bits(fast), &bits(reference), fast.ncols(), T::LANES, what);
}

/// Asserts two canvases are identical in every bit, NaN payloads and signs included.
#[track_caller]
pub fn assert_exact_bits<T: Sample>(ours: &Array2<T>, theirs: &Array2<T>, what: &str) {
    assert_eq!(ours.dim(), theirs.dim(), "{what}: shapes differ");
    let raw =
        |a: &Array2<T>| -> Vec<u32> { bytemuck_lanes(a).iter().map(|v| v.to_bits()).collect() };
    first_difference(&raw(ours), &raw(theirs), ours.ncols(), T::LANES, what);
}

#[track_caller]
fn first_difference(a: &[u32], b: &[u32], side: usize, lanes: usize, what: &str) {
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        let pixel = i / lanes;
        panic!(
            "{what}: first difference at pixel (y={}, x={}) lane {}: {} ({:#010x}) vs {} ({:#010x})",
            pixel / side,
            pixel % side,
            i % lanes,
            f32::from_bits(a[i]),
            a[i],
            f32::from_bits(b[i]),
            b[i]
        );
    }
}
