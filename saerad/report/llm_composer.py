"""Optional LLM composer: rephrases the deterministic findings, and may do nothing else.

Any OpenAI-compatible chat endpoint works (OpenAI, vLLM, Ollama, llama.cpp server) through
:mod:`saerad.llm` (its settings, retries and JSON parsing are shared with the LLM describer). The
model sees the numbered deterministic sentences and must return JSON
sentences, each naming the numbered sentences it rephrases. The reply is accepted only if

- it parses and validates (pydantic),
- every numbered sentence is used and no unknown number is cited,
- the rule labeller's findings of the reply (condition, polarity) are a subset of those of the input.

Otherwise the deterministic composition is returned with a note saying why: an LLM must never be the
reason a finding appears in a report.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from saerad.errors import SaeradError
from saerad.llm import LLMSettings, ReplyError, complete, make_client, parse_json
from saerad.report.composer import Composition
from saerad.report.schema import FeatureRef, Sentence

if TYPE_CHECKING:
    from saerad.radtext import Labeler

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are editing the findings section of a chest X-ray report. You receive numbered sentences. "
    "Rewrite them into fluent radiology prose. You may merge sentences, reorder them and change "
    "wording. You must not add any finding, location, laterality, severity or negation that the "
    "numbered sentences do not state, and you must not leave any of them out. Reply with JSON only: "
    '{"sentences": [{"text": "<sentence>", "sources": [<numbers of the input sentences it states>]}]}'
)


class _ReplySentence(BaseModel):
    text: str = Field(min_length=1)
    sources: list[int] = Field(min_length=1)


class _Reply(BaseModel):
    sentences: list[_ReplySentence] = Field(min_length=1)


class RejectedRewrite(Exception):
    """The LLM reply broke a rule; the message says which (no report text in it)."""


def findings_of(texts: list[str], labeler: Labeler) -> set[tuple[str, int]]:
    """(condition, polarity) pairs the labeller finds in ``texts``, No Finding aside."""
    found: set[tuple[str, int]] = set()
    for text in texts:
        for condition, value in labeler(text).items():
            if condition != "No Finding" and value is not None and value == value:
                found.add((condition, int(value)))
    return found


def rephrase(
    composition: Composition,
    *,
    settings: LLMSettings | None = None,
    labeler: Labeler | None = None,
    client=None,
) -> Composition:
    """Rephrase ``composition`` with an LLM; on any failure return it unchanged, with a note."""
    if not composition.sentences:
        return composition
    settings = settings or LLMSettings()
    if labeler is None:
        from saerad.radtext import label_report

        labeler = label_report
    try:
        if client is None:
            client = _client(settings)
        reply = _ask(client, settings, [s.text for s in composition.sentences])
        sentences = _check(reply, composition.sentences, labeler)
    except RejectedRewrite as exc:
        log.warning("LLM composer output rejected: %s", exc)
        return Composition(
            sentences=composition.sentences,
            notes=[*composition.notes, f"LLM rewrite rejected ({exc}); deterministic text used"],
            composer="deterministic (llm fallback)",
            status=composition.status,
        )
    return Composition(sentences=sentences, notes=composition.notes, composer=f"llm:{settings.model}",
                       status=composition.status)


def _client(settings: LLMSettings):
    if not settings.configured():
        raise RejectedRewrite("no LLM endpoint configured: SAERAD_LLM_BASE_URL (or SAERAD_LLM_API_KEY) is not set")
    return make_client(settings)


def _ask(client, settings: LLMSettings, texts: list[str]) -> _Reply:
    numbered = "\n".join(f"{i + 1}. {t}" for i, t in enumerate(texts))
    request = {
        "model": settings.model,
        "temperature": settings.temperature,
        "max_tokens": max(settings.max_tokens, 80 * len(texts)),
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": numbered}],
    }
    try:
        return parse_json(complete(client, request), _Reply)
    except SaeradError as exc:  # the endpoint is optional: a refused or failed call means fall back
        raise RejectedRewrite(f"endpoint error: {exc}") from exc
    except ReplyError as exc:
        raise RejectedRewrite(str(exc)) from exc


def _check(reply: _Reply, originals: list[Sentence], labeler: Labeler) -> list[Sentence]:
    n = len(originals)
    cited = {i for s in reply.sentences for i in s.sources}
    if not cited <= set(range(1, n + 1)):
        raise RejectedRewrite("reply cites sentence numbers that do not exist")
    if cited != set(range(1, n + 1)):
        raise RejectedRewrite("reply leaves input sentences out")
    allowed = findings_of([s.text for s in originals], labeler)
    produced = findings_of([s.text for s in reply.sentences], labeler)
    if not produced <= allowed:
        extra = sorted(f"{c} ({v})" for c, v in produced - allowed)
        raise RejectedRewrite(f"labeller finds statements not in the descriptions: {', '.join(extra)}")
    return [Sentence(text=" ".join(s.text.split()), features=_merge(originals, s.sources)) for s in reply.sentences]


def _merge(originals: list[Sentence], sources: list[int]) -> list[FeatureRef]:
    refs: dict[int, FeatureRef] = {}
    for i in sources:
        for ref in originals[i - 1].features:
            refs.setdefault(ref.id, ref)
    return sorted(refs.values(), key=lambda f: -f.activation)
