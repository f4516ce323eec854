//! What the kernel tests compare with: lanes bit for bit.
#![allow(dead_code)] // each test file uses a part

use ndarray::{Array, Dimension};
use ptychostitch::Sample;

/// The `f32` bits of every lane of `a`, in logical order.
pub fn lane_bits<T: Sample, D: Dimension>(a: &Array<T, D>) -> Vec<u32> {
    let values: Vec<T> = a.iter().copied().collect();
    bytemuck::cast_slice::<T, f32>(&values)
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Panics at the first lane whose bits differ, naming `what`.
#[track_caller]
pub fn assert_lanes<T: Sample, D: Dimension>(
    kernel: &Array<T, D>,
    reference: &Array<T, D>,
    what: &str,
) {
    assert_eq!(kernel.shape(), reference.shape(), "{what}");
    let (a, b) = (lane_bits(kernel), lane_bits(reference));
    if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!(
            "{what}: lane {i}: kernel {} vs reference {}",
            f32::from_bits(a[i]),
            f32::from_bits(b[i])
        );
    }
}

/// Panics at the first offset-cotangent value whose bits differ, naming `what`.
#[track_caller]
pub fn assert_offsets(kernel: &ndarray::Array2<f64>, reference: &ndarray::Array2<f64>, what: &str) {
    for (i, (x, y)) in kernel.iter().zip(reference).enumerate() {
        assert!(
            x.to_bits() == y.to_bits(),
            "{what}: offset lane {i}: kernel {x} vs reference {y}"
        );
    }
}
