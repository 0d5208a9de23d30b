"""Section parser for free-text chest X-ray reports (MIMIC-CXR style).

MIMIC-CXR reports are plain text with upper-case headers ending in a colon ("FINDINGS:",
"IMPRESSION:", "INDICATION:"...), sometimes on their own line, sometimes followed by text on the
same line, and occasionally merged ("FINDINGS AND IMPRESSION:"). Evaluation uses the findings
section, so studies whose report has none are dropped and counted by the dataset loader.

Rules (documented because results depend on them):

* a header is a run of letters/spaces/slashes/&/parentheses at the start of a line (or of the
  text), at most 6 words, followed by ``:``; upper case, or one of the known names in any case;
* a section runs from its header to the next header;
* ``FINDINGS`` aliases: FINDING(S), FINDINGS AND IMPRESSION (also counted as impression),
  FINDINGS/IMPRESSION; ``IMPRESSION`` aliases: IMPRESSION(S), CONCLUSION(S), SUMMARY,
  FINDINGS AND IMPRESSION;
* when the same section appears twice (e.g. an addendum repeats IMPRESSION) the texts are joined.
"""

from __future__ import annotations

import re

from saerad.radtext.text import clean_text

_KNOWN = (
    "findings",
    "finding",
    "impression",
    "impressions",
    "conclusion",
    "conclusions",
    "summary",
    "indication",
    "indications",
    "history",
    "clinical history",
    "clinical information",
    "reason for exam",
    "reason for examination",
    "comparison",
    "comparisons",
    "technique",
    "examination",
    "exam",
    "procedure",
    "recommendation",
    "recommendations",
    "notification",
    "addendum",
    "wet read",
    "final report",
)
_HEADER = re.compile(
    r"(?m)^[ \t]*(?P<name>[A-Za-z][A-Za-z /&()\-]{0,60}?)[ \t]*:",
)

FINDINGS_ALIASES = frozenset({"findings", "finding", "findings and impression", "findings/impression", "findings / impression", "findings and impressions"})
IMPRESSION_ALIASES = frozenset(
    {"impression", "impressions", "conclusion", "conclusions", "summary", "findings and impression", "findings/impression", "findings and impressions"}
)


def _is_header(name: str) -> bool:
    words = name.split()
    if not words or len(words) > 6:
        return False
    lowered = " ".join(words).lower()
    if lowered in _KNOWN or lowered in FINDINGS_ALIASES or lowered in IMPRESSION_ALIASES:
        return True
    return name.isupper() and len(name.strip()) >= 3


def parse_sections(text: str | None) -> dict[str, str]:
    """Return ``{lower-case header: cleaned section text}``; text before any header is ``"preamble"``."""
    if not text:
        return {}
    headers = [m for m in _HEADER.finditer(text) if _is_header(m.group("name"))]
    sections: dict[str, str] = {}

    def add(name: str, body: str) -> None:
        body = clean_text(body)
        if not body:
            sections.setdefault(name, "")
            return
        sections[name] = f"{sections[name]} {body}".strip() if sections.get(name) else body

    first = headers[0].start() if headers else len(text)
    if clean_text(text[:first]):
        add("preamble", text[:first])
    for i, match in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        name = " ".join(match.group("name").lower().split())
        add(name, text[match.end() : end])
    return sections


def _pick(sections: dict[str, str], aliases: frozenset[str]) -> str | None:
    parts = [body for name, body in sections.items() if name in aliases and body]
    return " ".join(parts) if parts else None


def extract_findings(text: str | None) -> str | None:
    """The findings section (cleaned), or ``None`` when the report has none."""
    return _pick(parse_sections(text), FINDINGS_ALIASES)


def extract_impression(text: str | None) -> str | None:
    """The impression section (cleaned), or ``None`` when the report has none."""
    return _pick(parse_sections(text), IMPRESSION_ALIASES)
