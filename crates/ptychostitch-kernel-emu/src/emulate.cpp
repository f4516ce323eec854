// The CUDA kernels, compiled as C++, and launchers that run their grids one block and one thread
// at a time (the kernels use no shared memory and no synchronisation, so this is exact).
#include "emulation.h"
#include "kernel.cu"

// Runs `kernel` over a grid of blocks, one block and one thread at a time.
template <class A>
static void run_grid(void (*kernel)(A), const void* args, const unsigned* grid, const unsigned* block) {
    const A& a = *static_cast<const A*>(args);
    for (unsigned bz = 0; bz < grid[2]; ++bz) {
        for (unsigned by = 0; by < grid[1]; ++by) {
            for (unsigned bx = 0; bx < grid[0]; ++bx) {
                for (unsigned tz = 0; tz < block[2]; ++tz) {
                    for (unsigned ty = 0; ty < block[1]; ++ty) {
                        for (unsigned tx = 0; tx < block[0]; ++tx) {
                            blockIdx = {bx, by, bz};
                            threadIdx = {tx, ty, tz};
                            kernel(a);
                        }
                    }
                }
            }
        }
    }
}

// Launches entry point `entry` (the order of `gpu::compose::ENTRY_POINTS`) with `args` (its
// argument struct) over `grid` blocks of `block` threads. Returns 0, or -1 for an unknown entry.
extern "C" int ptychostitch_emulate_launch(int entry, const void* args, const unsigned* grid, const unsigned* block) {
    switch (entry) {
        case 0: run_grid(ptychostitch_stitch, args, grid, block); return 0;
        case 1: run_grid(ptychostitch_patch_vjp, args, grid, block); return 0;
        case 2: run_grid(ptychostitch_shift_vjp, args, grid, block); return 0;
        case 3: run_grid(ptychostitch_quotient_vjp, args, grid, block); return 0;
        case 4: run_grid(ptychostitch_offsets_fold, args, grid, block); return 0;
        case 5: run_grid(ptychostitch_extract, args, grid, block); return 0;
        case 6: run_grid(ptychostitch_extract_image_vjp, args, grid, block); return 0;
        case 7: run_grid(ptychostitch_extract_shift_vjp, args, grid, block); return 0;
        case 8: run_grid(ptychostitch_region_sums, args, grid, block); return 0;
        case 9: run_grid(ptychostitch_region_normalise, args, grid, block); return 0;
        case 10: run_grid(ptychostitch_region_cot, args, grid, block); return 0;
        case 11: run_grid(ptychostitch_region_patch_vjp, args, grid, block); return 0;
        case 12: run_grid(ptychostitch_region_shift_vjp, args, grid, block); return 0;
        default: return -1;
    }
}
