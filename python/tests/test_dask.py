"""ptychostitch.dask: lazy tiled canvases from chunked patch stacks, bit-identical to the
in-memory functions for every tile size, chunking and scheduler, on worker processes too."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import ptychostitch as ps

da = pytest.importorskip("dask.array", reason="Dask is not installed (scripts/test.sh installs it)")
import ptychostitch.dask as psd  # noqa: E402  (our own module: an import error in it is a failure, never a skip)

OPS = ["shift_and_sum", "reassemble_position"]


def same_bits(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_golden_cases_for_every_tile_and_chunking(golden):
    obj, off, M = golden["obj"], golden["offsets"], int(golden["M"])
    for op in OPS:
        expected = getattr(ps, op)(obj, off, M)
        for tile in [1 if expected.shape[0] <= 40 else 5, 7, 31, 10_000]:
            for chunk in [1, 13, obj.shape[0]]:
                lazy = getattr(psd, op)(da.from_array(obj, chunks=(chunk, -1, -1, -1)), off, M, tile=tile)
                assert lazy.shape == expected.shape and lazy.dtype == expected.dtype
                got = lazy.compute(scheduler="threads")
                assert same_bits(got, expected), f"{golden['name']}: {op}, tile {tile}, chunks of {chunk}"


@pytest.fixture(scope="module")
def big_scan(tmp_path_factory):
    """About 20,000 patches (32×32 complex64, 160 MB) in a memory-mapped .npy file."""
    path = tmp_path_factory.mktemp("scan") / "patches.npy"
    n, size = 20_000, 32
    rng = np.random.default_rng(2026)
    stack = np.lib.format.open_memmap(path, mode="w+", dtype=np.complex64, shape=(n, size, size))
    for start in range(0, n, 2000):
        block = rng.standard_normal((2000, size, size, 2), dtype=np.float32)
        stack[start : start + 2000] = block[..., 0] + 1j * block[..., 1]
    stack.flush()
    cols = int(np.ceil(np.sqrt(n)))
    k = np.arange(n)
    offsets = np.stack([(k % cols) * 2.9, (k // cols) * 2.9], axis=-1) + rng.uniform(-0.5, 0.5, (n, 2))
    memmap = np.load(path, mmap_mode="r")
    expected = {op: getattr(ps, op)(memmap, offsets, 16) for op in OPS}
    return path, offsets, expected


def test_graph_size_is_tiles_plus_chunks(big_scan):
    path, offsets, expected = big_scan
    on_file = psd.from_npy(path, chunk=1000)
    # A chunked array whose chunks a task computes (here: the file as a map, through one
    # elementwise step): chunks are cropped, tiles get the chunks that touch them.
    computed = da.from_array(np.load(path, mmap_mode="r"), chunks=(1000, -1, -1)) * 1
    for tile in [64, 257, 10_000]:
        lazy = psd.reassemble_position(on_file, offsets, 16, tile=tile)
        tiles = lazy.numblocks[0] * lazy.numblocks[1]
        # From a file: one task per tile, which reads its patches itself, and the offsets.
        assert len(dict(lazy.__dask_graph__())) == tiles + 1
        lazy = psd.reassemble_position(computed, offsets, 16, tile=tile)
        chunks = computed.numblocks[0]
        graph = dict(lazy.__dask_graph__())
        # Per chunk: a few tasks (the map, the product, the crop); per tile: one task; plus the
        # offsets. Never tiles × chunks.
        assert tiles + chunks <= len(graph) <= tiles + 4 * chunks + 1, (len(graph), tiles, chunks)
        # Each tile task depends only on the chunks whose patches touch it.
        tile_tasks = [v for k, v in graph.items() if isinstance(k, tuple) and k[0] == lazy.name]
        deps = [len(t) - 11 for t in tile_tasks]  # the task's arguments after its 11 fixed ones
        assert len(deps) == tiles
        if tiles > 1:
            assert max(deps) < chunks, deps
        assert same_bits(lazy.compute(scheduler="threads"), expected["reassemble_position"])


@pytest.mark.parametrize("tile", [96, 257, 10_000])
def test_memmap_scan_on_the_threaded_scheduler(big_scan, tile):
    path, offsets, expected = big_scan
    patches = da.from_array(np.load(path, mmap_mode="r"), chunks=(1500, -1, -1))
    for op in OPS:
        got = getattr(psd, op)(patches, offsets, 16, tile=tile).compute(scheduler="threads")
        assert same_bits(got, expected[op]), f"{op}, tile {tile}"


def test_two_worker_processes_give_the_same_bits(big_scan):
    distributed = pytest.importorskip("distributed")
    path, offsets, expected = big_scan
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        for tile in [128, 300, 10_000]:
            for op in OPS:
                lazy = getattr(psd, op)(psd.from_npy(path, chunk=2500), offsets, 16, tile=tile)
                got = client.compute(lazy).result()
                assert same_bits(got, expected[op]), f"{op}, tile {tile}"
        # Both workers took part.
        assert len(client.scheduler_info()["workers"]) == 2


def test_a_batch_of_scans_is_one_graph():
    import dask

    rng = np.random.default_rng(1)
    stacks = [rng.standard_normal((30, 16, 16)).astype(np.complex64) for _ in range(3)]
    offsets = [rng.uniform(-5, 5, (30, 2)) for _ in range(3)]
    lazy = [psd.reassemble_position(da.from_array(s, chunks=(7, -1, -1)), o, 8, tile=9) for s, o in zip(stacks, offsets)]
    for got, s, o in zip(dask.compute(*lazy), stacks, offsets):
        assert same_bits(got, ps.reassemble_position(s, o, 8))


def test_bad_arguments_are_reported_up_front():
    obj = da.zeros((5, 16, 16), dtype=np.complex64, chunks=(2, -1, -1))
    with pytest.raises(ValueError, match="5 patches but `offsets` has 4"):
        psd.reassemble_position(obj, np.zeros((4, 2)), 8)
    with pytest.raises(ValueError, match="`M` = 40"):
        psd.shift_and_sum(obj, np.zeros((5, 2)), 40)
    with pytest.raises(ValueError, match="tile"):
        psd.shift_and_sum(obj, np.zeros((5, 2)), 8, tile=0)
    with pytest.raises(ValueError, match=r"\(n, N, N\)"):
        psd.shift_and_sum(da.zeros((5, 16, 16, 2), chunks=2), np.zeros((5, 2)), 8)


def test_shapes_and_arguments_are_checked_when_the_graph_is_built():
    """Non-square patches are the in-memory functions' ValueError before anything is computed
    (they used to give an all-zero canvas, or fail only at compute time); tile and chunk accept
    NumPy integers and refuse zero."""
    off = np.zeros((100, 2))
    for shape in [(100, 32, 64), (100, 32, 24), (100, 32, 32, 2)]:
        Y = da.zeros(shape, chunks=25, dtype=np.complex64)
        with pytest.raises(ValueError) as lazy:
            psd.reassemble_position(Y, off, 8)
        with pytest.raises(ValueError) as eager:
            ps.reassemble_position(np.zeros(shape, np.complex64), off, 8)
        assert str(lazy.value) == str(eager.value)
    Y = da.zeros((100, 32, 32), chunks=25, dtype=np.complex64)
    assert psd.shift_and_sum(Y, off, 8, tile=np.int64(16)).shape[2] == 1
    for bad, error in [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)]:
        with pytest.raises(error, match="tile"):
            psd.shift_and_sum(Y, off, 8, tile=bad)


def test_from_npy_chunk_is_a_positive_integer(tmp_path):
    path = tmp_path / "p.npy"
    np.save(path, np.zeros((10, 8, 8), np.complex64))
    assert psd.from_npy(str(path), chunk=np.int32(4)).chunks[0] == (4, 4, 2)
    with pytest.raises(ValueError, match="chunk"):
        psd.from_npy(str(path), chunk=0)
    with pytest.raises(TypeError, match="chunk"):
        psd.from_npy(str(path), chunk=2.0)


def test_from_npy_tiles_read_the_file_themselves(big_scan, monkeypatch):
    """What docs/large-data.md says `from_npy` does: each tile task reads the kept crops of the patches that
    touch it from the file, by position (no chunk task, nothing sent between tasks), and
    the bits are the in-memory call's. Indexing the array itself works as NumPy's."""
    path, offsets, expected = big_scan
    asked = []
    getitem = psd._NpyFile.__getitem__

    def recording(self, index):
        asked.append(index)
        return getitem(self, index)

    monkeypatch.setattr(psd._NpyFile, "__getitem__", recording)
    for tile in [97, 500, 10_000]:
        lazy = psd.reassemble_position(psd.from_npy(path, chunk=3000), offsets, 16, tile=tile)
        assert same_bits(lazy.compute(scheduler="threads"), expected["reassemble_position"])
    reads = [i for i in asked if isinstance(i, tuple) and i[0] != slice(0, 0, None)]
    assert reads == [], asked
    monkeypatch.undo()
    stack = psd.from_npy(path, chunk=3000)
    memmap = np.load(path, mmap_mode="r")
    assert np.array_equal(stack[17:4000:3, 2:9, 5].compute(), memmap[17:4000:3, 2:9, 5])
    assert np.array_equal(stack[5990:6010].compute(), memmap[5990:6010])
    # An array derived from a from_npy array is not the file any more: it takes the chunk path.
    shifted = psd.reassemble_position(stack[::-1][::-1], offsets, 16, tile=500)
    assert same_bits(shifted.compute(scheduler="threads"), expected["reassemble_position"])


def test_in_memory_chunks_are_read_in_place_and_others_cropped_first():
    """Chunks already in memory go to the tiles as they are (no crop task, no copy); a stack that
    needs a dtype conversion is cropped first. Same bits either way, and the native window over
    runs refuses runs out of order."""
    rng = np.random.default_rng(15)
    n, size = 300, 24
    stack = (rng.standard_normal((n, size, size)) + 1j * rng.standard_normal((n, size, size))).astype(np.complex64)
    offsets = rng.uniform(-40, 40, (n, 2))
    expected = ps.reassemble_position(stack, offsets, 10)
    for source, cropped in [(stack, False), (stack.astype(np.complex128), True)]:
        arr = da.from_array(source, chunks=(64, -1, -1))
        assert psd._in_memory(arr)
        lazy = psd.reassemble_position(arr, offsets, 10, tile=17)
        layers = set(lazy.__dask_graph__().layers)
        assert any(name.startswith(("getitem", "astype")) for name in layers) == cropped, layers
        assert same_bits(lazy.compute(scheduler="threads"), expected)
    # Chunks computed by a task (not held in the graph) are cropped first.
    arr = da.from_array(stack, chunks=(64, -1, -1)) * 1
    assert not psd._in_memory(arr)
    assert same_bits(psd.reassemble_position(arr, offsets, 10, tile=17).compute(scheduler="threads"), expected)
    plan = ps._native.Plan(np.ascontiguousarray(offsets), size, 10, 1)
    side = plan.canvas_side
    with pytest.raises(ValueError, match="before the previous one ends"):
        plan.window_runs([stack[:100], stack[50:]], [0, 50], "shift_and_sum", (0, side), (0, side))
    with pytest.raises(TypeError, match="must all be complex64 or all float32"):
        plan.window_runs([stack[:100], stack[100:].real.copy()], [0, 100], "shift_and_sum", (0, side), (0, side))


def test_from_npy_in_another_dtype_and_four_dimensions(tmp_path):
    """A file in complex128 with a trailing axis: the tiles gather and convert the touching
    patches' kept crops (the map cannot be used as it is); the bits are the in-memory call's."""
    rng = np.random.default_rng(28)
    n, size = 400, 20
    stack = (rng.standard_normal((n, size, size, 1)) + 1j * rng.standard_normal((n, size, size, 1))).astype(np.complex128)
    offsets = rng.uniform(-30, 30, (n, 2))
    np.save(tmp_path / "p.npy", stack)
    for op in OPS:
        expected = getattr(ps, op)(stack, offsets, 12)
        for tile in [9, 64]:
            got = getattr(psd, op)(psd.from_npy(tmp_path / "p.npy", chunk=70), offsets, 12, tile=tile).compute(scheduler="threads")
            assert same_bits(got, expected), (op, tile)


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_a_file_that_changes_under_the_graph_is_an_error_naming_it(tmp_path, scheduler):
    """Round 4, item 4: truncated, rewritten in place or replaced (renamed over) after the graph
    was built: an error naming the file, never a signal and never a canvas mixed from two files."""
    rng = np.random.default_rng(41)
    n, size = 300, 16
    offsets = rng.uniform(-25, 25, (n, 2))
    path = tmp_path / "p.npy"

    def fresh(seed):
        np.save(path, rng.standard_normal((n, size, size)).astype(np.complex64) * seed)

    changes = {
        "truncated": lambda: os.truncate(path, os.path.getsize(path) // 2),
        "rewritten": lambda: fresh(2.0),
        "replaced": lambda: (np.save(tmp_path / "new.npy", np.ones((n, size, size), np.complex64)),
                             os.replace(tmp_path / "new.npy", path)),
    }
    for what, change in changes.items():
        fresh(1.0)
        lazy = psd.reassemble_position(psd.from_npy(path, chunk=64), offsets, 8, tile=16)
        time.sleep(0.01)  # a rewrite within the same clock tick still changes the inode or size
        change()
        with pytest.raises(ValueError, match=f"{path}.*(changed while|truncated)"):
            lazy.compute(scheduler=scheduler)
        # The chunks of the array itself (from_npy outside reassembly) check the same way.
        fresh(1.0)
        chunked = psd.from_npy(path, chunk=64)
        change()
        with pytest.raises(ValueError, match=str(path)):
            chunked.sum().compute(scheduler=scheduler)


def test_a_file_truncated_during_the_reads_is_an_error_never_a_signal(tmp_path):
    """Round 4, item 4: the tiles read by position, never through a map, so a file truncated
    while they read it is a ValueError naming it (a mapped read past the truncation would end the
    process with SIGBUS). Run in a child process, whose death by a signal the test would see;
    each round truncates the file at a random moment during a threaded compute, and every round
    either raises the error or (truncated too late to matter) returns the untouched canvas."""
    script = f"""
import os, random, threading, time
import numpy as np
import ptychostitch as ps, ptychostitch.dask as psd
rng = np.random.default_rng(3)
n, size = 60_000, 32
path = {str(tmp_path / "p.npy")!r}
stack = (rng.standard_normal((n, size, size)) + 1j).astype(np.complex64)
offsets = rng.uniform(-300, 300, (n, 2))
expected = ps.reassemble_position(stack, offsets, 12)
errors = 0
for round in range(6):
    np.save(path, stack)
    lazy = psd.reassemble_position(psd.from_npy(path, chunk=8192), offsets, 12, tile=64)
    delay = random.uniform(0.0, 0.15)
    cut = threading.Timer(delay, lambda: os.truncate(path, 4096 * (1 + round)))
    cut.start()
    try:
        got = lazy.compute(scheduler="threads")
        assert np.array_equal(got.view(np.uint8), expected.view(np.uint8)), "a canvas from a truncated file"
    except ValueError as e:
        assert path in str(e), e
        errors += 1
    cut.join()
print("errors", errors)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert int(run.stdout.split()[-1]) >= 1, run.stdout


def test_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "p.npy"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(ValueError, match="not a regular file"):
        psd.from_npy(fifo)
    assert time.monotonic() - started < 60  # a hang guard (opening a FIFO waits for a writer), not a timer
