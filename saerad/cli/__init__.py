"""The ``saerad`` command. Thin: each sub-module parses options and calls the library.

Heavy imports (torch, transformers, diffusers) happen inside the commands so ``saerad --help`` is
instant. Errors derived from :class:`~saerad.errors.SaeradError` print one line and exit 2.
"""

from __future__ import annotations

import logging
import sys

import typer

from saerad.cli.app import DeviceOption, app
from saerad.errors import SaeradError

__all__ = ["DeviceOption", "app", "main"]


def _register() -> None:
    # Each module adds its commands to ``app`` on import, in pipeline order.
    import saerad.cli.atlas  # noqa: F401
    import saerad.cli.build  # noqa: F401
    import saerad.cli.diffusion  # noqa: F401
    import saerad.cli.embed  # noqa: F401
    import saerad.cli.evaluate  # noqa: F401
    import saerad.cli.pacs  # noqa: F401
    import saerad.cli.report  # noqa: F401
    import saerad.cli.sae  # noqa: F401
    import saerad.cli.serve  # noqa: F401


def main() -> None:
    from saerad.cli.threads import prepare_openmp

    prepare_openmp()  # before any command imports torch
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _register()
    try:
        app()
    except SaeradError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
