#!/usr/bin/env bash
# Every check and test of the project, on a fresh machine too:
#   Rust: cargo fmt --check, clippy -D warnings, cargo doc -D warnings, cargo test (library + CLI)
#   The wheel users install: scripts/build_wheel.sh (abi3, manylinux_2_17, with the console command).
#   The release workflow: scripts/lint_workflows.sh (actionlint where installable, GitHub's
#   workflow schema, zizmor).
#   Python: a fresh virtual environment whose PATH has no cargo, rustc or C compiler, the wheel
#   with its [test] extra (pytest, tensorflow-cpu, torch, jax[cpu], dask[array,distributed]) at
#   the versions python/constraints-test.txt pins (scripts/lock_test_env.sh refreshes them), the
#   release workflow's wheel check (scripts/test_wheel.sh), then pytest (the console command's
#   tests, the sdist without Rust, and every example of README.md and docs/ included).
#
# The first run on a machine downloads about 4 GB of Python wheels (torch's from PyPI brings its
# CUDA libraries although it runs on the CPU here; TensorFlow, JAX) and compiles the Rust
# workspace twice (tests, and the wheel): about 25-30 minutes on 2 cores. Later runs take pip's
# and cargo's caches: about 12 minutes. Each step prints its start time; pip prints a line per
# package it downloads.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 )) s] $*"; }

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy --workspace --all-targets -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
step "cargo test"
cargo test

step "the wheel users install (scripts/build_wheel.sh)"
bash scripts/build_wheel.sh
wheel=$(ls target/wheels/*.whl)

step "the release workflow (scripts/lint_workflows.sh)"
bash scripts/lint_workflows.sh

step "python: a fresh virtual environment with no Rust or C toolchain on PATH, the wheel, pytest"
venv=target/test-venv
rm -rf "$venv"
python3 -m venv "$venv"
# PATH for everything from here: the venv and a folder of basic tools, nothing that compiles.
bare=target/bare-path
rm -rf "$bare"
mkdir -p "$bare"
for tool in sh bash env uname cat ls mkdir rm grep sed head tail sleep kill date ldconfig nproc timeout true false dirname mktemp; do
    found=$(command -v "$tool" || true)
    if [ -n "$found" ]; then ln -s "$found" "$bare/$tool"; fi
done
bare_path="$PWD/$venv/bin:$PWD/$bare"
for tool in cargo rustc cc gcc c++ g++ clang zig; do
    if env PATH="$bare_path" sh -c "command -v $tool" >/dev/null; then
        echo "a toolchain is on the test PATH: $tool"
        exit 1
    fi
done
env PATH="$bare_path" python -m pip install --quiet --upgrade pip
constraints=python/constraints-test.txt
step "the test environment: $(basename "$wheel")[test] pinned by $constraints (first run: about 4 GB of downloads, 5-10 min; pip's cache after)"
env PATH="$bare_path" python -m pip install --progress-bar off --constraint "$constraints" "$wheel[test]" |
    grep -E '^(Collecting|Downloading|Installing|Successfully|Using cached|ERROR|WARNING)' || {
    echo "the test environment did not install: refresh python/constraints-test.txt with scripts/lock_test_env.sh"
    exit 1
}
# The wheel alone, again, timed: what a user without Rust waits for.
started=$(date +%s.%N)
env PATH="$bare_path" python -m pip install --quiet --force-reinstall --no-deps "$wheel"
installed=$(date +%s.%N)
echo "== installed $(basename "$wheel") ($(du -h "$wheel" | cut -f1)) in $(echo "$started $installed" | awk '{printf "%.1f", $2 - $1}') s, without cargo, rustc or a C compiler"
echo "   tags: $(basename "$wheel" .whl | cut -d- -f3-); imported from: $(env PATH="$bare_path" python -c 'import ptychostitch; print(ptychostitch.__file__)')"
step "the release workflow's wheel check (scripts/test_wheel.sh)"
env PATH="$bare_path" bash scripts/test_wheel.sh
step "pytest (PTYCHOSTITCH_TEST_ENV=full: a test skipped for a missing framework fails)"
env PATH="$bare_path" PTYCHOSTITCH_TEST_ENV=full python -m pytest -ra python/tests
step "all passed"
