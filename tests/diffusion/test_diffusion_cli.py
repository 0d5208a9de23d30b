"""`saerad figure` / `saerad intervene`: bad requests give one line before any model runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from report_builders import build_tiny_bundle, make_tiny_diffusion, random_xray_png  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    bundle = build_tiny_bundle(root / "bundle", diffusion_dir=make_tiny_diffusion(root / "diff"))
    return bundle, random_xray_png(root / "x.png")


def _main(args, capsys, monkeypatch) -> tuple[int, str, str]:
    from saerad.cli import main

    monkeypatch.setattr(sys, "argv", ["saerad", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def _one_line_error(code: int, err: str, needle: str) -> None:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("INFO", "figure", "intervene"))]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


@pytest.mark.parametrize(("extra", "needle"), [
    (["--feature", "99"], "not in this bundle"),
    (["--feature", "0", "--steps", "0"], "steps must be between 1 and 1000"),
    (["--feature", "0", "--steps", "100000"], "steps must be between 1 and 1000"),
    (["--feature", "0", "--strength", "nan"], "strength"),
])
def test_figure_refuses_bad_requests_in_one_line(setup, tmp_path, capsys, monkeypatch, extra, needle):
    bundle, image = setup
    out = tmp_path / "fig.png"
    code, _, err = _main(["figure", image, "--bundle", bundle, "--out", out, "--device", "cpu", *extra],
                         capsys, monkeypatch)
    _one_line_error(code, err, needle)
    assert not out.exists()


def test_figure_never_replaces_an_existing_or_special_file(setup, tmp_path, capsys, monkeypatch):
    bundle, image = setup
    existing = tmp_path / "fig.png"
    existing.write_bytes(b"keep me")
    code, _, err = _main(["figure", image, "--feature", "0", "--bundle", bundle, "--out", existing], capsys, monkeypatch)
    _one_line_error(code, err, "exists")
    assert existing.read_bytes() == b"keep me"
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for special in (fifo, Path(os.devnull)):
        code, _, err = _main(["figure", image, "--feature", "0", "--bundle", bundle, "--out", special, "--overwrite"],
                             capsys, monkeypatch)
        _one_line_error(code, err, "not a regular file")
    assert fifo.is_fifo()


def test_figure_does_not_create_missing_folders(setup, tmp_path, capsys, monkeypatch):
    bundle, image = setup
    out = tmp_path / "missing" / "deeper" / "fig.png"
    code, _, err = _main(["figure", image, "--feature", "0", "--bundle", bundle, "--out", out], capsys, monkeypatch)
    _one_line_error(code, err, "does not exist")
    assert not (tmp_path / "missing").exists()


def test_figure_writes_with_overwrite_and_a_progress_bar(setup, tmp_path, capsys, monkeypatch):
    bundle, image = setup
    out = tmp_path / "fig.png"
    out.write_bytes(b"old")
    code, stdout, err = _main(["figure", image, "--feature", "0", "--feature", "2", "--bundle", bundle, "--out", out,
                               "--steps", "3", "--device", "cpu", "--threads", "1", "--overwrite"], capsys, monkeypatch)
    assert code in (0, None), err
    assert "figure" in err and "6/6" in err  # the bar counted 2 x 3 denoiser calls
    from PIL import Image

    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 500


def test_intervene_refuses_removing_an_inactive_feature(setup, tmp_path, capsys, monkeypatch):
    from saerad.bundle import Bundle
    from saerad.encoders import load_encoder
    from saerad.imaging import load_xray

    bundle, image = setup
    loaded = Bundle.load(bundle)
    token = load_encoder(loaded.encoder_spec).encode_images([load_xray(image).pixels])
    inactive = [int(i) for i in torch.nonzero(loaded.sae.encode(token)[0] == 0).flatten()]
    if not inactive:
        pytest.skip("every feature of the tiny SAE is active on this image")
    out = tmp_path / "cf"
    code, _, err = _main(["intervene", image, "--feature", inactive[0], "--mode", "remove", "--out", out,
                          "--bundle", bundle, "--device", "cpu", "--steps", "2"], capsys, monkeypatch)
    _one_line_error(code, err, "not active on this image")
    assert not out.exists()


def test_intervene_refuses_an_output_that_is_a_file(setup, tmp_path, capsys, monkeypatch):
    bundle, image = setup
    out = tmp_path / "taken"
    out.write_text("x")
    code, _, err = _main(["intervene", image, "--feature", "0", "--mode", "add", "--out", out, "--bundle", bundle],
                         capsys, monkeypatch)
    _one_line_error(code, err, "not a folder")


def test_thread_choice(monkeypatch):
    from saerad.cli import threads
    from saerad.errors import ConfigError

    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.2, 0.0, 0.0))
    assert threads.choose_threads() == 1  # one of the two cores is busy
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert threads.choose_threads() == 2
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert threads.choose_threads() == 1
    assert threads.choose_threads(2) == 2
    with pytest.raises(ConfigError):
        threads.choose_threads(0)
