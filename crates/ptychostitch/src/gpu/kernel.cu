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
// Values each block of a fixed-order reduction sums (kernel::REDUCTION_BLOCK, blocked_sum):
// one thread a block, then one thread over the block sums.
#define PTYCHOSTITCH_REDUCTION_BLOCK 1024

// The plane (patch, image or sample) of this thread and its column, in a grid whose x axis
// folds ceil(width / TILE) column tiles per plane: plane = blockIdx.x / tiles. CUDA caps
// gridDim.y and gridDim.z at 65,535 but gridDim.x at 2^31 - 1, so a plane count of a million
// patches launches (Launch::shape in compose.rs makes the same grid and checks the limits).
static __device__ inline int ps_plane(int width, int* col) {
    unsigned tiles = (unsigned)((width + PTYCHOSTITCH_TILE - 1) / PTYCHOSTITCH_TILE);
    tiles = tiles == 0 ? 1u : tiles;
    *col = (int)(blockIdx.x % tiles) * PTYCHOSTITCH_TILE + (int)threadIdx.x;
    return (int)(blockIdx.x / tiles);
}

// Every store to a kernel's output goes through PS_STORE: on the GPU a plain store; in the
// emulator (emulation.h defines it first) a store that records which thread wrote each element,
// so that a launch in which two threads write one element (a race on a GPU, invisible to an
// emulator that runs one thread at a time) fails the tests. A test checks that no output is
// stored any other way.
#ifndef PS_STORE
#define PS_STORE(dst, value) ((dst) = (value))
#endif

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

// kernel::Weights of a sample at fractions (wx, wy), with ux = 1 − wx and uy = 1 − wy: corner
// a (y0, x0) ux·uy, b (y0, x0 + 1) wx·uy, c (y0 + 1, x0) ux·wy, d (y0 + 1, x0 + 1) wx·wy.
struct Corners {
    float a, b, c, d;
    float wx, wy, ux, uy;
};

__device__ static inline Corners corners(float wx, float wy) {
    float ux = __fsub_rn(1.0f, wx), uy = __fsub_rn(1.0f, wy);
    Corners w = {__fmul_rn(ux, uy), __fmul_rn(wx, uy), __fmul_rn(ux, wy), __fmul_rn(wx, wy), wx, wy, ux, uy};
    return w;
}

// The weight of the corner that is pixel (py, px), of a sample whose corner a is (y0, x0).
__device__ static inline float corner_at(const Corners& w, int y0, int x0, int py, int px) {
    return x0 == px ? (y0 == py ? w.a : w.c) : (y0 == py ? w.b : w.d);
}

// value = fma(d, i11, fma(c, i10, fma(a, i00, b * i01))) (kernel::Weights::apply)
__device__ static inline float bilinear(const Corners& w, float i00, float i01, float i10, float i11) {
    return __fmaf_rn(w.d, i11, __fmaf_rn(w.c, i10, __fmaf_rn(w.a, i00, __fmul_rn(w.b, i01))));
}

// ∂v/∂wx and ∂v/∂wy of the interpolated value, the integer part held (kernel::d_dwx, d_dwy).
// The interpolated value in a convention's order (kernel::Convention::apply): TensorFlow's
// (bilinear), or torch's grid_sample, fma(d, i11, fma(c, i10, fma(b, i01, a * i00))).
__device__ static inline float convention_apply(int convention, const Corners& w, float i00, float i01, float i10,
                                                float i11) {
    return convention == 0 ? bilinear(w, i00, i01, i10, i11)
                           : __fmaf_rn(w.d, i11, __fmaf_rn(w.c, i10, __fmaf_rn(w.b, i01, __fmul_rn(w.a, i00))));
}

__device__ static inline float d_dwx(const Corners& w, float i00, float i01, float i10, float i11) {
    return __fmaf_rn(w.wy, __fsub_rn(i11, i10), __fmul_rn(w.uy, __fsub_rn(i01, i00)));
}

__device__ static inline float d_dwy(const Corners& w, float i00, float i01, float i10, float i11) {
    return __fmaf_rn(w.wx, __fsub_rn(i11, i01), __fmul_rn(w.ux, __fsub_rn(i10, i00)));
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
        Corners w = corners(__fsub_rn(sx, fx), __fsub_rn(sy, fy));
        int c = (int)fx - a.pad, r = (int)fy - a.pad;
        acc0 = __fadd_rn(acc0, bilinear(w, sample(a, k, r, c, 0), sample(a, k, r, c + 1, 0), sample(a, k, r + 1, c, 0),
                                        sample(a, k, r + 1, c + 1, 0)));
        if (a.lanes == 2) {
            acc1 = __fadd_rn(acc1, bilinear(w, sample(a, k, r, c, 1), sample(a, k, r, c + 1, 1),
                                            sample(a, k, r + 1, c, 1), sample(a, k, r + 1, c + 1, 1)));
        }
        weight = __fadd_rn(weight, bilinear(w, inside(a, r, c), inside(a, r, c + 1), inside(a, r + 1, c),
                                            inside(a, r + 1, c + 1)));
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
    PS_STORE(a.image[pixel * a.lanes], acc0);
    if (a.lanes == 2) {
        PS_STORE(a.image[pixel * a.lanes + 1], acc1);
    }
    if (a.weights) {
        PS_STORE(a.weights[pixel], weight);
    }
}

// ---------------------------------------------------------------------------------------------
// Gradients (docs/semantics.md §8): gathers, no atomics, the CPU's order of operations.

// Everything the backward kernels need, passed by value. Mirrored by `gpu::launch::VjpArgs`.
struct VjpArgs {
    // The translated patches (as in StitchArgs), or null: patches of ones (the weight canvas).
    const float* patches;
    long long stride_n;
    long long stride_r;
    long long stride_c;
    const float* shifts;     // [a_x, a_y] per patch
    const int* footprints;   // per patch: row start, row end, column start, column end
    const float* cot;        // the canvas cotangent, side * side * lanes, C order
    const float* output;     // reassemble_position's output (quotient kernel), side * side * lanes
    const float* weights;    // the weight canvas (quotient kernel), side * side
    int count;
    int side;
    int pad;
    int kept;
    int crop_start;
    int patch_size;
    int lanes;
    float* patch_grad;       // count * N * N * lanes, C order, or null
    double* shift_sums;      // count * 16: eight x sums, then eight y sums, or null
    float* cot_image;        // quotient kernel: the image's cotangent, side * side * lanes
    float* cot_weights;      // quotient kernel: the weight canvas's cotangent, side * side
};

// The first canvas coordinate in [0, side] whose sample floor(c - shift) is at least `target`.
__device__ static inline int first_at_least(int target, float shift, int side) {
    double guess = ceil((double)target + (double)shift);
    int c = guess < 0.0 ? 0 : (guess > (double)side ? side : (int)guess);
    while (c > 0 && (int)floorf(__fsub_rn((float)(c - 1), shift)) >= target) {
        --c;
    }
    while (c < side && (int)floorf(__fsub_rn((float)c, shift)) < target) {
        ++c;
    }
    return c;
}

// One thread per patch pixel (grid: ceil(N/8)·count x ceil(N/8), ps_plane, 8 x 8 threads). A kept pixel
// gathers (f_x * f_y) * G from every canvas pixel that reads it, rows then columns in increasing
// order: the canvas coordinates whose sample's integer part is s - 1 (factor w), then s
// (factor 1 - w). Pixels outside the kept crop get 0.
extern "C" __global__ void ptychostitch_patch_vjp(const VjpArgs a) {
    int c;
    int k = ps_plane(a.patch_size, &c);
    int r = blockIdx.y * PTYCHOSTITCH_TILE + threadIdx.y;
    if (c >= a.patch_size || r >= a.patch_size || k >= a.count) {
        return;
    }
    long long at = (((long long)k * a.patch_size + r) * a.patch_size + c) * a.lanes;
    float acc0 = 0.0f, acc1 = 0.0f;
    int qr = r - a.crop_start, qc = c - a.crop_start;
    if (qr >= 0 && qr < a.kept && qc >= 0 && qc < a.kept) {
        float ax = a.shifts[2 * k], ay = a.shifts[2 * k + 1];
        int sy = a.pad + qr, sx = a.pad + qc;
        for (int y = first_at_least(sy - 1, ay, a.side); y < a.side; ++y) {
            float py = __fsub_rn((float)y, ay);
            float fy0 = floorf(py);
            int y0 = (int)fy0;
            if (y0 > sy) {
                break;
            }
            float wy = __fsub_rn(py, fy0);
            float fy = y0 == sy - 1 ? wy : __fsub_rn(1.0f, wy);
            for (int x = first_at_least(sx - 1, ax, a.side); x < a.side; ++x) {
                float px = __fsub_rn((float)x, ax);
                float fx0 = floorf(px);
                int x0 = (int)fx0;
                if (x0 > sx) {
                    break;
                }
                float wx = __fsub_rn(px, fx0);
                float fx = x0 == sx - 1 ? wx : __fsub_rn(1.0f, wx);
                float w = __fmul_rn(fx, fy);
                long long g = ((long long)y * a.side + x) * a.lanes;
                acc0 = __fadd_rn(acc0, __fmul_rn(w, a.cot[g]));
                if (a.lanes == 2) {
                    acc1 = __fadd_rn(acc1, __fmul_rn(w, a.cot[g + 1]));
                }
            }
        }
    }
    PS_STORE(a.patch_grad[at], acc0);
    if (a.lanes == 2) {
        PS_STORE(a.patch_grad[at + 1], acc1);
    }
}

__device__ static inline float source(const VjpArgs& a, int k, int r, int c, int lane) {
    if (r < 0 || r >= a.kept || c < 0 || c >= a.kept) {
        return 0.0f;
    }
    if (!a.patches) {
        return 1.0f;
    }
    long long at = ((long long)k * a.stride_n + (long long)(a.crop_start + r) * a.stride_r +
                    (long long)(a.crop_start + c) * a.stride_c) * a.lanes + lane;
    return a.patches[at];
}

// One block per patch, one thread per partial sum (grid: count, 8 threads). Thread `slot` adds,
// in row-major order over the patch's footprint, the exact f64 products G * dv/dwx and
// G * dv/dwy of the lanes whose (x * lanes + lane) mod 8 is `slot` (kernel::ShiftGradient).
extern "C" __global__ void ptychostitch_shift_vjp(const VjpArgs a) {
    int k = blockIdx.x;
    int slot = threadIdx.x;
    if (k >= a.count || slot >= 8) {
        return;
    }
    float ax = a.shifts[2 * k], ay = a.shifts[2 * k + 1];
    const int* f = a.footprints + 4 * k;
    double sum_x = 0.0, sum_y = 0.0;
    for (int y = f[0]; y < f[1]; ++y) {
        float py = __fsub_rn((float)y, ay);
        float fy0 = floorf(py);
        float wy = __fsub_rn(py, fy0);
        int r = (int)fy0 - a.pad;
        for (int x = f[2]; x < f[3]; ++x) {
            for (int lane = 0; lane < a.lanes; ++lane) {
                if ((x * a.lanes + lane) % 8 != slot) {
                    continue;
                }
                float px = __fsub_rn((float)x, ax);
                float fx0 = floorf(px);
                Corners w = corners(__fsub_rn(px, fx0), wy);
                int c = (int)fx0 - a.pad;
                float i00 = source(a, k, r, c, lane), i01 = source(a, k, r, c + 1, lane);
                float i10 = source(a, k, r + 1, c, lane), i11 = source(a, k, r + 1, c + 1, lane);
                float dwx = d_dwx(w, i00, i01, i10, i11), dwy = d_dwy(w, i00, i01, i10, i11);
                double g = (double)a.cot[((long long)y * a.side + x) * a.lanes + lane];
                sum_x = __dadd_rn(sum_x, __dmul_rn(g, (double)dwx));
                sum_y = __dadd_rn(sum_y, __dmul_rn(g, (double)dwy));
            }
        }
    }
    PS_STORE(a.shift_sums[16 * (long long)k + slot], sum_x);
    PS_STORE(a.shift_sums[16 * (long long)k + 8 + slot], sum_y);
}

// The quotient rule of reassemble_position, one thread per canvas pixel (the stitch grid):
// the image's cotangent is G divided as the forward divides; the weight canvas's is
// -(sum over lanes of G * R) / (W + 1e-9) (kernel::weight_cotangent).
extern "C" __global__ void ptychostitch_quotient_vjp(const VjpArgs a) {
    int x = blockIdx.x * PTYCHOSTITCH_TILE + threadIdx.x;
    int y = blockIdx.y * PTYCHOSTITCH_TILE + threadIdx.y;
    if (x >= a.side || y >= a.side) {
        return;
    }
    long long pixel = (long long)y * a.side + x;
    float d = __fadd_rn(a.weights[pixel], 1e-9f);
    float g0 = a.cot[pixel * a.lanes], g1 = a.lanes == 2 ? a.cot[pixel * a.lanes + 1] : 0.0f;
    float dot = __fadd_rn(0.0f, __fmul_rn(g0, a.output[pixel * a.lanes]));
    if (a.lanes == 2) {
        dot = __fadd_rn(dot, __fmul_rn(g1, a.output[pixel * a.lanes + 1]));
        float re = __fsub_rn(g0, __fmul_rn(g1, -0.0f));
        float im = __fadd_rn(__fmul_rn(g0, -0.0f), g1);
        PS_STORE(a.cot_image[pixel * 2], __fdiv_rn(re, d));
        PS_STORE(a.cot_image[pixel * 2 + 1], __fdiv_rn(im, d));
    } else {
        PS_STORE(a.cot_image[pixel], __fdiv_rn(g0, d));
    }
    PS_STORE(a.cot_weights[pixel], __fdiv_rn(-dot, d));
}

// ---------------------------------------------------------------------------------------------
// Extraction (docs/semantics.md §9): PtychoPINN's extract_patches_position (TensorFlow's
// arithmetic) or torch's extract_channels_from_region (grid_sample's), one thread per output
// pixel, the arithmetic of kernel::Convention and kernel::sample_pixel.

// Everything an extraction launch needs, passed by value. Mirrored by `gpu::launch::ExtractArgs`.
struct ExtractArgs {
    // Image values as f32 lanes; element (b, r, c) starts at lane
    // (b * stride_b + r * stride_r + c * stride_c) * lanes.
    const float* images;
    long long stride_b;
    long long stride_r;
    long long stride_c;
    const float* shifts;  // [a_x, a_y] per output patch (f32): the offsets as given
    int count;            // output patches, B·C
    int per_image;        // C: patch j is cut from image j / C
    int side;             // image side S
    int patch_size;       // output side N
    int trim;             // (S − N) / 2
    int lanes;            // 1: real, 2: complex
    int convention;       // 0: TensorFlow, 1: torch
    int reserved;
    float* out;           // forward: count * N * N * lanes, C order
    // Backward kernels: the patches' cotangent (count * N * N * lanes), the images' cotangent
    // (B * S * S * lanes, C order, overwritten) and the offsets' partial sums (count * 16).
    const float* cot;
    float* image_grad;
    double* shift_sums;
};

// (floor(s), s − floor(s)) of output coordinate `coord` for content moved by `shift`
// (kernel::Convention::sample_axis).
__device__ static inline void extract_axis(int convention, int coord, float shift, int side, int* floor_out,
                                           float* frac) {
    float s;
    if (convention == 0) {
        s = __fsub_rn((float)coord, shift);
    } else {
        float last = (float)(side - 1);
        // torch.linspace(-1, 1, side) on CPU: a fused multiply-add from the nearer end.
        float step = __fdiv_rn(2.0f, last);
        float base = coord < side / 2 ? __fmaf_rn(step, (float)coord, -1.0f)
                                      : __fmaf_rn(-step, (float)(side - 1 - coord), 1.0f);
        float nf = __double2float_rn(__ddiv_rn(2.0, (double)(side - 1)));
        float grid = __fadd_rn(base, __fmul_rn(-shift, nf));
        s = __fmul_rn(__fadd_rn(grid, 1.0f), __fdiv_rn(last, 2.0f));
    }
    float f = floorf(s);
    *floor_out = (int)f;
    *frac = __fsub_rn(s, f);
}

__device__ static inline float image_pixel(const ExtractArgs& a, int b, int y, int x, int lane) {
    if (y < 0 || y >= a.side || x < 0 || x >= a.side) {
        return 0.0f;
    }
    return a.images[((long long)b * a.stride_b + (long long)y * a.stride_r + (long long)x * a.stride_c) * a.lanes +
                    lane];
}

// One thread per output pixel (grid: ceil(N/8)·count x ceil(N/8), ps_plane, 8 x 8 threads).
extern "C" __global__ void ptychostitch_extract(const ExtractArgs a) {
    int c;
    int j = ps_plane(a.patch_size, &c);
    int r = blockIdx.y * PTYCHOSTITCH_TILE + threadIdx.y;
    if (c >= a.patch_size || r >= a.patch_size || j >= a.count) {
        return;
    }
    int b = j / a.per_image;
    float ax = a.shifts[2 * j], ay = a.shifts[2 * j + 1];
    int y0, x0;
    float wy, wx;
    extract_axis(a.convention, a.trim + r, ay, a.side, &y0, &wy);
    extract_axis(a.convention, a.trim + c, ax, a.side, &x0, &wx);
    Corners w = corners(wx, wy);
    long long at = (((long long)j * a.patch_size + r) * a.patch_size + c) * a.lanes;
    for (int lane = 0; lane < a.lanes; ++lane) {
        PS_STORE(a.out[at + lane], convention_apply(a.convention, w, image_pixel(a, b, y0, x0, lane),
                                            image_pixel(a, b, y0, x0 + 1, lane), image_pixel(a, b, y0 + 1, x0, lane),
                                            image_pixel(a, b, y0 + 1, x0 + 1, lane)));
    }
}

// Calls visit(y, x, y0, x0, w, weight) for every pixel (y, x) of a side x side output, rows then
// columns in increasing order, whose sample (content moved by (tx, ty): extract_axis) has pixel
// (py, px) among its four corners, `weight` that corner's: the order in which the references'
// scatters reach (py, px), so a gather that adds in this order gives their sums.
template <class Visit>
__device__ static inline void for_each_reader(int convention, int side, float tx, float ty, int py, int px,
                                              Visit visit) {
    for (int y = 0; y < side; ++y) {
        int y0;
        float wy;
        extract_axis(convention, y, ty, side, &y0, &wy);
        if (y0 != py && y0 != py - 1) {
            continue;
        }
        for (int x = 0; x < side; ++x) {
            int x0;
            float wx;
            extract_axis(convention, x, tx, side, &x0, &wx);
            if (x0 != px && x0 != px - 1) {
                continue;
            }
            Corners w = corners(wx, wy);
            visit(y, x, y0, x0, w, corner_at(w, y0, x0, py, px));
        }
    }
}

// The images' cotangent, one thread per image pixel (grid: ceil(S/8)·B x ceil(S/8), ps_plane, 8 x 8
// threads): a gather of what the reference scatters, in the reference's order. For each patch
// of the image in order, every translated-image pixel (y, x) in row-major order whose bilinear
// corners include this pixel adds weight * G (G zero outside the kept N x N window, as the
// reference pads it), so every sum is the reference's, signed zeros included.
extern "C" __global__ void ptychostitch_extract_image_vjp(const ExtractArgs a) {
    int px;
    int b = ps_plane(a.side, &px);
    int py = blockIdx.y * PTYCHOSTITCH_TILE + threadIdx.y;
    if (px >= a.side || py >= a.side || b >= a.count / a.per_image) {
        return;
    }
    float acc0 = 0.0f, acc1 = 0.0f;
    for (int j = b * a.per_image; j < (b + 1) * a.per_image; ++j) {
        for_each_reader(a.convention, a.side, a.shifts[2 * j], a.shifts[2 * j + 1], py, px,
                        [&](int y, int x, int, int, const Corners&, float weight) {
                            int r = y - a.trim, c = x - a.trim;
                            bool kept = r >= 0 && r < a.patch_size && c >= 0 && c < a.patch_size;
                            long long g = (((long long)j * a.patch_size + r) * a.patch_size + c) * a.lanes;
                            acc0 = __fadd_rn(acc0, __fmul_rn(weight, kept ? a.cot[g] : 0.0f));
                            if (a.lanes == 2) {
                                acc1 = __fadd_rn(acc1, __fmul_rn(weight, kept ? a.cot[g + 1] : 0.0f));
                            }
                        });
    }
    long long at = (((long long)b * a.side + py) * a.side + px) * a.lanes;
    PS_STORE(a.image_grad[at], acc0);
    if (a.lanes == 2) {
        PS_STORE(a.image_grad[at + 1], acc1);
    }
}

// The offsets' partial sums, one block per patch, one thread per partial sum (grid: count,
// 8 threads), over the kept window in row-major order: kernel::add_offset_terms, the lanes whose
// (x * lanes + lane) mod 8 is the thread's slot (kernel::ShiftGradient).
extern "C" __global__ void ptychostitch_extract_shift_vjp(const ExtractArgs a) {
    int j = blockIdx.x;
    int slot = threadIdx.x;
    if (j >= a.count || slot >= 8) {
        return;
    }
    int b = j / a.per_image;
    float ax = a.shifts[2 * j], ay = a.shifts[2 * j + 1];
    double sum_x = 0.0, sum_y = 0.0;
    for (int y = a.trim; y < a.trim + a.patch_size; ++y) {
        int y0;
        float wy;
        extract_axis(a.convention, y, ay, a.side, &y0, &wy);
        for (int x = a.trim; x < a.trim + a.patch_size; ++x) {
            int x0;
            float wx;
            extract_axis(a.convention, x, ax, a.side, &x0, &wx);
            if (y0 < -1 || y0 >= a.side || x0 < -1 || x0 >= a.side) {
                continue;  // reads no image pixel
            }
            for (int lane = 0; lane < a.lanes; ++lane) {
                if ((x * a.lanes + lane) % 8 != slot) {
                    continue;
                }
                float i00 = image_pixel(a, b, y0, x0, lane), i01 = image_pixel(a, b, y0, x0 + 1, lane);
                float i10 = image_pixel(a, b, y0 + 1, x0, lane), i11 = image_pixel(a, b, y0 + 1, x0 + 1, lane);
                Corners w = corners(wx, wy);
                float dwx = d_dwx(w, i00, i01, i10, i11), dwy = d_dwy(w, i00, i01, i10, i11);
                long long g = (((long long)j * a.patch_size + (y - a.trim)) * a.patch_size + (x - a.trim)) * a.lanes + lane;
                double cot = (double)a.cot[g];
                sum_x = __dadd_rn(sum_x, __dmul_rn(cot, (double)dwx));
                sum_y = __dadd_rn(sum_y, __dmul_rn(cot, (double)dwy));
            }
        }
    }
    PS_STORE(a.shift_sums[16 * (long long)j + slot], sum_x);
    PS_STORE(a.shift_sums[16 * (long long)j + 8 + slot], sum_y);
}

// ---------------------------------------------------------------------------------------------
// The training path's region reassembly (docs/semantics.md §10): one P x P region per sample,
// one thread per region pixel; kernel::Convention, kernel::region_normalise.

// Everything a region launch needs, passed by value. Mirrored by `gpu::launch::RegionArgs`.
struct RegionArgs {
    const float* patches;  // B·C·N·N·lanes, C order
    const float* weights;  // (1|B)·(1|C)·N·N, C order
    const float* shifts;   // [t_x, t_y] per patch b·C + c (f32)
    float* num;            // sums: B·P·P·lanes, overwritten
    float* den;            // sums: B·P·P, overwritten
    float* out;            // normalise: B·P·P·lanes, overwritten
    int samples;           // B
    int channels;          // C
    int patch_size;        // N
    int side;              // P
    int origin;            // (P − N) / 2
    int lanes;             // 1: real, 2: complex
    int convention;        // 0: TensorFlow, 1: torch
    int weighted;          // numerator: 0 Σ u (TensorFlow), 1 Σ u·v (torch)
    int weights_per_sample;
    int weights_per_channel;
    int support;           // 1: multiply by [den > limit] first
    float limit;
    int g_kind;            // 0: den + g_a, 1: max(den, g_a) (NaN kept), 2: 1, 3: g_a·den + g_b
    float g_a;
    float g_b;
    int reserved;
};

// Lane `lane` of pixel (y, x) of patch j zero-padded to P x P at (origin, origin).
__device__ static inline float padded_patch(const RegionArgs& a, int j, int y, int x, int lane) {
    int r = y - a.origin, c = x - a.origin;
    if (r < 0 || r >= a.patch_size || c < 0 || c >= a.patch_size) {
        return 0.0f;
    }
    return a.patches[(((long long)j * a.patch_size + r) * a.patch_size + c) * a.lanes + lane];
}

__device__ static inline float padded_weight(const RegionArgs& a, int k, int y, int x) {
    int r = y - a.origin, c = x - a.origin;
    if (r < 0 || r >= a.patch_size || c < 0 || c >= a.patch_size) {
        return 0.0f;
    }
    return a.weights[((long long)k * a.patch_size + r) * a.patch_size + c];
}

// The weight index of patch j = b·C + c.
__device__ static inline int region_weight_index(const RegionArgs& a, int b, int c) {
    return (a.weights_per_sample ? b : 0) * (a.weights_per_channel ? a.channels : 1) + (a.weights_per_channel ? c : 0);
}

// Patch j's padded lane `lane`, translated, at the region pixel whose sample is (y0, x0) with w.
__device__ static inline float region_u(const RegionArgs& a, int j, int y0, int x0, const Corners& w, int lane) {
    return convention_apply(a.convention, w, padded_patch(a, j, y0, x0, lane), padded_patch(a, j, y0, x0 + 1, lane),
                            padded_patch(a, j, y0 + 1, x0, lane), padded_patch(a, j, y0 + 1, x0 + 1, lane));
}

// Weight k, padded and translated, at the region pixel whose sample is (y0, x0) with w.
__device__ static inline float region_v(const RegionArgs& a, int k, int y0, int x0, const Corners& w) {
    return convention_apply(a.convention, w, padded_weight(a, k, y0, x0), padded_weight(a, k, y0, x0 + 1),
                            padded_weight(a, k, y0 + 1, x0), padded_weight(a, k, y0 + 1, x0 + 1));
}

// The numerators and denominators, one thread per region pixel (grid: ceil(P/8)·B x ceil(P/8), ps_plane): the
// channels in order, each patch and its weight translated (Σ u or Σ u·v, and Σ v).
extern "C" __global__ void ptychostitch_region_sums(const RegionArgs a) {
    int x;
    int b = ps_plane(a.side, &x);
    int y = blockIdx.y * PTYCHOSTITCH_TILE + threadIdx.y;
    if (x >= a.side || y >= a.side || b >= a.samples) {
        return;
    }
    float num0 = 0.0f, num1 = 0.0f, den = 0.0f;
    for (int c = 0; c < a.channels; ++c) {
        int j = b * a.channels + c;
        int k = region_weight_index(a, b, c);
        float tx = a.shifts[2 * j], ty = a.shifts[2 * j + 1];
        int y0, x0;
        float wy, wx;
        extract_axis(a.convention, y, ty, a.side, &y0, &wy);
        extract_axis(a.convention, x, tx, a.side, &x0, &wx);
        Corners w = corners(wx, wy);
        float v = region_v(a, k, y0, x0, w);
        for (int lane = 0; lane < a.lanes; ++lane) {
            float u = region_u(a, j, y0, x0, w, lane);
            float term = a.weighted ? __fmul_rn(u, v) : u;
            if (lane == 0) {
                num0 = __fadd_rn(num0, term);
            } else {
                num1 = __fadd_rn(num1, term);
            }
        }
        den = __fadd_rn(den, v);
    }
    long long pixel = ((long long)b * a.side + y) * a.side + x;
    PS_STORE(a.num[pixel * a.lanes], num0);
    if (a.lanes == 2) {
        PS_STORE(a.num[pixel * a.lanes + 1], num1);
    }
    PS_STORE(a.den[pixel], den);
}

// g(den) (kernel::Denominator::apply, resolved: RegionArgs::normalise_by).
__device__ static inline float region_g(const RegionArgs& a, float den) {
    if (a.g_kind == 0) {
        return __fadd_rn(den, a.g_a);
    }
    if (a.g_kind == 1) {
        return den < a.g_a ? a.g_a : den;
    }
    if (a.g_kind == 2) {
        return 1.0f;
    }
    return __fadd_rn(__fmul_rn(a.g_a, den), a.g_b);
}

// g'(den) (kernel::Denominator::slope).
__device__ static inline float region_g_slope(const RegionArgs& a, float den) {
    if (a.g_kind == 0) {
        return 1.0f;
    }
    if (a.g_kind == 1) {
        return den >= a.g_a ? 1.0f : 0.0f;
    }
    if (a.g_kind == 2) {
        return 0.0f;
    }
    return a.g_a;
}

// The division, one thread per region pixel (the sums' grid): out = num·[den > limit] / g(den)
// with the support mask, num / g(den) without (kernel::region_normalise).
extern "C" __global__ void ptychostitch_region_normalise(const RegionArgs a) {
    int x;
    int b = ps_plane(a.side, &x);
    int y = blockIdx.y * PTYCHOSTITCH_TILE + threadIdx.y;
    if (x >= a.side || y >= a.side || b >= a.samples) {
        return;
    }
    long long pixel = ((long long)b * a.side + y) * a.side + x;
    float den = a.den[pixel];
    float d = region_g(a, den);
    float keep = den > a.limit ? 1.0f : 0.0f;
    for (int lane = 0; lane < a.lanes; ++lane) {
        float v = a.num[pixel * a.lanes + lane];
        PS_STORE(a.out[pixel * a.lanes + lane], a.support ? __fdiv_rn(__fmul_rn(v, keep), d) : __fdiv_rn(v, d));
    }
}

// The support mask den > limit (Region::support), one thread per region pixel (the sums' grid):
// B·P·P bytes, 0 or 1, written at `out` (what ptycho_torch.helper returns beside the regions).
extern "C" __global__ void ptychostitch_region_mask(const RegionArgs a) {
    int x;
    int b = ps_plane(a.side, &x);
    int y = blockIdx.y * PTYCHOSTITCH_TILE + threadIdx.y;
    if (x >= a.side || y >= a.side || b >= a.samples) {
        return;
    }
    long long pixel = ((long long)b * a.side + y) * a.side + x;
    unsigned char* mask = (unsigned char*)a.out;
    PS_STORE(mask[pixel], (unsigned char)(a.den[pixel] > a.limit ? 1 : 0));
}

// ---------------------------------------------------------------------------------------------
// The region reassembly's backward (region::reference::vjp): the quotient rule per region pixel,
// then gathers and fixed-order partial sums per patch, as for the reassembly.

// Mirrored by `gpu::launch::RegionVjpArgs`.
struct RegionVjpArgs {
    RegionArgs r;          // the forward's (den and out: its denominators and regions)
    const float* cot;      // B·P·P·lanes
    float* dnum;           // the numerators' cotangent, B·P·P·lanes
    float* dden;           // the denominators' cotangent, B·P·P
    float* patch_grad;     // B·C·N·N·lanes, or null
    double* shift_sums;    // B·C·16 (the patch's and its weight's, merged), or null
    float* extra;          // the maximum's cotangent (one f32), or null
    double* blocks;        // the maximum's cotangent's block sums, ceil(B·P·P / 1024) f64, or null
    float max_fraction;    // the regularised form's fraction of the maximum
    int at_max;            // the maximum's pixel (sample-major, row-major), or -1
    int phase;             // ptychostitch_region_cot: 0 block sums, 2 their total, 1 per pixel
    int reserved;
};

// −(Σ_lanes G·R) / g(den) at `pixel` (kernel::region_g_cotangent).
__device__ static inline float region_g_cot(const RegionVjpArgs& a, long long pixel) {
    float d = region_g(a.r, a.r.den[pixel]);
    float dot = 0.0f;
    for (int lane = 0; lane < a.r.lanes; ++lane) {
        dot = __fadd_rn(dot, __fmul_rn(a.cot[pixel * a.r.lanes + lane], a.r.out[pixel * a.r.lanes + lane]));
    }
    return __fdiv_rn(-dot, d);
}

// Phases 0 and 2: the cotangent the regularised form's maximum adds at its pixel,
// max_fraction · Σ_p region_g_cot in f64 by blocks (kernel::blocked_sum; region::max_cotangent):
// phase 0 one thread per block of pixels (grid ceil(blocks / 64) x 64), phase 2 one thread over
// the block sums. Phase 1 (one thread per region pixel, the sums' grid): the numerators' and
// denominators' cotangents (kernel::region_cotangent), the maximum's added at its pixel.
extern "C" __global__ void ptychostitch_region_cot(const RegionVjpArgs a) {
    long long pixels = (long long)a.r.samples * a.r.side * a.r.side;
    long long blocks = (pixels + PTYCHOSTITCH_REDUCTION_BLOCK - 1) / PTYCHOSTITCH_REDUCTION_BLOCK;
    if (a.phase == 0) {
        long long k = (long long)blockIdx.x * 64 + threadIdx.x;
        if (blockIdx.y != 0 || threadIdx.y != 0 || k >= blocks) {
            return;
        }
        long long end = (k + 1) * PTYCHOSTITCH_REDUCTION_BLOCK < pixels ? (k + 1) * PTYCHOSTITCH_REDUCTION_BLOCK : pixels;
        double block = 0.0;
        for (long long p = k * PTYCHOSTITCH_REDUCTION_BLOCK; p < end; ++p) {
            block = __dadd_rn(block, (double)region_g_cot(a, p));
        }
        PS_STORE(a.blocks[k], block);
        return;
    }
    if (a.phase == 2) {
        if (blockIdx.x != 0 || blockIdx.y != 0 || threadIdx.x != 0 || threadIdx.y != 0) {
            return;
        }
        double total = 0.0;
        for (long long k = 0; k < blocks; ++k) {
            total = __dadd_rn(total, a.blocks[k]);
        }
        PS_STORE(*a.extra, __fmul_rn(a.max_fraction, __double2float_rn(total)));
        return;
    }
    int x;
    int b = ps_plane(a.r.side, &x);
    int y = blockIdx.y * PTYCHOSTITCH_TILE + threadIdx.y;
    if (x >= a.r.side || y >= a.r.side || b >= a.r.samples) {
        return;
    }
    long long pixel = ((long long)b * a.r.side + y) * a.r.side + x;
    float den = a.r.den[pixel];
    float d = region_g(a.r, den);
    float keep = den > a.r.limit ? 1.0f : 0.0f;
    for (int lane = 0; lane < a.r.lanes; ++lane) {
        float q = __fdiv_rn(a.cot[pixel * a.r.lanes + lane], d);
        PS_STORE(a.dnum[pixel * a.r.lanes + lane], a.r.support ? __fmul_rn(q, keep) : q);
    }
    float dden = __fmul_rn(region_g_cot(a, pixel), region_g_slope(a.r, den));
    if (pixel == (long long)a.at_max) {
        dden = __fadd_rn(dden, *a.extra);
    }
    PS_STORE(a.dden[pixel], dden);
}

// The patches' cotangent, one thread per patch pixel (grid: ceil(N/8)·B·C x ceil(N/8), ps_plane, 8 x 8 threads): a
// gather of what the reference scatters into the padded patch, in its order — every region pixel
// (y, x) in row-major order whose bilinear corners include this pixel adds weight · du, du = dnum
// (Σ u) or dnum · v (Σ u·v).
extern "C" __global__ void ptychostitch_region_patch_vjp(const RegionVjpArgs a) {
    const RegionArgs& r = a.r;
    int col;
    int j = ps_plane(r.patch_size, &col);
    int row = blockIdx.y * PTYCHOSTITCH_TILE + threadIdx.y;
    if (col >= r.patch_size || row >= r.patch_size || j >= r.samples * r.channels) {
        return;
    }
    int b = j / r.channels, k = region_weight_index(r, b, j % r.channels);
    int py = r.origin + row, px = r.origin + col;
    float acc0 = 0.0f, acc1 = 0.0f;
    for_each_reader(r.convention, r.side, r.shifts[2 * j], r.shifts[2 * j + 1], py, px,
                    [&](int y, int x, int y0, int x0, const Corners& w, float weight) {
                        float v = r.weighted ? region_v(r, k, y0, x0, w) : 1.0f;
                        long long pixel = ((long long)b * r.side + y) * r.side + x;
                        float dn0 = a.dnum[pixel * r.lanes];
                        acc0 = __fadd_rn(acc0, __fmul_rn(weight, r.weighted ? __fmul_rn(dn0, v) : dn0));
                        if (r.lanes == 2) {
                            float dn1 = a.dnum[pixel * r.lanes + 1];
                            acc1 = __fadd_rn(acc1, __fmul_rn(weight, r.weighted ? __fmul_rn(dn1, v) : dn1));
                        }
                    });
    long long at = (((long long)j * r.patch_size + row) * r.patch_size + col) * r.lanes;
    PS_STORE(a.patch_grad[at], acc0);
    if (r.lanes == 2) {
        PS_STORE(a.patch_grad[at + 1], acc1);
    }
}

// The positions' partial sums, one block per patch, one thread per partial sum (grid: B·C, 8
// threads): over the region in row-major order, where the sample's corner touches the padded
// patch, the patch's terms du · ∂u (slot (x·lanes + lane) mod 8) and its weight's dv · ∂v (slot
// x mod 8), the two sets merged slot by slot (kernel::ShiftGradient::merged).
extern "C" __global__ void ptychostitch_region_shift_vjp(const RegionVjpArgs a) {
    const RegionArgs& r = a.r;
    int j = blockIdx.x;
    int slot = threadIdx.x;
    if (j >= r.samples * r.channels || slot >= 8) {
        return;
    }
    int b = j / r.channels, k = region_weight_index(r, b, j % r.channels);
    float tx = r.shifts[2 * j], ty = r.shifts[2 * j + 1];
    double ux_sum = 0.0, uy_sum = 0.0, vx_sum = 0.0, vy_sum = 0.0;
    for (int y = 0; y < r.side; ++y) {
        int y0;
        float wy;
        extract_axis(r.convention, y, ty, r.side, &y0, &wy);
        if (y0 < r.origin - 1 || y0 >= r.origin + r.patch_size) {
            continue;  // touches no patch pixel
        }
        for (int x = 0; x < r.side; ++x) {
            int x0;
            float wx;
            extract_axis(r.convention, x, tx, r.side, &x0, &wx);
            if (x0 < r.origin - 1 || x0 >= r.origin + r.patch_size) {
                continue;
            }
            Corners w = corners(wx, wy);
            long long pixel = ((long long)b * r.side + y) * r.side + x;
            float w00 = padded_weight(r, k, y0, x0), w01 = padded_weight(r, k, y0, x0 + 1);
            float w10 = padded_weight(r, k, y0 + 1, x0), w11 = padded_weight(r, k, y0 + 1, x0 + 1);
            float v = convention_apply(r.convention, w, w00, w01, w10, w11);
            float dv = a.dden[pixel];
            if (r.weighted) {
                float s = 0.0f;
                for (int lane = 0; lane < r.lanes; ++lane) {
                    s = __fadd_rn(s, __fmul_rn(a.dnum[pixel * r.lanes + lane], region_u(r, j, y0, x0, w, lane)));
                }
                dv = __fadd_rn(dv, s);
            }
            for (int lane = 0; lane < r.lanes; ++lane) {
                if ((x * r.lanes + lane) % 8 != slot) {
                    continue;
                }
                float dn = a.dnum[pixel * r.lanes + lane];
                float du = r.weighted ? __fmul_rn(dn, v) : dn;
                float i00 = padded_patch(r, j, y0, x0, lane), i01 = padded_patch(r, j, y0, x0 + 1, lane);
                float i10 = padded_patch(r, j, y0 + 1, x0, lane), i11 = padded_patch(r, j, y0 + 1, x0 + 1, lane);
                float dwx = d_dwx(w, i00, i01, i10, i11), dwy = d_dwy(w, i00, i01, i10, i11);
                ux_sum = __dadd_rn(ux_sum, __dmul_rn((double)du, (double)dwx));
                uy_sum = __dadd_rn(uy_sum, __dmul_rn((double)du, (double)dwy));
            }
            if (x % 8 == slot) {
                float dwx = d_dwx(w, w00, w01, w10, w11), dwy = d_dwy(w, w00, w01, w10, w11);
                vx_sum = __dadd_rn(vx_sum, __dmul_rn((double)dv, (double)dwx));
                vy_sum = __dadd_rn(vy_sum, __dmul_rn((double)dv, (double)dwy));
            }
        }
    }
    PS_STORE(a.shift_sums[16 * (long long)j + slot], __dadd_rn(ux_sum, vx_sum));
    PS_STORE(a.shift_sums[16 * (long long)j + 8 + slot], __dadd_rn(uy_sum, vy_sum));
}

// ---------------------------------------------------------------------------------------------
// The offsets' cotangent from the shift kernels' partial sums, on the device (adjoint::
// offsets_cotangent, gpu::launch::offsets_from_sums): per patch the eight x and eight y sums
// combined as kernel::ShiftGradient::shift_gradient combines them (a fixed tree, negated), the
// weight canvas's added; then, when re-centring, the mean over the patches (summed in patch
// order by one thread, as adjoint::centred sums) subtracted from every row.

// Mirrored by `gpu::launch::FoldArgs`.
struct FoldArgs {
    const double* image_sums;   // count * 16
    const double* weight_sums;  // count * 16, or null
    double* out;                // the offsets' cotangent, f64, laid out as `per_image` says
    double* mean;               // scratch: the mean (two f64), then two f64 per block of rows
    int count;
    // 0: `out` is (count, 2) [x, y] rows; C > 0: (count / C, 1, 2, C), PtychoPINN's channel
    // layout, patch j = b * C + c.
    int per_image;
    // 0: fold every patch's sums into `out`; 1: one thread per block of 1024 rows sums them
    // (kernel::blocked_sum) into `mean + 2`; 3: one thread sums the blocks into the mean;
    // 2: subtract `mean` from every row; 4: round `count` f64 of `out` to f32 in `narrowed`
    // (an offsets' cotangent in float32 offsets' dtype).
    int phase;
    // 1: the last phase negates (the region's positions: t = −(pos − centre)).
    int negate;
    float* narrowed;            // phase 4's destination, `count` f32
};

__device__ static inline long long fold_index(const FoldArgs& a, int j, int axis) {
    if (a.per_image > 0) {
        return ((long long)(j / a.per_image) * 2 + axis) * a.per_image + j % a.per_image;
    }
    return 2 * (long long)j + axis;
}

__device__ static inline double fold_tree(const double* s) {
    return __dadd_rn(__dadd_rn(__dadd_rn(s[0], s[1]), __dadd_rn(s[2], s[3])),
                     __dadd_rn(__dadd_rn(s[4], s[5]), __dadd_rn(s[6], s[7])));
}

// Phases 0 and 2: one thread per patch (grid: ceil(count / 64) blocks of 64); phase 1: one
// thread per block of rows (grid: ceil(blocks / 64) blocks of 64); phase 3: one thread;
// phase 4: one thread per value.
extern "C" __global__ void ptychostitch_offsets_fold(const FoldArgs a) {
    if (a.phase == 4) {
        int k = blockIdx.x * 64 + threadIdx.x;
        if (k < a.count) {
            PS_STORE(a.narrowed[k], __double2float_rn(a.out[k]));
        }
        return;
    }
    int blocks = (a.count + PTYCHOSTITCH_REDUCTION_BLOCK - 1) / PTYCHOSTITCH_REDUCTION_BLOCK;
    if (a.phase == 1) {
        int k = blockIdx.x * 64 + threadIdx.x;
        if (k >= blocks) {
            return;
        }
        int end = (k + 1) * PTYCHOSTITCH_REDUCTION_BLOCK < a.count ? (k + 1) * PTYCHOSTITCH_REDUCTION_BLOCK : a.count;
        double sx = 0.0, sy = 0.0;
        for (int j = k * PTYCHOSTITCH_REDUCTION_BLOCK; j < end; ++j) {
            sx = __dadd_rn(sx, a.out[fold_index(a, j, 0)]);
            sy = __dadd_rn(sy, a.out[fold_index(a, j, 1)]);
        }
        PS_STORE(a.mean[2 + 2 * (long long)k], sx);
        PS_STORE(a.mean[3 + 2 * (long long)k], sy);
        return;
    }
    if (a.phase == 3) {
        if (blockIdx.x != 0 || threadIdx.x != 0) {
            return;
        }
        double sx = 0.0, sy = 0.0;
        for (int k = 0; k < blocks; ++k) {
            sx = __dadd_rn(sx, a.mean[2 + 2 * (long long)k]);
            sy = __dadd_rn(sy, a.mean[3 + 2 * (long long)k]);
        }
        PS_STORE(a.mean[0], __ddiv_rn(sx, (double)a.count));
        PS_STORE(a.mean[1], __ddiv_rn(sy, (double)a.count));
        return;
    }
    int j = blockIdx.x * 64 + threadIdx.x;
    if (j >= a.count) {
        return;
    }
    long long ix = fold_index(a, j, 0), iy = fold_index(a, j, 1);
    if (a.phase == 2) {
        double cx = __dsub_rn(a.out[ix], a.mean[0]), cy = __dsub_rn(a.out[iy], a.mean[1]);
        PS_STORE(a.out[ix], a.negate ? -cx : cx);
        PS_STORE(a.out[iy], a.negate ? -cy : cy);
        return;
    }
    const double* s = a.image_sums + 16 * (long long)j;
    double gx = -fold_tree(s), gy = -fold_tree(s + 8);
    if (a.weight_sums) {
        const double* w = a.weight_sums + 16 * (long long)j;
        gx = __dadd_rn(gx, -fold_tree(w));
        gy = __dadd_rn(gy, -fold_tree(w + 8));
    }
    // Negated here only when this is the last phase (no re-centring: mean is null).
    bool last = a.mean == nullptr;
    PS_STORE(a.out[ix], a.negate && last ? -gx : gx);
    PS_STORE(a.out[iy], a.negate && last ? -gy : gy);
}

// ---------------------------------------------------------------------------------------------
// The positions planned on the device: the f32 translation of every patch from its position
// (f32 or f64, `(count, 2)` [x, y] rows or PtychoPINN's `(B, 1, 2, C)`), with the host's
// arithmetic (geometry::centre_of_mass, Region::new, Extraction::new): the value rounded to f32;
// for the region, the centre (a sequential f32 sum in patch order, then one division) and
// t = −(p − centre). So a compiled program's region reassembly and extraction read no position
// on the host. Non-finite positions, an error on the host, give non-finite translations here
// (the kernels' integer indices stay bounds-checked).

// Mirrored by `gpu::launch::ShiftArgs`.
struct ShiftArgs {
    const void* positions;  // f32 or f64
    float* shifts;          // count * 2 f32, [x, y] per patch (row b * C + c)
    float* centre;          // two f32: the centre (phase 1 writes it), or null: no re-centring
    int count;
    int per_image;          // C > 0: positions (count / C, 1, 2, C); 0: (count, 2) rows
    int f64;                // 1: the positions are f64
    int phase;              // 1: the centre (one thread); 0: the translations (a thread each)
    int negate;             // 1: t = −(p − centre) (the region); 0: t = p (the extraction)
    int reserved;
};

__device__ static inline float position_at(const ShiftArgs& a, int j, int axis) {
    long long at = a.per_image > 0
                       ? ((long long)(j / a.per_image) * 2 + axis) * a.per_image + j % a.per_image
                       : 2 * (long long)j + axis;
    return a.f64 ? __double2float_rn(((const double*)a.positions)[at]) : ((const float*)a.positions)[at];
}

// Phase 1: one thread; phase 0: one thread per patch (grid: ceil(count / 64) blocks of 64).
extern "C" __global__ void ptychostitch_shifts(const ShiftArgs a) {
    if (a.phase == 1) {
        if (blockIdx.x != 0 || threadIdx.x != 0) {
            return;
        }
        float sx = 0.0f, sy = 0.0f;
        for (int j = 0; j < a.count; ++j) {
            sx = __fadd_rn(sx, position_at(a, j, 0));
            sy = __fadd_rn(sy, position_at(a, j, 1));
        }
        PS_STORE(a.centre[0], __fdiv_rn(sx, (float)a.count));
        PS_STORE(a.centre[1], __fdiv_rn(sy, (float)a.count));
        return;
    }
    int j = blockIdx.x * 64 + threadIdx.x;
    if (j >= a.count) {
        return;
    }
    float x = position_at(a, j, 0), y = position_at(a, j, 1);
    if (a.negate) {
        float cx = a.centre ? a.centre[0] : 0.0f, cy = a.centre ? a.centre[1] : 0.0f;
        x = -__fsub_rn(x, cx);
        y = -__fsub_rn(y, cy);
    }
    PS_STORE(a.shifts[2 * (long long)j], x);
    PS_STORE(a.shifts[2 * (long long)j + 1], y);
}
