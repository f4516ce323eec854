//! The element types of `.npy` arrays.

#[allow(unused_imports)]
use super::*;

/// Element types this module understands (`Other` is kept for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dtype {
    /// `complex64`: two `f32`.
    Complex64,
    /// `complex128`: two `f64`.
    Complex128,
    /// `float32`.
    Float32,
    /// `float64`.
    Float64,
    /// `float16` (IEEE half precision).
    Float16,
    /// Signed integer of this many bytes (1, 2, 4, 8).
    Int(usize),
    /// Unsigned integer of this many bytes (1, 2, 4, 8).
    UInt(usize),
    /// `bool`.
    Bool,
    /// Anything else, as the header spells it (e.g. `<U6`).
    Other(String),
}

impl Dtype {
    pub(super) fn parse(descr: &str) -> (Dtype, bool) {
        let big = descr.starts_with('>');
        let code = descr.trim_start_matches(['<', '>', '|', '=']);
        let dtype = match code {
            "c8" => Dtype::Complex64,
            "c16" => Dtype::Complex128,
            "f2" => Dtype::Float16,
            "f4" => Dtype::Float32,
            "f8" => Dtype::Float64,
            "b1" | "?" => Dtype::Bool,
            _ => {
                let width = code.get(1..).and_then(|w| w.parse::<usize>().ok());
                match (code.as_bytes().first(), width) {
                    (Some(b'i'), Some(n @ (1 | 2 | 4 | 8))) => Dtype::Int(n),
                    (Some(b'u'), Some(n @ (1 | 2 | 4 | 8))) => Dtype::UInt(n),
                    _ => Dtype::Other(descr.to_string()),
                }
            }
        };
        (dtype, big)
    }

    /// Bytes per element, where known.
    pub fn size(&self) -> Option<usize> {
        Some(match self {
            Dtype::Complex64 => 8,
            Dtype::Complex128 => 16,
            Dtype::Float32 => 4,
            Dtype::Float64 => 8,
            Dtype::Float16 => 2,
            Dtype::Int(n) | Dtype::UInt(n) => *n,
            Dtype::Bool => 1,
            Dtype::Other(_) => return None,
        })
    }

    /// True for `complex64` and `complex128`.
    pub fn is_complex(&self) -> bool {
        matches!(self, Dtype::Complex64 | Dtype::Complex128)
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dtype::Complex64 => f.write_str("complex64"),
            Dtype::Complex128 => f.write_str("complex128"),
            Dtype::Float32 => f.write_str("float32"),
            Dtype::Float64 => f.write_str("float64"),
            Dtype::Float16 => f.write_str("float16"),
            Dtype::Int(n) => write!(f, "int{}", n * 8),
            Dtype::UInt(n) => write!(f, "uint{}", n * 8),
            Dtype::Bool => f.write_str("bool"),
            Dtype::Other(s) => write!(f, "'{s}'"),
        }
    }
}
