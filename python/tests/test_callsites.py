"""PtychoPINN's real call sites: its offset layouts, its dtypes, TF's non-finite division, and
the robustness a long-running notebook needs (threads, Ctrl-C, warnings)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

import ptychostitch as ps

from test_dropin import assert_identical, scan


def test_every_offset_layout_gives_the_same_bits():
    obj, off = scan()  # off is (n, 1, 1, 2)
    n = off.shape[0]
    ref = ps.reassemble_position(obj, off, M=16)
    pairs = off.reshape(n, 2)
    for layout in [pairs, pairs.reshape(n, 1, 2, 1), pairs.reshape(n, 2, 1), pairs.reshape(n, 1, 1, 1, 2)]:
        assert_identical(ps.reassemble_position(obj, layout, M=16), ref, f"offsets {layout.shape}")
        assert_identical(ps.Plan(layout, 32, M=16).reassemble_position(obj), ref, f"Plan, {layout.shape}")
    # PtychoPINN's data container: global_offsets (n, 1, 2, 1) float64, as a strided view.
    container = np.ascontiguousarray(np.moveaxis(pairs.reshape(n, 2, 1, 1), 1, 2))
    assert container.shape == (n, 1, 2, 1)
    assert_identical(ps.shift_and_sum(obj, container, M=16), ps.shift_and_sum(obj, off, M=16))
    with pytest.raises(ValueError, match=r"\(n, 2\), \(n, 1, 1, 2\), \(n, 1, 2, 1\)"):
        ps.reassemble_position(obj, np.zeros((n, 1, 3)), M=16)


def test_nonfinite_golden_is_exact_with_nan_payloads(golden_dir):
    f = np.load(golden_dir / "nonfinite.npz")
    obj, off, M = f["obj"], f["offsets"], int(f["M"])
    expected = f["reassemble_position_old"]
    assert np.isnan(expected).any(), "the case holds NaN pixels"
    for got in [
        ps.reassemble_position(obj, off, M),
        ps.reassemble_position_old(obj, off, M),
        ps.reassemble_position(obj, off, M, threads=1),
        ps.Plan(off, 32, M).reassemble_position(obj),
    ]:
        assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    # The rule: a NaN or infinite part makes the other part NaN.
    s = f["shift_and_sum_old"]
    bad = ~np.isfinite(s.real) | ~np.isfinite(s.imag)
    got = ps.reassemble_position(obj, off, M)
    assert np.all(np.isnan(got.real[bad & ~np.isinf(s.real)]))
    assert np.all(np.isnan(got.imag[bad & ~np.isinf(s.imag)]))


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: a.astype(">c8"),
        lambda a: a.real.astype(">f8"),
        lambda a: a.real.astype(np.float16),
        lambda a: np.round(a.real * 4).astype(np.int32),
        lambda a: np.round(a.real * 4).astype(np.uint8),
        lambda a: a.real > 0.5,
    ],
    ids=["big-endian complex64", "big-endian float64", "float16", "int32", "uint8", "bool"],
)
def test_the_dtypes_the_cli_converts_are_accepted(convert):
    obj, off = scan()
    patches = convert(obj)
    got = ps.reassemble_position(patches, off, M=16)
    expected_dtype = np.complex64 if patches.dtype.kind == "c" else np.float32
    assert got.dtype == expected_dtype
    native = patches.astype(expected_dtype)
    assert_identical(got, ps.reassemble_position_old(native, off, M=16), str(patches.dtype))


def test_threads_mean_the_same_as_in_the_cli():
    obj, off = scan()
    ref = ps.shift_and_sum(obj, off, M=16)
    assert_identical(ps.shift_and_sum(obj, off, M=16, threads=0), ref, "0 = all cores")
    assert_identical(ps.shift_and_sum(obj, off, M=16, threads=np.int64(3)), ref, "numpy integer")
    for bad in [2.5, "2", True, 2.0]:
        with pytest.raises(TypeError, match="threads must be an integer"):
            ps.shift_and_sum(obj, off, M=16, threads=bad)
    with pytest.raises(ValueError, match="threads"):
        ps.Plan(off, 32, M=16, threads=-3)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc")
def test_thread_counts_one_to_64_leave_no_threads_behind():
    # 1200·17² footprint pixels: every count above one really starts a second worker.
    obj, off = scan(n=1200)
    ref = ps.shift_and_sum(obj, off, M=16, threads=1)
    before = len(os.listdir("/proc/self/task"))
    for threads in range(1, 65):
        runs = ps._native.parallel_runs()
        assert_identical(ps.shift_and_sum(obj, off, M=16, threads=threads), ref, f"{threads}")
        assert (ps._native.parallel_runs() > runs) == (threads > 1), f"{threads} threads ran on one"
    after = len(os.listdir("/proc/self/task"))
    assert after <= max(before, os.cpu_count() + 2), f"{before} threads before, {after} after"


def test_ctrl_c_stops_the_reference_within_a_second(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        import numpy as np
        import ptychostitch as ps
        rng = np.random.default_rng(0)
        n = 3000
        obj = (rng.standard_normal((n, 64, 64)) + 1j * rng.standard_normal((n, 64, 64))).astype(np.complex64)
        off = rng.uniform(-150, 150, (n, 2))
        print("ready", flush=True)
        try:
            ps.reassemble_position_old(obj, off, M=20)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(3)
        print("finished", flush=True)
    """))
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    time.sleep(0.5)  # well inside the reference run, which takes minutes
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    try:
        code = child.wait(timeout=10)
    finally:
        child.kill()
    waited = time.monotonic() - sent
    assert code == 3 and child.stdout.read().strip() == "interrupted"
    # The uninterrupted run takes minutes; the check between patches honours Ctrl-C within
    # a fraction of a second. The bound is generous so that a loaded 2-core machine cannot
    # fail it, yet far below the run it stops.
    assert waited < 20.0, f"Ctrl-C took {waited:.2f} s to be honoured"


def test_suspicious_scans_raise_scan_warnings():
    obj, off = scan()
    pairs = off.reshape(-1, 2).copy()
    pairs[7] = [6000.0, 0.0]
    with pytest.warns(ps.ScanWarning, match=r"patch 7 at \[x, y\] = \[6000"):
        ps.Plan(pairs, 32, M=16)
    with pytest.warns(ps.ScanWarning, match="within .* pixels of each other") as record:
        ps.reassemble_position(obj, off * 1e-7, M=16)
    assert record[0].filename == __file__, "the warning points at the caller"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ps.reassemble_position(obj, off, M=16)  # an ordinary scan: no warning
