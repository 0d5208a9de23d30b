"""The offline, deterministic describer: the statement most over-represented in a feature's top
reports against the training corpus (docs/method.md#feature-dictionary).

First, though, the label-driven path (:mod:`saerad.features.label_driven`, run by the builder with
the activations over ALL training reports): a feature significantly enriched for a labeller
condition is described by that condition (an over-represented phrase asserting exactly it, else a
canonical statement such as "Pleural effusion."). The phrase search below describes the rest.

Candidates are the statements of :mod:`saerad.features.text` (normalised word n-grams, clauses and
short sentences, negation kept in the key). For a feature with ``K`` top reports (one per patient) a
candidate found in ``a`` of them and in ``c`` of the ``N`` corpus reports scores

    score = p_top * log(p_top / p_bg),   p_top = a / K,   p_bg = (c + 1) / (N + 2)

i.e. its share of the feature's reports times how much more often it appears there than anywhere:
a statement specific to two odd reports loses to one that most top reports carry, and a statement
every report carries ("no pneumothorax") scores ~0. A candidate must appear in at least
``max(min_support, min_support_fraction * K)`` top reports and be ``min_ratio`` times more frequent
there than in the corpus, and the binomial chance of seeing it in that many top reports at its
corpus rate must be below ``max_pvalue`` (so a random set of reports gets no description). Among the
``shortlist`` best of these, the best one that carries a CheXpert condition per the labeller wins;
without one, the best statement about the chest (a small radiology lexicon: "sternotomy",
"lungs are clear") does; narrative ("presented after", "was admitted") never does. Single words
count half ("effusion" reads worse than "pleural effusion"). Ties go to the alphabetically first text.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from scipy.stats import binom

from saerad.features.base import Describer, Description, FeatureEvidence
from saerad.features.text import MAX_NGRAM, MAX_WORDS, Splitter, report_keys, truncate_words
from saerad.radtext import Labeler, label_report

log = logging.getLogger(__name__)

_IGNORED = frozenset({"No Finding"})
# A statement without a CheXpert condition must at least speak about the chest: case notes are full
# of over-represented narrative ("presented after", "was admitted") that makes no report sentence.
# A single word must name a finding by itself ("sternotomy"), not just a place or thing ("lobes").
_SPECIFIC = (
    r"sternotomy|granulomas?|nodules?|emphysema|hyperinflation|hyperexpansion|fibrosis|scarring|infiltrates?|"
    r"kyphosis|scoliosis|pacemaker|catheter|bronchiectasis|osteopenia|osteophytes?|eventration|cardiomegaly"
)
_RADIOLOGY = re.compile(
    rf"\b({_SPECIFIC}|normal|clear|unremarkable|intact|elevat\w*|thicken\w*|prominen\w*|tortu\w*|calcifi\w*|"
    r"degenerative|ground glass|lungs?|pulmonary|heart|cardiac|cardio\w*|mediastin\w*|hil(?:a|ar|um)|pleura\w*|"
    r"diaphragm\w*|costophrenic|trachea\w*|aort\w*|vascul\w*|ribs?|spine|osseous|bony|bones?|clavicle\w*|"
    r"opacit\w*|airspace|interstitial|alveolar|markings|silhouette|contours?|abnormalit\w*|lobes?|lobar|"
    r"basilar|bases|apex|apical|perihilar|bronch\w*|tube|line)\b"
)
_SPECIFIC_WORD = re.compile(rf"^(?:{_SPECIFIC})$")


@dataclass
class ExtractiveConfig:
    min_support: int = 3
    min_support_fraction: float = 0.2
    min_ratio: float = 2.0
    max_pvalue: float = 1e-3  # binomial tail of seeing >= a of K at the corpus rate: chance agreement fails
    single_word_weight: float = 0.5
    shortlist: int = 40
    max_words: int = MAX_WORDS
    max_ngram: int = MAX_NGRAM
    cache_reports: int = 8192  # statement sets kept in memory (reports recur across features)
    # Label-driven path (saerad.features.label_driven): a feature whose activation over all training
    # reports tracks a labeller condition is described by that condition, before any phrase search.
    label_driven: bool = True
    label_fdr: float = 0.05
    label_min_auroc: float = 0.6
    label_min_odds_ratio: float = 2.0
    label_min_positives: int = 5
    label_refine: bool = True  # prefer an over-represented phrase stating exactly that condition


@dataclass(frozen=True)
class _Candidate:
    key: str
    support: int
    corpus_count: int
    log_ratio: float
    score: float


class ExtractiveDescriber(Describer):
    name = "extractive"

    def __init__(
        self, *, labeler: Labeler | None = None, splitter: Splitter | None = None, **options
    ) -> None:
        self.cfg = ExtractiveConfig(**options)
        self._labeler = labeler
        self._splitter = splitter
        self._label_cache: dict[str, bool] = {}
        self._condition_cache: dict[str, frozenset[str]] = {}

    def config(self) -> dict:
        return {"name": self.name, **asdict(self.cfg)}

    @property
    def labeler(self) -> Labeler:
        if self._labeler is None:
            self._labeler = label_report
        return self._labeler

    def _keys(self, text: str) -> frozenset[str]:
        return report_keys(
            text, splitter=self._splitter, max_ngram=self.cfg.max_ngram, max_words=self.cfg.max_words
        )

    def _required(self, k: int) -> int:
        return max(self.cfg.min_support, math.ceil(self.cfg.min_support_fraction * k))

    def label_config(self):
        """The label-driven test's settings, or None when that path is off (the builder asks)."""
        from saerad.features.label_driven import LabelDrivenConfig

        if not self.cfg.label_driven:
            return None
        return LabelDrivenConfig(
            fdr=self.cfg.label_fdr, min_auroc=self.cfg.label_min_auroc,
            min_odds_ratio=self.cfg.label_min_odds_ratio, min_positives=self.cfg.label_min_positives
        )

    def describe_many(
        self,
        evidence: Sequence[FeatureEvidence],
        *,
        corpus: Sequence[str] = (),
        progress: bool = False,
        matches: Mapping | None = None,
    ) -> list[Description]:
        """``matches``: feature id -> :class:`~saerad.features.label_driven.ConditionMatch` from the
        label-driven test; those features are described by their condition (a phrase of the top
        reports that states exactly it, else the canonical statement), the rest by phrases."""
        from tqdm.auto import tqdm

        matches = matches or {}

        # Bounded cache: top reports recur across features, but at MIMIC scale (49k features x 16
        # reports) keeping every report's statements would cost gigabytes.
        keys_of = lru_cache(maxsize=self.cfg.cache_reports)(self._keys)
        supports: list[Counter[str]] = []
        sizes: list[int] = []
        wanted: set[str] = set()
        for ev in tqdm(evidence, desc="top-report statements", unit="feature", disable=not progress):
            # The builder hands one report per patient; the same text from two patients (a normal
            # template) is two pieces of evidence, so texts are not deduplicated here.
            reports = [r for r in ev.reports if r and r.strip()]
            need = self._required(len(reports))
            support = Counter(k for r in reports for k in keys_of(r))
            support = Counter({k: a for k, a in support.items() if a >= need})
            supports.append(support)
            sizes.append(len(reports))
            wanted.update(support)
        # Background counts only for statements some feature could use: one pass over the corpus,
        # memory bounded by the candidates, not by every n-gram of every report.
        background = Counter(t for t in corpus if t and t.strip())
        if not background:
            background = Counter({r: 1 for ev in evidence for r in ev.reports if r and r.strip()})
        df: Counter[str] = Counter()
        for text, times in tqdm(background.items(), desc="corpus statements", unit="report", disable=not progress):
            for k in keys_of(text) & wanted:
                df[k] += times
        n = sum(background.values())
        return [
            self._by_condition(ev.feature_id, matches[ev.feature_id], support, k, df, n)
            if ev.feature_id in matches
            else self._select(ev.feature_id, support, k, df, n)
            for ev, support, k in zip(evidence, supports, sizes)
        ]

    def _by_condition(self, fid: int, match, support: Counter[str], k: int, df: Counter[str], n: int) -> Description:
        from saerad.features.label_driven import CANONICAL

        info = {
            "path": "label",
            "condition": match.condition,
            "train_auroc": round(match.auroc, 4),
            "train_odds_ratio": round(match.odds_ratio, 3),
            "train_pvalue": float(f"{match.pvalue:.3g}"),
            "train_positives": match.n_positive,
            "train_units": match.n,
        }
        text = CANONICAL[match.condition]
        if self.cfg.label_refine and support and match.condition in CANONICAL and match.condition != "No Finding":
            min_lr = math.log(self.cfg.min_ratio)
            canonical = text.lower()
            best = None
            for key, a in support.items():
                c = max(df.get(key, 0), a)
                lr = math.log((a / k) / ((c + 1) / (n + 2)))
                if lr < min_lr or key in canonical or self._conditions_of(key) != {match.condition}:
                    continue  # a piece of the canonical sentence says less than the sentence
                weight = 1.0 if " " in key else self.cfg.single_word_weight
                cand = (-(weight * a / k * lr), key)
                if best is None or cand < best:
                    best = cand
            if best is not None:
                text = truncate_words(best[1], self.cfg.max_words)
                info["refined"] = True
        return Description(fid, text, info)

    def _conditions_of(self, key: str) -> frozenset[str]:
        """Conditions a statement asserts (positive or uncertain), No Finding aside."""
        hit = self._condition_cache.get(key)
        if hit is None:
            labels = self.labeler(key)
            hit = frozenset(c for c, v in labels.items() if c not in _IGNORED and v is not None and v == v and int(v) in (1, -1))
            self._condition_cache[key] = hit
        return hit

    def _select(self, fid: int, support: Counter[str], k: int, df: Counter[str], n: int) -> Description:
        if k < self._required(k) or not support:
            return Description(fid, None, {"n_reports": k, "reason": "no statement with enough support"})
        min_lr = math.log(self.cfg.min_ratio)
        keys = sorted(support)
        a = np.array([support[key] for key in keys], dtype=np.int64)
        c = np.maximum(np.array([df.get(key, 0) for key in keys], dtype=np.int64), a)
        p_top, p_bg = a / k, (c + 1) / (n + 2)
        lr = np.log(p_top / p_bg)
        pvalue = binom.sf(a - 1, k, p_bg)
        ok = (lr >= min_lr) & (pvalue <= self.cfg.max_pvalue)
        # A lone word reads worse than a statement ("effusion" vs "pleural effusion"): half weight.
        weight = np.array([1.0 if " " in key else self.cfg.single_word_weight for key in keys])
        cands = [
            _Candidate(keys[i], int(a[i]), int(c[i]), float(lr[i]), float(weight[i] * p_top[i] * lr[i]))
            for i in np.flatnonzero(ok)
        ]
        cands.sort(key=lambda c: (-c.score, c.key))
        if not cands:
            return Description(fid, None, {"n_reports": k, "reason": "nothing over-represented"})
        chosen = next((c for c in cands[: self.cfg.shortlist] if self._carries_finding(c.key)), None)
        if chosen is None:  # no condition: a statement about the chest ("lungs are clear", "sternotomy")
            chosen = next((c for c in cands if _about_the_chest(c.key)), None)
        if chosen is None:
            return Description(fid, None, {"n_reports": k, "reason": "no statement about the chest over-represented"})
        info = {
            "n_reports": k,
            "support": chosen.support,
            "corpus_count": chosen.corpus_count,
            "corpus_size": n,
            "log_ratio": round(chosen.log_ratio, 4),
        }
        return Description(fid, truncate_words(chosen.key, self.cfg.max_words), info)

    def _carries_finding(self, key: str) -> bool:
        hit = self._label_cache.get(key)
        if hit is None:
            labels = self.labeler(key)
            hit = any(v is not None and v == v for c, v in labels.items() if c not in _IGNORED)
            self._label_cache[key] = hit
        return hit


def _about_the_chest(key: str) -> bool:
    if " " in key:
        return _RADIOLOGY.search(key) is not None
    return _SPECIFIC_WORD.match(key) is not None
