#!/usr/bin/env bash
# Every check and test of the project, on a fresh machine too:
#   Rust: cargo fmt --check, clippy -D warnings, cargo doc -D warnings, cargo test (library + CLI)
#   The wheel users install: scripts/build_wheel.sh (abi3, manylinux_2_17, with the console command).
#   The release workflow: scripts/lint_workflows.sh (actionlint where installable, GitHub's
#   workflow schema, zizmor).
#   Python: a fresh virtual environment whose PATH has no cargo, rustc or C compiler, the test
#   dependencies (numpy, pytest, tensorflow-cpu for the tf.Tensor / tf.function / installer
#   tests, dask + distributed for ptychostitch.dask, jax[cpu] for DLPack arrays and JAX autodiff,
#   torch for autograd: PyPI's build, 5.3 GB with its CUDA libraries, runs on the CPU), the
#   wheel, the release workflow's wheel check (scripts/test_wheel.sh), then pytest (the console
#   command's tests, the sdist without Rust, and every example of README.md and docs/ included).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --workspace --all-targets -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "== cargo test"
cargo test

echo "== the wheel users install (scripts/build_wheel.sh)"
bash scripts/build_wheel.sh
wheel=$(ls target/wheels/*.whl)

echo "== the release workflow (scripts/lint_workflows.sh)"
bash scripts/lint_workflows.sh

echo "== python: a fresh virtual environment with no Rust or C toolchain on PATH, the wheel, pytest"
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
env PATH="$bare_path" python -m pip install --quiet numpy pytest tensorflow-cpu "dask[array]" distributed "jax[cpu]" torch
started=$(date +%s.%N)
env PATH="$bare_path" python -m pip install --quiet "$wheel"
installed=$(date +%s.%N)
echo "== installed $(basename "$wheel") ($(du -h "$wheel" | cut -f1)) in $(echo "$started $installed" | awk '{printf "%.1f", $2 - $1}') s, without cargo, rustc or a C compiler"
echo "   tags: $(basename "$wheel" .whl | cut -d- -f3-); imported from: $(env PATH="$bare_path" python -c 'import ptychostitch; print(ptychostitch.__file__)')"
echo "== the release workflow's wheel check (scripts/test_wheel.sh)"
env PATH="$bare_path" bash scripts/test_wheel.sh
env PATH="$bare_path" python -m pytest -ra python/tests
