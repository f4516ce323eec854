// The CPU yardstick of issue 15, copied unchanged below this comment from the team's shared
// tools (tools/floor.c, 2026-12): scripts/bench_floor.sh compiles and runs it beside the kernel.
// Memory floor for bench-grid reassembly: time to read just the M x M crops of n patches of
// N x N complex64 (the bytes the fast path must touch), 1 and 2 threads, median of runs.
// gcc -O3 -march=native -fopenmp floor.c -o floor && ./floor 10000
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now() { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static int cmp(const void* a, const void* b) { double x = *(double*)a, y = *(double*)b; return (x > y) - (x < y); }
int main(int argc, char** argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000; int N = 64, M = 20, c0 = N / 2 - M / 2, runs = 15;
    size_t bytes = (size_t)n * N * N * 8;
    float* P = aligned_alloc(64, bytes); memset(P, 1, bytes);   // 4 KiB pages touched (as a Rust Vec)
    for (int th = 1; th <= 2; th++) {
        double t[64];
        for (int r = 0; r < runs; r++) {
            double s = 0; double t0 = now();
            #pragma omp parallel for num_threads(th) reduction(+ : s) schedule(static)
            for (long k = 0; k < n; k++) {
                float acc[2 * 20] = {0};
                for (int y = 0; y < M; y++) {
                    const float* row = P + ((size_t)k * N * N + (size_t)(c0 + y) * N + c0) * 2;
                    for (int x = 0; x < 2 * M; x++) acc[x] += row[x];
                }
                for (int x = 0; x < 2 * M; x++) s += acc[x];
            }
            t[r] = now() - t0; if (s == 42) puts("");
        }
        qsort(t, runs, sizeof(double), cmp);
        printf("crop-read floor n=%ld threads=%d: %.3f ms (%.1f MB of crop data)\n", n, th, t[runs / 2] * 1e3,
               (double)n * M * M * 8 / 1e6);
    }
    return 0;
}
