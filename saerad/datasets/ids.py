"""Image ids and the ids of their augmented views.

``saerad embed --augment K`` stores K extra views of an image as rows ``<id>#aug1`` ... ``<id>#augK``;
:func:`base_id` maps a view back to its image, so splits keep a patient's views on its side and
statistics count each image once. Dataset ids never contain ``#aug`` (the embedder refuses them).
"""

from __future__ import annotations

AUG_SEP = "#aug"


def view_id(image_id: str, k: int) -> str:
    """The id of augmented view ``k`` (1-based) of ``image_id``."""
    return f"{image_id}{AUG_SEP}{k}"


def base_id(image_id: str) -> str:
    """``"p10/s5/img#aug2"`` -> ``"p10/s5/img"``; unchanged for an original view."""
    head, sep, tail = image_id.rpartition(AUG_SEP)
    return head if sep and tail.isdigit() else image_id


def is_augmented(image_id: str) -> bool:
    return base_id(image_id) != image_id


def view_number(image_id: str) -> int:
    """``k`` of an augmented view id (0 for an original)."""
    return int(image_id.rpartition(AUG_SEP)[2]) if is_augmented(image_id) else 0
