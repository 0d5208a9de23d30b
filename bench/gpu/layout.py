"""What the GPU call carries and brings back: one place for the folder layout and the size limits.

The carry folder (made here by ``prepare.py``, read there by ``run.py``)::

    runs/gpu-carry/
      manifest.json                 what was packed, from where, sizes
      nih-cxr14/                    the dataset's layout (metadata.csv, boxes.csv, README.md,
                                    images/*.png downscaled), so load_dataset("nih-cxr14", ...) works
      embeddings.safetensors        class tokens of those images (made from the full-size originals)
      encoder/                      the token encoder's architecture and preprocessing, no weights
      wheels/*.whl                  Python packages the device image lacks (installed by run.sh)

The device tool's limits (docs/gpu.md): 64 MiB travel with the working tree; at most 8 files come
back from ``$OUT``, 16 MiB each, no deeper than ``$OUT/a/b/file``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CARRY = REPO / "runs" / "gpu-carry"

MANIFEST = "manifest.json"
DATASET_DIR = "nih-cxr14"
DATASET = "nih-cxr14"
EMBEDDINGS = "embeddings.safetensors"
ENCODER_DIR = "encoder"
WHEELS_DIR = "wheels"
ENCODER_FILES = ("config.json", "preprocessor_config.json", "saerad_encoder.json")

TRAVEL_LIMIT = 64 * 2**20
RETURN_MAX_FILES = 8
RETURN_MAX_FILE_BYTES = 16 * 2**20
RETURN_MAX_DEPTH = 2  # folders below $OUT

# Distributions the device image does not have (its package list: the device tool's KINDS.md) but the
# GPU checks import; carried as wheels at the versions installed here, so the device runs what the
# tests here ran. Everything else (torch, transformers, huggingface-hub, safetensors, numpy, scipy,
# scikit-image, pillow, tqdm, typer, pytest) is already in the image.
DEVICE_MISSING = (
    "diffusers",
    "importlib-metadata",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",  # pydantic needs a newer one than the image may have
)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def tree_bytes(repo: Path = REPO) -> int:
    """Bytes of what travels without being named: tracked plus untracked-but-not-ignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo, capture_output=True, check=True,
    ).stdout.decode("utf-8", "replace").split("\0")
    total = 0
    for name in filter(None, listed):
        path = repo / name
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total
