"""Where torch runs: the one place that turns a ``--device`` value into a :class:`torch.device`.

Every command, setting and loader that takes a device accepts the same values and means the same by
them: ``"auto"`` is CUDA when torch sees a GPU and the CPU otherwise; ``"cpu"``, ``"cuda"`` and
``"cuda:N"`` are taken literally, and a CUDA device on a machine without one is refused (a silent
fall-back to the CPU would turn a GPU job into a days-long one without a word). Under a launcher
(``torchrun``, ``accelerate launch``), ``local_rank`` picks this process's GPU for ``"auto"`` and
``"cuda"``.

torch is imported on first use, so the CLI can name these values without paying for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from saerad.errors import ConfigError

if TYPE_CHECKING:
    import torch

AUTO = "auto"
DEVICE_HELP = "auto (cuda if available, else cpu) | cpu | cuda | cuda:N"


def resolve_device(device: str | torch.device | None = AUTO, *, local_rank: int | None = None) -> torch.device:
    """The torch device ``device`` names (``None`` means ``"auto"``); :class:`ConfigError` if unusable."""
    import torch

    name = AUTO if device is None else str(device).strip()
    if name == AUTO:
        if not torch.cuda.is_available():
            return torch.device("cpu")
        name = "cuda"
    try:
        resolved = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"unknown device {name!r}: use {DEVICE_HELP}") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available: use --device cpu or auto")
        if resolved.index is None and local_rank is not None:
            resolved = torch.device("cuda", local_rank)
    return resolved
