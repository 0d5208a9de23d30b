"""Hugging Face Dinov2 backend: Rad-DINO, facebook/dinov2-*, or the converted default encoder.

A checkpoint directory holds ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``, loaded
by transformers without unpickling arbitrary objects) + ``preprocessor_config.json``. The class token
is ``last_hidden_state[:, 0]``, i.e. token 0 after the final layernorm (Rad-DINO's model card calls it
the CLS embedding; it equals Dinov2Model's ``pooler_output``).

On the CPU in fp32 the loaded model is patched by :mod:`saerad.encoders.cpu_speed` (oneDNN linear
layers, fused GELU, folded layer scale; self-checked against the plain model), which brings it level
with onnxruntime on the same graph. Precision: ``"auto"`` (default) is bf16 autocast on CUDA (needed
for Rad-DINO at 518 x 518 to reach hundreds of images/s) and fp32 on the CPU; ``"fp32"``, ``"bf16"``,
``"fp16"`` force one. Tokens always come back as float32 on the CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import torch

from saerad.devices import resolve_device
from saerad.encoders.base import ClassTokenEncoder, ViTForward
from saerad.encoders.preprocess import ImagePreprocessor, read_saerad_options
from saerad.errors import ConfigError

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("dinov2", "dinov2_with_registers")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class HFDinov2Encoder(ClassTokenEncoder):
    """Class tokens from a local Dinov2 checkpoint directory, with its own image processing."""

    def __init__(
        self,
        directory: str | Path,
        *,
        spec: str | None = None,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        cpu_fast_path: bool = True,
    ) -> None:
        from transformers import AutoConfig, AutoModel

        directory = Path(directory).expanduser()
        if not (directory / "config.json").is_file():
            raise ConfigError(f"{directory} is not a Hugging Face checkpoint directory (no config.json)")
        config = AutoConfig.from_pretrained(directory)
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"{directory} holds a {config.model_type!r} model; saerad's HF backend expects Dinov2 "
                f"({', '.join(SUPPORTED_MODEL_TYPES)})"
            )
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.directory = directory.resolve()
        self.spec = spec or f"hf:{self.directory}"
        self.device = resolve_device(device)
        self.precision = ("bf16" if self.device.type == "cuda" else "fp32") if precision == "auto" else precision
        if self.device.type == "cpu" and self.precision == "fp16":
            raise ConfigError("fp16 is for CUDA; use fp32 or bf16 on the CPU")
        self._preprocessor = ImagePreprocessor.from_pretrained(self.directory)
        size = self._preprocessor.output_size
        if size[0] != size[1]:
            raise ConfigError(f"{self.directory}: the image processor makes {size} inputs; expected square")
        self.image_size = int(size[0])
        self.dim = int(config.hidden_size)
        self._options = read_saerad_options(self.directory)
        self.model = self._load_model(AutoModel)
        self.cpu_fast_path: dict = {}
        if self.device.type == "cpu" and self.precision == "fp32" and cpu_fast_path:
            self._speed_up_cpu(AutoModel)

    def _load_model(self, auto_model):
        from transformers.utils import logging as hf_logging

        # A local load takes milliseconds; transformers' per-load progress bar is only noise on stderr.
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            model = auto_model.from_pretrained(self.directory, dtype=torch.float32, attn_implementation="sdpa")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the model weights in {self.directory}: {exc}") from exc
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        return model.eval().to(self.device)

    def _speed_up_cpu(self, auto_model) -> None:
        from saerad.encoders.cpu_speed import speed_up_for_cpu

        probe = torch.randn(1, 3, self.image_size, self.image_size, generator=torch.Generator().manual_seed(0))
        try:
            with torch.inference_mode():
                self.cpu_fast_path = speed_up_for_cpu(self.model, probe)
        except RuntimeError as exc:
            log.warning("CPU fast path disabled: %s", exc)
            self.model = self._load_model(auto_model)

    @property
    def preprocessor(self):
        return self._preprocessor

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"expected (B, 3, S, S) pixel values, got {tuple(pixel_values.shape)}")
        with torch.inference_mode(), self._autocast():
            pixels = pixel_values.to(self.device, dtype=torch.float32, non_blocking=True)
            hidden = self.model(pixel_values=pixels).last_hidden_state
            tokens = hidden[:, 0]
        return tokens.float().cpu()

    def differentiable_forward(self, pixel_values: torch.Tensor, masked_patches: torch.Tensor | None = None,
                               *, hidden_states: bool = False) -> ViTForward:
        pixels = pixel_values.to(self.device, dtype=torch.float32)
        if masked_patches is not None:
            masked_patches = masked_patches.to(self.device, dtype=torch.bool)
        with self._autocast():
            out = self.model(pixel_values=pixels, bool_masked_pos=masked_patches, output_hidden_states=hidden_states)
        return ViTForward(class_tokens=out.last_hidden_state[:, 0].float(),
                          hidden_states=tuple(out.hidden_states) if hidden_states else (),
                          prefix_tokens=1 + int(getattr(self.model.config, "num_register_tokens", 0) or 0))

    @property
    def patch_size(self) -> int:
        return int(self.model.config.patch_size)

    def describe(self) -> dict:
        cfg = self.model.config
        out = {
            "spec": self.spec,
            "dim": self.dim,
            "image_size": self.image_size,
            "class_token": "last_hidden_state[:, 0] (token 0 after the final layernorm)",
            "model": {
                "type": cfg.model_type,
                "hidden_size": cfg.hidden_size,
                "num_hidden_layers": cfg.num_hidden_layers,
                "num_attention_heads": cfg.num_attention_heads,
                "patch_size": cfg.patch_size,
            },
            "precision": self.precision,
            "cpu_fast_path": bool(self.cpu_fast_path.get("onednn_linear")),
            "preprocessing": self._preprocessor.describe(),
        }
        if "source" in self._options:
            out["source"] = self._options["source"]
        return json.loads(json.dumps(out, default=str))
