"""Model bundle: write, load, and refuse corrupted or mismatched bundles with a clear BundleError."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "report"))
from report_builders import D_IN, D_SAE, build_tiny_bundle, make_tiny_dictionary, make_tiny_sae  # noqa: E402

from saerad.bundle import DEFAULT_BUNDLE, MANIFEST, Bundle, checksums  # noqa: E402
from saerad.errors import BundleError  # noqa: E402


@pytest.fixture(scope="module")
def source_bundle(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture
def bundle_dir(source_bundle, tmp_path) -> Path:
    """A private copy each test may damage."""
    import shutil

    return Path(shutil.copytree(source_bundle, tmp_path / "copy"))


def _rewrite_manifest(bundle_dir: Path, **changes) -> None:
    path = bundle_dir / MANIFEST
    data = json.loads(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(json.dumps(data))


def test_load_valid_bundle(bundle_dir):
    bundle = Bundle.load(bundle_dir)
    assert bundle.sae.cfg.d_in == D_IN and bundle.sae.cfg.d_sae == D_SAE
    assert len(bundle.dictionary.features) == D_SAE
    assert bundle.encoder_spec == f"hf:{(bundle_dir / 'encoder').resolve()}"
    assert bundle.diffusion_dir is None
    m = bundle.manifest
    assert m.format == "saerad-bundle" and m.format_version == 1
    assert m.dictionary.n_usable == D_SAE - 3 and m.dictionary.includes_report_text
    assert m.encoder.describe["dim"] == D_IN and "preprocessing" in m.encoder.describe
    assert set(m.files) == set(checksums(bundle_dir))
    assert {"sae/sae.safetensors", "dictionary.json", "encoder/config.json"} <= set(m.files)
    info = bundle.info()
    assert info["name"] == "tiny" and info["sae"] == {"d_in": D_IN, "d_sae": D_SAE}


def test_corrupted_file_is_refused(bundle_dir):
    with (bundle_dir / "sae" / "sae.safetensors").open("r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\0\1\2\3")
    with pytest.raises(BundleError, match="corrupted: sae/sae.safetensors"):
        Bundle.load(bundle_dir)


def test_missing_file_is_refused(bundle_dir):
    (bundle_dir / "dictionary.json").unlink()
    with pytest.raises(BundleError, match="incomplete: dictionary.json is missing"):
        Bundle.load(bundle_dir)


def test_newer_format_is_refused(bundle_dir):
    _rewrite_manifest(bundle_dir, format_version=99)
    with pytest.raises(BundleError, match="format version 99"):
        Bundle.load(bundle_dir)


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": "something-else"}), json.dumps([])])
def test_unreadable_manifest_is_refused(bundle_dir, content):
    (bundle_dir / MANIFEST).write_text(content)
    with pytest.raises(BundleError):
        Bundle.load(bundle_dir)


def test_invalid_manifest_field_is_refused(bundle_dir):
    _rewrite_manifest(bundle_dir, encoder__dim="wide")
    with pytest.raises(BundleError, match="encoder.dim"):
        Bundle.load(bundle_dir)


def test_encoder_dim_mismatch_is_refused(bundle_dir):
    _rewrite_manifest(bundle_dir, encoder__dim=D_IN * 2)
    with pytest.raises(BundleError, match=f"encoder dim {D_IN * 2} but the SAE expects {D_IN}"):
        Bundle.load(bundle_dir)


def test_dictionary_size_mismatch_is_refused(bundle_dir):
    small = make_tiny_dictionary()
    small.features = small.features[:-1]
    small.save(bundle_dir / "dictionary.json")
    _rewrite_manifest(bundle_dir, files=checksums(bundle_dir))  # a consistent checksum, wrong content
    with pytest.raises(BundleError, match=f"SAE has {D_SAE} features but the dictionary describes {D_SAE - 1}"):
        Bundle.load(bundle_dir)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="manifest.json is missing"):
        Bundle.load(tmp_path)
    with pytest.raises(BundleError, match="not a directory"):
        Bundle.load(tmp_path / "nowhere")


def test_default_bundle_missing_says_how_to_build(monkeypatch, tmp_path):
    monkeypatch.setattr("saerad.bundle.DEFAULT_BUNDLE", tmp_path / "absent")
    with pytest.raises(BundleError, match="saerad build --dataset covid-cxr"):
        Bundle.load(None)
    assert DEFAULT_BUNDLE.name == "default_bundle"


def test_write_refuses_existing_and_inconsistent(source_bundle, tmp_path):
    from saerad.bundle import DataEntry, EncoderEntry, write_bundle

    kwargs = dict(
        name="x",
        encoder=EncoderEntry(spec="default", dim=D_IN),
        sae=make_tiny_sae(),
        dictionary=make_tiny_dictionary(),
        data=DataEntry(dataset="synthetic", license="CC0-1.0"),
    )
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(source_bundle, **kwargs)
    with pytest.raises(BundleError, match="encoder dim"):
        write_bundle(tmp_path / "bad", **{**kwargs, "encoder": EncoderEntry(spec="default", dim=7)})
    assert not (tmp_path / "bad").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # the staging directory was cleaned up


def test_overwrite_replaces_a_bundle_in_place(bundle_dir, tmp_path):
    from saerad.bundle import DataEntry, DiffusionEntry, EncoderEntry, write_bundle

    diffusion = tmp_path / "unet"
    diffusion.mkdir()
    (diffusion / "config.json").write_text(json.dumps({"resolution": 128}))
    old = Bundle.load(bundle_dir)
    write_bundle(
        bundle_dir, name="tiny", version="2", encoder=EncoderEntry(**old.manifest.encoder.model_dump()),
        sae=old.sae, dictionary=old.dictionary, data=DataEntry(dataset="synthetic", license="CC0-1.0"),
        diffusion_dir=diffusion, diffusion=DiffusionEntry(config={"resolution": 128}), overwrite=True,
    )
    bundle = Bundle.load(bundle_dir)
    assert bundle.diffusion_dir == bundle_dir / "diffusion"
    assert bundle.manifest.version == "2"
    assert "diffusion/config.json" in bundle.manifest.files
    assert bundle.manifest.diffusion.config == {"resolution": 128}
    assert sorted(p.name for p in bundle_dir.parent.iterdir() if p.name.startswith(".")) == []


# ---------------------------------------------------------------- encoder / tokens / diffusion fit


class _StubEncoder:
    def __init__(self, spec: str, dim: int = D_IN, preprocessing: dict | None = None) -> None:
        self.spec, self.dim, self._preprocessing = spec, dim, preprocessing

    def describe(self) -> dict:
        return {"spec": self.spec, "dim": self.dim, "preprocessing": self._preprocessing}


def test_check_encoder_wants_the_same_width_weights_and_preprocessing(bundle_dir):
    bundle = Bundle.load(bundle_dir)
    encoder = bundle.load_encoder()  # the bundle's own encoder passes
    same = encoder.describe()["preprocessing"]
    bundle.check_encoder(_StubEncoder(bundle.encoder_spec, preprocessing=same))
    bundle.check_encoder(_StubEncoder(f"hf:{bundle_dir}/encoder/../encoder", preprocessing=same))  # same path
    with pytest.raises(BundleError, match="expects 32"):
        bundle.check_encoder(_StubEncoder(bundle.encoder_spec, dim=D_IN + 1, preprocessing=same))
    with pytest.raises(BundleError, match="not the one bundle 'tiny' was built with"):
        bundle.check_encoder(_StubEncoder("default", preprocessing=same))
    with pytest.raises(BundleError, match="preprocesses images differently"):
        bundle.check_encoder(_StubEncoder(bundle.encoder_spec, preprocessing={**same, "image_size": 999}))


def test_check_tokens_wants_the_bundles_encoder(bundle_dir):
    import torch

    from saerad.encoders.store import EmbeddingSet

    bundle = Bundle.load(bundle_dir)
    bundle.check_tokens(EmbeddingSet(ids=["a"], tokens=torch.zeros(1, D_IN), encoder=bundle.encoder_spec))
    with pytest.raises(BundleError, match="embed the images again"):
        bundle.check_tokens(EmbeddingSet(ids=["a"], tokens=torch.zeros(1, D_IN), encoder="default"))
    with pytest.raises(BundleError, match="expects 32"):
        bundle.check_tokens(EmbeddingSet(ids=["a"], tokens=torch.zeros(1, 8), encoder=bundle.encoder_spec))


def test_an_ood_check_is_added_in_place_and_verified(bundle_dir):
    import numpy as np

    from saerad.bundle import add_ood_check
    from saerad.ood import calibrate

    before = json.loads((bundle_dir / MANIFEST).read_text())
    rng = np.random.default_rng(0)
    check = calibrate(rng.normal(size=(40, D_IN)), [f"p{i // 2}" for i in range(40)])
    add_ood_check(bundle_dir, check)
    loaded = Bundle.load(bundle_dir)
    assert loaded.ood is not None and loaded.ood.threshold == pytest.approx(check.threshold)
    after = json.loads((bundle_dir / MANIFEST).read_text())
    assert after["ood"]["method"] == "mahalanobis-ledoit-wolf"
    assert {k: v for k, v in after["files"].items() if not k.startswith("ood/")} == before["files"]
    assert {"ood/ood.json", "ood/ood.safetensors"} <= set(after["files"])
    assert not [p.name for p in bundle_dir.parent.iterdir() if p.name.startswith(".")]  # no staging left
    add_ood_check(bundle_dir, check)  # replacing it works too
    (bundle_dir / "ood" / "ood.json").write_text("{}")
    with pytest.raises(BundleError, match="ood/ood.json does not match its checksum"):
        Bundle.load(bundle_dir)


def test_an_ood_check_of_another_width_is_refused(bundle_dir):
    import numpy as np

    from saerad.bundle import add_ood_check
    from saerad.ood import calibrate

    check = calibrate(np.random.default_rng(0).normal(size=(10, D_IN + 1)), [f"p{i}" for i in range(10)])
    with pytest.raises(BundleError, match=f"{D_IN + 1}-d class tokens"):
        add_ood_check(bundle_dir, check)
