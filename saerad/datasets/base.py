"""One record type for every chest X-ray dataset.

Embedding, feature labelling, report evaluation and the baselines all iterate over :class:`Study`
records, so a new dataset only has to produce these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Study:
    """One imaging study: its images, the view of its frontal image and its report sections.

    ``image_ids`` are stable, unique string ids (one per entry of ``image_paths``) used as keys in
    embedding files and bundles; they never contain patient names, only dataset identifiers.

    ``labels``: structured finding labels where the dataset has them (nih-cxr14): condition name ->
    1 (present) or 0 (absent), for the 14 CheXpert conditions and any extra findings. Label-driven
    descriptions use them instead of labelling report text; ``None`` means "read the report".
    """

    study_id: str
    patient_id: str
    image_paths: tuple[Path, ...]
    image_ids: tuple[str, ...]
    view: str | None = None
    findings: str | None = None
    impression: str | None = None
    split: str | None = None
    labels: Mapping[str, int] | None = field(default=None, compare=False, hash=False)
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if len(self.image_paths) != len(self.image_ids):
            raise ValueError("image_paths and image_ids must have the same length")

    @property
    def primary_image(self) -> Path | None:
        """The image used for this study's report (loaders put the chosen frontal image first)."""
        return self.image_paths[0] if self.image_paths else None

    @property
    def primary_image_id(self) -> str | None:
        return self.image_ids[0] if self.image_ids else None
