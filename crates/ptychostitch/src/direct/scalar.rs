//! The portable instruction set of the direct kernel: one lane at a time.

use super::Isa;

/// One lane at a time, on any CPU: what the unit tests run the kernel's logic with.
#[derive(Clone, Copy)]
pub(crate) struct Scalar;

impl Isa for Scalar {
    const WIDTH: usize = 1;
    type V = f32;
    type M = bool;

    unsafe fn range(lo: isize, hi: isize) -> bool {
        lo <= 0 && 0 < hi
    }
    unsafe fn none() -> bool {
        false
    }
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    unsafe fn load(mask: bool, p: *const f32) -> f32 {
        // SAFETY: the contract: `p` is valid where the mask admits the lane.
        if mask { unsafe { p.read() } } else { 0.0 }
    }
    unsafe fn ones(mask: bool) -> f32 {
        if mask { 1.0 } else { 0.0 }
    }
    unsafe fn store(mask: bool, p: *mut f32, v: f32) {
        if mask {
            // SAFETY: the contract: `p` is valid where the mask admits the lane.
            unsafe { p.write(v) }
        }
    }
    unsafe fn load_full(p: *const f32) -> f32 {
        // SAFETY: the contract.
        unsafe { p.read() }
    }
    unsafe fn store_full(p: *mut f32, v: f32) {
        // SAFETY: the contract.
        unsafe { p.write(v) }
    }
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    unsafe fn fmadd(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
}
