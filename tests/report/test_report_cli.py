"""`saerad report` on a tiny bundle: text, json (grounded schema) and fhir output."""

from __future__ import annotations

import json

import pytest
from report_builders import build_tiny_bundle, random_xray_png
from typer.testing import CliRunner

import saerad.cli.build  # noqa: F401 - registers `build` (two commands keep typer in group mode)
import saerad.cli.report  # noqa: F401 - registers `report`
from saerad.cli import app
from saerad.errors import BundleError


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    bundle = build_tiny_bundle(root / "bundle")
    images = [random_xray_png(root / f"x{i}.png", seed=i) for i in range(2)]
    return bundle, images


def _run(*args):
    result = CliRunner().invoke(app, ["report", *map(str, args)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_text_output(setup):
    bundle, images = setup
    result = _run(images[0], "--bundle", bundle)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("FINDINGS (research use only")
    assert "bundle tiny v1" in result.stdout


def test_json_output_one_and_many(setup):
    bundle, images = setup
    one = json.loads(_run(images[0], "--bundle", bundle, "--format", "json", "--top-k", "3").stdout)
    assert one["research_use_only"] is True and one["bundle"]["name"] == "tiny"
    assert len({f["id"] for s in one["findings"] for f in s["features"]}) <= 3
    assert all(s["boxes"] is None for s in one["findings"])
    many = json.loads(_run(*images, "--bundle", bundle, "--format", "json").stdout)
    assert isinstance(many, list) and len(many) == 2


def test_fhir_output(setup):
    bundle, images = setup
    resource = json.loads(_run(images[0], "--bundle", bundle, "--format", "fhir").stdout)
    assert resource["resourceType"] == "DiagnosticReport" and resource["status"] == "preliminary"
    collection = json.loads(_run(*images, "--bundle", bundle, "--format", "fhir").stdout)
    assert collection["resourceType"] == "Bundle" and len(collection["entry"]) == 2


def test_bad_bundle_raises_bundle_error(setup, tmp_path):
    _, images = setup
    with pytest.raises(BundleError):
        _run(images[0], "--bundle", tmp_path)


def test_fhir_bundle_output_to_a_file(setup, tmp_path):
    bundle, images = setup
    out = tmp_path / "bundle.json"
    result = _run(*images, "--bundle", bundle, "--format", "fhir-bundle", "--out", out)
    assert result.exit_code == 0 and result.stdout == ""
    transaction = json.loads(out.read_text())
    assert transaction["type"] == "transaction"
    kinds = [e["resource"]["resourceType"] for e in transaction["entry"]]
    assert kinds.count("Device") == 1 and kinds.count("DiagnosticReport") == 2


def test_dicom_sr_output_joins_a_dicom_study(setup, tmp_path):
    import pydicom
    from dicom_builders import dicom_bytes, make_radiograph

    from saerad.report.dicom_sr import read_findings

    bundle, images = setup
    source = make_radiograph()
    dcm = tmp_path / "chest.dcm"
    dcm.write_bytes(dicom_bytes(source))
    out = tmp_path / "chest.sr.dcm"
    result = _run(dcm, "--bundle", bundle, "--format", "dicom-sr", "--out", out)
    assert result.exit_code == 0, result.output
    sr = pydicom.dcmread(out)
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.VerificationFlag == "UNVERIFIED"
    assert read_findings(sr)  # a finding per sentence, or the "no findings" group

    folder = tmp_path / "srs"
    result = _run(dcm, images[0], "--bundle", bundle, "--format", "dicom-sr", "--out", folder)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["chest.sr.dcm", "x0.sr.dcm"]
    assert "x0.png is not DICOM, so its SR starts a new study" in result.stderr
    assert pydicom.dcmread(folder / "x0.sr.dcm").StudyInstanceUID != source.StudyInstanceUID


def test_dicom_sr_needs_out_and_refuses_special_files(setup):
    from saerad.errors import ConfigError

    bundle, images = setup
    with pytest.raises(ConfigError, match="--out"):
        _run(images[0], "--bundle", bundle, "--format", "dicom-sr")
    with pytest.raises(ConfigError, match="not a regular file"):
        _run(images[0], "--bundle", bundle, "--format", "dicom-sr", "--out", "/dev/null")


def test_localize_attribution_text_json_and_overlays(setup, tmp_path):
    bundle, images = setup
    result = _run(images[0], "--bundle", bundle, "--localize", "attribution", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "localised by attribution" in result.stdout and "boxes:" in result.stdout
    one = json.loads(_run(images[0], "--bundle", bundle, "--format", "json", "--localize", "attribution",
                          "--device", "cpu", "--overlays", tmp_path / "overlays").stdout)
    assert one["localization"]["method"] == "attribution"
    localized = [k for k, s in enumerate(one["findings"]) if s["heatmap"]]
    assert localized and all(one["findings"][k]["boxes"] is not None for k in localized)
    written = sorted(p.name for p in (tmp_path / "overlays").iterdir())
    assert written == sorted(f"{images[0].stem}-sentence{k}.png" for k in localized)
    again = CliRunner().invoke(app, ["report", str(images[0]), "--bundle", str(bundle), "--localize", "attribution",
                                     "--overlays", str(tmp_path / "overlays")])
    assert "exists" in str(again.exception)  # never overwrites earlier overlays


def test_counterfactual_without_diffusion_is_refused(setup):
    bundle, images = setup
    with pytest.raises(BundleError, match="no diffusion model"):
        _run(images[0], "--bundle", bundle, "--localize", "counterfactual")
