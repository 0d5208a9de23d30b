"""The encoder interface: a batch of X-ray images in, one class token per image out.

Preprocessing (file pixels -> model tensor) and encoding (tensor -> class token) are separate steps
on purpose: preprocessing runs in DataLoader worker processes, so decoding and resizing the next
batch overlap the forward pass of the current one. :attr:`ClassTokenEncoder.preprocessor` is
therefore a small picklable object that never touches the model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class ViTForward:
    """A differentiable forward pass: class tokens ``(B, dim)`` and, when asked, the tokens entering
    and leaving every layer (``hidden_states[0]`` = embeddings, ``[-1]`` = the last layer's output);
    the first ``prefix_tokens`` of each row are the class (and register) tokens, the rest patches."""

    class_tokens: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] = ()
    prefix_tokens: int = 1


class ClassTokenEncoder(ABC):
    """Images -> class tokens. Implementations run in eval mode under ``torch.inference_mode``."""

    spec: str  # how to load it again, e.g. "default" or "hf:/path/to/rad-dino"
    dim: int  # class-token width (384 for the default DINOv2-S, 768 for Rad-DINO)
    device: torch.device
    image_size: int  # side S of the (3, S, S) model input

    @property
    @abstractmethod
    def preprocessor(self) -> Callable[[np.ndarray], torch.Tensor]:
        """Picklable ``(H, W) float [0, 1] -> (3, S, S) float32`` callable, safe in worker processes."""

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(H, W) float image in [0, 1] -> (3, S, S) float32 tensor on the CPU."""
        return self.preprocessor(image)

    @abstractmethod
    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed batch -> (B, dim) float32 class tokens on the CPU."""

    def encode_images(self, images: Sequence[np.ndarray], batch_size: int = 32) -> torch.Tensor:
        """Convenience for small in-memory batches: preprocess then encode, ``batch_size`` at a time."""
        if len(images) == 0:
            return torch.empty(0, self.dim, dtype=torch.float32)
        chunks = []
        for start in range(0, len(images), batch_size):
            batch = torch.stack([self.preprocess(image) for image in images[start : start + batch_size]])
            chunks.append(self.encode(batch))
        return torch.cat(chunks)

    def differentiable_forward(self, pixel_values: torch.Tensor, masked_patches: torch.Tensor | None = None,
                               *, hidden_states: bool = False) -> ViTForward:
        """The forward pass with autograd left on, for attribution maps (ViT encoders only).

        ``masked_patches`` ``(B, n_patches)`` bool replaces those patch embeddings by the model's mask
        token (occlusion); ``hidden_states`` also returns every layer's tokens. Encoders that cannot
        do this refuse with a ConfigError.
        """
        from saerad.errors import ConfigError

        raise ConfigError(f"encoder {self.spec!r} gives no gradients: attribution maps need a torch ViT encoder")

    @abstractmethod
    def describe(self) -> dict:
        """JSON-able description (spec, dim, preprocessing, precision) for manifests and bundles."""
