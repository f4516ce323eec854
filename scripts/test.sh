#!/usr/bin/env bash
# Every check and test of the project, on a fresh machine too:
#   Rust: cargo fmt --check, clippy -D warnings, cargo doc -D warnings, cargo test (library + CLI)
#   Python: builds the extension with maturin into a fresh virtual environment with the test
#   dependencies (numpy, pytest, tensorflow-cpu for the tf.Tensor / tf.function / installer
#   tests, dask + distributed for ptychostitch.dask, jax[cpu] for DLPack arrays and JAX autodiff,
#   torch for autograd: PyPI's build, 5.3 GB with its CUDA libraries, runs on the CPU), then pytest.
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

echo "== python: fresh virtual environment, build the extension, pytest"
venv=target/test-venv
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "maturin>=1.7,<2" numpy pytest tensorflow-cpu "dask[array]" distributed "jax[cpu]" torch
"$venv/bin/python" -m pip install --quiet --no-build-isolation .
"$venv/bin/python" -m pytest -ra python/tests
