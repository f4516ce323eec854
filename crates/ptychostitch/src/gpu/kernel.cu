// ptychostitch's GPU kernel: one thread per canvas pixel, 8×8 pixels per block; each block walks
// the patches whose footprint meets its tile, in index order, so every pixel receives its
// patches in index order (deterministic, and bit-identical to the CPU reference).
//
// The arithmetic is docs/semantics.md §2, spelled with the correctly rounded intrinsics
// (__fsub_rn, __fmul_rn, __fmaf_rn, __fadd_rn, __fdiv_rn) so that no compiler may contract or
// reorder it; the module is also compiled with --fmad=false. The same source is compiled as
// plain C++ through `emulation.h` and run on the CPU in the normal test suite.
//
// Outside a patch's footprint every sample is zero padding and the value added is exactly +0.0;
// a sum that starts at +0.0 never becomes -0.0, so adding it (rather than skipping the pixel)
// changes no bit.

#define PTYCHOSTITCH_TILE 8

// Everything a launch needs, passed by value. Mirrored by `gpu::launch::Args` (#[repr(C)]).
struct StitchArgs {
    // Patch values as f32 lanes; element (k, r, c) of the stack starts at lane
    // (k * stride_n + r * stride_r + c * stride_c) * lanes.
    const float* patches;
    long long stride_n;
    long long stride_r;
    long long stride_c;
    // Centred shifts [a_x, a_y] per patch (f32), indexed by scan index.
    const float* shifts;
    // Per tile (row-major, tiles_x per row): tile_start[t]..tile_start[t + 1] indexes
    // tile_patches, the increasing scan indices of the patches whose footprint meets tile t.
    const int* tile_start;
    const int* tile_patches;
    // Scan index of the stack's first patch: the stack holds patches first..first + count.
    int first;
    int count;
    int tiles_x;
    int side;
    int pad;
    int kept;
    int crop_start;
    int lanes;      // 1: real, 2: complex
    int normalise;  // 1: divide by (weight + 1e-9), TensorFlow's way; 0: plain sum
    float* image;   // side * side * lanes, C order, overwritten
    float* weights; // side * side, or null: written when not null
};

__device__ static inline float sample(const StitchArgs& a, int k, int r, int c, int lane) {
    if (r < 0 || r >= a.kept || c < 0 || c >= a.kept) {
        return 0.0f;
    }
    long long at = ((long long)(k - a.first) * a.stride_n + (long long)(a.crop_start + r) * a.stride_r +
                    (long long)(a.crop_start + c) * a.stride_c) * a.lanes + lane;
    return a.patches[at];
}

__device__ static inline float inside(const StitchArgs& a, int r, int c) {
    return (r < 0 || r >= a.kept || c < 0 || c >= a.kept) ? 0.0f : 1.0f;
}

// value = fma(wd, i11, fma(wc, i10, fma(wa, i00, wb * i01)))
__device__ static inline float bilinear(float wa, float wb, float wc, float wd, float i00, float i01,
                                        float i10, float i11) {
    return __fmaf_rn(wd, i11, __fmaf_rn(wc, i10, __fmaf_rn(wa, i00, __fmul_rn(wb, i01))));
}

extern "C" __global__ void ptychostitch_stitch(const StitchArgs a) {
    int x = blockIdx.x * PTYCHOSTITCH_TILE + threadIdx.x;
    int y = blockIdx.y * PTYCHOSTITCH_TILE + threadIdx.y;
    if (x >= a.side || y >= a.side) {
        return;
    }
    int tile = blockIdx.y * a.tiles_x + blockIdx.x;
    long long pixel = (long long)y * a.side + x;
    float acc0 = 0.0f, acc1 = 0.0f, weight = 0.0f;
    for (int t = a.tile_start[tile]; t < a.tile_start[tile + 1]; ++t) {
        int k = a.tile_patches[t];
        if (k < a.first) {
            continue;
        }
        if (k >= a.first + a.count) {
            break;
        }
        float ax = a.shifts[2 * k], ay = a.shifts[2 * k + 1];
        float sx = __fsub_rn((float)x, ax), sy = __fsub_rn((float)y, ay);
        float fx = floorf(sx), fy = floorf(sy);
        float wx = __fsub_rn(sx, fx), wy = __fsub_rn(sy, fy);
        float ux = __fsub_rn(1.0f, wx), uy = __fsub_rn(1.0f, wy);
        float wa = __fmul_rn(ux, uy), wb = __fmul_rn(wx, uy), wc = __fmul_rn(ux, wy), wd = __fmul_rn(wx, wy);
        int c = (int)fx - a.pad, r = (int)fy - a.pad;
        acc0 = __fadd_rn(acc0, bilinear(wa, wb, wc, wd, sample(a, k, r, c, 0), sample(a, k, r, c + 1, 0),
                                        sample(a, k, r + 1, c, 0), sample(a, k, r + 1, c + 1, 0)));
        if (a.lanes == 2) {
            acc1 = __fadd_rn(acc1, bilinear(wa, wb, wc, wd, sample(a, k, r, c, 1), sample(a, k, r, c + 1, 1),
                                            sample(a, k, r + 1, c, 1), sample(a, k, r + 1, c + 1, 1)));
        }
        weight = __fadd_rn(weight, bilinear(wa, wb, wc, wd, inside(a, r, c), inside(a, r, c + 1),
                                            inside(a, r + 1, c), inside(a, r + 1, c + 1)));
    }
    if (a.normalise) {
        float d = __fadd_rn(weight, 1e-9f);
        if (a.lanes == 2) {
            // TensorFlow's complex division by d + 0i: re' = (re - im * -0) / d, im' = (re * -0 + im) / d.
            float re = __fsub_rn(acc0, __fmul_rn(acc1, -0.0f));
            float im = __fadd_rn(__fmul_rn(acc0, -0.0f), acc1);
            acc0 = __fdiv_rn(re, d);
            acc1 = __fdiv_rn(im, d);
        } else {
            acc0 = __fdiv_rn(acc0, d);
        }
    }
    a.image[pixel * a.lanes] = acc0;
    if (a.lanes == 2) {
        a.image[pixel * a.lanes + 1] = acc1;
    }
    if (a.weights) {
        a.weights[pixel] = weight;
    }
}
