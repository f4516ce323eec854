// The CUDA kernel, compiled as C++, and a launcher that runs its grid one block and one thread
// at a time (the kernel uses no shared memory and no synchronisation, so this is exact).
#include "emulation.h"
#include "kernel.cu"

extern "C" void ptychostitch_emulate(const StitchArgs* args, unsigned grid_x, unsigned grid_y) {
    for (unsigned by = 0; by < grid_y; ++by) {
        for (unsigned bx = 0; bx < grid_x; ++bx) {
            for (unsigned ty = 0; ty < PTYCHOSTITCH_TILE; ++ty) {
                for (unsigned tx = 0; tx < PTYCHOSTITCH_TILE; ++tx) {
                    blockIdx = {bx, by, 0};
                    threadIdx = {tx, ty, 0};
                    ptychostitch_stitch(*args);
                }
            }
        }
    }
}

// The backward kernels' grids: patch pixels (8 x 8 tiles of each patch), one block of eight
// threads per patch, and the canvas tiles of the quotient.
extern "C" void ptychostitch_emulate_patch_vjp(const VjpArgs* args, unsigned grid_x, unsigned grid_y) {
    for (unsigned k = 0; k < (unsigned)args->count; ++k) {
        for (unsigned by = 0; by < grid_y; ++by) {
            for (unsigned bx = 0; bx < grid_x; ++bx) {
                for (unsigned ty = 0; ty < PTYCHOSTITCH_TILE; ++ty) {
                    for (unsigned tx = 0; tx < PTYCHOSTITCH_TILE; ++tx) {
                        blockIdx = {bx, by, k};
                        threadIdx = {tx, ty, 0};
                        ptychostitch_patch_vjp(*args);
                    }
                }
            }
        }
    }
}

extern "C" void ptychostitch_emulate_shift_vjp(const VjpArgs* args) {
    for (unsigned k = 0; k < (unsigned)args->count; ++k) {
        for (unsigned slot = 0; slot < 8; ++slot) {
            blockIdx = {k, 0, 0};
            threadIdx = {slot, 0, 0};
            ptychostitch_shift_vjp(*args);
        }
    }
}

extern "C" void ptychostitch_emulate_quotient_vjp(const VjpArgs* args, unsigned grid_x, unsigned grid_y) {
    for (unsigned by = 0; by < grid_y; ++by) {
        for (unsigned bx = 0; bx < grid_x; ++bx) {
            for (unsigned ty = 0; ty < PTYCHOSTITCH_TILE; ++ty) {
                for (unsigned tx = 0; tx < PTYCHOSTITCH_TILE; ++tx) {
                    blockIdx = {bx, by, 0};
                    threadIdx = {tx, ty, 0};
                    ptychostitch_quotient_vjp(*args);
                }
            }
        }
    }
}
