"""The describers by name (``saerad build --describer``): the one place that knows them all.

Kept apart from :mod:`saerad.features.base`, which every describer imports, so that no describer
module imports its own registry.
"""

from __future__ import annotations

from saerad.errors import ConfigError
from saerad.features.base import Describer

DESCRIBERS = ("extractive", "llm")


def make_describer(name: str, **options) -> Describer:
    """``"extractive"`` (offline, deterministic) or ``"llm"`` (OpenAI-compatible endpoint)."""
    if name == "extractive":
        from saerad.features.extractive import ExtractiveDescriber

        return ExtractiveDescriber(**options)
    if name == "llm":
        from saerad.features.llm import LLMDescriber

        return LLMDescriber(**options)
    raise ConfigError(f"unknown describer {name!r}: use {' or '.join(repr(d) for d in DESCRIBERS)}")
