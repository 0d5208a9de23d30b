"""Deterministic report composer: feature descriptions -> one findings section (docs/method.md#report-composition).

Active features arrive ranked (most salient first) with their descriptions. Each description is split
into statements; the composer then

1. deduplicates: identical statements, and statements with the same condition labels in the same
   region whose wording mostly overlaps or where one says the other and more ("consolidation" and
   "upper lobe consolidation"), become one sentence carrying all their features;
2. resolves contradictions with the rule labeller: a negative statement loses to a positive or
   uncertain one of the same finding, an uncertain one to a positive one, and a "normal" statement
   ("the lungs are clear") loses to an abnormal one about the same region;
3. orders sentences by anatomy (:mod:`saerad.report.anatomy`), then by salience.

Nothing is invented: every output sentence is a description sentence verbatim (capitalised and
punctuated), and it keeps the ids and activations of every feature behind it (a merged sentence
keeps the features of every statement it absorbed).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from saerad.radtext.conditions import NEGATIVE, NO_FINDING, POSITIVE, SUPPORT_DEVICES, UNCERTAIN
from saerad.radtext.phrases import GLOBAL_NORMALITY, NORMALITY
from saerad.report.anatomy import Region, region_of
from saerad.report.schema import FeatureRef, RuleEvidence, Sentence, Status

if TYPE_CHECKING:
    from saerad.radtext import Labeler
    from saerad.report.select import RuleFinding

_STRENGTH = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}
_IGNORED_CONDITIONS = frozenset({NO_FINDING})
_NORMAL = re.compile(NORMALITY)
_GLOBAL_NORMAL = re.compile(GLOBAL_NORMALITY)
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset("a an the of in on at is are was were with and or to there be seen noted again".split())
_SIDES = frozenset({"left", "right", "bilateral", "bibasilar", "unilateral"})
_MERGE_OVERLAP_LABELLED = 0.5
_MERGE_OVERLAP_UNLABELLED = 0.8


@dataclass
class Statement:
    """One candidate sentence and what the composer knows about it."""

    text: str
    features: list[FeatureRef]
    rank: int  # position of its most salient feature in the input
    labels: dict[str, int] = field(default_factory=dict)  # condition -> 1 / 0 / -1, blanks left out
    region: Region = Region.OTHER
    rule: RuleEvidence | None = None  # set when a finding rule wrote it

    @property
    def key(self) -> str:
        return " ".join(_WORD.findall(self.text.lower()))

    @property
    def words(self) -> frozenset[str]:
        return frozenset(_stem(w) for w in _WORD.findall(self.text.lower()) if w not in _STOPWORDS)

    @property
    def abnormal(self) -> bool:
        return any(v in (POSITIVE, UNCERTAIN) and c != SUPPORT_DEVICES for c, v in self.labels.items())

    @property
    def normal(self) -> bool:
        return not self.abnormal and bool(_NORMAL.search(self.text.lower()))

    def absorb(self, other: Statement) -> None:
        """Take over ``other``'s features; the text says the more specific of the two, else the
        more salient one ("Upper lobe consolidation." absorbs "Consolidation.")."""
        if self.words < other.words:
            self.text, self.labels, self.region = other.text, other.labels, other.region
        known = {f.id for f in self.features}
        self.features.extend(f for f in other.features if f.id not in known)
        self.rank = min(self.rank, other.rank)
        self.rule = self.rule or other.rule


@dataclass
class Composition:
    """The composer's output: ordered sentences plus notes on what it dropped or merged."""

    sentences: list[Sentence]
    notes: list[str] = field(default_factory=list)
    composer: str = "deterministic"
    status: Status = "findings"


def split_statements(description: str) -> list[str]:
    """Split a description into sentences, each capitalised and ending with a full stop."""
    try:
        from saerad.radtext import split_sentences

        parts = split_sentences(description)
    except ImportError:  # pragma: no cover - radtext is part of the package
        parts = re.split(r"(?<=[.!?])\s+", description)
    return [_tidy(p) for p in parts if _WORD.search(p.lower())]


def _tidy(text: str) -> str:
    text = " ".join(text.split()).strip()
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _stem(word: str) -> str:
    """Plural to singular, enough for "opacities"/"opacity" and "consolidations"/"consolidation"."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "is", "us")):
        return word[:-1]
    return word


def _overlap(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def compose(
    features: Sequence[FeatureRef], *, rules: Sequence[RuleFinding] = (), labeler: Labeler | None = None
) -> Composition:
    """Compose a findings section from ranked features (most salient first) and fired finding rules.

    Features without a description contribute nothing (they stay in the report's feature list). A
    fired rule is one more statement, carrying its voters; it ranks before the single features.
    ``labeler`` defaults to :func:`saerad.radtext.label_report` (imported here, on first use: it
    compiles its rules on import and the schema should stay cheap to import).
    """
    if labeler is None:
        from saerad.radtext import label_report

        labeler = label_report
    statements = _rule_statements(rules, labeler) + _statements(features, labeler, first_rank=len(rules))
    notes: list[str] = []
    statements, merged = _deduplicate(statements)
    if merged:
        notes.append(f"{merged} duplicate statement(s) merged")
    statements, dropped = _resolve(statements)
    notes.extend(dropped)
    statements.sort(key=lambda s: (s.region, s.rank))
    sentences = [
        Sentence(text=s.text, features=sorted(s.features, key=_salience), rule=s.rule) for s in statements
    ]
    return Composition(sentences=sentences, notes=notes, status=status_of(statements))


def status_of(statements: Sequence[Statement]) -> Status:
    """``nothing_validated`` without sentences, ``normal`` when every sentence is a normal statement."""
    if not statements:
        return "nothing_validated"
    return "normal" if all(s.normal for s in statements) else "findings"


def _salience(ref: FeatureRef) -> tuple[float, float]:
    """Voters by contribution, then any feature by activation (largest first)."""
    return (-(ref.contribution or 0.0), -ref.activation)


def _labels(text: str, labeler: Labeler) -> dict[str, int]:
    return {
        c: int(v)
        for c, v in labeler(text).items()
        if c not in _IGNORED_CONDITIONS and v is not None and v == v  # v == v drops NaN
    }


def _rule_statements(rules: Sequence[RuleFinding], labeler: Labeler) -> list[Statement]:
    out = []
    for rank, fired in enumerate(rules):
        labels = _labels(fired.sentence, labeler)
        out.append(Statement(text=_tidy(fired.sentence), features=list(fired.voters), rank=rank, labels=labels,
                             region=region_of(fired.sentence, labels), rule=fired.evidence))
    return out


def _statements(features: Sequence[FeatureRef], labeler: Labeler, first_rank: int = 0) -> list[Statement]:
    out = []
    for rank, ref in enumerate(features, first_rank):
        for text in split_statements(ref.description or ""):
            labels = _labels(text, labeler)
            out.append(Statement(text=text, features=[ref], rank=rank, labels=labels, region=region_of(text, labels)))
    return out


def _deduplicate(statements: list[Statement]) -> tuple[list[Statement], int]:
    kept: list[Statement] = []
    merged = 0
    for stmt in sorted(statements, key=lambda s: s.rank):
        target = next((k for k in kept if _same(k, stmt)), None)
        if target is None:
            kept.append(stmt)
        else:
            target.absorb(stmt)
            merged += target.key != stmt.key  # identical text from two features is not news
    return kept, merged


def _same(a: Statement, b: Statement) -> bool:
    if a.key == b.key:
        return True
    if a.region != b.region or a.labels != b.labels:
        return False
    sides_a, sides_b = a.words & _SIDES, b.words & _SIDES
    if sides_a and sides_b and sides_a != sides_b:  # "left" and "right" findings are two findings
        return False
    if a.words and b.words and (a.words <= b.words or b.words <= a.words):  # one says the other and more
        return True
    threshold = _MERGE_OVERLAP_LABELLED if a.labels else _MERGE_OVERLAP_UNLABELLED
    return _overlap(a.words, b.words) >= threshold


def _resolve(statements: list[Statement]) -> tuple[list[Statement], list[str]]:
    """Drop statements contradicted by a stronger statement of the same finding or region."""
    best: dict[str, int] = {}
    for s in statements:
        for condition, value in s.labels.items():
            best[condition] = max(best.get(condition, 0), _STRENGTH[value])
    abnormal_regions = {s.region for s in statements if s.abnormal}
    any_abnormal = bool(abnormal_regions)

    kept, notes = [], []
    for s in statements:
        negatives = [c for c, v in s.labels.items() if v == NEGATIVE and best[c] > _STRENGTH[NEGATIVE]]
        uncertain = [c for c, v in s.labels.items() if v == UNCERTAIN]
        hedged = (
            uncertain
            if uncertain and POSITIVE not in s.labels.values() and all(best[c] == _STRENGTH[POSITIVE] for c in uncertain)
            else []
        )
        lost = sorted(set(negatives) | set(hedged))
        if lost:
            notes.append(f"a statement about {', '.join(lost)} dropped: a stronger statement of the same finding")
        elif s.normal and (s.region in abnormal_regions or (any_abnormal and _GLOBAL_NORMAL.search(s.text.lower()))):
            notes.append(f"a normal statement ({s.region.name.lower()}) dropped: an abnormal finding in the same region")
        else:
            kept.append(s)
    return kept, notes
