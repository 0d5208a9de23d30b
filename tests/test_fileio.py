"""Output paths: checked before any work, special files never replaced, no folders made up."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from saerad.errors import ConfigError
from saerad.fileio import atomic_write_text, check_output_dir, check_output_file


def test_a_new_file_or_folder_in_an_existing_folder_is_fine(tmp_path):
    assert check_output_file(tmp_path / "x.png") == tmp_path / "x.png"
    assert check_output_dir(tmp_path / "new") == tmp_path / "new"
    assert check_output_dir(tmp_path) == tmp_path


def test_an_existing_regular_file_is_replaced_only_when_allowed(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("{}")
    assert check_output_file(target, overwrite=True) == target
    with pytest.raises(ConfigError, match="exists"):
        check_output_file(target)


def test_a_missing_parent_folder_is_refused_and_not_created(tmp_path):
    target = tmp_path / "nonexistent" / "dir" / "x.png"
    with pytest.raises(ConfigError, match="does not exist: create it first"):
        check_output_file(target, overwrite=True)
    with pytest.raises(ConfigError, match="does not exist"):
        check_output_dir(target)
    assert not (tmp_path / "nonexistent").exists()


def test_special_files_are_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    sock_path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        for special in ("/dev/null", "/dev/full", fifo, sock_path):
            with pytest.raises(ConfigError, match="not a regular file"):
                check_output_file(special, overwrite=True)
            with pytest.raises(ConfigError, match="not a folder"):
                check_output_dir(special)


def test_file_versus_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(ConfigError, match="not a regular file"):
        check_output_file(tmp_path, overwrite=True)
    with pytest.raises(ConfigError, match="does not exist"):
        check_output_file(tmp_path / "f" / "x.png")  # a parent that is a file


def test_atomic_writes_never_replace_a_special_file(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="only replaces regular files"):
        atomic_write_text(fifo, "data")
    assert Path(fifo).is_fifo()
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]  # no temporary file left behind
