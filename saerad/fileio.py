"""Atomic file writes, output-path checks and an inter-process lock, shared by every stage.

Readers (a resumed job, a second replica, a user's ``ls``) must never see half a file, and a crash
must not leave a truncated bundle or cache entry behind: everything is written to a temporary name
in the destination folder, flushed to disk, then renamed over the target. A rename replaces whatever
the name points at, so a target that exists and is not a regular file (``/dev/full``, a FIFO, a
socket) is refused instead: renaming over a device node would destroy it.

:func:`check_output_path` is what every command runs on its ``--out`` before computing anything, so
a bad path costs one line and no work.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from saerad.errors import ConfigError


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


def check_output_path(
    path: str | os.PathLike,
    *,
    kind: Literal["file", "folder"],
    option: str = "--out",
    overwrite: bool = True,
) -> Path:
    """Refuse an output path that cannot or must not be written; returns it as a :class:`Path`.

    ``kind="file"``: an existing target must be a regular file (and ``overwrite`` allowed);
    ``kind="folder"``: an existing target must be a folder. Either way the parent folder must exist
    and be writable: a mistyped path fails here with one line instead of after the computation, and
    never creates folders the user did not ask for (``/nonexistent/dir/x.png``). Special files are
    never replaced.
    """
    path = Path(path).expanduser()
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError as exc:
        raise ConfigError(f"{option} {path}: {exc.strerror or exc}", code="invalid_output") from exc
    if mode is not None:
        if kind == "folder" and not stat.S_ISDIR(mode):
            raise ConfigError(f"{option} {path} is {_kind(mode) if not stat.S_ISREG(mode) else 'a file'}, "
                              "not a folder", code="invalid_output")
        if kind == "file" and not stat.S_ISREG(mode):
            raise ConfigError(f"{option} {path} is {_kind(mode)}; give a path to a regular file",
                              code="invalid_output")
        if kind == "file" and not overwrite:
            raise ConfigError(f"{option} {path} already exists; choose another path or allow overwriting",
                              code="invalid_output")
        if not os.access(path, os.W_OK):
            raise ConfigError(f"{option} {path} is not writable (permission denied)", code="invalid_output")
        return path
    parent = path.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise ConfigError(f"{option} {path}: the folder {parent} {what}; create it first", code="invalid_output")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: cannot write into {parent} (permission denied)", code="invalid_output")
    return path


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
