"""Which SAE features of one image speak in its report, alone or by voting.

Every feature with activation above ``threshold`` is *active* and listed in the report, ranked by
its strength, its contribution to the class token ``f_i * ||W_dec[i]||`` (each listed feature
carries it, so the order can be checked): without a decoder-norm constraint the
raw activation alone says little about how much of the image representation a feature carries.

Findings come from two sources:

- finding rules (:mod:`saerad.features.rules`): a usable rule whose active voters' evidence reaches
  its threshold writes its sentence, carrying those voters. A condition with a usable rule speaks
  only through it: its single-feature descriptions are not written on their own.
- single features: every other active feature that is *usable* (described, alive, description
  score above chance) writes its own description. ``top_k`` keeps the ``k`` strongest.

Normal or abnormal: when the normal rule fires (its threshold is set for balanced errors on normal
and abnormal images, :mod:`saerad.features.rules`) and it is more confident than every finding rule
that fired (confidence = evidence above a rule's balanced cut, in the logit units all rules share),
the report states normality and nothing else; otherwise the findings are written and the normal
statement is not. What either side held back is named in the selection's notes. Without this, the
finding rules' F1-optimal thresholds would put a finding into most normal images' reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from saerad.errors import ConfigError
from saerad.radtext.conditions import NO_FINDING
from saerad.report.schema import FeatureRef, RuleEvidence

#: The selection options a caller may set, and their ranges: every entry point (library, CLI,
#: service) checks them with :func:`check_selection_options`, and the service's OpenAPI bounds are
#: these numbers.
TOP_K_MAX = 100_000
THRESHOLD_MAX = 1e9


def check_selection_options(top_k: int | None = None, threshold: float | None = None) -> None:
    """Refuse a ``top_k`` or ``threshold`` outside its range (``None`` means the bundle's default)."""
    if top_k is not None and not 0 <= top_k <= TOP_K_MAX:
        raise ConfigError(f"top_k must be between 0 and {TOP_K_MAX:,}, got {top_k}")
    if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= THRESHOLD_MAX):
        raise ConfigError(
            f"threshold must be a finite activation between 0 and {THRESHOLD_MAX:g}, got {threshold!r}"
        )


@dataclass(frozen=True)
class RuleFinding:
    """A finding rule that fired on one image: its sentence, the evidence, the active voters and
    its confidence (evidence above the rule's balanced cut)."""

    sentence: str
    evidence: RuleEvidence
    voters: list[FeatureRef]
    confidence: float = 0.0


@dataclass(frozen=True)
class Selection:
    active: list[FeatureRef]  # every active feature, by strength (largest first, ties by id)
    chosen: list[FeatureRef]  # features that write their own description, same order
    rules: list[RuleFinding] = field(default_factory=list)  # fired rules, strongest evidence margin first
    notes: list[str] = field(default_factory=list)


class FeatureSelector:
    """Precomputed per-feature facts (description, usability, decoder norm) for fast selection."""

    def __init__(
        self,
        descriptions: Sequence[str | None],
        usable: Sequence[bool],
        scores: Sequence[float | None],
        decoder_norms: np.ndarray,
        rules: Sequence = (),
    ) -> None:
        n = len(descriptions)
        if not (len(usable) == len(scores) == n == len(decoder_norms)):
            raise ValueError("descriptions, usable, scores and decoder norms must have one entry per feature")
        self.descriptions = [d or "" for d in descriptions]
        self.usable = np.asarray(usable, dtype=bool)
        self.scores = list(scores)
        self.decoder_norms = np.asarray(decoder_norms, dtype=np.float64)
        self.rules = [r for r in rules if r.usable]
        bad = [i for r in self.rules for i in r.weights if not 0 <= i < n]
        if bad:
            raise ValueError(f"a finding rule names feature {bad[0]}, outside 0..{n - 1}")
        # A condition with a usable rule speaks only through it: a description that asserts it is
        # not written on its own (whatever its wording).
        ruled = {r.condition for r in self.rules}
        asserted = {d: asserted_conditions(d) for d in set(self.descriptions)} if ruled else {}
        self.speaks_alone = self.usable & np.array(
            [not (asserted.get(d, set()) & ruled) for d in self.descriptions], dtype=bool
        )

    @classmethod
    def from_parts(cls, dictionary, sae) -> FeatureSelector:
        """From a ``FeatureDictionary`` and an SAE (decoder rows are feature directions)."""
        feats = sorted(dictionary.features, key=lambda f: f.id)
        norms = sae.W_dec.detach().float().norm(dim=1).cpu().numpy()
        return cls(
            [f.description for f in feats],
            [bool(f.usable and f.description) for f in feats],
            [f.description_score for f in feats],
            norms,
            getattr(dictionary, "rules", ()),
        )

    def select(
        self,
        activations: np.ndarray,
        *,
        top_k: int | None = None,
        threshold: float = 0.0,
        usable_only: bool = True,
    ) -> Selection:
        """Rank one image's features ``activations`` (shape ``(d_sae,)``)."""
        f = np.asarray(activations, dtype=np.float64).reshape(-1)
        if f.shape[0] != self.decoder_norms.shape[0]:
            raise ValueError(f"expected {self.decoder_norms.shape[0]} activations, got {f.shape[0]}")
        idx = np.flatnonzero(f > threshold)
        strength = f[idx] * self.decoder_norms[idx]
        idx = idx[np.lexsort((idx, -strength))]  # strongest first, ties by id
        active = [self.ref(int(i), float(f[i])) for i in idx]
        if usable_only:
            chosen = [r for r in active if self.speaks_alone[r.id]]
        else:
            chosen = [r for r in active if r.description]
        if top_k is not None:
            chosen = chosen[: max(0, top_k)]
        fired = self.fired(f, threshold) if usable_only else []
        normal = [r for r in fired if r.evidence.condition == NO_FINDING]
        findings = [r for r in fired if r.evidence.condition != NO_FINDING]
        if not normal:
            return Selection(active=active, chosen=chosen, rules=fired)
        if findings and max(r.confidence for r in findings) > normal[0].confidence:
            note = "the normal rule fired but a finding rule was more confident: the normal statement was not written"
            return Selection(active=active, chosen=chosen, rules=findings, notes=[note])
        held_back = sorted({r.evidence.condition for r in findings} | {r.description for r in chosen})
        notes = [f"the normal rule was the most confident, so these were not written: {', '.join(held_back)}"] if held_back else []
        return Selection(active=active, chosen=[], rules=normal, notes=notes)

    def fired(self, f: np.ndarray, threshold: float = 0.0) -> list[RuleFinding]:
        """The usable rules whose evidence on activations ``f`` reaches their threshold, with at
        least one active voter for the finding; the most confident first."""
        out = []
        for rule in self.rules:
            voters = [(i, c) for i, c in rule.voters(f) if f[i] > threshold]
            evidence = float(sum(c for _, c in voters))
            if evidence >= rule.threshold and any(c > 0 for _, c in voters):
                refs = [self.ref(i, float(f[i])).model_copy(update={"contribution": round(c, 6)}) for i, c in voters]
                out.append(RuleFinding(
                    rule.sentence,
                    RuleEvidence(condition=rule.condition, evidence=round(evidence, 6),
                                 threshold=round(rule.threshold, 6), held_out_auroc=rule.held_out_auroc),
                    refs,
                    rule.confidence(evidence),
                ))
        out.sort(key=lambda r: -r.confidence)
        return out

    def ref(self, i: int, activation: float) -> FeatureRef:
        return FeatureRef(
            id=i,
            activation=round(activation, 6),
            strength=round(activation * float(self.decoder_norms[i]), 6),
            description=self.descriptions[i],
            score=self.scores[i],
            usable=bool(self.usable[i]),
        )


def asserted_conditions(text: str) -> set[str]:
    """Conditions a description asserts (positive or uncertain); No Finding for a normal statement."""
    if not text:
        return set()
    from saerad.radtext import label_report

    labels = label_report(text)
    found = {c for c, v in labels.items() if c != NO_FINDING and v in (1, -1)}
    if not found and labels.get(NO_FINDING) == 1 and labels.get("Support Devices") not in (1, -1):
        found.add(NO_FINDING)
    return found
