"""Radiology text tools: the 14 CheXpert conditions, a rule labeller, normalisation, sections.

Kept low in the stack (no torch, no imports from later stages) so that feature describers, the
report composer and the evaluation suite all label text the same way. The labeller compiles a few
hundred patterns on import, so it loads on first use: the report schema and composer, which need
only the condition names and phrase lists, stay cheap to import.
"""

from typing import TYPE_CHECKING, Any

from saerad.radtext.conditions import CONDITIONS, CONDITIONS_5, NEGATIVE, POSITIVE, UNCERTAIN
from saerad.radtext.text import clean_text, normalize_report, split_sentences

if TYPE_CHECKING:
    from saerad.radtext.labeler import Labeler, label_report, label_reports, label_sentence

_FROM_LABELER = frozenset({"Labeler", "label_report", "label_reports", "label_sentence"})


def __getattr__(name: str) -> Any:
    if name in _FROM_LABELER:
        from saerad.radtext import labeler

        return getattr(labeler, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CONDITIONS",
    "CONDITIONS_5",
    "Labeler",
    "NEGATIVE",
    "POSITIVE",
    "UNCERTAIN",
    "clean_text",
    "label_report",
    "label_reports",
    "label_sentence",
    "normalize_report",
    "split_sentences",
]
