// The CUDA kernels, compiled as C++, and launchers that run their grids one block and one thread
// at a time (the kernels use no shared memory and no synchronisation, so this is exact).
#include "emulation.h"
#include "kernel.cu"

// Runs `kernel` over a grid of blocks, one block and one thread at a time, watching its stores:
// returns how many output elements a second thread stored to (0 for a race-free launch).
template <class A>
static unsigned long long run_grid(void (*kernel)(A), const void* args, const unsigned* grid, const unsigned* block) {
    const A& a = *static_cast<const A*>(args);
    ptychostitch_writes writes;
    ptychostitch_watch = &writes;
    std::uint64_t thread = 0;
    for (unsigned bz = 0; bz < grid[2]; ++bz) {
        for (unsigned by = 0; by < grid[1]; ++by) {
            for (unsigned bx = 0; bx < grid[0]; ++bx) {
                for (unsigned tz = 0; tz < block[2]; ++tz) {
                    for (unsigned ty = 0; ty < block[1]; ++ty) {
                        for (unsigned tx = 0; tx < block[0]; ++tx) {
                            blockIdx = {bx, by, bz};
                            threadIdx = {tx, ty, tz};
                            ptychostitch_thread = thread++;
                            kernel(a);
                        }
                    }
                }
            }
        }
    }
    ptychostitch_watch = nullptr;
    return writes.conflicts;
}

// A kernel with a race, for the test that shows the watch sees one: every thread stores to
// out[0]. Emulator only (entry -1 below); not in kernel.cu.
struct ptychostitch_racy_args {
    float* out;
};
static void ptychostitch_racy(ptychostitch_racy_args a) {
    PS_STORE(a.out[0], (float)threadIdx.x);
}

// Launches entry point `entry` (the order of `gpu::compose::ENTRY_POINTS`; -1: the racy test
// kernel) with `args` (its argument struct) over `grid` blocks of `block` threads. Returns 0, -1
// for an unknown entry, or the number of output elements that two threads stored to (> 0).
extern "C" long long ptychostitch_emulate_launch(int entry, const void* args, const unsigned* grid,
                                                 const unsigned* block) {
    unsigned long long conflicts;
    switch (entry) {
        case -1: conflicts = run_grid(ptychostitch_racy, args, grid, block); break;
        case 0: conflicts = run_grid(ptychostitch_stitch, args, grid, block); break;
        case 1: conflicts = run_grid(ptychostitch_patch_vjp, args, grid, block); break;
        case 2: conflicts = run_grid(ptychostitch_shift_vjp, args, grid, block); break;
        case 3: conflicts = run_grid(ptychostitch_quotient_vjp, args, grid, block); break;
        case 4: conflicts = run_grid(ptychostitch_offsets_fold, args, grid, block); break;
        case 5: conflicts = run_grid(ptychostitch_extract, args, grid, block); break;
        case 6: conflicts = run_grid(ptychostitch_extract_image_vjp, args, grid, block); break;
        case 7: conflicts = run_grid(ptychostitch_extract_shift_vjp, args, grid, block); break;
        case 8: conflicts = run_grid(ptychostitch_region_sums, args, grid, block); break;
        case 9: conflicts = run_grid(ptychostitch_region_normalise, args, grid, block); break;
        case 10: conflicts = run_grid(ptychostitch_region_cot, args, grid, block); break;
        case 11: conflicts = run_grid(ptychostitch_region_patch_vjp, args, grid, block); break;
        case 12: conflicts = run_grid(ptychostitch_region_shift_vjp, args, grid, block); break;
        default: return -1;
    }
    return (long long)conflicts;
}
