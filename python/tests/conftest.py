import os
import pathlib

import numpy as np
import pytest

GOLDEN = pathlib.Path(__file__).resolve().parents[2] / "tests" / "data" / "golden"
CASES = ["basic4", "rand50", "spiral200", "oddM", "negbig", "single", "same", "integer", "nonfinite"]


@pytest.fixture(params=CASES)
def golden(request):
    path = GOLDEN / f"{request.param}.npz"
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    data["name"] = request.param
    return data


@pytest.fixture
def golden_dir():
    return GOLDEN


# --- skips that must not read as passes -------------------------------------------------------
#
# scripts/test.sh builds the whole test environment (PTYCHOSTITCH_TEST_ENV=full): there, a test
# skipped because a framework it needs is missing is a broken environment, not a pass.
# scripts/gpu_check.sh runs where a GPU is lent (PTYCHOSTITCH_REQUIRE_GPU=1): there, a test
# skipped for want of a GPU is a failure.
MISSING_MODULE = ("could not import", "is not installed")
NO_GPU = ("no GPU", "built without the cuda feature")


def _forbidden_skip(longrepr):
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    if os.environ.get("PTYCHOSTITCH_TEST_ENV") == "full" and any(m in reason for m in MISSING_MODULE):
        return f"skipped in the full test environment (PTYCHOSTITCH_TEST_ENV=full): {reason}"
    if os.environ.get("PTYCHOSTITCH_REQUIRE_GPU") == "1" and any(m in reason for m in NO_GPU):
        return f"skipped where a GPU is required (PTYCHOSTITCH_REQUIRE_GPU=1): {reason}"
    return None


def _fail_forbidden_skip(report):
    if report.skipped:
        why = _forbidden_skip(report.longrepr)
        if why is not None:
            report.outcome = "failed"
            report.longrepr = why


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_forbidden_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_forbidden_skip(outcome.get_result())
