"""Reassembly of patch stacks larger than one machine's memory, with Dask.

::

    import dask.array as da, h5py
    import ptychostitch.dask as psd

    patches = da.from_array(h5py.File("recon.h5")["Y"], chunks=(4096, -1, -1, -1))  # (n, N, N, 1)
    canvas = psd.reassemble_position(patches, offsets, M=20, tile=512)           # lazy (S, S, 1)
    canvas.to_zarr("object.zarr")                                                # or .compute()

``patches`` is a Dask array ``(n, N, N)`` or ``(n, N, N, 1)`` chunked along ``n`` (from h5py,
Zarr, ``np.memmap``, anything ``dask.array.from_array`` takes); ``global_offsets`` are in memory
in any layout the in-memory functions accept. The result is a lazy Dask array of the canvas,
chunked in ``tile × tile`` tiles. Each tile task receives only the patch chunks whose patches
touch the tile and passes them, as they are, to the native window function (GIL released),
which adds them in scan order; its geometry is the whole scan's, so tiles computed on any worker
fit together exactly. Chunks are first cut to the kept ``M×M`` centres (less to move between
workers, and a file is read only where its kept lines lie), except where they are already
NumPy arrays in the graph (``da.from_array`` of an in-memory stack): tiles then read the kept
rows in place, as the in-memory function does. The graph holds one task per
tile plus the patch chunks' own tasks and one for the offsets: ``O(tiles + chunks)``, never
``tiles × chunks``. The bits equal :func:`ptychostitch.reassemble_position`'s for every tile
size, chunking, scheduler and worker count.

A batch of scans (ptycho-tomography: one canvas per angle) is a list of such arrays::

    canvases = [psd.reassemble_position(p, o, M=20) for p, o in zip(stacks, offsets_per_angle)]
    dask.compute(*canvases)          # one graph, every angle in parallel across the cluster
"""

from __future__ import annotations

import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from collections import OrderedDict
from typing import Any, Dict, List, Tuple

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.core import flatten
from dask.highlevelgraph import HighLevelGraph

from . import _compute_dtype, _crop, _native, _offsets, _positive, _threads, _warn

__all__ = ["from_npy", "reassemble_position", "shift_and_sum"]

# Native plans built in this process, by the token of (offsets, N, M, threads): a worker builds
# each scan's plan once, however many tiles it computes.
_PLANS: "OrderedDict[str, Any]" = OrderedDict()
_PLANS_LOCK = threading.Lock()
_PLANS_KEPT = 8


def _plan(token: str, offsets: np.ndarray, size: int, crop: int, threads: int) -> Any:
    with _PLANS_LOCK:
        plan = _PLANS.get(token)
        if plan is not None:
            _PLANS.move_to_end(token)
            return plan
    plan = _native.Plan(offsets, size, crop, threads)
    _keep_plan(token, plan)
    return plan


def _keep_plan(token: str, plan: Any) -> None:
    with _PLANS_LOCK:
        _PLANS[token] = plan
        while len(_PLANS) > _PLANS_KEPT:
            _PLANS.popitem(last=False)


def _tile(
    token: str,
    offsets: np.ndarray,
    size: int,
    crop: int,
    threads: int,
    op: str,
    rows: Tuple[int, int],
    cols: Tuple[int, int],
    starts: List[int],
    dtype: str,
    *chunks: np.ndarray,
) -> np.ndarray:
    """One tile from the chunks whose patches can touch it (chunk `i` holds the patches from scan
    index `starts[i]`), passed to the native window as they are: no patch is gathered or copied."""
    plan = _plan(token, offsets, size, crop, threads)
    target = np.dtype(dtype)
    runs = [np.asarray(chunk).reshape(-1, size, size) for chunk in chunks]
    runs = [run if run.dtype == target else run.astype(target) for run in runs]
    out = plan.window_runs(runs, [int(s) for s in starts], op, rows, cols)
    return out[:, :, np.newaxis]


# The `.npy` files behind `from_npy` arrays, by array name: a graph over such an array reads the
# file in its tile tasks (see `_tile_from_npy`).
_NPY_ARRAYS: "Dict[str, _NpyFile]" = {}


def _tile_from_npy(
    token: str,
    offsets: np.ndarray,
    source: "_NpyFile",
    size: int,
    crop: int,
    threads: int,
    op: str,
    rows: Tuple[int, int],
    cols: Tuple[int, int],
    dtype: str,
) -> np.ndarray:
    """One tile read straight from the file, where it runs: the kept ``m×m`` crops of the
    patches that touch it, read by position by the native reader (one read of the kept lines per
    patch, sixteen in flight, GIL released), stitched by a plan for ``m×m`` patches with
    ``M = m``, which keeps exactly those pixels and has the same canvas, shifts and footprints:
    the bits do not change. No patch moves between workers. The reader checks the file against
    the one the graph was built from, and the tile checks it again after: a file truncated,
    rewritten or replaced under the computation is an error naming it, never a signal and
    never a mixed canvas."""
    kept = 2 * (crop // 2)
    plan = _plan(tokenize(token, "crops"), offsets, kept, kept, threads)
    indices = _touching(plan, rows, cols)
    crops = source.kept_crops(indices, size // 2 - crop // 2, kept, np.dtype(dtype))
    out = plan.window(crops, indices, op, rows, cols)
    source.check()
    return out[:, :, np.newaxis]


def _touching(plan: Any, rows: Tuple[int, int], cols: Tuple[int, int]) -> np.ndarray:
    """The patches whose footprint touches the window, in scan order."""
    fp = plan.footprints()
    touch = (fp[:, 0] < rows[1]) & (fp[:, 1] > rows[0]) & (fp[:, 2] < cols[1]) & (fp[:, 3] > cols[0])
    touch &= (fp[:, 1] > fp[:, 0]) & (fp[:, 3] > fp[:, 2])
    return np.flatnonzero(touch).astype(np.int64)


def _in_memory(patches: da.Array) -> bool:
    """True when every chunk of `patches` is a NumPy array held in its graph, as
    ``da.from_array(numpy_array)`` makes them: C-contiguous chunks a tile can read in place."""
    layer = patches.__dask_graph__().layers.get(patches.name)
    if layer is None:
        return False
    try:
        chunks = [layer[key] for key in flatten(patches.__dask_keys__())]
    except KeyError:
        return False
    return all(isinstance(c, np.ndarray) and c.flags.c_contiguous for c in chunks)


def _lazy(patches: Any, global_offsets: Any, M: Any, op: str, tile: int, threads: Any) -> da.Array:
    if not isinstance(patches, da.Array):
        patches = da.asarray(patches)
    shape = tuple(patches.shape)
    square = len(shape) in (3, 4) and shape[1] == shape[2] and shape[1] > 0
    if not square or (len(shape) == 4 and shape[3] != 1) or shape[0] == 0:
        # The in-memory functions' message (the library's PatchShape error), at graph-build time.
        raise ValueError(
            f"`patches` has shape {list(shape)}; expected (n, N, N) or (n, N, N, 1) with square N×N patches"
        )
    tile = _positive("tile", tile)
    dtype = _compute_dtype(patches.dtype)
    n, size = patches.shape[0], patches.shape[1]
    crop, workers = _crop(M), _threads(threads)
    offsets = np.ascontiguousarray(_offsets(global_offsets))
    # The whole scan's plan: checks every argument as the in-memory functions do. With the
    # default `threads`, each tile runs on one thread where there are at least as many tiles as
    # cores: Dask's workers are the parallelism, and splitting every tile across all cores as
    # well cost a third (n = 100,000 in memory, threaded scheduler, 2 cores: 95 ms against
    # 70 ms per call; the in-memory function, 67 ms).
    one_each = threads is None
    plan = _native.Plan(offsets, size, crop, 1 if one_each else workers)
    _warn(plan.warnings, stacklevel=4)
    if plan.n != n:
        raise ValueError(f"`patches` has {n} patches but `offsets` has {plan.n} positions")
    if one_each:
        workers = 1 if -(-plan.canvas_side // tile) ** 2 >= (os.cpu_count() or 1) else 0

    kept = 2 * (crop // 2)
    if one_each and workers == 1:
        # Tiles on this process (the threaded scheduler) reuse this plan, not build another.
        _keep_plan(tokenize(offsets, size, crop, workers), plan)
    source = _NPY_ARRAYS.get(patches.name)
    if source is not None:
        return _lazy_from_npy(source, plan, offsets, size, crop, workers, op, tile, dtype)
    if _in_memory(patches) and patches.dtype == dtype:
        # Chunks already in memory (`da.from_array` of a NumPy array): tiles read the kept rows
        # where they lie, as the in-memory call does; cutting the centres first would only copy.
        centres, tile_size, tile_crop = patches, size, crop
    else:
        # Each chunk is cut to the kept m×m centre first (one task per chunk): tiles then move
        # m² instead of N² values per patch (and a file is read only where its kept lines are).
        # A plan for m×m patches with M = m keeps exactly those pixels and has the same canvas,
        # shifts and footprints, so the bits do not change.
        c0 = size // 2 - crop // 2
        index = (slice(None), slice(c0, c0 + kept), slice(c0, c0 + kept)) + ((0,) if patches.ndim == 4 else ())
        centres = patches.rechunk({axis: -1 for axis in range(1, patches.ndim)})[index].astype(dtype)
        tile_size, tile_crop = kept, kept

    fp = plan.footprints()
    live = (fp[:, 1] > fp[:, 0]) & (fp[:, 3] > fp[:, 2])
    token = tokenize(offsets, tile_size, tile_crop, workers)
    name = f"ptychostitch-{op}-{tokenize(centres, token, tile)}"
    offsets_key = (f"ptychostitch-offsets-{token}",)
    bounds = np.cumsum((0,) + centres.chunks[0])
    chunk_keys = [(centres.name, c) + (0,) * (centres.ndim - 1) for c in range(centres.numblocks[0])]
    # Per chunk, the rows and columns its patches can change: a tile outside that skips the chunk.
    spans = []
    for c in range(len(chunk_keys)):
        f = fp[bounds[c] : bounds[c + 1]][live[bounds[c] : bounds[c + 1]]]
        spans.append(None if len(f) == 0 else (f[:, 0].min(), f[:, 1].max(), f[:, 2].min(), f[:, 3].max()))

    def task(rows: Tuple[int, int], cols: Tuple[int, int]) -> tuple:
        used = [
            c
            for c, sp in enumerate(spans)
            if sp is not None and sp[0] < rows[1] and sp[1] > rows[0] and sp[2] < cols[1] and sp[3] > cols[0]
        ]
        fixed = (_tile, token, offsets_key, tile_size, tile_crop, workers, op, rows, cols, [int(bounds[c]) for c in used], dtype.str)
        return fixed + tuple(chunk_keys[c] for c in used)

    return _tiled(name, plan.canvas_side, tile, dtype, {offsets_key: offsets}, [centres], task)


def _tiled(name: str, side: int, tile: int, dtype: np.dtype, layer: Dict[Any, Any], dependencies: List[Any], task: Any) -> da.Array:
    """The lazy `(side, side, 1)` canvas in `tile × tile` tiles: `task(rows, cols)` is each tile's
    task, added to `layer` (which holds what the tasks share) under the name `name`."""
    edges = list(range(0, side, tile)) + [side]
    for i in range(len(edges) - 1):
        for j in range(len(edges) - 1):
            layer[(name, i, j, 0)] = task((edges[i], edges[i + 1]), (edges[j], edges[j + 1]))
    graph = HighLevelGraph.from_collections(name, layer, dependencies=dependencies)
    tiles = tuple(edges[k + 1] - edges[k] for k in range(len(edges) - 1))
    return da.Array(graph, name, chunks=(tiles, tiles, (1,)), dtype=dtype, meta=np.empty((0, 0, 0), dtype))


def _lazy_from_npy(
    source: "_NpyFile", plan: Any, offsets: np.ndarray, size: int, crop: int, workers: int, op: str, tile: int, dtype: np.dtype
) -> da.Array:
    """The graph over a `from_npy` array: one task per tile, each reading its patches' kept lines
    from the file itself (`_tile_from_npy`), plus the offsets. Cutting the centres in chunk tasks
    and sending them to the tiles instead moved about half of them between worker processes:
    1.4 s against 0.47 s for the streaming CLI at n = 100,000, warm cache, 2 workers."""
    token = tokenize(offsets, size, crop, workers)
    name = f"ptychostitch-{op}-{tokenize(source.path, source.shape, token, tile, size, crop)}"
    offsets_key = (f"ptychostitch-offsets-{token}",)

    def task(rows: Tuple[int, int], cols: Tuple[int, int]) -> tuple:
        return (_tile_from_npy, token, offsets_key, source, size, crop, workers, op, rows, cols, dtype.str)

    return _tiled(name, plan.canvas_side, tile, dtype, {offsets_key: offsets}, [], task)


class _NpyFile:
    """A `.npy` file read where it is used: pickles as its path and the file's identity (size,
    modification time, inode) when the graph was built, so a graph ships a file name to the
    workers, not the data. Nothing is mapped: chunks are read with positional reads, and
    reassembly tiles read their patches' kept crops with the native positional reader. Every
    read is checked against that identity before and after: a file truncated, rewritten or
    replaced under the computation is an error naming it, never a signal."""

    def __init__(self, path: str) -> None:
        self.path = str(path)
        if not stat.S_ISREG(os.stat(self.path).st_mode):
            raise ValueError(f"{self.path}: not a regular file (a FIFO or a device cannot be read by position)")
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            self.offset = f.tell()
            self.stamp = self._stamp(os.fstat(f.fileno()))
        if fortran:
            raise ValueError(f"{self.path}: Fortran-order arrays are not supported; save in C order")
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        if self.offset + self.shape[0] * self.row_bytes > self.stamp[0]:
            raise ValueError(f"{self.path}: truncated: its header declares more data than the file holds")

    @staticmethod
    def _stamp(st: os.stat_result) -> Tuple[int, int, int]:
        return (st.st_size, st.st_mtime_ns, st.st_ino)

    def check(self, fd: Any = None) -> None:
        """The file (and the open descriptor ``fd``, when given) is still the one the graph was
        built from (same size, modification time and inode), else a ValueError naming it."""
        try:
            now = self._stamp(os.stat(self.path))
        except OSError:
            now = None
        if now != self.stamp or (fd is not None and self._stamp(os.fstat(fd)) != self.stamp):
            raise ValueError(
                f"{self.path} changed while the computation read it (its size, modification time or inode "
                "differ from when the graph was built): recompute on the new file"
            )

    def _read(self, fd: int, view: memoryview, at: int) -> None:
        done = 0
        while done < len(view):
            got = os.preadv(fd, [view[done:]], at + done)
            if got == 0:
                raise ValueError(f"{self.path}: truncated while the computation read it")
            done += got

    def _pieces(self, pieces: List[Tuple[memoryview, int]]) -> None:
        """Reads each ``(buffer, offset)`` piece, 16 in flight, checking the file around them."""
        with open(self.path, "rb", buffering=0) as f:
            fd = f.fileno()
            self.check(fd)
            if len(pieces) < 32:
                for view, at in pieces:
                    self._read(fd, view, at)
            else:
                with ThreadPoolExecutor(16) as pool:
                    list(pool.map(lambda piece: self._read(fd, *piece), pieces))
            self.check(fd)

    def kept_crops(self, indices: np.ndarray, c0: int, kept: int, target: np.dtype) -> np.ndarray:
        """The ``kept × kept`` centres (from row and column ``c0``) of the patches ``indices``,
        as ``target``, read by the native reader from this version of the file."""
        pixel = self.shape[3:]
        crops = np.empty((len(indices), kept, kept) + tuple(pixel), dtype=self.dtype)
        raw = crops.reshape(-1).view(np.uint8)
        _native.read_npy_crops(self.path, self.stamp, np.ascontiguousarray(indices, np.int64), c0, kept, raw)
        if self.ndim == 4:
            crops = crops[..., 0]
        return np.ascontiguousarray(crops, dtype=target)

    def __getitem__(self, index: Any) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        first, rest = index[0], index[1:]
        rows = np.arange(self.shape[0])[first]
        picked = np.atleast_1d(rows)
        out = np.empty((len(picked),) + self.shape[1:], dtype=self.dtype)
        flat = out.reshape(len(picked), self.row_bytes // self.dtype.itemsize).view(np.uint8)
        if len(picked) and np.all(np.diff(picked) == 1):  # a run of rows: one read
            self._pieces([(memoryview(flat.reshape(-1)), self.offset + int(picked[0]) * self.row_bytes)])
        else:
            self._pieces([(memoryview(flat[j]), self.offset + int(i) * self.row_bytes) for j, i in enumerate(picked)])
        out = out if np.ndim(rows) else out[0]
        return out[(slice(None),) + rest] if np.ndim(rows) else out[rest]


def from_npy(path: Any, chunk: int = 4096) -> da.Array:
    """A Dask array of the patch stack in a `.npy` file (e.g. from ``ptychostitch make-scan``),
    chunked along ``n`` by ``chunk`` patches; each chunk task reads its rows from the file where it
    runs (the file must be reachable from every worker: a shared or local disk)."""
    chunk = _positive("chunk", chunk)
    source = _NpyFile(path)
    array = da.from_array(source, chunks=(chunk,) + tuple(source.shape[1:]), name=f"npy-{tokenize(source.path, chunk)}")
    _NPY_ARRAYS[array.name] = source
    return array


def shift_and_sum(patches: Any, global_offsets: Any, M: int = 10, *, tile: int = 512, threads: Any = None) -> da.Array:
    """Lazy ``shift_and_sum`` of a Dask patch stack: ``(S, S, 1)``, chunked in ``tile × tile``
    tiles. ``threads``: threads per tile task (``None``: one where there are at least as many
    tiles as cores, else all cores; ``0``: all cores)."""
    return _lazy(patches, global_offsets, M, "shift_and_sum", tile, threads)


def reassemble_position(patches: Any, global_offsets: Any, M: int = 10, *, tile: int = 512, threads: Any = None) -> da.Array:
    """Lazy ``reassemble_position`` of a Dask patch stack: ``(S, S, 1)``, chunked in tiles
    (``tile`` and ``threads`` as for :func:`shift_and_sum`)."""
    return _lazy(patches, global_offsets, M, "reassemble_position", tile, threads)
