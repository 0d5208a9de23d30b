"""Stand-in images and encoder for the diffusion tests (imported by conftest and test modules)."""

from __future__ import annotations

import numpy as np
import torch

TOKEN_DIM = 8


def blob_images(resolution: int = 16, n: int = 2) -> np.ndarray:
    """``n`` [0, 1] images, each a bright Gaussian blob on a gray background at a different place."""
    yy, xx = np.mgrid[0:resolution, 0:resolution] / (resolution - 1)
    out = []
    for k in range(n):
        cx, cy = 0.3 + 0.4 * (k % 2), 0.5 if n <= 2 else 0.3 + 0.4 * (k // 2)
        out.append(0.2 + 0.6 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.03))
    return np.stack(out).astype(np.float32)


class PixelEncoder:
    """A deterministic 'class-token encoder': mean intensities of a 2 x 4 grid of the image."""

    spec = "test:pixels"
    dim = TOKEN_DIM
    device = torch.device("cpu")

    def encode_images(self, images, batch_size: int = 32) -> torch.Tensor:
        from saerad.diffusion.data import resize_image

        return torch.stack([torch.from_numpy(resize_image(np.asarray(im), (2, 4)).reshape(-1)) for im in images])
