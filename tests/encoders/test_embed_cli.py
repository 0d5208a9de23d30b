"""``saerad embed`` end to end on a tiny encoder (the command module is thin; the job is tested apart)."""

from __future__ import annotations

from typer.testing import CliRunner

import saerad.cli.embed  # noqa: F401 - registers the commands
from saerad.cli import app
from saerad.encoders.store import EmbeddingSet
from saerad.errors import ConfigError


def test_embed_command_writes_tokens_and_failures(tiny_dinov2_dir, image_folder, tmp_path):
    out = tmp_path / "emb.safetensors"
    args = ["embed", "--dataset", "folder", "--root", str(image_folder), "--out", str(out),
            "--encoder", f"hf:{tiny_dinov2_dir}", "--batch-size", "4", "--num-workers", "0", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout
    emb = EmbeddingSet.load(out)
    assert len(emb) == 7 and emb.dim == 32 and emb.meta["dataset"] == "folder"
    assert (tmp_path / "emb.failed.json").exists()


def test_embed_command_reports_bad_options(tmp_path):
    result = CliRunner().invoke(app, ["embed", "--dataset", "nope", "--root", str(tmp_path), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "'nope' is not one of" in result.output  # refused while parsing
    result = CliRunner().invoke(app, ["embed", "--dataset", "folder", "--root", str(tmp_path),
                                      "--out", str(tmp_path / "missing" / "x")])
    assert isinstance(result.exception, ConfigError) and "does not exist" in str(result.exception)
