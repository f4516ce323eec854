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
