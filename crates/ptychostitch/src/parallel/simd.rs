//! The vector instruction sets the fast path can use, detected once at run time.

#[allow(unused_imports)]
use super::*;

/// Which instruction set the fast path may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Simd {
    /// Detect the CPU once and use the widest supported kernel: AVX-512 where the CPU has it,
    /// else AVX2 + FMA, else the portable kernel.
    #[default]
    Auto,
    /// AVX2 + FMA even where AVX-512 is available (the portable kernel where AVX2 is not).
    /// Same bits; for comparing and testing the kernels on one machine.
    Avx2,
    /// The portable kernel only (what a CPU without AVX2/FMA runs). Same bits, slower.
    Portable,
}

/// The kernel a run uses, resolved from [`Simd`] and the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// AVX-512F (with AVX2 and FMA): the direct kernel, 16 lanes.
    Avx512,
    /// AVX2 + FMA: the direct kernel, 8 lanes.
    Avx2,
    /// No intrinsics: the bordered path, vectorised by the compiler where it can.
    Portable,
}

impl Simd {
    /// The kernel that will actually run on this CPU: `"avx512"`, `"avx2+fma"` or `"portable"`.
    pub fn resolved(self) -> &'static str {
        match self.kernel() {
            Kernel::Avx512 => "avx512",
            Kernel::Avx2 => "avx2+fma",
            Kernel::Portable => "portable",
        }
    }

    /// Whether AVX2 + FMA code may run (the gradients' kernels have no AVX-512 version).
    pub(crate) fn uses_avx2(self) -> bool {
        self.kernel() != Kernel::Portable
    }

    pub(crate) fn kernel(self) -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            static DETECTED: OnceLock<(bool, bool)> = OnceLock::new();
            let (avx2, avx512) = *DETECTED.get_or_init(|| {
                let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
                (avx2, avx2 && is_x86_feature_detected!("avx512f"))
            });
            match self {
                Simd::Auto if avx512 => Kernel::Avx512,
                Simd::Auto | Simd::Avx2 if avx2 => Kernel::Avx2,
                _ => Kernel::Portable,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            Kernel::Portable
        }
    }
}
