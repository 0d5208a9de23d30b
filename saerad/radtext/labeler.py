"""CheXpert-style rule labeller: report text -> 1 / 0 / -1 / blank for the 14 conditions.

How a report is labelled
------------------------
1. The text is lower-cased and split into sentences (:func:`saerad.radtext.text.split_sentences`).
2. In each sentence one combined regular expression finds the mentions
   (:data:`saerad.radtext.phrases.MENTION_RULES`) and another the triggers
   (:data:`saerad.radtext.phrases.TRIGGERS`).
3. Each mention is classified by the triggers whose scope covers it, in CheXpert's order:
   negation-phrased uncertainty ("cannot exclude X", "no new X") -> uncertain; else negation
   ("no X", "X has resolved") -> negative; else uncertainty ("possible X", "X?", "X versus Y",
   "X or Y") -> uncertain; else the mention's own default (positive; uncertain for hedged
   mentions such as "vascular congestion"). A trigger *before* the mention reaches forward to the
   next scope terminator (";", "but", "however", ", with", "and the" ...); a trigger *after* it
   reaches back to the previous terminator or clause verb ("is", "are", "has" ...), so "no pleural
   effusion or pneumothorax" negates both, while in "the heart is enlarged and effusion is not
   seen" only the effusion is negated. A strong uncertainty trigger ("possible", "may") ends a
   negation's scope: "no pneumothorax, possible small effusion".
4. Anatomy mentions ("heart size", "mediastinum") take the label of the nearest descriptor in
   their clause: normal -> 0, enlarged/widened -> 1, borderline/stable -> -1.
5. A report aggregates its mentions per condition: positive beats uncertain beats negative; no
   mention -> blank. "Heart failure"/"CHF" adds an uncertain Cardiomegaly (as CheXpert does).
   No Finding is 1 when nothing but Support Devices is positive or uncertain and no other
   abnormality ("emphysema", "scoliosis", ...) is asserted; otherwise blank. It is never 0.
   An empty report is blank everywhere.

Its F1 is "CheXpert-rule F1", never CheXbert F1. Speed: well over 500 reports/s on one core
(``bench/bench_labeler.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from saerad.radtext import phrases
from saerad.radtext.conditions import (
    CONDITIONS,
    INDEX,
    NEGATIVE,
    NO_FINDING,
    POSITIVE,
    SUPPORT_DEVICES,
    UNCERTAIN,
)
from saerad.radtext.text import split_sentences

# What every stage that labels text takes: report text -> {condition: 1 / 0 / -1 / None}.
# :func:`label_report` is the one saerad uses; tests pass small hand-written ones.
Labeler = Callable[[str], Mapping[str, int | None]]

# ---------------------------------------------------------------------------------------------
# Compiled patterns
# ---------------------------------------------------------------------------------------------

_RULES = phrases.MENTION_RULES
_MENTION_RE = re.compile(r"\b(?:" + "|".join(f"(?P<r{i}>{rule.pattern})" for i, rule in enumerate(_RULES)) + r")\b")
_RULE_BY_GROUP = {f"r{i}": rule for i, rule in enumerate(_RULES)}


def _trigger_alternative(kind: str, pattern: str) -> str:
    # Word-like alternatives need word boundaries; punctuation ones (";", "?", ", with") must not.
    words, punct = [], []
    for alt in _split_top_level(pattern):
        (punct if not re.match(r"[\w(]", alt) else words).append(alt)
    parts = []
    if words:
        parts.append(r"\b(?:" + "|".join(words) + r")\b")
    parts.extend(punct)
    return f"(?P<{kind}>" + "|".join(parts) + ")"


def _split_top_level(pattern: str) -> list[str]:
    """Split a regex on its top-level ``|`` (not inside groups or classes)."""
    out, depth, in_class, start, i = [], 0, False, 0, 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            out.append(pattern[start:i])
            start = i + 1
        i += 1
    out.append(pattern[start:])
    return [alt for alt in out if alt]


def plain_mentions() -> dict[str, tuple[str, ...]]:
    """Each condition's mention phrases that are plain words (``"pacemaker"`` -> Support Devices).

    The literal alternatives of the finding and hedged rules (a trailing optional plural dropped), so
    keyword search can map a word to the condition the labeller would read it as, without running
    the labeller on the query.
    """
    out: dict[str, set[str]] = {}
    for rule in _RULES:
        if rule.kind not in ("finding", "hedged") or len(rule.conditions) != 1:
            continue
        for alt in _split_top_level(rule.pattern):
            alt = re.sub(r"(?<=\w)s\?$", "", alt)
            if re.fullmatch(r"[a-z][a-z' -]*", alt):
                out.setdefault(rule.conditions[0], set()).add(alt)
    return {condition: tuple(sorted(words)) for condition, words in sorted(out.items())}


_TRIGGER_RE = re.compile("|".join(_trigger_alternative(kind, pattern) for kind, pattern in phrases.TRIGGERS))
_NEG_BREAKING = re.compile(r"(?:" + phrases.NEG_BREAKING_UNC + r")")
_CLAUSE_VERB = re.compile(r"\b" + phrases.CLAUSE_VERB + r"\b")
_DIFFERENTIAL = re.compile(phrases.DIFFERENTIAL_GAP)
_ATTRIBUTE_RE = re.compile(
    rf"\b(?:(?P<normal>{phrases.ANATOMY_NORMAL})|(?P<abnormal>{phrases.ANATOMY_ABNORMAL})|(?P<uncertain>{phrases.ANATOMY_UNCERTAIN}))\b"
)
_ATTRIBUTE_WINDOW = 70  # characters between an anatomy mention and its descriptor
_FORWARD = {"preneg_unc": "neg_unc", "preneg": "neg", "preunc": "unc", "bothunc": "unc"}
_BACKWARD = {"postneg_unc": "neg_unc", "postneg": "neg", "postunc": "unc", "bothunc": "unc"}


# ---------------------------------------------------------------------------------------------
# Mentions in one sentence
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mention:
    """One labelled mention: where it is, what it mentions, and the label its context gives it."""

    start: int
    end: int
    text: str
    conditions: tuple[str, ...]
    kind: str
    label: int
    implies_uncertain: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Trigger:
    start: int
    end: int
    kind: str
    breaks_negation: bool


def _triggers(sentence: str) -> tuple[list[_Trigger], list[int], list[int]]:
    """Scope triggers, terminator positions, and positions of list openers ("no", "no change in")."""
    triggers: list[_Trigger] = []
    terms: list[int] = []
    openers: list[int] = []
    for m in _TRIGGER_RE.finditer(sentence):
        kind = m.lastgroup or ""
        if kind == "term":
            terms.append(m.start())
        elif kind == "pseudo":
            openers.append(m.start())
        else:
            if kind == "preneg":
                openers.append(m.start())
            breaks = kind == "preunc" and _NEG_BREAKING.fullmatch(m.group()) is not None
            triggers.append(_Trigger(m.start(), m.end(), kind, breaks))
    return triggers, terms, openers


def _scopes(sentence: str, start: int, end: int, triggers: list[_Trigger], terms: list[int]) -> set[str]:
    """Polarities ("neg_unc", "neg", "unc") whose trigger scope covers the span [start, end)."""
    found: set[str] = set()
    for trig in triggers:
        if trig.end <= start and trig.kind in _FORWARD:
            if any(trig.end <= t < start for t in terms):
                continue
            polarity = _FORWARD[trig.kind]
            if polarity == "neg" and any(
                other.breaks_negation and trig.end <= other.start < start for other in triggers
            ):
                continue
            found.add(polarity)
        elif trig.start >= end and trig.kind in _BACKWARD:
            if any(end <= t < trig.start for t in terms):
                continue
            if _CLAUSE_VERB.search(sentence, end, trig.start):
                continue
            found.add(_BACKWARD[trig.kind])
    return found


def _clause_bounds(position: int, terms: list[int], length: int) -> tuple[int, int]:
    lo, hi = 0, length
    for t in terms:
        if t < position:
            lo = max(lo, t)
        elif t > position:
            hi = min(hi, t)
            break
    return lo, hi


def _pick_descriptor(sentence: str, lo: int, hi: int, start: int, end: int) -> tuple[int, int, int] | None:
    """Nearest normal/abnormal descriptor in [lo, hi); a borderline/stable one only if neither exists.

    Returns ``(label, descriptor start, descriptor end)``.
    """
    best: dict[bool, tuple[int, str, int, int]] = {}
    for m in _ATTRIBUTE_RE.finditer(sentence, lo, hi):
        if m.start() < end and m.end() > start:  # inside the mention itself
            continue
        distance = start - m.end() if m.end() <= start else m.start() - end
        kind = m.lastgroup or ""
        strong = kind != "uncertain"
        if strong not in best or distance < best[strong][0]:
            best[strong] = (distance, kind, m.start(), m.end())
    chosen = best.get(True) or best.get(False)
    if chosen is None:
        return None
    label = {"normal": NEGATIVE, "abnormal": POSITIVE, "uncertain": UNCERTAIN}[chosen[1]]
    return label, chosen[2], chosen[3]


def _anatomy_label(sentence: str, start: int, end: int, terms: list[int]) -> tuple[int, int, int] | None:
    """Label of an anatomy mention from its descriptor.

    First the comma-delimited part of the clause around the mention ("normal heart size, stable
    mediastinal contours"); failing that, forward through the rest of the clause ("the heart,
    mediastinum and hila are normal").
    """
    lo, hi = _clause_bounds(start, terms, len(sentence))
    lo, hi = max(lo, start - _ATTRIBUTE_WINDOW), min(hi, end + _ATTRIBUTE_WINDOW)
    comma_lo = sentence.rfind(",", lo, start) + 1 or lo
    comma_hi = sentence.find(",", end, hi)
    comma_hi = hi if comma_hi < 0 else comma_hi
    label = _pick_descriptor(sentence, max(lo, comma_lo), comma_hi, start, end)
    if label is None and comma_hi < hi:
        label = _pick_descriptor(sentence, end, hi, start, end)
    return label


def find_mentions(sentence: str) -> list[Mention]:
    """All labelled mentions in one sentence (lower-cased internally).

    Useful on its own to the report composer and the feature describers: it says which words of a
    sentence carry which finding, and with which polarity.
    """
    text = " ".join(sentence.lower().split())
    raw = [(m.start(), m.end(), _RULE_BY_GROUP[m.lastgroup or ""]) for m in _MENTION_RE.finditer(text)]
    raw = [r for r in raw if r[2].kind != "ignore"]
    if not raw:
        return []
    triggers, terms, openers = _triggers(text)
    mentions: list[Mention] = []
    for start, end, rule in raw:
        if rule.kind == "negative":
            mentions.append(Mention(start, end, text[start:end], rule.conditions, rule.kind, NEGATIVE))
            continue
        default = UNCERTAIN if rule.kind == "hedged" else POSITIVE
        if rule.kind == "anatomy":
            descriptor = _anatomy_label(text, start, end, terms)
            if descriptor is None:
                continue
            default, d_start, d_end = descriptor
            if default == NEGATIVE:
                mentions.append(Mention(start, end, text[start:end], rule.conditions, rule.kind, NEGATIVE))
                continue
            # A trigger between the anatomy and its descriptor qualifies both: "heart may be enlarged",
            # "the heart does not appear enlarged".
            scopes = _scopes(text, start, end, triggers, terms) | {
                _FORWARD[t.kind] for t in triggers if t.kind in _FORWARD and end <= t.start and t.end <= d_start
            }
        else:
            scopes = _scopes(text, start, end, triggers, terms)
        if "neg_unc" in scopes:
            label = UNCERTAIN
        elif "neg" in scopes:
            label = NEGATIVE
        elif "unc" in scopes:
            label = UNCERTAIN
        else:
            label = default
        mentions.append(Mention(start, end, text[start:end], rule.conditions, rule.kind, label, rule.implies_uncertain))
    return _apply_differentials(text, mentions, terms, openers)


def span_polarities(sentence: str, spans: Sequence[tuple[int, int]]) -> list[int]:
    """The label a finding mentioned at each ``(start, end)`` of ``sentence`` would get from the
    negation and uncertainty scopes alone: NEGATIVE, UNCERTAIN or POSITIVE.

    ``sentence`` must be lower case with single spaces (as :func:`find_mentions` sees it). This is
    the one negation and uncertainty detector of saerad: feature describers key their statements by
    it ("pleural effusion has resolved" -> a negated "pleural effusion"), so a description never
    draws support from a report that denies it.
    """
    triggers, terms, _ = _triggers(sentence)
    out = []
    for start, end in spans:
        scopes = _scopes(sentence, start, end, triggers, terms)
        if "neg_unc" in scopes:
            out.append(UNCERTAIN)
        elif "neg" in scopes:
            out.append(NEGATIVE)
        else:
            out.append(UNCERTAIN if "unc" in scopes else POSITIVE)
    return out


def _apply_differentials(text: str, mentions: list[Mention], terms: list[int], openers: list[int]) -> list[Mention]:
    """'X or Y', 'X versus Y', 'X/Y': both only possible (unless negated).

    Not inside a list opened by a negation or "no change in" ("no change in X or Y" lists two
    present findings).
    """
    out = list(mentions)
    for i in range(len(out) - 1):
        a, b = out[i], out[i + 1]
        if a.kind in ("negative", "anatomy") or b.kind in ("negative", "anatomy"):
            continue
        if a.conditions == b.conditions:
            continue
        if any(p < a.start and not any(p <= t < a.start for t in terms) for p in openers):
            continue
        if _DIFFERENTIAL.match(text[a.end : b.start]):
            for j in (i, i + 1):
                if out[j].label == POSITIVE:
                    m = out[j]
                    out[j] = Mention(m.start, m.end, m.text, m.conditions, m.kind, UNCERTAIN, m.implies_uncertain)
    return out


# ---------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------

_RANK = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}


def _merge(current: int | None, new: int) -> int:
    """CheXpert aggregation: positive beats uncertain beats negative."""
    if current is None or _RANK[new] > _RANK[current]:
        return new
    return current


def _aggregate(mentions: list[Mention], labels: dict[str, int | None]) -> bool:
    """Fold mentions into ``labels``; return True if an abnormality outside the 14 was asserted."""
    other = False
    for m in mentions:
        if m.kind == "other":
            other = other or m.label != NEGATIVE
            continue
        for condition in m.conditions:
            labels[condition] = _merge(labels[condition], m.label)
        if m.label != NEGATIVE:
            for condition in m.implies_uncertain:
                labels[condition] = _merge(labels[condition], UNCERTAIN)
    return other


def label_sentence(sentence: str) -> dict[str, int]:
    """Conditions mentioned in one sentence -> 1 / 0 / -1 (no No Finding logic, no blanks)."""
    labels: dict[str, int | None] = dict.fromkeys(CONDITIONS)
    _aggregate(find_mentions(sentence), labels)
    return {name: value for name, value in labels.items() if value is not None and name != NO_FINDING}


def label_report(text: str | None) -> dict[str, int | None]:
    """All 14 conditions -> 1 / 0 / -1 / ``None`` (blank), in :data:`CONDITIONS` order."""
    labels: dict[str, int | None] = dict.fromkeys(CONDITIONS)
    sentences = split_sentences(text)
    if not sentences:
        return labels
    other = False
    for sentence in sentences:
        other = _aggregate(find_mentions(sentence), labels) or other
    finding = other or any(
        value in (POSITIVE, UNCERTAIN) for name, value in labels.items() if name not in (SUPPORT_DEVICES, NO_FINDING)
    )
    labels[NO_FINDING] = None if finding else POSITIVE
    return labels


def label_reports(texts: Sequence[str | None]) -> np.ndarray:
    """Label many reports: ``(N, 14)`` float array, columns in :data:`CONDITIONS` order, NaN = blank."""
    out = np.full((len(texts), len(CONDITIONS)), np.nan, dtype=np.float64)
    for row, text in enumerate(texts):
        for name, value in label_report(text).items():
            if value is not None:
                out[row, INDEX[name]] = value
    return out


__all__ = [
    "Labeler",
    "NEGATIVE",
    "POSITIVE",
    "UNCERTAIN",
    "Mention",
    "find_mentions",
    "label_report",
    "label_reports",
    "label_sentence",
    "span_polarities",
]
