"""The class-token-conditioned pixel-space UNet (docs/method.md#counterfactual-diffusion).

Why this shape:

- A diffusers :class:`~diffusers.UNet2DModel` on 1-channel images in ``[-1, 1]``. The class token
  enters through the timestep embedding only: a learned projection (our own MLP; ``UNet2DModel``
  has no "projection" class embedding and silently ignores unknown types, so it runs with
  ``class_embed_type="identity"`` and we hand it the projected vector) is ADDED to the timestep
  embedding, and ``resnet_time_scale_shift="scale_shift"`` turns that sum into an AdaGN
  scale-and-shift in every ResBlock. Cross-attention on one token would be a spatially uniform bias.
- Condition dropout replaces the projected token by a learned null embedding, so classifier-free
  guidance is possible; inversion and reconstruction use guidance 1 (the conditional model only).
- Tokens are standardised per dimension with statistics of the training set (buffers saved with
  the weights), because raw ViT class tokens have a few huge dimensions that would dominate the
  first linear layer; an SAE edit ``c + delta`` passes through the same affine map unchanged in
  direction.
- :class:`TokenConditionedUNet` is a diffusers ``ConfigMixin``: ``config.json`` rebuilds it exactly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin, UNet2DModel
from diffusers.configuration_utils import register_to_config
from torch import nn

from saerad.errors import BundleError
from saerad.fileio import atomic_path, atomic_write_json

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"


@dataclass(frozen=True)
class Architecture:
    """UNet widths and block layout. Attention only at low resolution, where it is cheap."""

    block_out_channels: tuple[int, ...]
    down_block_types: tuple[str, ...]
    up_block_types: tuple[str, ...]
    layers_per_block: int = 1
    norm_num_groups: int = 8
    attention_head_dim: int = 32


# "tiny": unit tests (a few K parameters, 32x32 works). "small": the CPU-trained default (4.3 M
# parameters, 8.7 MB in fp16, ~65 ms per 128x128 forward on one core). "base": for a GPU.
ARCHITECTURES: dict[str, Architecture] = {
    "tiny": Architecture(
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=8,
    ),
    "small": Architecture(
        block_out_channels=(16, 32, 64, 128, 128),
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    ),
    "base": Architecture(
        block_out_channels=(64, 128, 128, 256, 256, 512),
        down_block_types=(
            "DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D",
        ),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        norm_num_groups=32,
        attention_head_dim=64,
    ),
}


class TokenConditionedUNet(ModelMixin, ConfigMixin):
    """epsilon-prediction UNet ``eps(x_t, t, c)`` conditioned on a class token ``c``."""

    config_name = CONFIG_FILE

    @register_to_config
    def __init__(
        self,
        token_dim: int = 384,
        resolution: int = 128,
        block_out_channels: tuple[int, ...] = ARCHITECTURES["small"].block_out_channels,
        down_block_types: tuple[str, ...] = ARCHITECTURES["small"].down_block_types,
        up_block_types: tuple[str, ...] = ARCHITECTURES["small"].up_block_types,
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        attention_head_dim: int = 32,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        prediction_type: str = "epsilon",
    ) -> None:
        super().__init__()
        temb_dim = 4 * block_out_channels[0]
        self.unet = UNet2DModel(
            sample_size=resolution,
            in_channels=1,
            out_channels=1,
            block_out_channels=tuple(block_out_channels),
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            attention_head_dim=attention_head_dim,
            resnet_time_scale_shift="scale_shift",
            class_embed_type="identity",
        )
        # Projection of the standardised token into the timestep-embedding space.
        self.token_proj = nn.Sequential(nn.Linear(token_dim, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.null_embedding = nn.Parameter(torch.zeros(temb_dim))
        self.register_buffer("token_mean", torch.zeros(token_dim))
        self.register_buffer("token_std", torch.ones(token_dim))

    @classmethod
    def from_architecture(cls, name: str, *, token_dim: int, resolution: int) -> TokenConditionedUNet:
        if name not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(ARCHITECTURES)}")
        arch = ARCHITECTURES[name]
        if resolution % (2 ** (len(arch.block_out_channels) - 1)):
            raise ValueError(f"resolution {resolution} is not divisible by the UNet's downsampling")
        return cls(
            token_dim=token_dim,
            resolution=resolution,
            block_out_channels=arch.block_out_channels,
            down_block_types=arch.down_block_types,
            up_block_types=arch.up_block_types,
            layers_per_block=arch.layers_per_block,
            norm_num_groups=arch.norm_num_groups,
            attention_head_dim=arch.attention_head_dim,
        )

    @torch.no_grad()
    def set_token_statistics(self, tokens: torch.Tensor) -> None:
        """Standardise tokens with the training set's per-dimension mean and std."""
        tokens = tokens.float()
        self.token_mean.copy_(tokens.mean(0))
        self.token_std.copy_(tokens.std(0).clamp_min(1e-3 * tokens.std(0).mean().item() + 1e-8))

    def condition(self, tokens: torch.Tensor | None, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Class tokens ``(B, d)`` (or None = unconditional) -> embeddings ``(B, temb_dim)``.

        ``drop`` is a boolean ``(B,)`` mask of samples whose condition is replaced by the null
        embedding (condition dropout in training).
        """
        if tokens is None:
            return self.null_embedding[None]
        z = (tokens.to(self.token_mean.dtype) - self.token_mean) / self.token_std
        emb = self.token_proj(z.to(self.null_embedding.dtype))
        if drop is not None:
            emb = torch.where(drop[:, None], self.null_embedding[None].to(emb.dtype), emb)
        return emb

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        tokens: torch.Tensor | None,
        drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.condition(tokens, drop)
        if emb.shape[0] != sample.shape[0]:
            emb = emb.expand(sample.shape[0], -1)
        return self.unet(sample, timestep, class_labels=emb).sample

    def guided_eps(
        self, sample: torch.Tensor, timestep: torch.Tensor | int, tokens: torch.Tensor, guidance: float = 1.0
    ) -> torch.Tensor:
        """``eps_null + g (eps_c - eps_null)``; ``g = 1`` runs the conditional model only."""
        eps = self(sample, timestep, tokens)
        if guidance == 1.0:
            return eps
        eps_null = self(sample, timestep, None)
        return eps_null + guidance * (eps - eps_null)

    @property
    def resolution(self) -> int:
        return int(self.config.resolution)


def make_schedulers(model: TokenConditionedUNet):
    """A DDIM sampler and its inverse with the training noise schedule; eta = 0, no clipping.

    ``clip_sample=False`` on both: clipping the predicted x0 would make the map from x_T to x0
    non-invertible and break inversion.
    """
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    common = dict(
        num_train_timesteps=model.config.num_train_timesteps,
        beta_schedule=model.config.beta_schedule,
        prediction_type=model.config.prediction_type,
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
        timestep_spacing="leading",
    )
    return DDIMScheduler(**common), DDIMInverseScheduler(**common)


# ---------------------------------------------------------------------------- persistence


def save_diffusion(
    model: TokenConditionedUNet,
    directory: str | os.PathLike,
    *,
    fp16: bool = False,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` (fp16 for shipping) and ``metadata.json``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if fp16 else torch.float32
    # Buffers (token statistics) stay fp32: they hold large raw-token values.
    tensors = {
        k: (v.detach().to(dtype) if k not in ("token_mean", "token_std") else v.detach().float()).cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    atomic_write_json(directory / CONFIG_FILE, {"_class_name": type(model).__name__, **dict(model.config)})
    meta = dict(metadata or {})
    meta.setdefault("weights_dtype", "float16" if fp16 else "float32")
    atomic_write_json(directory / METADATA_FILE, meta)
    return directory


def load_diffusion(directory: str | os.PathLike, device: str | torch.device = "cpu") -> TokenConditionedUNet:
    """Rebuild the model from ``config.json`` and load its weights (as fp32 on CPU, fp32 elsewhere)."""
    from saerad.fileio import read_model_dir

    config, tensors = read_model_dir(directory, CONFIG_FILE, WEIGHTS_FILE, "diffusion model")
    if config.get("_class_name", TokenConditionedUNet.__name__) != TokenConditionedUNet.__name__:
        raise BundleError(f"{Path(directory) / CONFIG_FILE} describes a {config.get('_class_name')}, not a TokenConditionedUNet")
    try:
        model = TokenConditionedUNet.from_config(config)
        missing, unexpected = model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise BundleError(f"diffusion model in {directory} does not match its config: {exc}") from exc
    if missing or unexpected:
        raise BundleError(f"diffusion weights in {directory}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.to(device).eval()


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / METADATA_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
