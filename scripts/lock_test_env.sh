#!/usr/bin/env bash
# Refreshes python/constraints-test.txt: the exact versions scripts/test.sh installs the test
# environment at. A fresh virtual environment resolves pyproject.toml's [test] extra (and NumPy,
# the package's one dependency) at today's newest compatible releases; `pip freeze` of it is
# the new file. Run it when you want newer frameworks, then run scripts/test.sh: a release of
# any of them can then change CI only through a commit of this file, never overnight.
#
#   bash scripts/lock_test_env.sh     # about 4 GB of downloads the first time
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/lock-venv
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# The extra's requirements, read from pyproject.toml (the package itself is not installed: it
# is what the tests test, from the wheel).
mapfile -t requirements < <("$venv/bin/python" - <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for requirement in project["dependencies"] + project["optional-dependencies"]["test"]:
    print(requirement)
PY
)
echo "== resolving: ${requirements[*]}"
"$venv/bin/python" -m pip install --progress-bar off "${requirements[@]}" | grep -E '^(Collecting|Successfully|ERROR)'
{
    echo "# The test environment's exact versions, for scripts/test.sh (pip install --constraint)."
    echo "# Made by scripts/lock_test_env.sh on $(date -u +%Y-%m-%d) with Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())') on $(uname -m) Linux."
    "$venv/bin/python" -m pip freeze --all --exclude pip --exclude setuptools --exclude wheel
} > python/constraints-test.txt
echo "== wrote python/constraints-test.txt ($(grep -vc '^#' python/constraints-test.txt) packages)"
