"""The typer application every ``saerad`` command registers on, and the options they share.

Its own module so that the command modules import it without importing :mod:`saerad.cli`, which
imports them (see ``_register``).
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

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
