"""Class tokens on disk: one safetensors file, loadable without pickle.

Layout: tensor ``tokens`` (N, d) float32 and tensor ``ids_utf8`` (uint8): the image ids joined by
``\\n`` and UTF-8 encoded (ids never contain newlines), so 377k MIMIC-CXR ids cost a few MB and no
JSON header bloat. The safetensors metadata (str -> str) holds ``format``, ``encoder`` (the spec) and
``meta``, a JSON object (encoder description, dataset, failures count...).

Augmented views (``saerad embed --augment K``) are stored as extra rows with ids ``<id>#aug1`` ...
``<id>#augK`` (:mod:`saerad.datasets.ids`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from saerad.datasets.ids import is_augmented
from saerad.errors import BundleError, ConfigError
from saerad.fileio import atomic_path

FORMAT = "saerad.embeddings/1"


@dataclass
class EmbeddingSet:
    """Class tokens of a set of images, row i belonging to ``ids[i]``."""

    ids: list[str]
    tokens: torch.Tensor  # (N, dim) float32
    encoder: str
    meta: dict = field(default_factory=dict)  # JSON-able provenance

    def __post_init__(self) -> None:
        self.ids = [str(i) for i in self.ids]
        if self.tokens.ndim != 2:
            raise ValueError(f"tokens must be (N, dim), got {tuple(self.tokens.shape)}")
        if len(self.ids) != self.tokens.shape[0]:
            raise ValueError(f"{len(self.ids)} ids for {self.tokens.shape[0]} token rows")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("ids must be unique")
        if any(not i or "\n" in i for i in self.ids):
            raise ValueError("ids must be non-empty and contain no newline")
        self.tokens = self.tokens.detach().to("cpu", torch.float32).contiguous()

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[1])

    def index(self) -> dict[str, int]:
        return {image_id: row for row, image_id in enumerate(self.ids)}

    def select(self, ids: Iterable[str]) -> EmbeddingSet:
        """Rows for ``ids``, in that order; :class:`ConfigError` naming the first unknown id."""
        ids = list(ids)
        lookup = self.index()
        missing = [i for i in ids if i not in lookup]
        if missing:
            raise ConfigError(f"{len(missing)} ids not in this embedding set, e.g. {missing[0]!r}")
        rows = torch.tensor([lookup[i] for i in ids], dtype=torch.long)
        return EmbeddingSet(ids=ids, tokens=self.tokens[rows], encoder=self.encoder, meta=dict(self.meta))

    def originals(self) -> EmbeddingSet:
        """Only the un-augmented views."""
        return self.select([i for i in self.ids if not is_augmented(i)])

    @classmethod
    def concat(cls, parts: Sequence[EmbeddingSet], meta: dict | None = None) -> EmbeddingSet:
        if not parts:
            raise ValueError("nothing to concatenate")
        encoders = {p.encoder for p in parts}
        if len(encoders) != 1:
            raise ConfigError(f"cannot mix class tokens of different encoders: {sorted(encoders)}")
        ids = [i for p in parts for i in p.ids]
        tokens = torch.cat([p.tokens for p in parts]) if ids else torch.empty(0, parts[0].dim)
        return cls(ids=ids, tokens=tokens, encoder=parts[0].encoder, meta=dict(meta if meta is not None else parts[0].meta))

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (temporary file in the same folder, then rename)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ids_bytes = "\n".join(self.ids).encode("utf-8")
        tensors = {
            "tokens": self.tokens,
            "ids_utf8": torch.from_numpy(np.frombuffer(ids_bytes, dtype=np.uint8).copy()),
        }
        metadata = {
            "format": FORMAT,
            "encoder": self.encoder,
            "count": str(len(self.ids)),
            "meta": json.dumps(self.meta, sort_keys=True, default=str),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> EmbeddingSet:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"embedding file {path} not found")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                if metadata.get("format") != FORMAT:
                    raise BundleError(f"{path} is not a saerad embedding file (format {metadata.get('format')!r})")
                tokens = handle.get_tensor("tokens")
                ids_bytes = handle.get_tensor("ids_utf8").numpy().tobytes()
        except BundleError:
            raise
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise BundleError(f"{path} is not a readable safetensors embedding file: {exc}") from exc
        ids = ids_bytes.decode("utf-8").split("\n") if ids_bytes else []
        try:
            meta = json.loads(metadata.get("meta", "{}"))
            return cls(ids=ids, tokens=tokens.float(), encoder=metadata.get("encoder", ""), meta=meta)
        except (ValueError, json.JSONDecodeError) as exc:
            raise BundleError(f"{path} is inconsistent: {exc}") from exc
