#!/usr/bin/env bash
# The GPU checks, one prepared run on a machine with an NVIDIA GPU (a lent H100/H200: about 5
# minutes, every step under its own time limit: 500 s at most in all, inside 9 minutes):
#   1. the Rust GPU tests (golden cases and randomised scans bit for bit against the CPU
#      reference; pinned staging; device memory, strided, on a borrowed stream; plans dropped
#      under a running kernel on a non-blocking stream; the backward kernels; the extraction,
#      its backward and the region reassembly for host arrays; a reassembly backward of
#      n = 70,000 patches and an extraction of B·C = 70,000, beyond gridDim.z's 65,535);
#   2. the Python GPU tests (python/tests/test_gpu.py: torch, CuPy and JAX arrays in CUDA memory,
#      in place through DLPack, on the caller's stream, golden bits), from the portable wheel
#      (scripts/build_wheel.sh: abi3, manylinux_2_17) that users install;
#   3. `validate --device cuda` (GPU against the CPU reference on the bench-grid scan);
#   4. scripts/bench_gpu.py: the kernel time by CUDA-graph replay at n = 10^4, 10^5, 10^6, beside
#      torch's index_add_ baseline and the memory floor, with determinism and CPU equality;
#   5. scripts/gpu_training_check.py: every operation's forward and backward from torch CUDA
#      tensors (the device kernels; no host round trip) bit for bit against the same calls on
#      CPU tensors, CuPy's, JAX's (eager and jit) and TensorFlow's, and the training pair's
#      timing at B = 16/64, gridsize 2, N = 64 beside a torch grid_sample pair, with torch's
#      device memory peak; each framework in a process of its own (JAX without
#      preallocation, TensorFlow with memory growth), each with its own limit and verdict;
#   6. `bench --device cuda` and the CPU bench at n = 10^4 and 10^5, in the same run.
# Everything goes to $OUT (or target/gpu-check-out), nine files at most.
#
#   scripts/gpu_check.sh prepare   # here, with Rust: the wheel, the CLI and the Rust GPU test
#                                  # binary into target/gpu-check (carry that folder)
#   scripts/gpu_check.sh           # on the GPU machine; needs no Rust, no network
#
# NVRTC: the backend looks in the Python environment's nvidia/*/lib folders (pip's
# nvidia-cuda-nvrtc for CUDA 12 or 13), in PTYCHOSTITCH_NVRTC_DIRS, in the CUDA toolkit, then on
# the loader's path, and takes the newest major version the driver can run; the binaries get the
# Python environment's folders through PTYCHOSTITCH_NVRTC_DIRS below.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=target/gpu-check

prepare() {
  set -e
  bash scripts/build_wheel.sh
  cargo build --release -p ptychostitch-cli
  local test_bin
  test_bin=$(cargo test --release -p ptychostitch --features cuda --test gpu --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "gpu" and m.get("executable"):
        print(m["executable"])')
  rm -rf "$bin"
  mkdir -p "$bin"
  cp target/release/ptychostitch "$bin/ptychostitch"
  cp "$test_bin" "$bin/gpu-tests"
  cp target/wheels/*.whl "$bin/"
  echo "prepared $bin ($(du -sh "$bin" | cut -f1)): $(ls "$bin" | tr '\n' ' ')"
}

if [[ ${1:-} == prepare ]]; then
  prepare
  exit
fi
if [[ ! -x $bin/ptychostitch ]]; then
  if command -v cargo >/dev/null; then
    prepare || exit 1
  else
    echo "no $bin here and no cargo to make it: run 'scripts/gpu_check.sh prepare' on a machine with Rust and carry $bin"
    exit 1
  fi
fi
out=${OUT:-target/gpu-check-out}
mkdir -p "$out"
started=$(date +%s)

PTYCHOSTITCH_NVRTC_DIRS=$(python3 -c 'import glob, os, sys
print(":".join(sorted({d for p in sys.path for d in glob.glob(os.path.join(p or ".", "nvidia", "*", "lib"))})))' 2>/dev/null)
export PTYCHOSTITCH_NVRTC_DIRS

# On the GPU machine a test skipped for want of a GPU is a failure, not a pass (the Rust GPU
# tests panic and python/tests/conftest.py fails such skips).
export PTYCHOSTITCH_REQUIRE_GPU=1
status=0
run() { # name, seconds, command...
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(( $(date +%s) - started )) s in): $*" | tee -a "$out/summary.txt"
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1
  local rc=$?
  tail -n 40 "$out/$name.txt"
  if [[ $rc != 0 ]]; then
    echo "!! $name failed (exit $rc$([[ $rc == 124 ]] && echo ": over its $limit s"))" | tee -a "$out/summary.txt"
    status=1
  fi
}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  lscpu | grep 'Model name'
  python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
  echo "PTYCHOSTITCH_NVRTC_DIRS=$PTYCHOSTITCH_NVRTC_DIRS"
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

run gpu-tests 90 env PTYCHOSTITCH_GOLDEN=tests/data/golden "$bin/gpu-tests" --nocapture --test-threads 1
site=/tmp/ptychostitch-site
rm -rf "$site"
if python3 -m pip install --quiet --no-index --no-deps --target "$site" "$bin"/*.whl; then
  run python-gpu-tests 70 env PYTHONPATH="$site" python3 -m pytest -ra -p no:cacheprovider python/tests/test_gpu.py python/tests/test_accumulators.py
  # Each framework in a process of its own (its own time limit and verdict line): 160 s at most.
  run training 190 env PYTHONPATH="$site" PYTHONUNBUFFERED=1 python3 scripts/gpu_training_check.py
  run bench-torch 80 env PYTHONPATH="$site" PYTHONUNBUFFERED=1 python3 scripts/bench_gpu.py --json "$out/bench_gpu.json"
else
  echo "!! the wheel in $bin does not install here: Python tests and the torch benchmark skipped" | tee -a "$out/summary.txt"
  status=1
fi
run validate 30 "$bin/ptychostitch" validate --device cuda --sizes 100,1000,10000
run bench-cli 40 sh -c "'$bin/ptychostitch' bench --device cuda --sizes 10000,100000 --runs 10 && '$bin/ptychostitch' bench --sizes 10000,100000 --runs 5"
echo "== done in $(( $(date +%s) - started )) s, status $status" | tee -a "$out/summary.txt"
exit $status
