"""ptychostitch.dask against the in-memory function and the streaming CLI, in one process, medians
of --repeat runs:

    python scripts/bench_dask.py PATCHES.npy OFFSETS.npy [--tile 512] [--chunk 4096] [--in-memory] [--cli BIN]

- from_npy on LocalCluster(n_workers=2, processes=True), always;
- with --in-memory: the stack loaded and stitched in memory (it must fit), and the same stack as
  ``da.from_array(stack, chunks=(chunk, -1, -1))`` on the threaded scheduler (graph built and
  computed; the Dask array itself is made once, outside the timing: making it hashes the data);
- with --cli BIN: ``BIN reassemble PATCHES.npy OFFSETS.npy --mode reassemble`` (the streaming CLI),
  alternating with the cluster runs so that both see the same page-cache state.

Make the files with `ptychostitch make-scan -n N PATCHES.npy OFFSETS.npy`. Prints JSON: times,
patches/s, ratios, bit identity, and each worker's peak RSS (getrusage in the worker).
"""

import argparse
import json
import resource
import subprocess
import tempfile
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
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--in-memory", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cli", help="the ptychostitch binary, to time the streaming CLI on the same file")
    ap.add_argument(
        "--no-cluster",
        action="store_true",
        help="skip the LocalCluster rows (its workers, forked after --in-memory loaded the stack, report the parent's peak RSS as theirs)",
    )
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
        import dask.array as da

        arr = da.from_array(stack, chunks=(args.chunk, -1, -1))
        times, dask_times = [], []
        for _ in range(args.repeat):  # alternating, so that both see the machine's slow spells
            t = time.perf_counter()
            expected = ps.reassemble_position(stack, offsets, 20)
            times.append(time.perf_counter() - t)
            t = time.perf_counter()
            got = psd.reassemble_position(arr, offsets, 20, tile=args.tile).compute(scheduler="threads")
            dask_times.append(time.perf_counter() - t)
        out["in_memory_compute_s"] = sorted(times)[len(times) // 2]
        out["dask_threaded_in_memory_s"] = sorted(dask_times)[len(dask_times) // 2]
        out["dask_threaded_in_memory_ratio"] = out["in_memory_compute_s"] / out["dask_threaded_in_memory_s"]
        out["dask_threaded_in_memory_bit_identical"] = bool(np.array_equal(got.view(np.uint32), expected.view(np.uint32)))
        del stack, arr
    if args.no_cluster:
        print(json.dumps(out, indent=1))
        return
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as client:
        times, cli_times = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            lazy = psd.reassemble_position(psd.from_npy(args.patches, chunk=args.chunk), offsets, 20, tile=args.tile)
            got = client.compute(lazy).result()
            times.append(time.perf_counter() - t)
            if args.cli:
                with tempfile.TemporaryDirectory() as tmp:
                    t = time.perf_counter()
                    subprocess.run(
                        [args.cli, "reassemble", args.patches, args.offsets, "-M", "20", "--mode", "reassemble", "-o", f"{tmp}/r.npz"],
                        check=True,
                        stdout=subprocess.DEVNULL,
                    )
                    cli_times.append(time.perf_counter() - t)
        out["dask_s"] = sorted(times)[len(times) // 2]
        if cli_times:
            out["cli_streaming_s"] = sorted(cli_times)[len(cli_times) // 2]
            out["dask_over_cli"] = out["dask_s"] / out["cli_streaming_s"]
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
