"""saerad.llm: settings, the SDK's retries, error mapping and JSON replies, against a real local server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent / "report"))
from chat_server import ChatServer  # noqa: E402

from saerad.errors import ConfigError  # noqa: E402
from saerad.llm import EndpointError, LLMSettings, ReplyError, complete, make_client, parse_json  # noqa: E402


class Answer(BaseModel):
    finding: str | None
    shared: bool


def _request() -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


def test_parse_json_finds_and_validates_the_object():
    assert parse_json('{"finding": "x", "shared": true}', Answer).finding == "x"
    assert parse_json('Sure:\n```json\n{"finding": null, "shared": false}\n```', Answer).shared is False
    for content, problem in [(None, "no JSON object"), ("", "no JSON object"), ("no json here", "no JSON object"),
                             ('{"finding": 3}', "does not match the schema"), ("[1, 2]", "does not match the schema")]:
        with pytest.raises(ReplyError, match=problem):
            parse_json(content, Answer)


def test_settings_from_environment_and_configured(monkeypatch):
    for key in ("SAERAD_LLM_BASE_URL", "SAERAD_LLM_API_KEY", "SAERAD_LLM_MAX_RETRIES"):
        monkeypatch.delenv(key, raising=False)
    assert not LLMSettings().configured()
    assert LLMSettings(api_key="sk-1").configured() and LLMSettings(base_url="http://127.0.0.1:9/v1").configured()
    monkeypatch.setenv("SAERAD_LLM_MAX_RETRIES", "2")
    monkeypatch.setenv("SAERAD_LLM_API_KEY", "secret-key")
    settings = LLMSettings()
    assert settings.max_retries == 2 and settings.configured() and "secret-key" not in repr(settings)
    assert make_client(settings).max_retries == 2  # the SDK does the retrying


def test_transient_failures_are_retried_by_the_sdk_then_reported():
    def script(prompt, n):
        return (503, None, {"retry-after-ms": "5"}) if n < 2 else (200, "ok", {})

    with ChatServer(script) as server:
        assert complete(make_client(LLMSettings(base_url=server.base_url, max_retries=2)), _request()) == "ok"
        assert len(server.requests) == 3
    with ChatServer(lambda prompt, n: (503, None, {"retry-after-ms": "5"})) as server:
        with pytest.raises(EndpointError) as info:
            complete(make_client(LLMSettings(base_url=server.base_url, max_retries=1)), _request())
        assert info.value.status == "503" and len(server.requests) == 2


@pytest.mark.parametrize("status", [401, 403, 404])
def test_refused_credentials_or_model_are_config_errors(status):
    with ChatServer(lambda prompt, n: (status, None, {})) as server:
        with pytest.raises(ConfigError, match=str(status)):
            complete(make_client(LLMSettings(base_url=server.base_url, max_retries=3)), _request())
        assert len(server.requests) == 1  # not retried


def test_unreachable_endpoint_is_an_endpoint_error():
    with ChatServer() as server:
        url = server.base_url
    with pytest.raises(EndpointError) as info:
        complete(make_client(LLMSettings(base_url=url, max_retries=0, timeout=2)), _request())
    assert info.value.status == "APIConnectionError"
