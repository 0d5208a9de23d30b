"""How to reach the PACS: one settings object for the CLI and the service (``SAERAD_PACS_*``).

The service only ever talks to the PACS configured here, never to a URL a client sends: a report
request must not be able to point the server at an arbitrary host (server-side request forgery).
Credentials are ``SecretStr`` so they never appear in a ``repr`` or a log line.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class PacsSettings(BaseSettings):
    """A DICOMweb endpoint and its authentication. Field ``x`` is read from ``SAERAD_PACS_X``."""

    model_config = SettingsConfigDict(env_prefix="SAERAD_PACS_", extra="ignore", frozen=True)

    url: str | None = Field(
        None, description="DICOMweb base URL (QIDO-RS, WADO-RS and STOW-RS under it), e.g. http://pacs:8042/dicom-web."
    )
    username: str | None = Field(None, description="HTTP basic authentication user.")
    password: SecretStr | None = Field(None, description="HTTP basic authentication password.")
    token: SecretStr | None = Field(None, description="Bearer token, sent as 'Authorization: Bearer <token>'.")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description='Extra request headers as a JSON object, e.g. {"X-Api-Key": "..."}.'
    )
    timeout_s: float = Field(30.0, gt=0, description="Connect and read timeout of each PACS request.")
    retries: int = Field(3, ge=1, le=10, description="Attempts per request when the PACS answers 429, 503 or 504.")
    tls_verify: bool = Field(True, description="Verify the PACS's TLS certificate (https URLs).")
    ca_bundle: Path | None = Field(None, description="CA certificate bundle to verify the PACS with.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("the PACS URL must start with http:// or https://")
        return value

    def request_headers(self) -> dict[str, str]:
        """Every header the client sends: the extra ones, then the bearer token if set."""
        headers = {name: value.get_secret_value() for name, value in self.headers.items()}
        if self.token is not None and self.token.get_secret_value():
            headers["Authorization"] = f"Bearer {self.token.get_secret_value()}"
        return headers
