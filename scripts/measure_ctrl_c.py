"""Ctrl-C at a random moment after the console command starts: how often does it end as the
binary does (its one line, status 130) rather than with a Python traceback or another status?

    python scripts/measure_ctrl_c.py [--runs 60] [--command ptychostitch]

Each run starts `ptychostitch make-scan -n 200000` (long enough to be interrupted in its work)
in a fresh folder, sends SIGINT after a uniform random delay of 10-230 ms, and classifies the
ending. Prints one line per kind of ending and the rate of clean endings."""

import argparse
import collections
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time

LINE = "error: interrupted; no output was changed that was not complete"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--command", default=shutil.which("ptychostitch") or "ptychostitch")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    kinds = collections.Counter()
    examples = {}
    for _ in range(args.runs):
        delay = rng.uniform(0.010, 0.230)
        with tempfile.TemporaryDirectory() as folder:
            child = subprocess.Popen([args.command, "make-scan", "-n", "200000", "p.npy", "o.npy"], cwd=folder,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(delay)
            child.send_signal(signal.SIGINT)
            out, err = child.communicate(timeout=60)
            left = sorted(os.listdir(folder))
        if child.returncode == 130 and err.strip() == LINE and not left:
            kind = "clean: the one line, status 130, no file left"
        elif "Traceback" in err:
            kind = "a Python traceback"
        elif child.returncode == -signal.SIGINT and not err.strip():
            kind = "killed by the signal before any handler (no line, no traceback)"
        else:
            kind = f"other: status {child.returncode}, stderr {err.strip()[-80:]!r}, files {left}"
        kinds[kind] += 1
        examples.setdefault(kind, f"{delay * 1000:.0f} ms")
    for kind, count in kinds.most_common():
        print(f"{count:4d}  {kind}  (e.g. at {examples[kind]})")
    clean = kinds["clean: the one line, status 130, no file left"]
    print(f"clean endings: {clean}/{args.runs} ({100 * clean / args.runs:.0f}%)")


if __name__ == "__main__":
    main()
