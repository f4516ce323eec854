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
