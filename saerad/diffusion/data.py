"""Training pairs for the diffusion model: (image at the model resolution, class token).

Why these choices:

- Images are resized to a square ``R x R`` WITHOUT cropping or padding (aspect ratio changes):
  the whole film is kept, and a point's normalised coordinates are the same in the model image
  and in the original file, so boxes found on a map transfer to the original image as they are.
- Pixels live in ``[-1, 1]`` inside the model; everything outside the model uses ``[0, 1]``.
- Embedding ids of the form ``<id>#augK`` are augmented views whose pixels we cannot rebuild
  exactly, so they are skipped: the token of the unaugmented image conditions its own pixels.
- All pairs are held in memory (427 images at 128 px are 14 MB in fp16).
- The split is :mod:`saerad.datasets.split`'s: the model learns from the patients ``saerad build``
  may learn from (train and held-out) and never sees the test patients that ``saerad evaluate`` and
  the benchmarks measure on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from saerad.datasets.ids import is_augmented
from saerad.datasets.split import TEST, Role, partition
from saerad.errors import ConfigError
from saerad.imaging import resize_image  # noqa: F401 - re-exported: model images are resized here


def to_model(images01: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[0, 1] images (..., H, W) -> model tensors (B, 1, H, W) in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images01, dtype=np.float32))
    if x.ndim == 2:
        x = x[None]
    if x.ndim == 3:
        x = x[:, None]
    return x * 2.0 - 1.0


def from_model(x: torch.Tensor) -> np.ndarray:
    """Model tensors (B, 1, H, W) -> [0, 1] float32 arrays (B, H, W), clipped."""
    return ((x.detach().float().cpu()[:, 0] + 1.0) / 2.0).clamp(0.0, 1.0).numpy()


@dataclass
class PairedImages:
    """Images ``(N, 1, R, R)`` fp16 in [-1, 1] and their class tokens ``(N, d)`` fp32, by id."""

    ids: list[str]
    images: torch.Tensor
    tokens: torch.Tensor
    patient_ids: list[str]
    roles: list[Role]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, keep: Sequence[int]) -> PairedImages:
        idx = torch.as_tensor(list(keep), dtype=torch.long)
        return PairedImages(
            ids=[self.ids[i] for i in keep],
            images=self.images[idx],
            tokens=self.tokens[idx],
            patient_ids=[self.patient_ids[i] for i in keep],
            roles=[self.roles[i] for i in keep],
        )

    def split(self) -> tuple[PairedImages, PairedImages]:
        """(what a model may learn from, the test patients)."""
        test = [i for i, role in enumerate(self.roles) if role == TEST]
        taken = set(test)
        return self.subset([i for i in range(len(self)) if i not in taken]), self.subset(test)


def image_index(dataset: str, root: str | Path) -> dict[str, tuple[Path, str, Role]]:
    """image id -> (path, patient id, split role) for every image of a dataset."""
    from saerad.datasets import load_dataset

    studies = load_dataset(dataset, root)
    roles = partition(studies).role_of_image()
    index: dict[str, tuple[Path, str, Role]] = {}
    for study in studies:
        for path, image_id in zip(study.image_paths, study.image_ids):
            index[image_id] = (Path(path), study.patient_id, roles[image_id])
    return index


def load_pairs(
    embeddings,
    root: str | Path,
    *,
    dataset: str = "covid-cxr",
    resolution: int = 128,
    augmented_views: bool = False,
    progress: bool = True,
) -> PairedImages:
    """Pair embedding ids with their images, loaded with ``saerad.imaging.load_xray``.

    ``embeddings`` is an :class:`~saerad.encoders.store.EmbeddingSet` or a path to one. With
    ``augmented_views``, the file's ``<id>#augK`` rows are paired too: their pixels are rebuilt
    exactly (``saerad embed`` seeds view K of an image by (seed, id, K)), so every pair is (view, the
    token of that very view). Why: a few hundred images give the generator few examples of how a
    change of token shows in the image; the views add the crops and exposure changes the encoder
    itself reacts to.
    """
    from tqdm.auto import tqdm

    from saerad.datasets.ids import base_id, view_number
    from saerad.encoders.augment import augment_view, view_rng
    from saerad.imaging import load_xray

    if isinstance(embeddings, (str, Path)):
        from saerad.encoders.store import EmbeddingSet

        embeddings = EmbeddingSet.load(embeddings)
    index = image_index(dataset, root)
    rows = [(i, image_id) for i, image_id in enumerate(embeddings.ids)
            if augmented_views or not is_augmented(image_id)]
    missing = sorted({base_id(image_id) for _, image_id in rows} - set(index))
    if missing:
        raise ConfigError(
            f"{len(missing)} embedding ids are not images of {dataset} at {root} (e.g. {missing[0]!r}): "
            "were the embeddings made from another dataset?"
        )
    if not rows:
        raise ConfigError("the embedding file has no image ids to train on (only augmented views? pass augmented_views)")
    seed = int(embeddings.meta.get("seed", 0))
    by_source: dict[str, list[int]] = {}
    for k, (_, image_id) in enumerate(rows):
        by_source.setdefault(base_id(image_id), []).append(k)
    images = np.empty((len(rows), resolution, resolution), dtype=np.float32)
    for source, slots in tqdm(by_source.items(), desc="loading images", disable=not progress):
        pixels = load_xray(index[source][0]).pixels
        for k in slots:
            image_id = rows[k][1]
            view = pixels if image_id == source else augment_view(pixels, view_rng(seed, source, view_number(image_id)))
            images[k] = resize_image(view, resolution)
    tokens = embeddings.tokens[[i for i, _ in rows]].float()
    return PairedImages(
        ids=[image_id for _, image_id in rows],
        images=to_model(images).half(),
        tokens=tokens,
        patient_ids=[index[base_id(image_id)][1] for _, image_id in rows],
        roles=[index[base_id(image_id)][2] for _, image_id in rows],
    )
