#!/usr/bin/env bash
# The GPU checks, in one run, on a machine with an NVIDIA GPU:
#   1. the Rust GPU tests (golden cases and randomised scans bit for bit against the CPU
#      reference; pinned staging of large host stacks; device memory, strided, on a borrowed
#      stream);
#   2. the Python GPU tests (python/tests/test_gpu.py: torch, CuPy and JAX arrays in CUDA
#      memory, in place through DLPack, on the caller's stream, golden bits), with the wheel
#      built by `prepare`;
#   3. `validate --device cuda` (GPU against the CPU reference on the bench-grid scan);
#   4. scripts/bench_gpu.py: torch tensor in -> torch tensor out, the kernel alone, a torch
#      index_add_ baseline and the memory floor, n = 10,000, 100,000 and 1,000,000;
#   5. `bench --device cuda` at n = 10,000 and 100,000 (host arrays: device time with the stack
#      resident, host-to-host time with the copies), next to the CPU in the same run.
# Results go to $OUT (or target/gpu-check-out). About 4 minutes on an H100 (estimate).
#
#   scripts/gpu_check.sh prepare   # on a build machine: binaries and a CPython 3.12 wheel
#                                  # into target/gpu-check (PYTHON_VERSION=3.11 for another)
#   scripts/gpu_check.sh           # on the GPU machine (builds first if cargo is there and
#                                  # target/gpu-check is missing)
#
# The binaries load libcuda and NVRTC at run time: no CUDA toolkit is needed to build them. On
# the GPU machine NVRTC is found on LD_LIBRARY_PATH, in /usr/local/cuda, or in Python's
# nvidia-cuda-nvrtc package.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=target/gpu-check

prepare() {
  set -e
  cargo build --release -p ptychostitch-cli --features cuda
  local test_bin
  test_bin=$(cargo test --release -p ptychostitch --features cuda --test gpu --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "gpu" and m.get("executable"):
        print(m["executable"])')
  mkdir -p "$bin"
  cp target/release/ptychostitch "$bin/ptychostitch"
  cp "$test_bin" "$bin/gpu-tests"
  local maturin=${MATURIN:-$(command -v maturin || echo target/test-venv/bin/maturin)}
  rm -rf "$bin/wheels"
  "$maturin" build --release --quiet -i "python${PYTHON_VERSION:-3.12}" -o "$bin/wheels"
  echo "prepared $bin: $(ls "$bin" | tr '\n' ' ')"
}

if [[ ${1:-} == prepare ]]; then
  prepare
  exit
fi
if [[ ! -x $bin/ptychostitch ]] && command -v cargo >/dev/null; then
  prepare || exit 1
fi
out=${OUT:-target/gpu-check-out}
mkdir -p "$out"

# NVRTC: the toolkit's, or the one Python's nvidia packages ship.
for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
  $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, "cuda_nvrtc", "lib") for p in nvidia.__path__))' 2>/dev/null) \
  $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, "cu13", "lib") for p in nvidia.__path__))' 2>/dev/null); do
  if compgen -G "$dir/libnvrtc.so*" >/dev/null; then
    export LD_LIBRARY_PATH="$dir:${LD_LIBRARY_PATH:-}"
    # cudarc looks for libnvrtc.so and a few versioned names.
    if [[ ! -e $dir/libnvrtc.so ]]; then
      mkdir -p /tmp/nvrtc && ln -sf "$(ls "$dir"/libnvrtc.so.* | head -1)" /tmp/nvrtc/libnvrtc.so
      export LD_LIBRARY_PATH="/tmp/nvrtc:$LD_LIBRARY_PATH"
    fi
    break
  fi
done

status=0
run() { # name, command...
  local name=$1
  shift
  echo "== $name: $*"
  "$@" > "$out/$name.txt" 2>&1
  local rc=$?
  cat "$out/$name.txt"
  [[ $rc == 0 ]] || { echo "!! $name failed (exit $rc)"; status=1; }
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; lscpu | grep 'Model name'; } > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
run gpu-tests env PTYCHOSTITCH_GOLDEN=tests/data/golden "$bin/gpu-tests" --nocapture --test-threads 1
site=/tmp/ptychostitch-site
rm -rf "$site"
if python3 -m pip install --quiet --no-index --no-deps --target "$site" "$bin"/wheels/*.whl; then
  run python-gpu-tests env PYTHONPATH="$site" python3 -m pytest -ra -p no:cacheprovider python/tests/test_gpu.py
  run bench-torch env PYTHONPATH="$site" PYTHONUNBUFFERED=1 python3 scripts/bench_gpu.py --json "$out/bench_gpu.json"
else
  echo "!! the wheel in $bin/wheels does not install here: Python tests and the torch benchmark skipped"
  status=1
fi
run validate "$bin/ptychostitch" validate --device cuda --sizes 100,1000,10000
run bench-gpu "$bin/ptychostitch" bench --device cuda --sizes 10000,100000 --runs 10
run bench-cpu "$bin/ptychostitch" bench --sizes 10000,100000 --runs 5
exit $status
