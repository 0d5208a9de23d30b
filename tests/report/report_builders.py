"""Builders of a tiny, complete model bundle for tests (reused by the service and pipeline tests).

Everything is random and small (a 2-layer Dinov2 with 32-d class tokens at 42x42, a 32 -> 16 gated
SAE, a hand-written dictionary), so a bundle builds in about a second and reports in milliseconds.

Use from any test folder::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))   # tests/report
    from report_builders import build_tiny_bundle
    bundle_dir = build_tiny_bundle(tmp_path / "bundle")
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

D_IN = 32
D_SAE = 16

# Feature id -> description (None: undescribed). Written for these tests, in radiology language.
DESCRIPTIONS: dict[int, str | None] = {
    0: "Small left pleural effusion.",
    1: "No pleural effusion.",
    2: "Cardiomegaly.",
    3: "Patchy opacity in the right lower lobe.",
    4: "Endotracheal tube in standard position.",
    5: "The lungs are clear.",
    6: "Degenerative changes of the thoracic spine.",
    7: "Small left pleural effusion.",
    8: "Possible right pneumothorax.",
    9: "Heart size is normal.",
    10: "Bibasilar atelectasis.",
    11: None,
    12: "Right basilar consolidation.",
    13: "Mild pulmonary edema.",
    14: "No pneumothorax.",
    15: None,
}
UNUSABLE = frozenset({11, 15, 13})  # 13 has a description whose score is at chance


def make_tiny_encoder_dir(directory: Path, *, seed: int = 0) -> Path:
    """A randomly initialised Hugging Face Dinov2 checkpoint + its image-processor config (the
    encoder tests' builder, with D_IN-wide class tokens)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "encoders"))
    from tiny_dinov2 import make_tiny_dinov2

    return make_tiny_dinov2(Path(directory), hidden=D_IN, seed=seed)


def make_tiny_sae(*, seed: int = 0):
    """A 32 -> 16 gated SAE whose gates are open and magnitudes biased up: ~half the features fire."""
    from saerad.sae.model import GatedSAE, GatedSAEConfig

    gen = torch.Generator().manual_seed(seed)
    sae = GatedSAE(GatedSAEConfig(d_in=D_IN, d_sae=D_SAE))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(D_IN, D_SAE, generator=gen) / D_IN**0.5)
        sae.W_dec.copy_(torch.randn(D_SAE, D_IN, generator=gen) * 0.1)
        sae.b_gate.fill_(100.0)
        sae.b_mag.fill_(0.05)
    return sae.eval()


def make_tiny_dictionary(*, with_report_text: bool = True):
    """A hand-made FeatureDictionary over the tiny SAE's 16 features (see :data:`DESCRIPTIONS`)."""
    from saerad.features.dictionary import FeatureDictionary, FeatureStats, TopImage

    features = []
    for i in range(D_SAE):
        description = DESCRIPTIONS[i]
        features.append(
            FeatureStats(
                id=i,
                frequency=0.5,
                mean_activation=0.4 + 0.01 * i,
                max_activation=1.0 + 0.1 * i,
                quantiles={"0.5": 0.4, "0.9": 0.8, "0.95": 0.9, "0.99": 1.0},
                top_images=[
                    TopImage(image_id=f"img{i}-{k}", activation=1.0 - 0.1 * k,
                             report=f"Test report {k}." if with_report_text else None)
                    for k in range(2)
                ],
                labels={},
                description=description,
                description_score=None if description is None else (0.5 if i in UNUSABLE else 0.8),
                usable=i not in UNUSABLE,
            )
        )
    return FeatureDictionary(features=features, describer="hand-written", meta={"test": True})


def build_tiny_bundle(out: Path, *, encoder_dir: Path | None = None, diffusion_dir: Path | None = None,
                      name: str = "tiny", version: str = "1", dictionary=None) -> Path:
    """Write a complete, valid bundle (encoder copied inside, spec ``hf:encoder``) to ``out``;
    ``dictionary`` replaces :func:`make_tiny_dictionary`'s."""
    from saerad.bundle import DataEntry, EncoderEntry, write_bundle
    from saerad.encoders import load_encoder

    out = Path(out)
    if encoder_dir is None:
        encoder_dir = make_tiny_encoder_dir(out.parent / f"{out.name}-encoder-src")
    encoder = load_encoder(f"hf:{encoder_dir}")
    return write_bundle(
        out,
        name=name,
        version=version,
        encoder=EncoderEntry(spec=encoder.spec, dim=encoder.dim, describe=encoder.describe()),
        sae=make_tiny_sae(),
        sae_metrics={"explained_variance": 0.5, "l0": 8.0},
        dictionary=dictionary if dictionary is not None else make_tiny_dictionary(),
        data=DataEntry(dataset="synthetic", description="random test bundle", license="CC0-1.0", n_images=0),
        encoder_dir=encoder_dir,
        diffusion_dir=diffusion_dir,
        build={"command": "tests"},
    )


def make_tiny_diffusion(directory: Path, *, seed: int = 0) -> Path:
    """An untrained 16 px "tiny" diffusion model for D_IN-wide tokens, saved as a bundle ships it."""
    from saerad.diffusion.model import TokenConditionedUNet, save_diffusion

    torch.manual_seed(seed)
    model = TokenConditionedUNet.from_architecture("tiny", token_dim=D_IN, resolution=16)
    return save_diffusion(model, directory, fp16=True, metadata={"steps": 0, "note": "untrained test model"})


def random_xray_png(path: Path, *, seed: int = 0, size: tuple[int, int] = (64, 48)) -> Path:
    """A small random 8-bit grayscale PNG standing in for an X-ray."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=size, dtype=np.uint8)).save(path)
    return path


def copy_with_ood_check(bundle: Path, out: Path, *, n_images: int = 30, seed: int = 100) -> Path:
    """A copy of ``bundle`` at ``out`` with an out-of-distribution check calibrated on ``n_images``
    random radiograph-like PNGs (one patient each), written next to it."""
    import shutil

    from saerad.bundle import add_ood_check
    from saerad.imaging import load_xray
    from saerad.ood import calibrate
    from saerad.pipeline import Reporter

    copy = Path(shutil.copytree(bundle, out))
    encoder = Reporter.from_bundle(copy).encoder
    images = [load_xray(random_xray_png(out.parent / f"calib{i}.png", seed=seed + i)).pixels for i in range(n_images)]
    add_ood_check(copy, calibrate(encoder.encode_images(images), [f"p{i}" for i in range(n_images)]))
    return copy
