"""The describers by name (``saerad build --describer``): the one place that knows them all.

Kept apart from :mod:`saerad.labeling.base`, which every describer imports, so that no describer
module imports its own registry.
"""

from __future__ import annotations

from saerad.errors import ConfigError
from saerad.labeling.base import Describer

DESCRIBERS = ("extractive", "llm")


def make_describer(name: str, **options) -> Describer:
    """``"extractive"`` (offline, deterministic) or ``"llm"`` (OpenAI-compatible endpoint)."""
    if name == "extractive":
        from saerad.labeling.extractive import ExtractiveDescriber

        return ExtractiveDescriber(**options)
    if name == "llm":
        from saerad.labeling.llm import LLMDescriber

        return LLMDescriber(**options)
    raise ConfigError(f"unknown describer {name!r}: use {' or '.join(repr(d) for d in DESCRIBERS)}")
