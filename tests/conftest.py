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


class PeakMemory:
    """Peak resident memory of this process during a ``with`` block, above what it held before.

    Linux only: writing 5 to ``/proc/self/clear_refs`` resets the high-water mark (VmHWM).
    """

    def __init__(self) -> None:
        self.added_mb = 0.0

    @staticmethod
    def _kib(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
        raise RuntimeError(f"{field} not in /proc/self/status")

    def __enter__(self) -> PeakMemory:
        import gc

        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")
        self._base = self._kib("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.added_mb = (self._kib("VmHWM") - self._base) / 1024


@pytest.fixture
def peak_memory():
    """``with peak_memory() as peak: ...`` then ``peak.added_mb``; skips where Linux's counters are absent."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("needs Linux's /proc/self/clear_refs to measure peak memory")
    return PeakMemory
