"""Packaging metadata that installs without deprecation warnings."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8"))


def test_license_is_an_spdx_expression_not_a_table():
    # setuptools >= 77 warns (and will fail from 2027-02-18) on `license = {text = ...}`.
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    requirement = next(r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools"))
    assert int(re.search(r">=\s*(\d+)", requirement).group(1)) >= 77
