#!/usr/bin/env bash
# Builds what users install, into target/wheels/:
#   - one portable wheel: abi3 (CPython 3.9 and later), manylinux_2_17 x86_64 (glibc 2.17 and
#     later: RHEL/CentOS 7+, Debian 8+, Ubuntu 14.04+), carrying the library, the GPU path (the
#     CUDA driver and NVRTC are found at run time) and the `ptychostitch` console command;
#   - the sdist, for `pip install` from source where no wheel fits (needs Rust >= 1.89).
# No Docker: maturin links with zig (the `ziglang` package from PyPI) against glibc 2.17's
# symbols, and checks the result against the manylinux policy before it writes the wheel.
# Needs: python3 (>= 3.9) with venv, a Rust toolchain (>= 1.89) with cargo, network to PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/build-venv
if [ ! -x "$venv/bin/maturin" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "maturin[zig]>=1.7,<2"
fi
rm -rf target/wheels
started=$(date +%s)
# maturin warns that pyproject.toml's build-backend is not maturin: it is ours on purpose
# (build_backend/: a one-line error where Rust is missing, then maturin), so the warning is
# filtered and said once here.
echo "== maturin (pyproject's build-backend is build_backend/ptychostitch_build, which calls maturin: intended)"
quiet_backend() { grep --line-buffered -v 'is not set to `maturin`' >&2 || true; }
PATH="$PWD/$venv/bin:$PATH" "$venv/bin/maturin" build --release --zig --compatibility manylinux_2_17 \
    --target x86_64-unknown-linux-gnu --out target/wheels 2> >(quiet_backend)
"$venv/bin/maturin" sdist --out target/wheels 2> >(quiet_backend)
echo "== built in $(( $(date +%s) - started )) s:"
for f in target/wheels/*; do
    printf '%s  %s\n' "$(du -h "$f" | cut -f1)" "$(basename "$f")"
done
