"""Automated interpretability of SAE features: statistics, descriptions, held-out scores.

``build_dictionary`` turns a trained SAE, its training class tokens and their reports into a
:class:`FeatureDictionary` (docs/method.md#feature-dictionary). Describers: ``extractive`` (offline, deterministic,
the default) and ``llm`` (OpenAI-compatible endpoint, settings from ``SAERAD_LLM_*``).
"""

from saerad.labeling.base import Describer, Description, FeatureEvidence
from saerad.labeling.describers import make_describer
from saerad.labeling.dictionary import (
    FeatureDictionary,
    FeatureStats,
    TopImage,
    UnknownFeatureError,
    build_dictionary,
)

__all__ = [
    "Describer",
    "Description",
    "FeatureDictionary",
    "FeatureEvidence",
    "FeatureStats",
    "TopImage",
    "UnknownFeatureError",
    "build_dictionary",
    "make_describer",
]
