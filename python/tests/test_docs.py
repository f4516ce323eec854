"""Every example in the README and in docs/ runs, as written, against the installed package.

Each ```python and ```bash block of a document runs in order, in a fresh folder per document
(so a shell block that makes `demo-out/` feeds the Python blocks after it): Python blocks with
this interpreter, shell blocks with bash (the `ptychostitch` console command on PATH). A block
whose fence says ``skip=KEY`` is skipped with KEY's reason below (a GPU, a PtychoPINN checkout,
a Rust toolchain, a release, a long run). Blocks in other languages (text, rust) are not run.
Also: the README stays a quick start (at most 400 lines) and names exactly the functions the
PtychoPINN installer replaces.
"""

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))

SKIPS = {
    "gpu": "needs an NVIDIA GPU (scripts/gpu_check.sh runs the GPU tests where one is lent)",
    "ptychopinn": "needs a PtychoPINN checkout and its dependencies: set PTYCHOPINN_ROOT to run these blocks against it",
    "rust": "needs a Rust toolchain; scripts/test.sh and .ci/run run these commands themselves",
    "release": "pip install ptychostitch works once the first release is on PyPI",
    "install": "an installation: scripts/test.sh builds and installs the wheel this way before the tests",
    "long": "minutes and tens of GB (scripts/bench_large.sh makes and times it)",
}
RUN = {"python", "bash"}
NOT_RUN = {"text", "rust", "toml"}


class Block(NamedTuple):
    doc: Path
    line: int
    lang: str
    skip: str
    code: str


def blocks(doc: Path) -> List[Block]:
    out, lines, i = [], doc.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^(\s*)```(\S*)\s*(.*)$", lines[i])
        if not fence:
            i += 1
            continue
        indent, lang, rest = fence.groups()
        start, body = i + 1, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        skip = re.match(r"skip=(\S+)", rest)
        out.append(Block(doc, start, lang, skip.group(1) if skip else "", "\n".join(body) + "\n"))
        i += 1
    return out


ALL = [b for doc in DOCS for b in blocks(doc)]
RUNNABLE = [b for b in ALL if b.lang in RUN]
_FOLDERS: Dict[Path, Path] = {}


def test_every_block_says_what_it_is():
    """No unlabelled fence (it would escape this test) and no unknown skip key."""
    for b in ALL:
        where = f"{b.doc.relative_to(ROOT)}:{b.line}"
        assert b.lang in RUN | NOT_RUN, f"{where}: a ``` block needs a language ({sorted(RUN | NOT_RUN)})"
        assert not b.skip or b.skip in SKIPS, f"{where}: unknown skip={b.skip}"
    assert len(RUNNABLE) >= 15, len(RUNNABLE)


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"{b.doc.name}:{b.line}" for b in RUNNABLE])
def test_the_example_runs(block, tmp_path_factory):
    root = os.environ.get("PTYCHOPINN_ROOT")
    if block.skip == "ptychopinn" and root:
        pass  # run against that checkout (on PYTHONPATH below)
    elif block.skip:
        pytest.skip(SKIPS[block.skip])
    folder = _FOLDERS.get(block.doc)
    if folder is None:
        folder = _FOLDERS[block.doc] = tmp_path_factory.mktemp(block.doc.stem)
    env = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    if block.skip == "ptychopinn":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    command = [sys.executable, "-c", block.code] if block.lang == "python" else ["bash", "-euo", "pipefail", "-c", block.code]
    run = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, (
        f"{block.doc.relative_to(ROOT)}:{block.line} failed ({run.returncode}):\n{block.code}\n"
        f"--- stdout\n{run.stdout[-3000:]}\n--- stderr\n{run.stderr[-3000:]}"
    )
    # A figure a document states beside a command (`# → text`) is what the command prints.
    for promised in re.findall(r"#\s*→\s*(.+)$", block.code, flags=re.MULTILINE):
        assert promised.strip() in run.stdout, (
            f"{block.doc.relative_to(ROOT)}:{block.line}: the comment promises {promised.strip()!r}, "
            f"but the block printed:\n{run.stdout[-2000:]}"
        )


def test_the_readme_is_a_quick_start_and_its_counts_are_true():
    import ptychostitch.ptychopinn as pp

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 400
    first = [b for b in blocks(ROOT / "README.md")][0]
    assert "demo" in first.code and "scripts/test.sh" in first.code, "the README starts with the demo and the tests"
    for name in pp.FUNCTIONS + pp.TRAINING_FUNCTIONS + pp.TORCH_FUNCTIONS:
        assert f"`{name}`" in text, name
    assert f"{len(pp.FUNCTIONS)} inference + {len(pp.TRAINING_FUNCTIONS)} training functions" in text
    assert f"{len(pp.TORCH_FUNCTIONS)} training functions" in text
