"""The ``ptychostitch`` console command that installing the package (the wheel) puts next to
Python: the Rust command-line tool itself, run through the extension module. Checked as a user
meets it: the demo, a golden case bit for bit, a bad input, a bad argument and Ctrl-C, each with
the binary's messages and exit statuses and never a Python traceback."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import ptychostitch as ps

COMMAND = Path(sys.executable).parent / "ptychostitch"


def run(*args, **kwargs):
    if not COMMAND.exists():
        pytest.fail(f"no console command at {COMMAND}: install the package (the wheel, or pip install .)")
    return subprocess.run([str(COMMAND), *map(str, args)], capture_output=True, text=True, timeout=600, **kwargs)


def one_error_line(stderr):
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert lines and lines[0].startswith("error: "), stderr
    return lines


def test_version_is_the_packages():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"ptychostitch {ps.__version__}"


def test_demo(tmp_path):
    out = run("demo", "--out", tmp_path / "d")
    assert out.returncode == 0, out.stderr
    for name in ["object.png", "reassembly.png", "difference.png", "reassembly.npz", "scan.npz"]:
        assert (tmp_path / "d" / name).stat().st_size > 0, name
    # The suggested next command names this command, and runs as printed.
    line = next(l for l in out.stdout.splitlines() if l.startswith("try: "))
    assert line.split()[1] == str(COMMAND), line
    again = subprocess.run(line[len("try: "):].split(), capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert again.returncode == 0 and (tmp_path / "scan.png").exists(), again.stderr


@pytest.mark.parametrize("case", ["rand50", "oddM", "nonfinite"])
def test_a_golden_case_bit_for_bit(case, golden_dir, tmp_path):
    with np.load(golden_dir / f"{case}.npz") as f:
        M, want = int(f["M"]), f["shift_and_sum_old"]
    out = run(
        "reassemble", golden_dir / f"{case}.npz", "--patches", "obj", "--offsets", "offsets",
        "-M", M, "--mode", "shift-and-sum", "-o", tmp_path / "r.npz",
    )
    assert out.returncode == 0, out.stderr
    with np.load(tmp_path / "r.npz") as r:
        got = r["image"]
    assert np.array_equal(got.reshape(want.shape).view(np.uint32), want.view(np.uint32))


def test_a_bad_input_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"\x93NUMPY this is not an array")
    out = run("reassemble", bad, tmp_path / "o.npy", "-o", tmp_path / "r.npz")
    assert out.returncode == 1
    assert len(one_error_line(out.stderr)) == 1, out.stderr
    assert not (tmp_path / "r.npz").exists()


def test_a_bad_argument_is_clap_s_message(tmp_path):
    out = run("reassemble", "--chunk", "-1", tmp_path / "x.npz")
    assert out.returncode == 2
    assert one_error_line(out.stderr)[0] == "error: invalid value '-1' for '--chunk <PATCHES>': must be at least 1, not -1"


def test_no_gpu_is_one_error_line(tmp_path):
    if ps.gpu_available():
        pytest.skip("a GPU is here: --device cuda runs (tests/gpu.rs and test_gpu.py check it)")
    out = run("validate", "--sizes", "10", "--device", "cuda")
    assert out.returncode == 1
    lines = one_error_line(out.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: GpuUnavailable: "), out.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_it_cleanly(sig, tmp_path):
    """Ctrl-C (or SIGTERM) in the middle of writing a large scan: exit 130 with the binary's one
    line, no traceback, no file left behind (complete or temporary)."""
    proc = subprocess.Popen(
        [str(COMMAND), "make-scan", "-n", "3000000", tmp_path / "p.npy", tmp_path / "o.npy"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # Past Python's start-up (the command is Rust's from then on) and into the writing.
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".p.npy.tmp") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert one_error_line(stderr) == ["error: interrupted; no output was changed that was not complete"]
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_a_source_build_says_what_it_needs_first(monkeypatch, capsys):
    """The sdist's backend (build_backend/): without a C compiler, or with a Rust older than
    1.89, one line says so before maturin starts (cargo's own failure is deep in a long log)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "build_backend"))
    try:
        import ptychostitch_build as backend
    finally:
        sys.path.pop(0)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(backend.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit):
        backend.build_wheel("/nonexistent")
    err = capsys.readouterr().err
    assert err.startswith("error: building ptychostitch from source needs Rust >= 1.89 and a C compiler")
    assert "no C compiler" in err and "prebuilt wheel" in err
    monkeypatch.setattr(backend.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(backend.os.path, "exists", lambda p: True)
    monkeypatch.setattr(
        backend.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout="rustc 1.80.1 (3f5fd8dd4 2024-08-06)\n")
    )
    assert backend.missing() == ["rustc 1.80.1 (3f5fd8dd4 2024-08-06) is older than 1.89 (rustup update)"]
    monkeypatch.setattr(backend.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout="rustc 1.95.0\n"))
    assert backend.missing() == []


def _sdist() -> Path:
    found = sorted((Path(__file__).resolve().parents[2] / "target" / "wheels").glob("ptychostitch-*.tar.gz"))
    if not found:
        pytest.skip("no sdist in target/wheels: scripts/build_wheel.sh makes it (scripts/test.sh runs it first)")
    return found[-1]


@pytest.mark.parametrize("index", ["offline", "default index"])
def test_the_sdist_without_rust_says_so_in_one_line(tmp_path, index):
    """Issue 26: pip on the sdist, with no cargo or rustc on PATH and no ~/.cargo or ~/.rustup,
    offline or not: one line says what a source build needs, before anything is downloaded (no
    attempt to fetch a Rust toolchain, no traceback)."""
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.path.dirname(sys.executable),
        "HOME": str(home),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_CACHE_DIR": "1",
    }
    for tool in ("cargo", "rustc"):
        assert shutil.which(tool, path=env["PATH"]) is None, f"{tool} is on the test's PATH"
    args = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "out"), str(_sdist())]
    if index == "offline":
        args.insert(4, "--no-index")
    run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    text = run.stdout + run.stderr
    assert run.returncode != 0, text
    lines = [line for line in text.splitlines() if "building ptychostitch from source needs" in line]
    assert len(lines) == 1, text
    assert "no Rust toolchain" in lines[0] and "prebuilt wheel" in lines[0], lines[0]
    for sign in ("Traceback", "rustup-init", "puccinialin", "SSL", "maturin"):
        assert sign not in text, (sign, text)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_the_native_stubs_name_everything_the_extension_has():
    """Issue 22: `_native.pyi` says what the extension module holds: every public function,
    class and method of `ptychostitch._native` is in the stub, and nothing the stub names is
    missing from the module (CUDA-only names may be absent from a build without CUDA)."""
    import ast

    from ptychostitch import _native

    tree = ast.parse((Path(ps.__file__).parent / "_native.pyi").read_text())
    stub = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            stub[node.name] = None
        elif isinstance(node, ast.ClassDef):
            stub[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and not node.target.id.startswith("_"):
            stub[node.target.id] = None  # a module constant
    public = {name: obj for name, obj in vars(_native).items() if not name.startswith("_")}
    for name, obj in public.items():
        if isinstance(obj, type) and issubclass(obj, BaseException):
            continue
        assert name in stub, f"_native.{name} is not in _native.pyi"
        if isinstance(obj, type):
            methods = {m for m in vars(obj) if not m.startswith("_")}
            assert methods == stub[name], (name, methods ^ stub[name])
    cuda_only = {"DeviceArray", "dlpack_probe"}
    assert set(stub) - set(public) <= cuda_only, set(stub) - set(public)
