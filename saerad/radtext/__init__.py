"""Radiology text tools: the 14 CheXpert conditions, a rule labeller, normalisation, sections.

Kept low in the stack (no torch, no imports from later stages) so that feature describers, the
report composer and the evaluation suite all label text the same way.
"""

from saerad.radtext.conditions import CONDITIONS, CONDITIONS_5
from saerad.radtext.labeler import (
    NEGATIVE,
    POSITIVE,
    UNCERTAIN,
    Labeler,
    label_report,
    label_reports,
    label_sentence,
)
from saerad.radtext.text import clean_text, normalize_report, split_sentences

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
