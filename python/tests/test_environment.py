"""The test environment itself: what scripts/test.sh installs resolves to versions that work
together. A registry release once split dask from distributed (dask 2026.11.0 beside
distributed 2021.4.1, whose import fails): that must be a failure here, named, not a skip or
a confusing error deep inside a Dask test."""

import importlib
import os

import pytest

FULL = os.environ.get("PTYCHOSTITCH_TEST_ENV") == "full"


def test_distributed_imports_and_matches_dask():
    dask = pytest.importorskip("dask", reason="Dask is not installed (pip install 'ptychostitch[dask]')")
    import distributed  # noqa: F401  (this import failed with the split versions)
    from distributed import Client, LocalCluster  # noqa: F401

    # dask's `distributed` extra pins distributed to dask's own version: the two move together.
    assert distributed.__version__ == dask.__version__, (dask.__version__, distributed.__version__)
    import ptychostitch.dask  # noqa: F401


@pytest.mark.skipif(not FULL, reason="only where scripts/test.sh built the environment (PTYCHOSTITCH_TEST_ENV=full)")
@pytest.mark.parametrize("module", ["tensorflow", "torch", "jax", "dask.array", "distributed", "ml_dtypes"])
def test_the_full_environment_has_every_framework(module):
    importlib.import_module(module)
