"""Output paths: checked before any work, special files never replaced, no folders made up."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from saerad.errors import ConfigError
from saerad.fileio import atomic_write_text, check_output_path


def test_a_new_file_in_an_existing_folder_is_fine(tmp_path):
    assert check_output_path(tmp_path / "x.png", kind="file") == tmp_path / "x.png"
    assert check_output_path(tmp_path / "new", kind="folder") == tmp_path / "new"


def test_an_existing_regular_file_is_replaced_only_when_allowed(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("{}")
    assert check_output_path(target, kind="file") == target
    with pytest.raises(ConfigError, match="already exists"):
        check_output_path(target, kind="file", overwrite=False)


def test_a_missing_parent_folder_is_refused_and_not_created(tmp_path):
    target = tmp_path / "nonexistent" / "dir" / "x.png"
    with pytest.raises(ConfigError, match="does not exist; create it first"):
        check_output_path(target, kind="file")
    with pytest.raises(ConfigError, match="does not exist"):
        check_output_path(target, kind="folder")
    assert not (tmp_path / "nonexistent").exists()


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_device_node_is_refused(kind):
    with pytest.raises(ConfigError, match="a device"):
        check_output_path("/dev/null", kind=kind)


def test_a_fifo_and_a_socket_are_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="named pipe"):
        check_output_path(fifo, kind="file")
    sock_path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(ConfigError, match="socket"):
            check_output_path(sock_path, kind="file")


def test_file_versus_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_output_path(tmp_path / "f", kind="folder")
    with pytest.raises(ConfigError, match="a folder"):
        check_output_path(tmp_path, kind="file")


def test_a_parent_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        check_output_path(tmp_path / "f" / "x.png", kind="file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="permission denied"):
            check_output_path(locked / "x.png", kind="file")
    finally:
        locked.chmod(0o700)


def test_atomic_writes_never_replace_a_special_file(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="only replaces regular files"):
        atomic_write_text(fifo, "data")
    assert Path(fifo).is_fifo()
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]  # no temporary file left behind
