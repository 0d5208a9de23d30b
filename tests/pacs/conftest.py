"""Fixtures of the PACS tests: one real Orthanc per session (see ``orthanc.py``) and a tiny bundle."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from orthanc import PASSWORD, USER, Orthanc, running_orthanc  # noqa: E402
from report_builders import build_tiny_bundle  # noqa: E402


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory) -> Iterator[Orthanc]:
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture(scope="session")
def pacs_settings(orthanc):
    from saerad.pacs import PacsSettings

    return PacsSettings(url=orthanc.dicomweb, username=USER, password=PASSWORD, timeout_s=10, retries=1)


@pytest.fixture(scope="session")
def pacs_reporter(tmp_path_factory):
    from saerad.pipeline import Reporter

    return Reporter.from_bundle(build_tiny_bundle(tmp_path_factory.mktemp("pacs-bundle") / "bundle"))
