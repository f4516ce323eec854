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


# --- round 5: extreme integers, normalisation options ------------------------------------------

EXTREME = textwrap.dedent(
    """
    import itertools, sys, numpy as np
    import ptychostitch as ps
    rng = np.random.default_rng(0)
    patches = (rng.standard_normal((4, 8, 8)) + 0j).astype(np.complex64)
    offsets = rng.uniform(-2, 2, (4, 2))
    imgs = np.ones((1, 12, 12, 1), np.complex64)
    xy = np.zeros((1, 1, 2, 4))
    regions = np.ones((2, 8, 8, 2), np.complex64)
    positions = np.zeros((2, 1, 2, 2))
    torch_regions = np.ones((2, 12, 12), np.complex64)
    torch_positions = np.zeros((2, 2, 1, 2))
    VALUES = [0, 1, -1, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**40, 2**60 + 8, 2**62, 2**63 - 1, 2**63, 2**64,
              -(2**63), 10**30]
    CALLS = {
        "shift_and_sum M": lambda v: ps.shift_and_sum(patches, offsets, M=v),
        "shift_and_sum threads": lambda v: ps.shift_and_sum(patches, offsets, M=4, threads=v),
        "shift_and_sum canvas_side": lambda v: ps.shift_and_sum(patches, offsets, M=4, canvas_side=v),
        "reassemble_position M": lambda v: ps.reassemble_position(patches, offsets, M=v),
        "reassemble_position_old M": lambda v: ps.reassemble_position_old(patches, offsets, M=v),
        "shift_and_sum_old M": lambda v: ps.shift_and_sum_old(patches, offsets, M=v),
        "Plan patch_size": lambda v: ps.Plan(offsets, v, 4),
        "Plan M": lambda v: ps.Plan(offsets, 8, v),
        "Plan threads": lambda v: ps.Plan(offsets, 8, 4, threads=v),
        "extract_patches_position N": lambda v: ps.extract_patches_position(imgs, xy, 0.0, N=v),
        "extract_patches_position gridsize": lambda v: ps.extract_patches_position(imgs, xy, 0.0, N=4, gridsize=v),
        "extract_patches_position threads": lambda v: ps.extract_patches_position(imgs, xy, 0.0, N=4, threads=v),
        "reassemble_regions padded_size": lambda v: ps.reassemble_regions(regions, positions, v),
        "reassemble_regions padded_size reference": lambda v: ps.reassemble_regions(regions, positions, v, reference=True),
        "reassemble_regions threads": lambda v: ps.reassemble_regions(regions, positions, 12, threads=v),
        "extract_regions N": lambda v: ps.extract_regions(torch_regions, torch_positions, v),
        "extract_regions threads": lambda v: ps.extract_regions(torch_regions, torch_positions, 4, threads=v),
    }
    bad = []
    for (name, call), value in itertools.product(CALLS.items(), VALUES):
        try:
            call(value)
        except Exception as error:  # a precise Python error is the point
            if "chunk size" in str(error) or "panicked" in str(error):
                bad.append(f"{name}={value}: {type(error).__name__}: {error}")
        except BaseException as error:  # pyo3's PanicException is a BaseException
            bad.append(f"{name}={value}: {type(error).__module__}.{type(error).__name__}: {error}")
    print("\\n".join(bad) or "none")
    sys.exit(1 if bad else 0)
    """
)


def test_extreme_integers_reach_no_panic_and_no_hang():
    """Round 5, item 4: every public function's integer arguments at 0, ±1, 2³², 2⁴⁰, 2⁶⁰ + 8,
    2⁶², 2⁶³, 2⁶⁴ and beyond: a Python error (ValueError, TypeError, MemoryError) or a result,
    never a PanicException and never a hang (``padded_size = 2**60 + 8`` ran for ever)."""
    run = subprocess.run([sys.executable, "-c", EXTREME], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]


def test_a_huge_padded_size_names_padded_size_with_the_true_figure():
    import numpy as np

    import ptychostitch as ps

    regions, positions = np.ones((2, 8, 8, 2), np.complex64), np.zeros((2, 1, 2, 2))
    for side in (2**32, 2**32 + 1, 2**40, 2**60 + 8):
        with pytest.raises(ValueError, match=r"padded size P = .*\(`padded_size`\) is too large") as info:
            ps.reassemble_regions(regions, positions, side)
        assert "offsets" not in str(info.value)
    with pytest.raises(ValueError) as info:
        ps.reassemble_regions(regions, positions, 2**32 + 1)
    # 2 regions of (2³² + 1)² pixels, complex, and their weights: 12 bytes a pixel, 4.4e20 B.
    assert "EiB" in str(info.value) and "96.0 GiB" not in str(info.value)
    with pytest.raises(ValueError, match="`positions`"):
        ps.reassemble_regions(np.ones((0, 8, 8, 2), np.complex64), np.zeros((0, 1, 2, 2)), 12)


def _regions(**options):
    import numpy as np

    import ptychostitch as ps

    rng = np.random.default_rng(2)
    x = (rng.standard_normal((2, 8, 8, 3)) + 0j).astype(np.complex64)
    return ps.reassemble_regions(x, rng.uniform(-1, 1, (2, 1, 2, 3)), 12, **options)


@pytest.mark.parametrize(
    "options, error, match",
    [
        (dict(epsilon=0.0), ValueError, r"`epsilon` = 0\.0 .*expected finite and > 0"),
        (dict(epsilon=-1e-3), ValueError, "`epsilon`"),
        (dict(epsilon=float("nan")), ValueError, "`epsilon`"),
        (dict(epsilon=float("inf")), ValueError, "`epsilon`"),
        (dict(denominator="clamp", epsilon=0.0), ValueError, "`epsilon`"),
        (dict(denominator="clamp", epsilon=-1.0), ValueError, "`epsilon`"),
        (dict(denominator="affine", scale=0.0, epsilon=0.0), ValueError, "`epsilon`"),
        (dict(denominator="affine", scale=-1.0, epsilon=1.0), ValueError, "`scale`"),
        (dict(denominator="regularised", epsilon=1.5), ValueError, r"0 < epsilon <= 1"),
        (dict(denominator="regularised", epsilon=-0.1), ValueError, r"0 < epsilon <= 1"),
        (dict(denominator="regularised", epsilon=0.0), ValueError, r"0 < epsilon <= 1"),
        (dict(denominator="add", scale=2.0), ValueError, "scale is used only by"),
        (dict(denominator="clamp", scale=2.0), ValueError, "scale is used only by"),
        (dict(recentre="no"), TypeError, "recentre must be True, False or None"),
        (dict(recentre=1), TypeError, "recentre must be"),
        (dict(support=("above",)), TypeError, r"support must be None, \('above', t\)"),
        (dict(support="above"), TypeError, r"support must be None"),
        (dict(support=("below", 1.0)), ValueError, r"support\[0\] must be one of"),
        (dict(support=("above", "x")), TypeError, r"support\[1\] must be a real number"),
        (dict(support=("above_max_fraction", 2.0)), ValueError, "`support`"),
        (dict(epsilon="a"), TypeError, "epsilon must be a real number"),
        (dict(epsilon=None), TypeError, "epsilon must be a real number"),
        (dict(epsilon=True), TypeError, "epsilon must be a real number"),
        (dict(denominator=None), TypeError, "denominator must be one of"),
        (dict(denominator="max"), ValueError, "denominator must be one of"),
        (dict(numerator=None), TypeError, "numerator must be one of"),
        (dict(convention="jax"), ValueError, "convention must be one of"),
    ],
)
def test_normalisation_options_are_checked_up_front(options, error, match):
    """Round 5, item 5: each bad option is one error naming the parameter and what it may be,
    before any data is read; none gives a NaN or inf canvas."""
    with pytest.raises(error, match=match):
        _regions(**options)


def test_valid_normalisations_give_finite_regions_and_zero_weights_are_refused():
    import numpy as np

    import ptychostitch as ps

    for options in [
        dict(), dict(epsilon=1e-9), dict(denominator="clamp", epsilon=1e-12), dict(denominator="one"),
        dict(denominator="affine", scale=0.0, epsilon=1.0), dict(denominator="regularised", epsilon=1.0),
        dict(denominator="regularised", epsilon=0.1, scale=1.0), dict(support=("above", 0)),
        dict(support=["above_max_fraction", np.float32(0.5)]), dict(recentre=np.bool_(False)),
    ]:
        assert np.isfinite(_regions(**options)).all(), options
    # All-zero weights: the regularised denominator's maximum is 0; an error, not NaN.
    with pytest.raises(ValueError, match="zero everywhere"):
        _regions(denominator="regularised", epsilon=0.5, weights=np.zeros((8, 8), np.float32))
    # The add and clamp forms stay defined with zero weights: 0 where nothing lands.
    out = _regions(weights=np.zeros((8, 8), np.float32), numerator="weighted")
    assert np.isfinite(out).all() and not out.any()
    # Graph mode: the check runs when the function is traced, not inside the graph.
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed (scripts/test.sh installs it)")

    @tf.function
    def traced(x, pos):
        return ps.reassemble_regions(x, pos, 12, epsilon=0.0)

    with pytest.raises(ValueError, match="`epsilon`"):
        traced(tf.zeros((2, 8, 8, 3), tf.complex64), tf.zeros((2, 1, 2, 3)))
