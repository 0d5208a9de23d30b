"""Statements and key phrases of report text, as the extractive describer and the scorer see them.

Why a separate normalisation from :func:`saerad.radtext.normalize_report`: that one keeps a report
readable for the labeller and the text metrics, while feature descriptions must be *comparable across
reports*. Two reports that say "A 65-year-old man ... small right-sided pleural effusion (3 cm)" and
"small right sided pleural effusion" should yield the same statement, so here numbers, dates, ages,
measurements and de-identification marks (``XXXX``) are dropped, hyphens become spaces and everything
is lower case.

Negation is kept in the key itself: words that the rule labeller's negation scopes cover
(:func:`saerad.radtext.labeler.span_polarities`: "no pleural effusion", "effusion is not seen",
"pneumothorax is absent", "effusion has resolved") produce keys that start with "no", so "no pleural
effusion" and "small pleural effusion" are different statements both in the top reports and in the
corpus counts, and a statement never draws support from a report the labeller reads as denying it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from saerad.radtext.text import split_sentences

Splitter = Callable[[str], Sequence[str]]

MAX_WORDS = 15
MAX_NGRAM = 6
_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december|"
    "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
_CLEANUPS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bx[- ]?rays?\b"), "xray"),
    (re.compile(r"\b\d+(?:\.\d+)?\s*-?\s*(?:years?|yrs?|y|months?|weeks?|days?)\s*-?\s*old\b"), " "),
    (re.compile(rf"\b(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:\s*,\s*\d{{2,4}})?"), " "),
    (re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTHS})\b\.?(?:\s*,?\s*\d{{2,4}})?"), " "),
    (re.compile(r"\b\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}\b"), " "),
    (
        re.compile(
            r"\b\d+(?:[.,]\d+)?\s*(?:x\s*\d+(?:[.,]\d+)?\s*)*"
            r"(?:mm|cm|ml|mg|kg|l|liters?|litres?|mmhg|hours?|hrs?|days?|weeks?|months?|years?|%|percent)\b"
        ),
        " ",
    ),
    # De-identification marks, also inside words ("x-XXXX"): a clause break, so that no statement
    # is glued together across the missing word ("No XXXX or pneumothorax" -> "no pneumothorax").
    (re.compile(r"\S*xx+\S*"), " , "),
)
_WORD = re.compile(r"[a-z]+")

# Words that make a key a negated statement by themselves ("no effusion"): such a key is kept as it
# is, and a key with one inside ("effusion no pneumothorax") straddles two statements.
NEGATION_CUES = frozenset({"no", "not", "without", "negative", "free", "nor", "neither", "denies", "denied"})
_TOKEN = re.compile(r"[a-z]+|[,;:()\[\]]+")
_STOPWORDS = frozenset(
    """a an the and or of in on at to for by with from as into onto over under than then there here this
    that these those it its is are was were be been being has have had do does did which who whom whose
    what when where also seen noted identified demonstrated shown visualized appears appear appeared
    again still now otherwise both either each per via may might can could would should will shall
    he she his her him they them their patient s""".split()
)


def _clean(text: str) -> str:
    text = text.lower()
    for pattern, repl in _CLEANUPS:
        text = pattern.sub(repl, text)
    return text


def words_of(text: str) -> list[str]:
    """Normalised words of a fragment (letters only: digits, punctuation and hyphens separate)."""
    return [w for w in _WORD.findall(_clean(text)) if len(w) > 1 or w in {"a"}]


def normalize_statement(text: str) -> str:
    """The comparable form of a statement: lower case, no numbers/dates/ages/XXXX, single spaces."""
    return " ".join(words_of(text))


def _clauses(sentence: str) -> list[list[tuple[str, bool]]]:
    """Clauses of one sentence as (word, negated) pairs; negation from the rule labeller's scopes."""
    from saerad.radtext.labeler import NEGATIVE, span_polarities

    cleaned = " ".join(_clean(sentence).split())
    tokens = list(_TOKEN.finditer(cleaned))
    words = [m for m in tokens if m.group()[0].isalpha()]
    polarity = dict(zip((m.start() for m in words), span_polarities(cleaned, [m.span() for m in words])))
    clauses: list[list[tuple[str, bool]]] = [[]]
    for m in tokens:
        word = m.group()
        if not word[0].isalpha():
            if clauses[-1]:
                clauses.append([])
        elif len(word) > 1 or word == "a":
            clauses[-1].append((word, polarity[m.start()] == NEGATIVE))
    return [c for c in clauses if c]


def _span_key(span: Sequence[str], negated_first: bool) -> str | None:
    """Key of one word span, or None when the span cannot stand as a statement on its own."""
    first, last = span[0], span[-1]
    if last in _STOPWORDS or last in NEGATION_CUES:
        return None
    if first in NEGATION_CUES:
        if len(span) == 1 or any(w in NEGATION_CUES for w in span[1:]):
            return None
        return " ".join(span)
    if first in _STOPWORDS or any(w in NEGATION_CUES for w in span[1:]):
        return None
    if len(span) == 1 and len(first) < 4:
        return None
    text = " ".join(span)
    return f"no {text}" if negated_first else text


def sentence_keys(sentence: str, *, max_ngram: int = MAX_NGRAM, max_words: int = MAX_WORDS) -> set[str]:
    """Candidate statements of one sentence: word n-grams of each clause (1..max_ngram words, not
    starting or ending with a function word), each whole clause and the whole sentence when short."""
    clauses = _clauses(sentence)
    keys: set[str] = set()
    for pairs in clauses:
        clause = [w for w, _ in pairs]
        flags = [n for _, n in pairs]
        for n in range(1, min(max_ngram, len(clause)) + 1):
            for i in range(len(clause) - n + 1):
                key = _span_key(clause[i : i + n], flags[i])
                if key is not None:
                    keys.add(key)
        if 1 < len(clause) <= max_words and clause[-1] not in _STOPWORDS:
            keys.add(_whole(clause, flags[0]))
    flat = [pair for pairs in clauses for pair in pairs]
    if 1 < len(clauses) and len(flat) <= max_words:
        keys.add(_whole([w for w, _ in flat], flat[0][1]))
    return keys


def _whole(tokens: Sequence[str], negated_first: bool) -> str:
    text = " ".join(tokens)
    return f"no {text}" if negated_first and tokens[0] not in NEGATION_CUES else text


def report_keys(
    text: str, *, splitter: Splitter | None = None, max_ngram: int = MAX_NGRAM, max_words: int = MAX_WORDS
) -> frozenset[str]:
    """All candidate statements of a report (a set: support counts reports, not repetitions)."""
    split = splitter or split_sentences
    keys: set[str] = set()
    for sentence in split(text or ""):
        keys |= sentence_keys(sentence, max_ngram=max_ngram, max_words=max_words)
    return frozenset(keys)


def truncate_words(text: str, max_words: int = MAX_WORDS) -> str:
    return " ".join(text.split()[:max_words])
