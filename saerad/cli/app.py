"""The typer application every ``saerad`` command registers on, and the options they share.

Its own module so that the command modules import it without importing :mod:`saerad.cli`, which
imports them (see ``_register``). An option two commands share is declared here once, so it has the
same name, short flag, type, choices and help everywhere.

Help is click's plain format (``rich_markup_mode=None``): typer's rich panels show a ``<bool>``
placeholder on every flag and read ``[default: ...]`` in help texts as markup, deleting it.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Literal

import typer

from saerad.datasets import DATASETS
from saerad.devices import DEVICE_HELP

app = typer.Typer(
    name="saerad",
    help="Grounded chest X-ray reports from sparse autoencoder features.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)

# Every command's --device: same values, same default, resolved by saerad.devices.resolve_device.
DeviceOption = Annotated[str, typer.Option("--device", help=DEVICE_HELP)]


class LocalizeChoice(str, Enum):
    """``--localize``: how sentences get their boxes and heatmaps (saerad.localize)."""

    attribution = "attribution"
    counterfactual = "counterfactual"


# Every command's --bundle: a directory written by `saerad build`; None = the embedded default.
BundleOption = Annotated[
    Path | None,
    typer.Option("--bundle", "-b", file_okay=False, help="Model bundle directory (default: the embedded one)."),
]

# Every command's --dataset: the formats saerad.datasets reads, checked before anything runs.
DatasetName = Literal[DATASETS]  # type: ignore[valid-type]
DatasetOption = Annotated[DatasetName, typer.Option("--dataset", help="Dataset format of --root.")]

# Where SAE feature ids come from, for every command that takes them.
FEATURE_IDS_HELP = (
    "SAE feature id, 0 to the bundle's width - 1 (repeatable). Ids are listed in a report's JSON "
    "'features' (saerad report -f json), by `saerad features`, and in a `saerad atlas` site."
)


class ArchChoice(str, Enum):
    """``--arch`` of ``train-sae`` and ``build``: the names of saerad.sae.architectures (a test keeps
    them equal; the registry is not imported here, it would load torch for ``saerad --help``)."""

    gated = "gated"
    batchtopk = "batchtopk"
    jumprelu = "jumprelu"
    matryoshka = "matryoshka"


ARCH_HELP = (
    "SAE architecture: gated, batchtopk (TopK at inference by a learned threshold), jumprelu, or "
    "matryoshka (BatchTopK with nested prefixes); docs/method.md [default: saerad.sae.run's, see the README]."
)
ArchOption = Annotated[ArchChoice | None, typer.Option("--arch", help=ARCH_HELP)]
