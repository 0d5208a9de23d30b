"""Builders of tiny randomly initialised Dinov2 checkpoints, saved the way Rad-DINO is."""

from __future__ import annotations

import json
from pathlib import Path

# Rad-DINO's processor settings, scaled down: shortest edge -> centre crop, its own mean/std
RAD_DINO_LIKE = {
    "image_processor_type": "BitImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 42},
    "resample": 3,
    "do_center_crop": True,
    "crop_size": {"height": 42, "width": 42},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.5307, 0.5307, 0.5307],
    "image_std": [0.2583, 0.2583, 0.2583],
    "do_convert_rgb": True,
}


def make_tiny_dinov2(directory: Path, processor: dict | None = None, *, hidden: int = 32, seed: int = 0) -> Path:
    import torch
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                          image_size=42, patch_size=14)
    Dinov2Model(config).eval().save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(processor or RAD_DINO_LIKE))
    return directory
