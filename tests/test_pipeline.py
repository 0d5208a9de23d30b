"""Reporter: image -> encoder -> SAE -> selection -> composer -> GroundedReport, on a tiny bundle."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "report"))
from report_builders import DESCRIPTIONS, UNUSABLE, build_tiny_bundle, copy_with_ood_check, random_xray_png  # noqa: E402

from saerad.errors import BundleError, ConfigError, ImageDecodeError  # noqa: E402
from saerad.pipeline import Reporter  # noqa: E402
from saerad.report.schema import Box, GroundedReport  # noqa: E402


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("pipeline") / "tiny")


@pytest.fixture(scope="module")
def reporter(bundle_dir) -> Reporter:
    return Reporter.from_bundle(bundle_dir)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    return random_xray_png(tmp_path_factory.mktemp("img") / "x.png")


def test_report_structure(reporter, image):
    report = reporter.report(image)
    assert isinstance(report, GroundedReport)
    assert report.research_use_only is True
    assert report.bundle["name"] == "tiny" and report.bundle["encoder"] == "hf:encoder"
    assert {"decode", "encode", "sae", "compose", "total"} <= set(report.timings_ms)
    assert report.image.height == 64 and report.image.width == 48 and report.image.source_format == "png"
    assert report.features, "the tiny SAE fires on about half its features"
    active = {f.id: f for f in report.features}
    for sentence in report.findings:
        assert sentence.boxes is None and sentence.heatmap is None
        assert sentence.features
        for ref in sentence.features:
            assert ref.id in active and ref.usable and ref.id not in UNUSABLE
            assert ref.activation == active[ref.id].activation > 0
    finding_texts = {s.text for s in report.findings}
    if {0, 1} <= set(active) or {7, 1} <= set(active):
        assert "No pleural effusion." not in finding_texts
    assert report.text() == " ".join(s.text for s in report.findings)


def test_inputs_path_bytes_and_xray_agree(reporter, image):
    from saerad.imaging import load_xray

    a = reporter.report(image)
    b = reporter.report(image.read_bytes())
    c = reporter.report(load_xray(image))
    assert a.findings == b.findings == c.findings
    assert a.features == b.features == c.features


def test_top_k_threshold_and_usable(reporter, image):
    full = reporter.report(image, usable_only=False)
    chosen = {f.id for s in full.findings for f in s.features}
    described_active = {f.id for f in full.features if DESCRIPTIONS[f.id]}
    assert chosen <= described_active
    one = reporter.report(image, top_k=1)
    assert len({f.id for s in one.findings for f in s.features}) <= 1
    assert len(one.features) == len(full.features)  # top_k limits findings, not the feature list
    none = reporter.report(image, threshold=1e9)
    assert none.findings == [] and none.features == [] and none.findings_text() == ""
    assert none.status == "nothing_validated" and "No finding could be validated" in none.text()
    with pytest.raises(ConfigError):
        reporter.report(image, top_k=-1)


def test_ranking_uses_decoder_norm_contribution(reporter, image):
    report = reporter.report(image)
    norms = reporter.bundle.sae.W_dec.detach().norm(dim=1)
    contribution = [f.activation * float(norms[f.id]) for f in report.features]
    assert contribution == sorted(contribution, reverse=True)


def test_report_tokens_matches_single_image(reporter, image):
    from saerad.imaging import load_xray

    token = reporter.encoder.encode_images([load_xray(image).pixels])
    [batch_report] = reporter.report_tokens(token)
    assert batch_report.findings == reporter.report(image).findings
    zero = reporter.report_features(np.zeros(reporter.bundle.sae.cfg.d_sae))
    assert zero.findings == [] and zero.features == []


def test_counterfactual_localisation_needs_a_diffusion_model(reporter, image):
    with pytest.raises(BundleError, match="no diffusion model"):
        reporter.report(image, localize="counterfactual")
    with pytest.raises(ConfigError, match="unknown localisation method"):
        reporter.report(image, localize="gradcam")


@pytest.mark.parametrize(("asked", "method"), [(True, "attribution"), ("attribution", "attribution"),
                                                ("counterfactual", "counterfactual")])
def test_localize_reuses_the_token_and_the_reporters_device(bundle_dir, tmp_path, image, monkeypatch, asked, method):
    import saerad.localize.report as stage

    diffusion = tmp_path / "unet"
    diffusion.mkdir()
    (diffusion / "config.json").write_text("{}")
    with_diffusion = build_tiny_bundle(tmp_path / "with-diffusion", encoder_dir=bundle_dir / "encoder",
                                       diffusion_dir=diffusion)
    calls = []

    def fake_localize(report, xray, token, *, bundle, encoder, method, steps, device):
        calls.append((xray.original_size, token, bundle, encoder, method, device))
        for sentence in report.findings:
            sentence.boxes = [Box(x_min=0.1, y_min=0.1, x_max=0.5, y_max=0.5)]
        return report

    monkeypatch.setattr(stage, "localize_report", fake_localize)
    reporter = Reporter.from_bundle(with_diffusion, device="cpu")
    encoded = []
    original = reporter.encoder.encode_images
    monkeypatch.setattr(reporter.encoder, "encode_images", lambda images: encoded.append(1) or original(images))
    report = reporter.report(image, localize=asked)
    size, token, bundle, encoder, used, device = calls[0]
    assert size == (64, 48) and token.shape == (reporter.encoder.dim,) and encoded == [1]  # encoded once
    assert bundle is reporter.bundle and encoder is reporter.encoder and used == method
    assert device == reporter.device == torch.device("cpu")
    assert "localize" in report.timings_ms
    assert all(s.boxes for s in report.findings)


def test_encoder_mismatch_is_refused(reporter):
    class WideEncoder:
        spec, dim = "fake", reporter.encoder.dim + 1

    with pytest.raises(BundleError, match="expects"):
        Reporter(reporter.bundle, WideEncoder())


def test_bad_image_and_llm_fallback(reporter, image, monkeypatch):
    with pytest.raises(ImageDecodeError):
        reporter.report(b"definitely not an image")
    for key in ("SAERAD_LLM_BASE_URL", "SAERAD_LLM_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    llm = Reporter(reporter.bundle, reporter.encoder, composer="llm")
    report = llm.report(image)
    if report.findings:
        assert report.composer == "deterministic (llm fallback)"
        assert any("no LLM endpoint configured" in n for n in report.notes)
    assert [s.text for s in report.findings] == [s.text for s in reporter.report(image).findings]


def test_features_are_deterministic(reporter):
    tokens = torch.randn(3, reporter.encoder.dim, generator=torch.Generator().manual_seed(1))
    assert np.array_equal(reporter.features(tokens), reporter.features(tokens))


def test_reporter_keeps_its_device(bundle_dir, reporter):
    from saerad.devices import resolve_device

    assert reporter.device == resolve_device("auto")  # from_bundle's default
    assert Reporter.from_bundle(bundle_dir, device="cpu").device == torch.device("cpu")
    assert Reporter(reporter.bundle, reporter.encoder).device == reporter.bundle.sae.W_enc.device
    with pytest.raises(ConfigError, match="unknown device"):
        Reporter.from_bundle(bundle_dir, device="gpu0")


# ------------------------------------------------------------------------- out-of-distribution check


@pytest.fixture(scope="module")
def checked_bundle(tmp_path_factory, bundle_dir):
    """The tiny bundle with an out-of-distribution check calibrated on 30 radiograph-like images."""
    return copy_with_ood_check(bundle_dir, tmp_path_factory.mktemp("ood") / "bundle")


def test_a_bundle_without_the_check_reports_unchecked(reporter, image):
    report = reporter.report(image)
    assert reporter.bundle.ood is None and report.out_of_distribution is None and report.warnings == []


def test_images_unlike_the_training_ones_carry_a_warning(checked_bundle, tmp_path):
    from PIL import Image

    from saerad.report.schema import OUT_OF_DISTRIBUTION_WARNING

    reporter = Reporter.from_bundle(checked_bundle)
    assert reporter.bundle.manifest.ood is not None and reporter.bundle.info()["ood_check"]
    like = reporter.report(random_xray_png(tmp_path / "new.png", seed=999))
    assert like.out_of_distribution is not None and not like.out_of_distribution.flagged
    assert like.warnings == [] and not like.text().startswith("Warning")
    Image.new("L", (1, 1), 255).save(tmp_path / "dot.png")
    dot = reporter.report(tmp_path / "dot.png")
    assert dot.out_of_distribution.flagged and dot.out_of_distribution.distance > dot.out_of_distribution.threshold
    assert dot.warnings == [OUT_OF_DISTRIBUTION_WARNING] and dot.text().startswith(OUT_OF_DISTRIBUTION_WARNING)
    assert OUT_OF_DISTRIBUTION_WARNING not in dot.findings_text()  # evaluation scores the findings alone
    tokens = reporter.encoder.encode_images([np.ones((1, 1), np.float32)])
    assert reporter.report_tokens(tokens)[0].out_of_distribution.flagged
