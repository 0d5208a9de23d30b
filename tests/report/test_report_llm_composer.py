"""LLM composer against a real local chat-completions server: accepted rewrites and fallbacks."""

from __future__ import annotations

import json

import pytest
from chat_server import ChatServer
from test_report_composer import ref, stub_labeler

from saerad.llm import LLMSettings
from saerad.report.composer import compose
from saerad.report.llm_composer import rephrase


@pytest.fixture
def server():
    with ChatServer() as srv:
        yield srv


def _draft():
    return compose(
        [ref(3, "Small left pleural effusion.", 2.0), ref(8, "Cardiomegaly.", 1.0)], labeler=stub_labeler
    )


def _settings(server) -> LLMSettings:
    return LLMSettings(base_url=server.base_url, model="test-model", timeout=5, max_retries=0)


def test_accepted_rewrite_keeps_features(server):
    server.replies.append(
        json.dumps({"sentences": [{"text": "There is cardiomegaly and a small left effusion.", "sources": [1, 2]}]})
    )
    out = rephrase(_draft(), settings=_settings(server), labeler=stub_labeler)
    assert out.composer == "llm:test-model"
    assert [s.text for s in out.sentences] == ["There is cardiomegaly and a small left effusion."]
    assert {f.id for f in out.sentences[0].features} == {3, 8}
    sent = server.requests[0]["messages"][1]["content"]
    assert "1. " in sent and "2. " in sent


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ({"sentences": [{"text": "Cardiomegaly. Right pneumothorax.", "sources": [1, 2]}]}, "not in the descriptions"),
        ({"sentences": [{"text": "Cardiomegaly.", "sources": [2]}]}, "leaves input sentences out"),
        ({"sentences": [{"text": "Effusion and cardiomegaly.", "sources": [1, 2, 3]}]}, "do not exist"),
        ("this is not JSON at all", "no JSON"),
        ({"sentences": [{"text": "", "sources": []}]}, "schema"),
    ],
)
def test_bad_rewrites_fall_back_and_say_so(server, reply, reason):
    server.replies.append(reply if isinstance(reply, str) else json.dumps(reply))
    draft = _draft()
    out = rephrase(draft, settings=_settings(server), labeler=stub_labeler)
    assert out.composer == "deterministic (llm fallback)"
    assert [s.text for s in out.sentences] == [s.text for s in draft.sentences]
    assert any(reason in n for n in out.notes)


def test_unconfigured_or_unreachable_endpoint_falls_back():
    out = rephrase(_draft(), settings=LLMSettings(base_url=None, api_key="not-needed"), labeler=stub_labeler)
    assert out.composer == "deterministic (llm fallback)"
    dead = LLMSettings(base_url="http://127.0.0.1:9/v1", model="m", timeout=1, max_retries=0)
    out = rephrase(_draft(), settings=dead, labeler=stub_labeler)
    assert "endpoint error" in out.notes[-1]


def test_endpoint_failure_falls_back_after_the_sdks_retries():
    with ChatServer(lambda prompt, n: (500, None, {"retry-after-ms": "5"})) as server:
        settings = LLMSettings(base_url=server.base_url, model="test-model", timeout=5, max_retries=1)
        draft = _draft()
        out = rephrase(draft, settings=settings, labeler=stub_labeler)
        assert len(server.requests) == 2
    assert out.composer == "deterministic (llm fallback)"
    assert [s.text for s in out.sentences] == [s.text for s in draft.sentences]
    assert any("endpoint error" in n and "500" in n for n in out.notes)
