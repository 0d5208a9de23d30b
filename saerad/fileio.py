"""Atomic file writes, output-path checks, an inter-process lock, file checksums and the reader of
saved model folders, shared by every stage.

Readers (a resumed job, a second replica, a user's ``ls``) must never see half a file, and a crash
must not leave a truncated bundle or cache entry behind: everything is written to a temporary name
in the destination folder, flushed to disk, then renamed over the target. A rename replaces whatever
the name points at, so a target that exists and is not a regular file (``/dev/full``, a FIFO, a
socket) is refused instead: renaming over a device node would destroy it.

:func:`check_output_file` and :func:`check_output_dir` are what every command runs on its ``--out``
before computing anything, so a bad path costs one line and no work.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from saerad.errors import BundleError, ConfigError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed.

    The temporary file gets ordinary permissions (mkstemp and safetensors create 0600 files, which
    would make shipped model files unreadable to other users).
    """
    path = Path(path)
    _refuse_special(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        _refuse_special(path)  # it may have appeared while we wrote
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically and durably (fsync before the rename)."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_json(path: str | os.PathLike, data: Any, **dumps_kwargs: Any) -> None:
    """JSON (indented by default) written with :func:`atomic_write_text`."""
    dumps_kwargs.setdefault("indent", 2)
    atomic_write_text(path, json.dumps(data, **dumps_kwargs) + "\n")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _refuse_special(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}", code="invalid_output") from exc
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{path} is {_kind(mode)}; saerad only replaces regular files", code="invalid_output")


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Exclusive advisory lock (fcntl) held for the ``with`` block; serialises processes on one host."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_output_file(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Refuse, before any work, an output file that cannot or should not be written.

    An existing path is refused unless ``overwrite`` (and even then only a regular file: a device,
    fifo or folder is never replaced by a rename); the parent folder must exist, so a typo never
    creates folders (at the filesystem root, say).
    """
    from saerad.errors import ConfigError

    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise ConfigError(f"{path} exists and is not a regular file: choose another output path")
        if not overwrite:
            raise ConfigError(f"{path} exists: choose another output path or pass --overwrite")
    if not path.parent.is_dir():
        raise ConfigError(f"folder {path.parent} does not exist: create it first")
    return path


def check_output_dir(path: str | os.PathLike, names: list[str] | None = None, *, overwrite: bool = False) -> Path:
    """Refuse an output folder that is not a folder, or whose files ``names`` exist (unless
    ``overwrite``); its parent must exist (only the folder itself is created)."""
    from saerad.errors import ConfigError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a folder: choose another output folder")
    if not path.exists() and not path.parent.is_dir():
        raise ConfigError(f"folder {path.parent} does not exist: create it first")
    if path.is_dir():
        for name in names or []:
            target = path / name
            if (target.exists() or target.is_symlink()) and not (overwrite and target.is_file()):
                raise ConfigError(f"{target} exists: choose another output folder or pass --overwrite")
    return path


def read_model_dir(
    directory: str | os.PathLike, config_file: str, weights_file: str, what: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON config and the tensors of a saved model folder (an SAE, a diffusion model).

    Weights are safetensors, so nothing is unpickled; a missing, unreadable or malformed file is one
    :class:`BundleError` naming ``what`` was expected.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg_path, w_path = directory / config_file, directory / weights_file
    if not cfg_path.is_file() or not w_path.is_file():
        raise BundleError(f"{directory} has no {config_file} + {weights_file}: not a saved {what}")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
        tensors = load_file(str(w_path))
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, OSError) as exc:
        raise BundleError(f"cannot read {what} in {directory}: {exc}") from exc
    if not isinstance(config, dict):
        raise BundleError(f"{cfg_path} is not a JSON object")
    return config, tensors


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (bundles, build stages and the encoder wheel check it)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
