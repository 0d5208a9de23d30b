"""The ``saerad`` command as a first-time user meets it: help that reads right, options that mean the
same everywhere, and one clear line (before any work) for every bad argument or output path."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import get_args
from unittest import mock

import pytest

from saerad.datasets import DATASETS

sys.path.insert(0, str(Path(__file__).resolve().parent / "report"))
from report_builders import build_tiny_bundle, random_xray_png  # noqa: E402


def _commands():
    import typer.main

    from saerad.cli import _register, app

    _register()
    group = typer.main.get_command(app)
    return {name: group.get_command(None, name) for name in group.list_commands(None)}


def run(capsys, *args) -> tuple[int, str, str]:
    """``saerad ARGS`` through the real entry point (one-line errors, exit codes), in-process."""
    from saerad.cli import main

    with mock.patch.object(sys, "argv", ["saerad", *map(str, args)]):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------------------------- help


@pytest.mark.parametrize("name", sorted(_commands()))
def test_help_has_no_placeholder_on_flags_and_no_cut_defaults(capsys, name):
    code, out, _ = run(capsys, name, "--help")
    assert code == 0
    assert "<bool>" not in out
    assert not re.search(r"\w \.(\s|$)", out), out  # a "[default: ...]" eaten as markup left "steps ."


def test_bracketed_defaults_in_help_survive(capsys):
    _, out, _ = run(capsys, "train-sae", "--help")
    assert "[default: 6,000 below 50k" in out.replace("\n", " ").replace("  ", " ")


def test_feature_options_say_where_ids_come_from(capsys):
    for name in ("intervene", "figure"):
        _, out, _ = run(capsys, name, "--help")
        assert "saerad features" in " ".join(out.split())


# ------------------------------------------------------------------------------- shared options


def _option(command, name):
    return next((p for p in command.params if name in getattr(p, "opts", ())), None)


def test_bundle_device_and_dataset_options_are_the_same_everywhere():
    with_bundle, with_dataset = [], []
    for name, command in _commands().items():
        bundle = _option(command, "--bundle")
        if bundle is not None:
            with_bundle.append(name)
            assert "-b" in bundle.opts, name
            assert bundle.type_descriptor.is_path and bundle.type_descriptor.path_type == "dir", name
        device = _option(command, "--device")
        if device is not None and name != "serve":  # serve: SAERAD_DEVICE, else auto
            assert device.default == "auto", name
        dataset = _option(command, "--dataset")
        if dataset is not None:
            with_dataset.append(name)
            assert tuple(dataset.type_descriptor.choices or ()) == DATASETS, name
    assert {"report", "serve", "intervene", "figure", "evaluate", "atlas", "features"} <= set(with_bundle)
    assert {"build", "embed", "evaluate", "atlas", "train-diffusion"} <= set(with_dataset)


def test_an_unknown_dataset_is_refused_by_every_command_that_takes_one(capsys, tmp_path):
    for args in (["embed", "--root", tmp_path, "--out", tmp_path / "e.safetensors"],
                 ["evaluate", "--root", tmp_path, "--out", tmp_path / "o"],
                 ["build", "--root", tmp_path, "--out", tmp_path / "b"]):
        code, _, err = run(capsys, *args, "--dataset", "chexpert")
        assert code == 2 and "'chexpert' is not one of" in err, (args[0], err)


# --------------------------------------------------------------------------------- output paths


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    bundle = build_tiny_bundle(root / "bundle")
    images = [random_xray_png(root / f"x{i}.png", seed=i) for i in range(2)]
    return bundle, images


OUTPUT_COMMANDS = {
    "embed (file)": lambda data, out: ["embed", "--dataset", "folder", "--root", data, "--out", out],
    "build (folder)": lambda data, out: ["build", "--dataset", "folder", "--root", data, "--out", out],
    "train-sae (folder)": lambda data, out: ["train-sae", "--embeddings", data / "x0.png", "--out", out],
    "label-reports (file)": lambda data, out: ["label-reports", data / "reports.csv", "--out", out],
    "evaluate (folder)": lambda data, out: ["evaluate", "--dataset", "folder", "--root", data, "--out", out],
}


@pytest.mark.parametrize("command", sorted(OUTPUT_COMMANDS))
@pytest.mark.parametrize("target", ["/dev/full", "missing-parent", "fifo"])
def test_bad_outputs_fail_in_one_line_before_any_work(capsys, tmp_path, tiny, command, target):
    data = tiny[1][0].parent
    (data / "reports.csv").write_text("id,text\n1,The lungs are clear.\n")
    if target == "missing-parent":
        out = tmp_path / "nonexistent" / "dir" / "x"
    elif target == "fifo":
        out = tmp_path / "pipe"
        os.mkfifo(out)
    else:
        out = Path(target)
    code, stdout, err = run(capsys, *OUTPUT_COMMANDS[command](data, out))
    assert code == 2, (command, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "not a regular file" in lines[0] or "not a folder" in lines[0] or "does not exist" in lines[0], err
    assert not (tmp_path / "nonexistent").exists()
    if target == "/dev/full":
        assert Path("/dev/full").is_char_device()
    if target == "fifo":
        assert out.is_fifo()


# ------------------------------------------------------------------------------------- report


def test_threshold_and_top_k_are_checked_before_the_bundle_loads(capsys, tiny, tmp_path):
    _, images = tiny
    missing_bundle = tmp_path / "no-such-bundle"
    for value in ("nan", "-5", "inf", "1e12"):
        code, _, err = run(capsys, "report", images[0], "--bundle", missing_bundle, "--threshold", value)
        assert code == 2 and "threshold must be a finite activation between 0 and" in err, (value, err)
    code, _, err = run(capsys, "report", images[0], "--bundle", missing_bundle, "--top-k", "-1")
    assert code == 2 and "top_k must be between 0 and" in err


def test_several_images_report_the_good_ones_and_name_the_bad(capsys, tiny, tmp_path):
    import json

    bundle, images = tiny
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    code, out, err = run(capsys, "report", images[0], bad, images[1], "--bundle", bundle)
    assert code == 1
    assert out.count("FINDINGS (research use only") == 2
    assert f"== {images[0]}" in out and f"== {images[1]}" in out and "bad.png" not in out
    assert f"error: {bad}:" in err and "1 of 3 image(s) could not be reported" in err

    code, out, err = run(capsys, "report", images[0], bad, "--bundle", bundle, "--format", "json")
    assert code == 1
    payload = json.loads(out)
    assert [item["file"] for item in payload] == [str(images[0]), str(bad)]
    assert payload[0]["report"]["research_use_only"] is True
    assert payload[1]["error"]["code"] == "invalid_image"

    code, out, _ = run(capsys, "report", images[0], bad, images[1], "--bundle", bundle, "--format", "fhir")
    assert code == 1 and len(json.loads(out)["entry"]) == 2


def test_text_lists_the_same_active_features_as_json_in_the_same_order(capsys, tiny):
    import json
    import re

    bundle, images = tiny
    _, text, _ = run(capsys, "report", images[0], "--bundle", bundle)
    _, raw, _ = run(capsys, "report", images[0], "--bundle", bundle, "--format", "json")
    report = json.loads(raw)
    listed = [int(m) for m in re.findall(r"^  #(\d+) +activation", text, flags=re.M)]
    assert listed and listed == [f["id"] for f in report["features"]]
    strengths = [f["strength"] for f in report["features"]]
    assert strengths == sorted(strengths, reverse=True)
    assert f"ACTIVE FEATURES ({len(listed)}, strongest first)" in text
    for f in report["features"]:
        if f["description"]:
            assert f["description"] in text


def test_features_lists_and_searches_the_dictionary(capsys, tiny):
    bundle, _ = tiny
    code, out, _ = run(capsys, "features", "--bundle", bundle)
    assert code == 0 and "Small left pleural effusion." in out
    code, out, _ = run(capsys, "features", "effusion", "--bundle", bundle, "--usable")
    assert code == 0 and "effusion" in out.lower() and "Cardiomegaly" not in out


def test_serve_checks_the_port_before_anything_else(capsys, tmp_path):
    import socket
    import time

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        t0 = time.monotonic()
        code, _, err = run(capsys, "serve", "--port", port, "--bundle", tmp_path / "no-such-bundle")
    assert code == 2 and time.monotonic() - t0 < 5
    assert err.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use; stop the other " \
                          "server or pass --port"


def test_dataset_option_type_lists_exactly_the_loaders():
    from saerad.cli.app import DatasetName

    assert get_args(DatasetName) == DATASETS
