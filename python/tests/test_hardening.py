"""Hardening, round 4: allocations that scale with an input fail as MemoryError under an
address-space limit, never as an allocation abort (SIGABRT)."""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import resource, sys, numpy as np
    import ptychostitch as ps
    n, extra, what = int(sys.argv[1]), int(sys.argv[2]) << 20, sys.argv[3]
    off = np.random.default_rng(0).uniform(-100, 100, (n, 2))
    obj = np.zeros((n, 2, 2), np.complex64)
    size = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (size + extra, size + extra))
    try:
        if what == "plan":
            ps.Plan(off, 2, 2)
        else:
            ps.reassemble_position(obj, off, 2)
        print("ok")
    except MemoryError as e:
        print("MemoryError", e)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status (Linux)")
@pytest.mark.parametrize("what", ["plan", "reassemble"])
def test_millions_of_offsets_under_an_address_space_limit(what):
    seen = set()
    for extra_mib in (16, 40, 70, 100, 400):
        run = subprocess.run([sys.executable, "-c", SCRIPT, "2000000", str(extra_mib), what],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"{extra_mib} MiB: status {run.returncode}: {run.stderr[-500:]}"
        assert "memory allocation" not in run.stderr, run.stderr[-500:]
        line = run.stdout.strip().splitlines()[-1]
        assert line == "ok" or line.startswith("MemoryError out of memory"), line
        seen.add(line.split()[0])
    assert seen == {"ok", "MemoryError"}, seen


INTERRUPTED_IMPORT = textwrap.dedent(
    """
    import os, signal, sys, time
    sys.argv[0] = sys.argv[1]

    class InterruptOnce:
        # Ctrl-C arrives while the package is importing its extension module.
        def find_spec(self, name, path=None, target=None):
            if name == "ptychostitch._native":
                sys.meta_path.remove(self)
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.5)
            return None

    sys.meta_path.insert(0, InterruptOnce())
    import ptychostitch
    print("imported")
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_while_the_console_command_imports_is_one_line():
    """Round 4, item 7: the console command (argv[0] ``…/ptychostitch``) interrupted while the
    package imports ends with the binary's one line and status 130, no traceback; a library user
    still gets Python's KeyboardInterrupt."""
    run = subprocess.run([sys.executable, "-c", INTERRUPTED_IMPORT, "/usr/local/bin/ptychostitch"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 130, run.stderr
    assert run.stderr == "error: interrupted; no output was changed that was not complete\n", run.stderr
    run = subprocess.run([sys.executable, "-c", INTERRUPTED_IMPORT, "my_script.py"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "KeyboardInterrupt" in run.stderr


def test_a_sub_pixel_scan_warns_with_python_advice():
    """Issue 26: the Python warning for positions that span less than a pixel (metres passed as
    pixels) gives advice a Python caller can follow, not the CLI's --coord-scale flag."""
    import warnings

    import numpy as np

    import ptychostitch as ps

    rng = np.random.default_rng(5)
    offsets = rng.uniform(-1e-6, 1e-6, (10, 2))
    patches = np.ones((10, 16, 16), np.complex64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ps.reassemble_position(patches, offsets, 8)
    texts = [str(w.message) for w in caught if issubclass(w.category, ps.ScanWarning)]
    assert len(texts) == 1, texts
    assert "divide positions in metres by the pixel size" in texts[0]
    assert "--" not in texts[0]
