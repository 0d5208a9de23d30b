"""Atomic file writes and an inter-process lock, shared by every stage.

Readers (a resumed job, a second replica, a user's ``ls``) must never see half a file, and a crash
must not leave a truncated bundle or cache entry behind: everything is written to a temporary name
in the destination folder, flushed to disk, then renamed over the target.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
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
