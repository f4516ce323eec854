// Compiles ptychostitch's CUDA kernel (kernel.cu) as plain C++ so that its arithmetic runs, and
// is tested bit for bit, on machines without a GPU. Only what the kernel uses is defined: the
// launch coordinates (set by the emulated launcher, one block and thread at a time) and the
// correctly rounded float intrinsics, which on a CPU are the plain IEEE operations (compiled
// with -ffp-contract=off so that none is fused) and the C library's correctly rounded fmaf.
#pragma once
#include <cmath>
#include <cstdint>
#include <unordered_map>

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

// One writer per output element and launch: the emulated launcher gives each (block, thread)
// a number and watches every PS_STORE of the launch; an element stored by two threads is a
// race on a GPU (one thread storing an element twice, as the fold does, is not).
struct ptychostitch_writes {
    std::unordered_map<const void*, std::uint64_t> writer;
    std::uint64_t conflicts = 0;
};
static thread_local ptychostitch_writes* ptychostitch_watch = nullptr;
static thread_local std::uint64_t ptychostitch_thread = 0;

template <class T, class V>
static inline void ptychostitch_store(T& dst, V value) {
    if (ptychostitch_watch != nullptr) {
        auto found = ptychostitch_watch->writer.emplace(static_cast<const void*>(&dst), ptychostitch_thread);
        if (!found.second && found.first->second != ptychostitch_thread) {
            ++ptychostitch_watch->conflicts;
        }
    }
    dst = value;
}
#define PS_STORE(dst, value) ptychostitch_store((dst), (value))
