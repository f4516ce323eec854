#!/usr/bin/env bash
# The CPU kernel against the crop-read floor, in one run on this machine (issue 15):
#   the floor (scripts/floor.c: the time to read every kept M×M crop once, 1 and 2 threads),
#   `shift_and_sum` with a reused plan and the one-shot `reassemble_position`, 1 and 2 threads,
#   and their ratios to the floor, at n = 10,000 and 100,000 (or the sizes given).
#   bash scripts/bench_floor.sh [SIZES...]        (SCAN=DIR PYTHON=... adds the file and Dask rows, below)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("${@:-10000}")
[[ $# -eq 0 ]] && sizes=(10000 100000)
mkdir -p target/bench-floor
cc=${CC:-cc}
"$cc" -O3 -march=native -fopenmp scripts/floor.c -o target/bench-floor/floor
cargo build --release --quiet -p ptychostitch --example floor
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores available; $(grep -o -w 'avx512f' /proc/cpuinfo | head -1 || echo 'no avx512f'))"
for n in "${sizes[@]}"; do
    floor=$(OMP_PROC_BIND=close target/bench-floor/floor "$n")
    ours=$(target/release/examples/floor "$n")
    python3 - "$n" "$floor" "$ours" <<'PY'
import json, re, sys
n, floor, ours = int(sys.argv[1]), sys.argv[2], sys.argv[3]
f = {int(t): float(ms) for t, ms in re.findall(r"threads=(\d+): ([0-9.]+) ms", floor)}
print(f"\nn = {n:,}  | threads | floor (ms) | shift_and_sum, plan reused (ms) | ratio | reassemble_position, one shot (ms) | ratio | plan + weights (ms)")
for line in ours.splitlines():
    r = json.loads(line)
    t = r["threads"]
    print(f"            | {t} | {f[t]:.3f} | {r['shift_and_sum_ms']:.3f} | {r['shift_and_sum_ms'] / f[t]:.2f}x | "
          f"{r['reassemble_one_shot_ms']:.3f} | {r['reassemble_one_shot_ms'] / f[t]:.2f}x | {r['plan_and_weights_ms']:.3f}")
PY
done

# With SCAN=DIR (p.npy and o.npy from `ptychostitch make-scan -n N DIR/p.npy DIR/o.npy`), also the
# file rows: the streaming CLI from a cold cache (posix_fadvise DONTNEED first: wall, peak RSS,
# bytes read) and the Dask rows of scripts/bench_dask.py (threaded on the stack in memory, and
# LocalCluster(2 processes) on the file against the CLI), with PYTHON (default python3) being an
# interpreter that has ptychostitch and Dask installed.
if [[ -n ${SCAN:-} ]]; then
    cargo build --release --quiet -p ptychostitch-cli
    python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$SCAN/p.npy"
    /usr/bin/time -f "streaming CLI from a cold cache: %e s wall, %M KB peak RSS, %I blocks of 512 bytes read" \
        target/release/ptychostitch reassemble "$SCAN/p.npy" "$SCAN/o.npy" -M 20 --mode reassemble \
        -o target/bench-floor/streamed.npz > /dev/null
    "${PYTHON:-python3}" scripts/bench_dask.py "$SCAN/p.npy" "$SCAN/o.npy" --cli target/release/ptychostitch --repeat 9
    "${PYTHON:-python3}" scripts/bench_dask.py "$SCAN/p.npy" "$SCAN/o.npy" --in-memory --no-cluster --repeat 9
fi
