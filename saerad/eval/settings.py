"""Evaluation settings from ``SAERAD_*`` environment variables (pydantic-settings).

CheXbert weights and the bert-base-uncased tokenizer are never downloaded: users with access put
them on disk and point these variables at them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EvalSettings(BaseSettings):
    """Field ``x`` is read from ``SAERAD_X``."""

    model_config = SettingsConfigDict(env_prefix="SAERAD_", extra="ignore", frozen=True)

    chexbert_weights: Path | None = Field(None, description="CheXbert checkpoint (chexbert.pth).")
    chexbert_tokenizer: Path | None = Field(
        None, description="Local bert-base-uncased directory (vocab.txt, optionally config.json)."
    )
    chexbert_batch_size: int = Field(0, ge=0, description="Reports per CheXbert batch; 0 = 16 on CPU, 128 on GPU.")
    java: str = Field("java", description="Java runtime used for METEOR 1.5.")
    meteor_memory: str = Field("2G", description="Java heap for METEOR (-Xmx).")
