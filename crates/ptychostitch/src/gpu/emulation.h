// Compiles ptychostitch's CUDA kernel (kernel.cu) as plain C++ so that its arithmetic runs, and
// is tested bit for bit, on machines without a GPU. Only what the kernel uses is defined: the
// launch coordinates (set by the emulated launcher, one block and thread at a time) and the
// correctly rounded float intrinsics, which on a CPU are the plain IEEE operations (compiled
// with -ffp-contract=off so that none is fused) and the C library's correctly rounded fmaf.
#pragma once
#include <cmath>

#define __global__
#define __device__

struct ptychostitch_dim3 {
    unsigned x, y, z;
};
// One launch coordinate per thread: tests emulate launches on several threads at once.
static thread_local ptychostitch_dim3 blockIdx, threadIdx;

static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline float __double2float_rn(double a) { return (float)a; }
