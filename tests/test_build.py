"""`saerad build` orchestration on a tiny folder dataset: all stages, skipping, resuming."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "report"))
from report_builders import make_tiny_encoder_dir, random_xray_png  # noqa: E402

from saerad.build import BuildConfig, build  # noqa: E402
from saerad.bundle import Bundle  # noqa: E402
from saerad.datasets.split import DEFAULT_POLICY  # noqa: E402
from saerad.encoders.store import EmbeddingSet  # noqa: E402
from saerad.stages import path_fingerprint, stamp_path  # noqa: E402

# Our own short reports, recycled over the images; patients hold two images each.
REPORTS = [
    "Small left pleural effusion. No pneumothorax.",
    "Cardiomegaly with mild pulmonary edema.",
    "The lungs are clear. No pleural effusion.",
    "Patchy opacity in the right lower lobe, consistent with pneumonia.",
    "Endotracheal tube in standard position. Bibasilar atelectasis.",
    "No acute cardiopulmonary abnormality.",
]


N_IMAGES = 40  # 20 patients: by the split's patient hash 14 train, 3 held out, 3 test


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("folder-data")
    rows = []
    for i in range(N_IMAGES):
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
        top_images=4, progress=False, embed_batch_size=8,
    )
    options.update(overrides)
    return BuildConfig(**options)


def test_build_skip_and_resume(dataset, tmp_path):
    out = tmp_path / "bundle"
    cfg = _config(dataset, out)
    first = build(cfg)
    assert first.ran == {"embed": True, "train-sae": True, "dictionary": True, "ood": True, "bundle": True}

    bundle = Bundle.load(out)
    m = bundle.manifest
    assert m.encoder.dim == 32 and m.sae.config["d_sae"] == 64
    roles = {f"p{i}": DEFAULT_POLICY.role(f"p{i}") for i in range(N_IMAGES // 2)}
    counts = {r: 2 * sum(v == r for v in roles.values()) for r in ("train", "held_out", "test")}
    assert m.data.splits == {"train": counts["train"], "held_out": counts["held_out"], "test_excluded": counts["test"]}
    assert m.data.dataset == "folder" and m.data.n_images == counts["train"] + counts["held_out"]
    assert {"explained_variance", "l0", "dead_fraction"} <= set(m.sae.metrics)
    assert m.build["expansion"] == 2 and m.dictionary.includes_report_text
    # the test patients are never read: not embedded, not in any feature's top images
    embedded = EmbeddingSet.load(cfg.work_dir / "embeddings.safetensors").ids
    test_images = {f"img{i:02d}" for i in range(N_IMAGES) if roles[f"p{i // 2}"] == "test"}
    assert test_images and not test_images & set(embedded)
    assert not test_images & {t.image_id for f in bundle.dictionary.features for t in f.top_images}
    sae_run = json.loads((cfg.work_dir / "sae" / "metrics.json").read_text())
    assert sae_run["vectors"] == {"train": counts["train"], "held_out": counts["held_out"]}
    # the out-of-distribution check is calibrated on the training patients' images only
    assert m.ood is not None and bundle.ood is not None and bundle.ood.dim == 32
    assert m.ood.calibration["n_images"] == counts["train"] and m.ood.threshold == pytest.approx(bundle.ood.threshold)

    again = build(cfg)
    assert not any(again.ran.values()), "everything current: nothing re-runs"

    # Only the later stages depend on the dictionary options; --no-report-text only on the bundle.
    changed = build(_config(dataset, out, top_images=3, include_report_text=False))
    assert changed.ran == {"embed": False, "train-sae": False, "dictionary": True, "ood": False, "bundle": True}
    assert not Bundle.load(out).manifest.dictionary.includes_report_text

    # A stage whose stamp is lost re-runs; the SAE trainer resumes from its final checkpoint, so the
    # SAE comes out identical and the stages after it stay current.
    sae_before = path_fingerprint(cfg.work_dir / "sae" / "sae.safetensors")
    stamp_path(cfg.work_dir, "train-sae").unlink()
    resumed = build(_config(dataset, out, top_images=3, include_report_text=False))
    assert resumed.ran == {"embed": False, "train-sae": True, "dictionary": False, "ood": False, "bundle": False}
    assert path_fingerprint(cfg.work_dir / "sae" / "sae.safetensors") == sae_before


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
         "--expansion", "1", "--steps", "20", "--no-report-text", "--name", "cli", "--version", "0.1",
         "--arch", "jumprelu"],
    )
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    assert "bundle written to" in result.stdout
    m = Bundle.load(out).manifest
    assert (m.name, m.version, m.sae.config["d_sae"], m.sae.config["architecture"]) == ("cli", "0.1", 32, "jumprelu")
    assert not m.dictionary.includes_report_text


def test_build_from_precomputed_embeddings_with_options(dataset, tmp_path):
    import torch

    from saerad.errors import ConfigError

    root, encoder = dataset
    ids = [f"img{i:02d}" for i in range(N_IMAGES)]
    extra = ["elsewhere", "img00#aug1"]  # rows of other images are dropped, augmented views kept
    tokens = torch.randn(len(ids) + 2, 32, generator=torch.Generator().manual_seed(0))
    embeddings = tmp_path / "tokens.safetensors"
    EmbeddingSet(ids=ids + extra, tokens=tokens, encoder=f"hf:{encoder.resolve()}").save(embeddings)

    cfg = _config(dataset, tmp_path / "b", embeddings=embeddings, encoder=f"hf:{encoder.resolve()}",
                  describer_options={"max_pvalue": 0.5}, findings_from_all_described=True)
    assert build(cfg).ran["embed"]
    fitting = [i for i in ids if DEFAULT_POLICY.role(f"p{int(i[3:]) // 2}") != "test"]
    assert EmbeddingSet.load(cfg.work_dir / "embeddings.safetensors").ids == fitting + ["img00#aug1"]
    m = Bundle.load(tmp_path / "b").manifest
    assert m.report.usable_only is False and m.build["describer_options"] == {"max_pvalue": 0.5}

    with pytest.raises(ConfigError, match="not 'default'"):
        build(_config(dataset, tmp_path / "c", embeddings=embeddings, encoder="default"))
    bare = tmp_path / "bare"
    bare.mkdir()
    for i in range(6):
        random_xray_png(bare / f"x{i}.png", seed=i, size=(40, 40))
    with pytest.raises(ConfigError, match="neither labels nor report text"):
        build(_config(dataset, tmp_path / "e", root=bare))
    assert not (tmp_path / "e.work").exists()
    with pytest.raises(ConfigError, match="describer options"):
        build(_config(dataset, tmp_path / "d", describer_options={"no_such_option": 1}))
    assert not (tmp_path / "d.work").exists(), "bad options are refused before any stage runs"


def test_calibrate_ood_adds_the_check_to_a_bundle_built_without_it(dataset, tmp_path):
    import shutil

    from typer.testing import CliRunner

    import saerad.cli.build  # noqa: F401
    from saerad.bundle import MANIFEST
    from saerad.cli import app
    from saerad.errors import ConfigError

    root, _ = dataset
    out = tmp_path / "old-bundle"
    cfg = _config(dataset, out)
    build(cfg)
    # A bundle of an earlier saerad: no ood entry, no ood files.
    manifest = json.loads((out / MANIFEST).read_text())
    manifest.pop("ood")
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("ood/")}
    shutil.rmtree(out / "ood")
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert Bundle.load(out).ood is None  # still loads, unchecked

    for extra in ([], ["--embeddings", str(cfg.work_dir / "embeddings.safetensors")]):
        result = CliRunner().invoke(app, ["calibrate-ood", "--bundle", str(out), "--dataset", "folder",
                                          "--root", str(root), "--device", "cpu", *extra])
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == 0, result.output
        assert "out-of-distribution check added" in result.stdout
        loaded = Bundle.load(out)
        assert loaded.ood is not None
        assert loaded.manifest.ood.calibration["n_images"] == loaded.manifest.data.splits["train"]
    result = CliRunner().invoke(app, ["calibrate-ood", "--bundle", str(out), "--dataset", "covid-cxr", "--root", str(root)])
    assert isinstance(result.exception, ConfigError) and "was trained on folder" in str(result.exception)


def test_build_trains_the_asked_sae_architecture(dataset, tmp_path):
    """A BatchTopK bundle goes through the dictionary, the bundle and the report like a gated one."""
    from saerad.errors import ConfigError
    from saerad.pipeline import Reporter

    cfg = _config(dataset, tmp_path / "topk", sae_architecture="batchtopk", sae_target_l0=3)
    build(cfg)
    bundle = Bundle.load(tmp_path / "topk")
    assert bundle.manifest.sae.config["architecture"] == "batchtopk" and bundle.sae.cfg.k == 3
    assert float(bundle.sae.threshold) > 0  # estimated in training: inference needs no batch
    tokens = EmbeddingSet.load(cfg.work_dir / "embeddings.safetensors").tokens[:4]
    reports = Reporter.from_bundle(tmp_path / "topk", device="cpu").report_tokens(tokens)
    assert len(reports) == 4 and all(r.features for r in reports)
    with pytest.raises(ConfigError, match="no sparsity coefficient"):
        _config(dataset, tmp_path / "x", sae_architecture="batchtopk", sae_lambda=1.0)
    with pytest.raises(ConfigError, match="unknown SAE architecture"):
        _config(dataset, tmp_path / "x", sae_architecture="sparsemax")
