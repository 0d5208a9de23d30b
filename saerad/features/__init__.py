"""SAE features: their statistics, descriptions, held-out scores and finding rules (the dictionary).

``build_dictionary`` turns a trained SAE, its training class tokens and their reports into a
:class:`FeatureDictionary` (docs/method.md#feature-dictionary). Describers: ``extractive`` (offline, deterministic,
the default) and ``llm`` (OpenAI-compatible endpoint, settings from ``SAERAD_LLM_*``).
"""

from saerad.features.annotate import build_dictionary
from saerad.features.base import Describer, Description, FeatureEvidence
from saerad.features.describers import make_describer
from saerad.features.dictionary import FeatureDictionary, FeatureStats, TopImage, UnknownFeatureError

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
