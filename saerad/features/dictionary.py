"""The feature dictionary: what each SAE feature fires on and what it means (docs/method.md#feature-dictionary).

A JSON file (pydantic v2), written atomically. The composer reads ``description``/``usable``, the
diffusion stage reads ``quantiles`` for "add" interventions, the service lists and searches it.
Bundles shipped in the repo hold only image ids, statistics and short descriptions: call
:meth:`FeatureDictionary.without_report_text` before saving one.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from saerad.errors import BundleError, ConfigError
from saerad.features.rules import FindingRule
from saerad.fileio import atomic_write_text

QUANTILE_KEYS: tuple[str, ...] = ("0.5", "0.9", "0.95", "0.99")
# Bumped whenever what a dictionary holds, or how it is computed, changes: a build's dictionary
# stage re-runs on a new version instead of keeping a stale file.
DICTIONARY_VERSION = 4
_TOKEN = re.compile(r"[a-z0-9]+")


class UnknownFeatureError(ConfigError, KeyError):
    """A feature id that the dictionary does not have (also a KeyError, for mapping-style callers)."""

    code = "unknown_feature"
    http_status = 404

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TopImage(BaseModel):
    image_id: str
    activation: float
    report: str | None = None  # optional: shipped bundles must not hold report text


class FeatureStats(BaseModel):
    id: int
    frequency: float  # share of training images where the feature is active (> 0)
    mean_activation: float  # mean over ACTIVE values (how strong it is when on)
    max_activation: float
    quantiles: dict[str, float]  # keys "0.5", "0.9", "0.95", "0.99" over ACTIVE values
    top_images: list[TopImage]
    labels: dict[str, int]  # CheXpert-style labels shared by the top reports (1 / 0 / -1)
    description: str | None
    description_score: float | None  # held-out AUROC
    usable: bool  # False when dead, undescribed, or score at chance


class FeatureDictionary(BaseModel):
    """Every feature's statistics and description, and the finding rules that let features vote
    (:mod:`saerad.features.rules`; empty for dictionaries built without labels)."""

    features: list[FeatureStats]
    describer: str
    meta: dict
    rules: list[FindingRule] = Field(default_factory=list)

    def __len__(self) -> int:
        return len(self.features)

    def get(self, feature_id: int) -> FeatureStats:
        """The feature with this id. Features are stored in id order, so this is O(1); a scan covers
        a hand-edited file whose order differs."""
        try:
            fid = int(feature_id)
        except (TypeError, ValueError):
            fid = None
        if fid is not None:
            if 0 <= fid < len(self.features) and self.features[fid].id == fid:
                return self.features[fid]
            for f in self.features:
                if f.id == fid:
                    return f
        raise UnknownFeatureError(
            f"feature {feature_id!r} is not in the dictionary (ids 0..{len(self.features) - 1})"
        )

    def search(self, query: str, limit: int = 20) -> list[FeatureStats]:
        """Features whose description (or shared label names) match ``query``, best first.

        Each query word scores 1 when it is a word of the description, 0.5 when it is part of one
        ("effus" -> "effusion") or of a shared label's name; the whole query appearing verbatim adds
        1. Ties: usable first, then higher description score, then lower id. An empty query lists
        described features (usable first).
        """
        words = _TOKEN.findall(query.lower())
        phrase = " ".join(words)
        ranked = []
        for f in self.features:
            if f.description is None:
                continue
            desc = " ".join(_TOKEN.findall(f.description.lower()))
            if not words:
                ranked.append((0.0, f))
                continue
            dwords = set(desc.split())
            label_words = set(_TOKEN.findall(" ".join(f.labels).lower()))
            score = 0.0
            for w in words:
                if w in dwords:
                    score += 1.0
                elif len(w) >= 3 and (any(w in d for d in dwords) or w in label_words):
                    score += 0.5
            if phrase and f" {phrase} " in f" {desc} ":
                score += 1.0
            if score > 0:
                ranked.append((score, f))
        ranked.sort(key=lambda sf: (-sf[0], not sf[1].usable, -(sf[1].description_score or 0.0), sf[1].id))
        return [f for _, f in ranked[: max(limit, 0)]]

    def without_report_text(self) -> FeatureDictionary:
        """A copy whose top images carry only ids and activations (safe to ship)."""
        features = [
            f.model_copy(update={"top_images": [t.model_copy(update={"report": None}) for t in f.top_images]})
            for f in self.features
        ]
        return FeatureDictionary(features=features, describer=self.describer, meta=dict(self.meta), rules=self.rules)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.model_dump_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureDictionary:
        path = Path(path)
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise BundleError(f"feature dictionary {path} not found") from None
        except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"feature dictionary {path} is invalid: {str(exc)[:300]}") from None
