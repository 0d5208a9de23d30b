"""Shared test fixtures.

Real data lives in ``../shared/data`` beside the checkout (or ``$SAERAD_SHARED_DATA``); tests that
need it take the ``shared_data`` fixture and skip with a clear message where it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    return Path(os.environ.get("SAERAD_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.cuda`` tests run only where CUDA is; elsewhere they skip, saying where they run."""
    cuda_items = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not cuda_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (the GPU script bench/gpu/run.py runs these)")
    for item in cuda_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = _shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set SAERAD_SHARED_DATA)")
    return root


@pytest.fixture(scope="session")
def fixtures_dir(shared_data: Path) -> Path:
    path = shared_data / "fixtures"
    if not path.is_dir():
        pytest.skip(f"{path} absent")
    return path
