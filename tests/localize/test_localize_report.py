"""localize_report on a tiny bundle: every localised sentence gets boxes and a gray heatmap, either way."""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from report_builders import build_tiny_bundle, make_tiny_diffusion, random_xray_png  # noqa: E402


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("localize")
    with_diffusion = build_tiny_bundle(root / "with", diffusion_dir=make_tiny_diffusion(root / "diffusion-src"))
    plain = build_tiny_bundle(root / "plain", encoder_dir=root / "with-encoder-src")
    return {"with": with_diffusion, "plain": plain}


@pytest.fixture(scope="module")
def xray(tmp_path_factory):
    from saerad.imaging import load_xray

    return load_xray(random_xray_png(tmp_path_factory.mktemp("img") / "x.png", size=(40, 30)))


def _report(bundle_dir, xray):
    from saerad.bundle import Bundle
    from saerad.encoders import load_encoder
    from saerad.pipeline import Reporter

    bundle = Bundle.load(bundle_dir)
    encoder = load_encoder(bundle.encoder_spec)
    token = encoder.encode_images([xray.pixels])[0]
    report = Reporter(bundle, encoder).report(xray)
    return bundle, encoder, token, report


def _png(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.partition(",")[2])))


@pytest.mark.parametrize("method", ["attribution", "counterfactual"])
def test_every_localised_sentence_gets_boxes_and_a_gray_heatmap(bundles, xray, method):
    from saerad.localize.report import localize_report

    bundle, encoder, token, report = _report(bundles["with"], xray)
    out = localize_report(report, xray, token, bundle=bundle, encoder=encoder, method=method, steps=3)
    localized = [s for s in out.findings if any(f.activation > 0 for f in s.features)]
    assert localized and out.localization.method == method and out.localization.sentences == len(localized)
    for sentence in localized:
        assert sentence.boxes is not None
        for box in sentence.boxes:
            assert 0 <= box.x_min <= box.x_max <= 1 and 0 <= box.y_min <= box.y_max <= 1
        with _png(sentence.heatmap) as picture:
            assert picture.mode == "L"
            assert abs(picture.width / picture.height - 30 / 40) < 0.05  # the whole image, its aspect
    assert f"localize_{method}" in out.timings_ms
    assert report.localization is None and all(s.heatmap is None for s in report.findings)  # a copy


def test_attribution_needs_no_diffusion_model_but_counterfactual_does(bundles, xray):
    from saerad.errors import BundleError, ConfigError
    from saerad.localize.report import localize_report

    bundle, encoder, token, report = _report(bundles["plain"], xray)
    out = localize_report(report, xray, token, bundle=bundle, encoder=encoder, method="attribution")
    assert out.localization.detail["attribution"]
    with pytest.raises(BundleError, match="no diffusion model"):
        localize_report(report, xray, token, bundle=bundle, encoder=encoder, method="counterfactual")
    with pytest.raises(ConfigError, match="unknown localisation method"):
        localize_report(report, xray, token, bundle=bundle, encoder=encoder, method="gradcam")


def test_attribution_works_at_the_map_size_not_the_film_size(bundles, tmp_path, monkeypatch):
    """A 64-Mpx film must not get full-size masks per sentence (the service's memory bound): the body
    mask is made at the map's size, whatever the film's."""
    import saerad.heatmaps.body as body_module
    from saerad.imaging import load_xray
    from saerad.localize.attribution import MAP_SIDE
    from saerad.localize.report import localize_report

    big = load_xray(random_xray_png(tmp_path / "big.png", size=(1600, 1200)))
    bundle, encoder, token, report = _report(bundles["with"], big)
    shapes = []
    real = body_module.body_mask
    monkeypatch.setattr(body_module, "body_mask", lambda image, shape=None: shapes.append(shape) or real(image, shape))
    out = localize_report(report, big, token, bundle=bundle, encoder=encoder, method="attribution")
    assert out.localization.sentences and shapes
    assert all(shape is not None and max(shape) <= MAP_SIDE for shape in shapes)


def test_the_token_is_reused_not_encoded_again(bundles, xray, monkeypatch):
    from saerad.localize.report import localize_report

    bundle, encoder, token, report = _report(bundles["with"], xray)
    calls = []
    monkeypatch.setattr(encoder, "encode", lambda *a, **k: calls.append(1))
    localize_report(report, xray, token, bundle=bundle, encoder=encoder, method="counterfactual", steps=2)
    assert calls == []


def test_counterfactual_adds_features_that_are_inactive(bundles, xray):
    from saerad.localize.counterfactual import counterfactual_maps

    bundle, encoder, token, report = _report(bundles["with"], xray)
    with torch.no_grad():
        codes = bundle.sae.encode(token[None])[0]
    inactive = [int(i) for i in torch.nonzero(codes == 0).flatten()][:1]
    active = [int(i) for i in torch.nonzero(codes > 0).flatten()][:1]
    assert inactive and active
    maps, detail = counterfactual_maps(bundle, encoder, xray.pixels, token, [active, inactive], steps=2)
    assert detail["edits"] == ["remove", "add"] and len(maps) == 2
    assert all(np.isfinite(m.heat).all() for m in maps)
