"""The one client of OpenAI-compatible chat endpoints (OpenAI, vLLM, Ollama, llama.cpp server...).

Both LLM users, the feature describer (:mod:`saerad.features.llm`) and the report composer
(:mod:`saerad.report.llm_composer`), talk to the endpoint through this module, so they share:

- settings: :class:`LLMSettings`, every field from ``SAERAD_LLM_<FIELD>`` (one endpoint for both);
- retries: the ``openai`` SDK's own (``max_retries``): exponential backoff with jitter, honouring
  ``Retry-After``/``retry-after-ms``, on timeouts, connection errors, 408, 409, 429 and 5xx;
- errors: after the retries, a refused key, model or URL (401/403/404) is a :class:`ConfigError`
  (every further call would fail the same way); anything else is an :class:`EndpointError` naming
  the status, never the request;
- JSON replies: :func:`parse_json` finds the object in a reply (models wrap it in code fences or
  prose) and validates it with a pydantic model.

The ``openai`` package is imported on first use.
"""

from __future__ import annotations

import json
import re
from typing import TypeVar

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from saerad.errors import ConfigError, SaeradError

Reply = TypeVar("Reply", bound=BaseModel)

FATAL_STATUS = frozenset({401, 403, 404})
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_UNSET_KEY = "not-needed"  # local servers accept any key


class LLMSettings(BaseSettings):
    """Endpoint and request settings; field ``x`` is read from ``SAERAD_LLM_X``."""

    model_config = SettingsConfigDict(env_prefix="SAERAD_LLM_", extra="ignore")

    base_url: str | None = None  # None: the OpenAI API
    model: str = "gpt-4o-mini"
    api_key: SecretStr = SecretStr(_UNSET_KEY)
    timeout: float = 60.0  # seconds per attempt
    max_retries: int = 5  # the SDK's retries of transient failures
    temperature: float = 0.0
    max_tokens: int = 200

    def configured(self) -> bool:
        """Whether an endpoint was named (a base URL, or a key for the OpenAI API)."""
        return bool(self.base_url) or self.api_key.get_secret_value() not in ("", _UNSET_KEY)


class EndpointError(SaeradError):
    """The endpoint did not answer after the SDK's retries; ``status`` says how (no request text)."""

    code = "llm_unavailable"
    http_status = 502

    def __init__(self, status: str) -> None:
        super().__init__(f"the LLM endpoint did not answer ({status})")
        self.status = status


class ReplyError(ValueError):
    """The reply holds no JSON object of the expected shape; the message says which (no reply text)."""


def make_client(settings: LLMSettings):
    """An ``openai.OpenAI`` client for ``settings`` (one connection pool; safe to share by threads)."""
    import openai

    return openai.OpenAI(
        base_url=settings.base_url,
        api_key=settings.api_key.get_secret_value(),
        timeout=settings.timeout,
        max_retries=settings.max_retries,
    )


def complete(client, request: dict) -> str:
    """The assistant's text for one ``chat.completions.create(**request)``, retries included."""
    import openai

    try:
        response = client.chat.completions.create(**request)
    except openai.APIStatusError as exc:
        if exc.status_code in FATAL_STATUS:
            raise ConfigError(
                f"LLM endpoint refused the request ({exc.status_code}): check SAERAD_LLM_BASE_URL, "
                "SAERAD_LLM_MODEL and SAERAD_LLM_API_KEY"
            ) from None
        raise EndpointError(str(exc.status_code)) from None
    except openai.APIError as exc:  # timeouts, connection errors, unreadable responses
        raise EndpointError(type(exc).__name__) from None
    return response.choices[0].message.content or ""


def parse_json(content: str | None, schema: type[Reply]) -> Reply:
    """The reply's JSON object as ``schema``: the whole reply, else its outermost ``{...}`` span."""
    candidates = [] if not content else [content.strip()]
    if content and (match := _JSON_OBJECT.search(content)):
        candidates.append(match.group(0))
    problem = "reply holds no JSON object"
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        try:
            return schema.model_validate(data)
        except ValidationError as exc:
            problem = f"reply does not match the schema: {type(exc).__name__}"
    raise ReplyError(problem)
