"""End to end on a tiny bundle with a tiny diffusion model: `saerad intervene` and `saerad figure`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from report_builders import D_IN, build_tiny_bundle, make_tiny_diffusion, random_xray_png  # noqa: E402


@pytest.fixture(scope="module")
def bundle_with_diffusion(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusion_bundle")
    return build_tiny_bundle(root / "bundle", diffusion_dir=make_tiny_diffusion(root / "diffusion-src"))


@pytest.fixture(scope="module")
def xray_png(tmp_path_factory):
    return random_xray_png(tmp_path_factory.mktemp("img") / "x.png", size=(40, 30))


def test_intervene_and_figure_commands(bundle_with_diffusion, xray_png, tmp_path):
    from typer.testing import CliRunner

    from saerad.cli import _register, app

    _register()
    runner = CliRunner()
    out = tmp_path / "cf"
    result = runner.invoke(app, ["intervene", str(xray_png), "--feature", "0", "--feature", "3", "--mode", "add",
                                 "--out", str(out), "--bundle", str(bundle_with_diffusion), "--steps", "4",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"original.png", "reconstruction.png", "counterfactual_add_0.png", "counterfactual_add_3.png",
            "heatmap_add_0.png", "boxes.json", "metrics.json"} <= names
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["composition"]) == {"ssim", "psnr"}
    assert [e["features"] for e in metrics["edits"]] == [[0], [3]]
    assert {"before", "after", "share"} <= set(metrics["edits"][0])

    figure = tmp_path / "fig.png"
    result = runner.invoke(app, ["figure", str(xray_png), "--feature", "0", "--feature", "2", "--out", str(figure),
                                 "--bundle", str(bundle_with_diffusion), "--steps", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    from PIL import Image

    with Image.open(figure) as im:
        assert im.width > 5 * 100 and im.height > 2 * 100


def test_bundle_without_diffusion_is_refused(tmp_path, xray_png):
    from saerad.bundle import Bundle
    from saerad.diffusion.intervene import run_intervention
    from saerad.errors import BundleError
    from saerad.imaging import load_xray

    bundle = Bundle.load(build_tiny_bundle(tmp_path / "plain"))
    with pytest.raises(BundleError):
        run_intervention(load_xray(xray_png), [0], "remove", 1.0, bundle, encoder=None, steps=2)


def test_diffusion_model_of_another_token_width_is_refused(bundle_with_diffusion, tmp_path, xray_png):
    from typer.testing import CliRunner

    from saerad.bundle import Bundle
    from saerad.cli import _register, app
    from saerad.diffusion.intervene import model_for
    from saerad.diffusion.model import TokenConditionedUNet, save_diffusion
    from saerad.errors import BundleError

    wrong = save_diffusion(TokenConditionedUNet.from_architecture("tiny", token_dim=D_IN + 8, resolution=16),
                           tmp_path / "wrong")
    with pytest.raises(BundleError, match=f"conditioned on {D_IN + 8}-d class tokens"):
        model_for(Bundle.load(bundle_with_diffusion), "cpu", directory=wrong)
    _register()
    result = CliRunner().invoke(app, ["figure", str(xray_png), "--feature", "0", "--out", str(tmp_path / "f.png"),
                                      "--bundle", str(bundle_with_diffusion), "--diffusion", str(wrong),
                                      "--steps", "2", "--device", "cpu"])
    assert result.exit_code != 0 and isinstance(result.exception, BundleError)
    assert not (tmp_path / "f.png").exists()
