"""The LLM describer against a real HTTP server on 127.0.0.1 speaking /v1/chat/completions."""

import json
import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from chat_server import ChatServer  # noqa: E402

from saerad.errors import ConfigError
from saerad.features import build_dictionary
from saerad.features.base import FeatureEvidence
from saerad.features.llm import DescriberSettings, LLMDescriber, build_messages, parse_answer
from saerad.llm import LLMSettings

EFFUSION = ("Small right pleural effusion. Heart size normal.", "Moderate right pleural effusion with atelectasis.")
CARDIO = ("Marked cardiomegaly. Lungs are clear.", "The heart is enlarged. No effusion.")
GARBLED = ("Sternotomy wires are intact. Mild degenerative spine.", "Median sternotomy. Clear lungs.")


def answer(finding, shared=True):
    return json.dumps({"finding": finding, "shared": shared})


RETRY_SOON = {"retry-after-ms": "10"}  # honoured by the openai SDK's retries: keeps the tests fast


def default_script(prompt, n):
    group_a = prompt.split("Group A:")[1].split("Group B:")[0]
    if "cardiomegaly" in group_a.lower():
        return (500, None, RETRY_SOON) if n == 0 else (200, answer("Enlarged cardiac silhouette."), {})
    if "sternotomy" in group_a.lower():
        return 200, "The shared finding is a sternotomy, I think.", {}
    if "effusion" in group_a.lower():
        return 200, "```json\n" + answer("Small right pleural effusion.") + "\n```", {}
    return 200, answer(None, False), {}


@pytest.fixture
def server():
    srv = ChatServer(default_script)
    yield srv
    srv.close()


def describer_for(server, tmp_path, **kw):
    settings = DescriberSettings(base_url=server.base_url, model="test-model", api_key="k", cache_dir=tmp_path / "cache",
                                 max_retries=3, timeout=10, max_concurrency=2)
    return LLMDescriber(settings, **kw)


def evidence():
    return [FeatureEvidence(0, EFFUSION, CARDIO), FeatureEvidence(1, CARDIO, EFFUSION), FeatureEvidence(2, GARBLED)]


def test_describes_retries_survives_bad_json_and_caches(server, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    first = describer_for(server, tmp_path).describe_many(evidence())
    assert [d.text for d in first] == ["small right pleural effusion", "enlarged cardiac silhouette", None]
    assert first[2].info["reason"] == "invalid answer"
    assert len(server.requests) == 4  # one retry after the 500
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 3  # the unusable answer was paid for: kept too
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    for text in EFFUSION + CARDIO + GARBLED:  # report text never reaches the logs at INFO
        assert text not in caplog.text

    again = describer_for(server, tmp_path)
    second = again.describe_many(evidence())
    assert [d.text for d in second] == [d.text for d in first]
    assert len(server.requests) == 4 and again.calls == 0
    assert all(d.info.get("cached") for d in second)


def test_prompt_has_top_and_contrast_reports_and_asks_for_json(server, tmp_path):
    describer_for(server, tmp_path).describe_many(evidence()[:1])
    body = server.requests[0]
    prompt = body["messages"][-1]["content"]
    assert "[A1] Small right pleural effusion." in prompt and "[B2] The heart is enlarged." in prompt
    assert body["model"] == "test-model" and body["temperature"] == 0
    assert body["response_format"] == {"type": "json_object"}


def test_rate_limit_is_retried_and_persistent_errors_leave_the_feature_undescribed(tmp_path):
    def script(prompt, n):
        if "cardiomegaly" in prompt.lower().split("group b:")[0]:
            return 503, None, RETRY_SOON
        if "sternotomy" in prompt.lower().split("group b:")[0]:
            return 400, None, {}
        return (429, None, {"Retry-After": "0.01"}) if n < 2 else (200, answer("pleural effusion"), {})

    srv = ChatServer(script)
    try:
        out = describer_for(srv, tmp_path).describe_many(evidence())
    finally:
        srv.close()
    assert out[0].text == "pleural effusion"
    assert out[1].text is None and "503" in out[1].info["reason"]
    assert out[2].text is None and "400" in out[2].info["reason"]
    assert sum(1 for r in srv.requests if "Marked cardiomegaly" in r["messages"][-1]["content"].split("Group B:")[0]) == 4
    assert sum(1 for r in srv.requests if "Sternotomy" in r["messages"][-1]["content"].split("Group B:")[0]) == 1
    assert not list((tmp_path / "cache").rglob("*.json"))[1:]  # only the one real answer is cached


def test_auth_errors_stop_the_job(tmp_path):
    srv = ChatServer(lambda prompt, n: (401, None, {}))
    try:
        with pytest.raises(ConfigError, match="401"):
            describer_for(srv, tmp_path).describe_many(evidence())
    finally:
        srv.close()


def test_concurrency_is_bounded(server, tmp_path):
    server.delay = 0.05
    many = [FeatureEvidence(i, (f"Finding number {i} of a pleural effusion.",) + EFFUSION) for i in range(8)]
    out = describer_for(server, tmp_path).describe_many(many)
    assert all(d.text == "small right pleural effusion" for d in out)
    assert 1 <= server.max_in_flight <= 2


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SAERAD_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("SAERAD_LLM_MODEL", "local-model")
    monkeypatch.setenv("SAERAD_LLM_MAX_CONCURRENCY", "7")
    monkeypatch.setenv("SAERAD_LLM_API_KEY", "secret-key")
    s = DescriberSettings()
    assert (s.base_url, s.model, s.max_concurrency) == ("http://127.0.0.1:9/v1", "local-model", 7)
    assert "secret-key" not in repr(s)
    d = LLMDescriber(cache_dir=tmp_path, timeout=3)
    assert d.settings.model == "local-model" and d.settings.timeout == 3 and d.settings.max_concurrency == 7
    shared = LLMDescriber(LLMSettings(model="from-the-composer-settings"), cache_dir=tmp_path)  # one endpoint config
    assert shared.settings.model == "from-the-composer-settings" and shared.settings.base_url == "http://127.0.0.1:9/v1"
    assert "secret-key" not in json.dumps(d.config())
    with pytest.raises(ConfigError):
        LLMDescriber(max_concurrency=0)


def test_parse_answer_and_message_truncation():
    assert parse_answer('{"finding": "x", "shared": true}').finding == "x"
    assert parse_answer('Sure! {"finding": null, "shared": false} Hope this helps.').shared is False
    assert parse_answer("no json here") is None and parse_answer('{"finding": 3}') is None
    msgs = build_messages(FeatureEvidence(0, ("word " * 1000,)), max_report_chars=100)
    assert len(msgs[-1]["content"]) < 2000 and "(none)" in msgs[-1]["content"]


def test_build_dictionary_with_llm_describer(tmp_path, synthetic, tiny_sae):
    def script(prompt, n):  # a "model" that names what most Group A reports say
        group_a = prompt.split("Group A:")[1].split("Group B:")[0].lower()
        effusions = group_a.count("effusion") - group_a.count("no pleural effusion")
        cardio = group_a.count("cardiomegaly") + group_a.count("enlarged")
        if max(effusions, cardio) < 4:
            return 200, answer(None, False), {}
        return 200, answer("Pleural effusion." if effusions > cardio else "Cardiomegaly."), {}

    studies, train, held = synthetic
    srv = ChatServer(script)
    try:
        d = build_dictionary(tiny_sae, train, studies, describer=describer_for(srv, tmp_path), held_out=held,
                             top_k=8, progress=False, n_contrast=2)
    finally:
        srv.close()
    assert d.describer == "llm" and d.meta["describer_config"]["model"] == "test-model"
    assert d.get(0).description == "pleural effusion" and d.get(0).usable and d.get(0).description_score > 0.9
    assert d.get(1).description == "cardiomegaly" and d.get(1).usable
    assert len(srv.requests) == 4  # features 0, 1, 3, 4; the dead one is not asked about
    assert all("[B2]" in r["messages"][-1]["content"] for r in srv.requests)
