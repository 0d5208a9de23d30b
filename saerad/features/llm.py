"""LLM describer: any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server...).

For each feature the model sees the reports of its top-activating images and, for contrast, reports
of random images where it is inactive, and answers JSON ``{"finding": str | null, "shared": bool}``
(validated with pydantic). The endpoint, its retries and JSON parsing are :mod:`saerad.llm`'s. Paid
answers are precious, so:

- every raw answer is written to an on-disk cache (``<cache_dir>/<sha256[:2]>/<sha256>.json``, keyed
  by the model and the exact request) atomically, the moment it arrives; a rerun or a resumed job
  reads the cache and makes no call;
- transient failures are retried by the SDK (:mod:`saerad.llm`); 401/403/404 abort the job with a
  :class:`ConfigError` (every call would fail the same way); other errors and unparseable answers
  leave that one feature undescribed;
- at most ``max_concurrency`` calls are in flight (threads).

Report text is never logged at INFO (feature ids and status codes only).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel

from saerad.errors import ConfigError
from saerad.features.base import Describer, Description, FeatureEvidence
from saerad.features.text import MAX_WORDS, normalize_statement, truncate_words
from saerad.fileio import atomic_write_text
from saerad.llm import EndpointError, LLMSettings, ReplyError, complete, make_client, parse_json

log = logging.getLogger(__name__)


class DescriberSettings(LLMSettings):
    """The endpoint (:class:`~saerad.llm.LLMSettings`) plus the describer's own knobs, also read from
    ``SAERAD_LLM_<FIELD>``."""

    max_concurrency: int = 4
    json_mode: bool = True  # ask for response_format=json_object (vLLM, Ollama, llama.cpp, OpenAI know it)
    max_report_chars: int = 1200  # per report in the prompt (case notes can be long)
    cache_dir: Path = Path.home() / ".cache" / "saerad" / "llm"


class LLMAnswer(BaseModel):
    finding: str | None = None
    shared: bool


SYSTEM_PROMPT = (
    "You are an expert thoracic radiologist helping to interpret the visual features of an image model. "
    "You answer with a single JSON object and nothing else."
)

_INSTRUCTIONS = (
    "Group A lists reports of chest X-rays on which one visual feature is strongly active. Group B lists "
    "reports of random chest X-rays on which it is inactive.\n"
    "Which single radiological finding do the Group A reports share that the Group B reports mostly lack? "
    "Write it as one short statement in the language of a findings section (at most 12 words, for example "
    '"small left pleural effusion" or "no acute cardiopulmonary abnormality"). Do not mention patients, '
    "dates, history or the groups. If the Group A reports share no radiological finding, say so.\n"
    'Answer with JSON only: {"finding": "<statement>", "shared": true} or {"finding": null, "shared": false}.'
)

def build_messages(evidence: FeatureEvidence, max_report_chars: int) -> list[dict[str, str]]:
    def block(label: str, reports: Sequence[str]) -> str:
        lines = [f"Group {label}:"]
        for i, text in enumerate(reports, 1):
            text = " ".join(text.split())
            if len(text) > max_report_chars:
                text = text[:max_report_chars].rsplit(" ", 1)[0] + " ..."
            lines.append(f"[{label}{i}] {text}")
        if not reports:
            lines.append("(none)")
        return "\n".join(lines)

    user = "\n\n".join([_INSTRUCTIONS, block("A", evidence.reports), block("B", evidence.contrast)])
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_answer(content: str | None) -> LLMAnswer | None:
    """The model's JSON answer, tolerating code fences or prose around one object; None if invalid."""
    try:
        return parse_json(content, LLMAnswer)
    except ReplyError:
        return None


class AnswerCache:
    """One JSON file per request hash; written via a temp file + rename so a crash never leaves a
    truncated answer (and never loses one that was already written)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @staticmethod
    def key(request: dict) -> str:
        return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def put(self, key: str, record: dict) -> None:
        atomic_write_text(self._path(key), json.dumps(record))


class LLMDescriber(Describer):
    name = "llm"
    needs_contrast = True

    def __init__(self, settings: LLMSettings | None = None, *, client=None, **overrides) -> None:
        base = settings.model_dump() if settings is not None else {}
        self.settings = DescriberSettings(**{**base, **overrides})
        if self.settings.max_concurrency < 1:
            raise ConfigError("SAERAD_LLM_MAX_CONCURRENCY must be at least 1")
        self.cache = AnswerCache(self.settings.cache_dir)
        self._client = client
        self._lock = threading.Lock()
        self.calls = 0  # requests sent (the SDK may retry each)

    def config(self) -> dict:
        s = self.settings
        return {
            "name": self.name,
            "model": s.model,
            "base_url": s.base_url,
            "temperature": s.temperature,
            "max_report_chars": s.max_report_chars,
        }

    @property
    def client(self):
        with self._lock:  # one client (one connection pool) shared by the worker threads
            if self._client is None:
                self._client = make_client(self.settings)
            return self._client

    def request_for(self, evidence: FeatureEvidence) -> dict:
        s = self.settings
        request = {
            "model": s.model,
            "messages": build_messages(evidence, s.max_report_chars),
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
        }
        if s.json_mode:
            request["response_format"] = {"type": "json_object"}
        return request

    def describe_many(
        self, evidence: Sequence[FeatureEvidence], *, corpus: Sequence[str] = (), progress: bool = False
    ) -> list[Description]:
        from tqdm.auto import tqdm

        with ThreadPoolExecutor(max_workers=self.settings.max_concurrency) as pool:
            futures = [pool.submit(self.describe_one, ev) for ev in evidence]
            results = []
            for fut in tqdm(futures, desc="LLM descriptions", unit="feature", disable=not progress):
                results.append(fut.result())  # a ConfigError (bad key/model) stops the job here
        return results

    def describe_one(self, evidence: FeatureEvidence) -> Description:
        fid = evidence.feature_id
        if not evidence.reports:
            return Description(fid, None, {"reason": "no reports"})
        request = self.request_for(evidence)
        key = self.cache.key(request)
        record = self.cache.get(key)
        cached = record is not None
        if record is None:
            content, status = self._call(fid, request)
            if content is None:
                return Description(fid, None, {"reason": f"request failed ({status})"})
            record = {"model": self.settings.model, "content": content, "created": time.time()}
            self.cache.put(key, record)
        answer = parse_answer(record.get("content"))
        if answer is None:
            log.warning("feature %d: the model's answer is not valid JSON of the expected shape", fid)
            return Description(fid, None, {"reason": "invalid answer", "cached": cached})
        text = normalize_statement(answer.finding or "")
        if not answer.shared or not text:
            return Description(fid, None, {"reason": "nothing shared", "cached": cached})
        return Description(fid, truncate_words(text, MAX_WORDS), {"cached": cached})

    def _call(self, fid: int, request: dict) -> tuple[str | None, str]:
        """(content, status); raises ConfigError on auth/model errors (see :func:`saerad.llm.complete`)."""
        with self._lock:
            self.calls += 1
        try:
            return complete(self.client, request), "ok"
        except EndpointError as exc:
            log.warning("feature %d: LLM call failed (%s)", fid, exc.status)
            return None, exc.status
