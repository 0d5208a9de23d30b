"""`saerad build` orchestration on a tiny folder dataset: all stages, skipping, resuming."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "report"))
from report_builders import make_tiny_encoder_dir, random_xray_png  # noqa: E402

from saerad.build import (  # noqa: E402
    DEFAULT_TARGET_L0,
    BuildConfig,
    auto_expansion,
    build,
    path_fingerprint,
    sae_train_config,
    stamp_path,
)
from saerad.bundle import Bundle  # noqa: E402

# Our own short reports, recycled over the images; patients hold two images each.
REPORTS = [
    "Small left pleural effusion. No pneumothorax.",
    "Cardiomegaly with mild pulmonary edema.",
    "The lungs are clear. No pleural effusion.",
    "Patchy opacity in the right lower lobe, consistent with pneumonia.",
    "Endotracheal tube in standard position. Bibasilar atelectasis.",
    "No acute cardiopulmonary abnormality.",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("folder-data")
    rows = []
    for i in range(24):
        random_xray_png(root / f"img{i:02d}.png", seed=i, size=(40, 40))
        rows.append({"image": f"img{i:02d}.png", "report": REPORTS[i % len(REPORTS)], "patient_id": f"p{i // 2}"})
    with (root / "reports.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "report", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)
    encoder = make_tiny_encoder_dir(tmp_path_factory.mktemp("enc") / "dinov2")
    return root, encoder


def _config(dataset, out: Path, **overrides) -> BuildConfig:
    root, encoder = dataset
    options = dict(
        dataset="folder", root=root, out=out, encoder=f"hf:{encoder}", expansion=2, sae_steps=40,
        val_fraction=0.25, top_images=4, progress=False, embed_batch_size=8,
    )
    options.update(overrides)
    return BuildConfig(**options)


def test_build_skip_and_resume(dataset, tmp_path):
    out = tmp_path / "bundle"
    cfg = _config(dataset, out)
    first = build(cfg)
    assert first.ran == {"embed": True, "train-sae": True, "dictionary": True, "bundle": True}

    bundle = Bundle.load(out)
    m = bundle.manifest
    assert m.encoder.dim == 32 and m.sae.config["d_sae"] == 64
    assert m.data.dataset == "folder" and m.data.n_images == 24 and m.data.n_patients == 12
    assert m.data.splits["train"] + m.data.splits["held_out"] == 24
    assert {"explained_variance", "l0", "dead_fraction"} <= set(m.sae.metrics)
    assert m.build["expansion"] == 2 and m.dictionary.includes_report_text
    split = json.loads((cfg.work_dir / "split.json").read_text())
    patients = lambda ids: {int(i[3:]) // 2 for i in ids}  # noqa: E731
    assert not patients(split["train"]) & patients(split["val"]), "patient-disjoint"

    again = build(cfg)
    assert not any(again.ran.values()), "everything current: nothing re-runs"

    # Only the later stages depend on the dictionary options; --no-report-text only on the bundle.
    changed = build(_config(dataset, out, top_images=3, include_report_text=False))
    assert changed.ran == {"embed": False, "train-sae": False, "dictionary": True, "bundle": True}
    assert not Bundle.load(out).manifest.dictionary.includes_report_text

    # A stage whose stamp is lost re-runs; the SAE trainer resumes from its final checkpoint, so the
    # SAE comes out identical and the stages after it stay current.
    sae_before = path_fingerprint(cfg.work_dir / "sae")
    stamp_path(cfg.work_dir, "train-sae").unlink()
    resumed = build(_config(dataset, out, top_images=3, include_report_text=False))
    assert resumed.ran == {"embed": False, "train-sae": True, "dictionary": False, "bundle": False}
    assert path_fingerprint(cfg.work_dir / "sae") == sae_before


def test_build_cli_options(dataset, tmp_path):
    from typer.testing import CliRunner

    import saerad.cli.build  # noqa: F401
    import saerad.cli.report  # noqa: F401
    from saerad.cli import app

    root, encoder = dataset
    out = tmp_path / "cli-bundle"
    result = CliRunner().invoke(
        app,
        ["build", "--dataset", "folder", "--root", str(root), "--out", str(out), "--encoder", f"hf:{encoder}",
         "--expansion", "1", "--steps", "20", "--no-report-text", "--name", "cli", "--version", "0.1"],
    )
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    assert "bundle written to" in result.stdout
    m = Bundle.load(out).manifest
    assert (m.name, m.version, m.sae.config["d_sae"]) == ("cli", "0.1", 32)
    assert not m.dictionary.includes_report_text


def test_build_from_precomputed_embeddings_with_options(dataset, tmp_path):
    import torch

    from saerad.encoders.store import EmbeddingSet
    from saerad.errors import ConfigError

    root, encoder = dataset
    ids = [f"img{i:02d}" for i in range(24)]
    extra = ["elsewhere", "img00#aug1"]  # rows of other images are dropped, augmented views kept
    tokens = torch.randn(len(ids) + 2, 32, generator=torch.Generator().manual_seed(0))
    embeddings = tmp_path / "tokens.safetensors"
    EmbeddingSet(ids=ids + extra, tokens=tokens, encoder=f"hf:{encoder.resolve()}").save(embeddings)

    cfg = _config(dataset, tmp_path / "b", embeddings=embeddings, encoder=f"hf:{encoder.resolve()}",
                  describer_options={"max_pvalue": 0.5}, findings_from_all_described=True)
    assert build(cfg).ran["embed"]
    assert EmbeddingSet.load(cfg.work_dir / "embeddings.safetensors").ids == ids + ["img00#aug1"]
    m = Bundle.load(tmp_path / "b").manifest
    assert m.report.usable_only is False and m.build["describer_options"] == {"max_pvalue": 0.5}

    with pytest.raises(ConfigError, match="not 'default'"):
        build(_config(dataset, tmp_path / "c", embeddings=embeddings, encoder="default"))
    with pytest.raises(ConfigError, match="describer options"):
        build(_config(dataset, tmp_path / "d", describer_options={"no_such_option": 1}))
    assert not (tmp_path / "d.work").exists(), "bad options are refused before any stage runs"


@pytest.mark.parametrize(("n_images", "dim", "expected"), [(377_000, 768, 64.0), (423, 384, 0.5), (3_000, 384, 2.0),
                                                           (10, 384, 0.125)])
def test_auto_expansion_keeps_two_images_per_feature(n_images, dim, expected):
    assert auto_expansion(n_images, dim) == expected


def test_sae_defaults_ask_for_a_sparsity_unless_lambda_is_given():
    controlled = sae_train_config(6_000, steps=None, lam=None, batch_size=None, seed=0)
    assert controlled.target_l0 == DEFAULT_TARGET_L0 and controlled.batch_size == 512 and controlled.steps == 6000
    fixed = sae_train_config(6_000, steps=None, lam=1.5, batch_size=None, seed=0)
    assert fixed.target_l0 is None and fixed.lam == 1.5
    large = sae_train_config(1_000_000, steps=None, lam=None, batch_size=None, seed=0, target_l0=20.0)
    assert large.target_l0 == 20.0 and large.batch_size == 4096 and large.steps == 20 * 1_000_000 // 4096
