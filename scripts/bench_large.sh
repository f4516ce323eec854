#!/usr/bin/env bash
# Larger than memory, measured in one run on one machine:
#   - the in-memory fast path at n = 100,000 (`ptychostitch bench`, median of 5);
#   - the CLI streaming a memory-mapped .npy at n = 100,000 and n = 1,000,000 (N = 64, M = 20):
#     wall time and peak RSS from /usr/bin/time -v.
# Usage: scripts/bench_large.sh DIR   (DIR gets p100k/o100k and p1m/o1m from `make-scan` if absent;
# the 1M file is 32.8 GB and takes about 5 minutes to write).
set -euo pipefail
dir=${1:?usage: scripts/bench_large.sh DIR}
bin=${PTYCHOSTITCH:-target/release/ptychostitch}
mkdir -p "$dir"
[[ -f $dir/p100k.npy ]] || "$bin" make-scan -n 100000 "$dir/p100k.npy" "$dir/o100k.npy"
[[ -f $dir/p1m.npy ]] || "$bin" make-scan -n 1000000 "$dir/p1m.npy" "$dir/o1m.npy"
echo "== CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB"
echo "== in memory, n = 100,000"
"$bin" bench --sizes 100000 --runs 5
for n in 100k 1m; do
  echo "== streamed from $dir/p$n.npy ($(du -h "$dir/p$n.npy" | cut -f1))"
  /usr/bin/time -v "$bin" reassemble "$dir/p$n.npy" "$dir/o$n.npy" -M 20 -o "$dir/r$n.npz" 2> "$dir/time-$n.txt"
  grep -E "Elapsed|Maximum resident|Major|File system inputs" "$dir/time-$n.txt"
done
