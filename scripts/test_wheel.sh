#!/usr/bin/env bash
# Smoke test of an installed ptychostitch wheel (what the release workflow runs on every wheel
# it builds): the import, the console command's demo, and a golden case (PtychoPINN's own
# TensorFlow output, tests/data/golden/spiral200.npz) bit for bit, from Python and from the
# console command. Needs: python with the wheel installed, `ptychostitch` on PATH, this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python -c "import ptychostitch; print('imported ptychostitch', ptychostitch.__version__, 'from', ptychostitch.__file__)"
ptychostitch demo --out "$work/demo"
test -s "$work/demo/reassembly.png"
ptychostitch reassemble tests/data/golden/spiral200.npz --patches obj --offsets offsets -M 20 -o "$work/golden.npz"
python - "$work/golden.npz" <<'PY'
import sys
import numpy as np
import ptychostitch as ps
golden = np.load("tests/data/golden/spiral200.npz")
want = golden["reassemble_position_old"]  # PtychoPINN's sequential original: what ptychostitch matches bit for bit
got = ps.reassemble_position(golden["obj"], golden["offsets"], M=int(golden["M"]))
assert got.shape == want.shape and np.array_equal(got.view(np.uint32), want.view(np.uint32)), "Python: not PtychoPINN's bits"
cli = np.load(sys.argv[1])["image"]
assert np.array_equal(cli.view(np.uint32), want[..., 0].view(np.uint32)), "console command: not PtychoPINN's bits"
print("golden case spiral200: PtychoPINN's bits from Python and from the console command")
PY
