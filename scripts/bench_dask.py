"""ptychostitch.dask on LocalCluster(n_workers=2, processes=True) against the in-memory function,
one process, one run each (medians where repeated):

    python scripts/bench_dask.py PATCHES.npy OFFSETS.npy [--tile 1024] [--chunk 4096] [--in-memory]

Make the files with `ptychostitch make-scan -n N PATCHES.npy OFFSETS.npy`. With --in-memory the
stack is also loaded and stitched in memory (it must fit), for the throughput ratio. Prints
JSON: times, patches/s, ratio, and each worker's peak RSS (getrusage in the worker).
"""

import argparse
import json
import resource
import time

import numpy as np

import ptychostitch as ps
import ptychostitch.dask as psd


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("patches")
    ap.add_argument("offsets")
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--in-memory", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from distributed import Client, LocalCluster

    offsets = np.load(args.offsets)
    n = offsets.shape[0]
    out = {"n": n, "tile": args.tile, "chunk": args.chunk}
    expected = None
    if args.in_memory:
        t = time.perf_counter()
        stack = np.load(args.patches)
        out["in_memory_load_s"] = time.perf_counter() - t
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            expected = ps.reassemble_position(stack, offsets, 20)
            times.append(time.perf_counter() - t)
        out["in_memory_compute_s"] = sorted(times)[len(times) // 2]
        del stack
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as client:
        times = []
        for _ in range(args.repeat):
            lazy = psd.reassemble_position(psd.from_npy(args.patches, chunk=args.chunk), offsets, 20, tile=args.tile)
            t = time.perf_counter()
            got = client.compute(lazy).result()
            times.append(time.perf_counter() - t)
        out["dask_s"] = sorted(times)[len(times) // 2]
        out["dask_tasks"] = len(lazy.__dask_graph__())
        out["worker_peak_rss_mib"] = sorted(client.run(peak_rss_mib).values())
    out["dask_patches_per_s"] = n / out["dask_s"]
    if expected is not None:
        out["bit_identical"] = bool(np.array_equal(got.view(np.uint32), expected.view(np.uint32)))
        out["in_memory_patches_per_s"] = n / out["in_memory_compute_s"]
        out["ratio_vs_compute"] = out["in_memory_compute_s"] / out["dask_s"]
        out["ratio_vs_load_and_compute"] = (out["in_memory_load_s"] + out["in_memory_compute_s"]) / out["dask_s"]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
