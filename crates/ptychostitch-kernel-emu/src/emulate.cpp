// The CUDA kernels, compiled as C++, and launchers that run their grids one block and one thread
// at a time (the kernels use no shared memory and no synchronisation, so this is exact).
#include "emulation.h"
#include "kernel.cu"

// Runs `kernel` over a grid of grid_x × grid_y × grid_z blocks of TILE × TILE threads.
template <class A>
static void run_tiles(void (*kernel)(A), const A& args, unsigned grid_x, unsigned grid_y, unsigned grid_z) {
    for (unsigned bz = 0; bz < grid_z; ++bz) {
        for (unsigned by = 0; by < grid_y; ++by) {
            for (unsigned bx = 0; bx < grid_x; ++bx) {
                for (unsigned ty = 0; ty < PTYCHOSTITCH_TILE; ++ty) {
                    for (unsigned tx = 0; tx < PTYCHOSTITCH_TILE; ++tx) {
                        blockIdx = {bx, by, bz};
                        threadIdx = {tx, ty, 0};
                        kernel(args);
                    }
                }
            }
        }
    }
}

extern "C" void ptychostitch_emulate(const StitchArgs* args, unsigned grid_x, unsigned grid_y) {
    run_tiles(ptychostitch_stitch, *args, grid_x, grid_y, 1);
}

// The backward kernels' grids: patch pixels (8 x 8 tiles of each patch, one patch per z), one
// block of eight threads per patch, and the canvas tiles of the quotient.
extern "C" void ptychostitch_emulate_patch_vjp(const VjpArgs* args, unsigned grid_x, unsigned grid_y) {
    run_tiles(ptychostitch_patch_vjp, *args, grid_x, grid_y, (unsigned)args->count);
}

// Runs `kernel` over `count` blocks of eight threads (one per partial sum).
template <class A>
static void run_slots(void (*kernel)(A), const A& args, unsigned count) {
    for (unsigned k = 0; k < count; ++k) {
        for (unsigned slot = 0; slot < 8; ++slot) {
            blockIdx = {k, 0, 0};
            threadIdx = {slot, 0, 0};
            kernel(args);
        }
    }
}

extern "C" void ptychostitch_emulate_shift_vjp(const VjpArgs* args) {
    run_slots(ptychostitch_shift_vjp, *args, (unsigned)args->count);
}

extern "C" void ptychostitch_emulate_quotient_vjp(const VjpArgs* args, unsigned grid_x, unsigned grid_y) {
    run_tiles(ptychostitch_quotient_vjp, *args, grid_x, grid_y, 1);
}

// Extraction: 8 x 8 tiles of each output patch, one patch per z.
extern "C" void ptychostitch_emulate_extract(const ExtractArgs* args, unsigned grid_x, unsigned grid_y) {
    run_tiles(ptychostitch_extract, *args, grid_x, grid_y, (unsigned)args->count);
}

// The extraction's backward: 8 x 8 tiles of each image, one image per z; one block of eight
// threads per output patch.
extern "C" void ptychostitch_emulate_extract_image_vjp(const ExtractArgs* args, unsigned grid_x, unsigned grid_y) {
    run_tiles(ptychostitch_extract_image_vjp, *args, grid_x, grid_y, (unsigned)(args->count / args->per_image));
}

extern "C" void ptychostitch_emulate_extract_shift_vjp(const ExtractArgs* args) {
    run_slots(ptychostitch_extract_shift_vjp, *args, (unsigned)args->count);
}

// The region reassembly: 8 x 8 tiles of each region, one sample per z.
extern "C" void ptychostitch_emulate_region_sums(const RegionArgs* args, unsigned grid_x, unsigned grid_y) {
    run_tiles(ptychostitch_region_sums, *args, grid_x, grid_y, (unsigned)args->samples);
}

extern "C" void ptychostitch_emulate_region_normalise(const RegionArgs* args, unsigned grid_x, unsigned grid_y) {
    run_tiles(ptychostitch_region_normalise, *args, grid_x, grid_y, (unsigned)args->samples);
}
