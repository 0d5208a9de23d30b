"""Report text: cleaning, THE metric normalisation, and sentence splitting.

Two functions change text, and each has one job:

* :func:`clean_text` keeps the words as written (case, punctuation) and only strips and collapses
  whitespace. CheXbert and the rule labeller read this form (CheXbert's own preprocessing does the
  same before tokenising).
* :func:`normalize_report` is the one normalisation used by every text metric (BLEU, METEOR,
  ROUGE-L): lower-case, Penn-Treebank-style tokens, punctuation tokens removed, single spaces. It
  reproduces what coco-caption does with its Stanford PTBTokenizer and punctuation filter, in
  Python, so no Java call (and no temp file inside site-packages) is needed to tokenise. Known
  differences from the Java tokenizer are rare edge cases (stray quotes, emoticons); a test checks
  agreement on a corpus of real reports where the Java runtime exists.
"""

from __future__ import annotations

import re

_WS = re.compile(r"\s+")

# Tokens: decimals ("3.2"), words with internal hyphens/slashes/periods ("x-ray", "and/or"),
# clitics split off as PTB does ("patient's" -> "patient 's", "don't" -> "do n't", "cannot" ->
# "can not"), symbols PTB keeps ("%", "+", "/"), and brackets as PTB names them ("-lrb-"): coco's
# punctuation filter compares against upper-case "-LRB-" after lower-casing, so it keeps them.
_TOKEN = re.compile(
    r"-[lr][rsc]b-|\d+(?:[.,:]\d+)+|n't\b|'(?:s|re|ve|ll|d|m)\b|[a-z0-9]+(?:[-/.][a-z0-9]+)*(?=n't\b)"
    r"|[a-z0-9]+(?:[-/.'][a-z0-9]+)*|[%+<>=&#@*$/]"
)
_CLITIC_WORD = re.compile(r"([a-z0-9])('(?:s|re|ve|ll|d|m))\b")
_BRACKETS = {"(": " -lrb- ", ")": " -rrb- ", "[": " -lsb- ", "]": " -rsb- ", "{": " -lcb- ", "}": " -rcb- "}
_BRACKET_RE = re.compile(r"[()\[\]{}]")
_CANNOT = re.compile(r"\bcannot\b")


def clean_text(text: str | None) -> str:
    """Strip and collapse whitespace; ``None`` becomes ``""``."""
    if not text:
        return ""
    return _WS.sub(" ", str(text)).strip()


def tokenize(text: str | None) -> list[str]:
    """Lower-cased PTB-style word tokens without punctuation (see module docstring)."""
    if not text:
        return []
    lowered = _CLITIC_WORD.sub(r"\1 \2", str(text).lower())
    lowered = _CANNOT.sub("can not", _BRACKET_RE.sub(lambda m: _BRACKETS[m.group()], lowered))
    return _TOKEN.findall(lowered)


def normalize_report(text: str | None) -> str:
    """THE text normalisation of every text metric: ``" ".join(tokenize(text))``."""
    return " ".join(tokenize(text))


# --- sentence splitting ------------------------------------------------------------------------

# Abbreviations whose trailing period does not end a sentence.
_ABBREVIATIONS = frozenset(
    {"vs", "e.g", "i.e", "approx", "dr", "mr", "mrs", "ms", "no", "st", "cm", "mm", "fig", "ca", "incl", "resp", "etc", "pt", "hx"}
)
_BOUNDARY = re.compile(
    r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Za-z0-9])"  # end punctuation + space
    r"|\n\s*\n+"  # blank line
    r"|(?:^|\s)(?=\d{1,2}[.)]\s+[A-Za-z])"  # numbered list item "1. ..."
)
_LAST_WORD = re.compile(r"([A-Za-z.]+)\.\s*$")


def split_sentences(text: str | None) -> list[str]:
    """Split a report into sentences (whitespace-cleaned, empty pieces dropped).

    Boundaries: ``.``/``?``/``!`` followed by whitespace (not after abbreviations such as "vs." or
    "approx."), blank lines, and numbered items ("1. ... 2. ..."). Single newlines are line wraps,
    not boundaries, as in MIMIC-CXR reports. Decimal numbers ("3.2 cm") never split.
    """
    if not text:
        return []
    pieces: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        head = text[start : match.start()]
        last = _LAST_WORD.search(head)
        if last and last.group(1).lower().rstrip(".") in _ABBREVIATIONS:
            continue
        pieces.append(head)
        start = match.end()
    pieces.append(text[start:])
    out = []
    for piece in pieces:
        cleaned = clean_text(piece)
        if cleaned and re.search(r"[A-Za-z0-9]", cleaned):
            # A bare list number ("1.") left by a numbered-item split is not a sentence.
            if re.fullmatch(r"\d{1,2}[.)]?", cleaned):
                continue
            out.append(re.sub(r"^\d{1,2}[.)]\s+", "", cleaned))
    return out
