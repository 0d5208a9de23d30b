"""``saerad serve``: run the HTTP API with uvicorn.

Command-line options override the matching ``SAERAD_*`` variables; they are written back into the
environment so that with ``--workers N`` every worker process builds the same settings
(:func:`saerad.service.app.app_from_env`).
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import typer

from saerad.cli.app import app
from saerad.devices import DEVICE_HELP
from saerad.errors import ConfigError


@app.command("serve")
def serve(
    bundle: Path = typer.Option(None, "--bundle", "-b", file_okay=False, help="Bundle directory (default: SAERAD_BUNDLE or the embedded bundle)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 0.0.0.0 only behind a firewall or proxy."),
    port: int = typer.Option(8000, min=1, max=65535),
    workers: int = typer.Option(None, min=1, help="Worker processes (default: SAERAD_WORKERS or 1)."),
    job_db: Path = typer.Option(None, "--job-db", help="SQLite job database (default: SAERAD_JOB_DB)."),
    device: str = typer.Option(None, "--device", help=f"{DEVICE_HELP} (default: SAERAD_DEVICE or auto)."),
    atlas: Path = typer.Option(None, "--atlas", help="Serve this `saerad atlas` folder at /atlas/ (default: SAERAD_ATLAS_DIR)."),
) -> None:
    """Serve grounded reports over HTTP (see docs/deployment.md)."""
    check_port_free(host, port)  # seconds before the bundle would load, not after
    import uvicorn

    from saerad.devices import resolve_device
    from saerad.service.logs import configure_logging
    from saerad.service.settings import ServiceSettings

    if bundle is not None:
        if not bundle.is_dir():
            raise ConfigError(f"--bundle {bundle} is not a directory")
        os.environ["SAERAD_BUNDLE"] = str(bundle.resolve())
    if workers is not None:
        os.environ["SAERAD_WORKERS"] = str(workers)
    if job_db is not None:
        os.environ["SAERAD_JOB_DB"] = str(job_db.resolve())
    if device is not None:
        os.environ["SAERAD_DEVICE"] = device
    if atlas is not None:
        os.environ["SAERAD_ATLAS_DIR"] = str(atlas.resolve())
    try:
        settings = ServiceSettings()
    except Exception as exc:  # pydantic ValidationError: a bad SAERAD_* value
        raise ConfigError(f"invalid SAERAD_* settings: {exc}") from exc
    # Refuse a missing, corrupted or mismatched bundle here, as one line (exit 2), rather than as a
    # traceback from the server's startup. Checksums only; the server loads the model itself.
    from saerad.bundle import bundle_root, read_manifest, verify_files

    root = bundle_root(settings.bundle)
    verify_files(root, read_manifest(root))
    resolve_device(settings.device)
    if settings.atlas_dir is not None:
        from saerad.service.atlas import check_atlas_dir

        check_atlas_dir(settings.atlas_dir)

    # The service logs JSON through its own handler; drop the CLI's plain-text one.
    import logging

    for handler in list(logging.getLogger().handlers):
        logging.getLogger().removeHandler(handler)
    configure_logging(settings.log_level, settings.log_json)
    uvicorn.run(
        "saerad.service.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=settings.workers,
        log_config=None,  # keep our JSON logging
        access_log=False,  # our access line omits query strings and client addresses
        proxy_headers=True,
        server_header=False,
        timeout_graceful_shutdown=30,
    )


def check_port_free(host: str, port: int) -> None:
    """Bind ``host:port`` as uvicorn will (SO_REUSEADDR) and let go; a taken port or unknown host is one line."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: unknown host ({exc.strerror})") from exc
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            hint = "; stop the other server or pass --port" if exc.errno == errno.EADDRINUSE else ""
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from exc
