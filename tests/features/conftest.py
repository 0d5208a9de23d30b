"""Synthetic studies, class tokens and a hand-set gated SAE for the feature-dictionary tests.

Reports are written here from our own radiology sentences. Token dimension 0 carries "pleural
effusion", dimension 1 "cardiomegaly"; SAE feature 0 reads dim 0, feature 1 dim 1, feature 2 is dead,
feature 3 reads pure noise dims (a feature whose description cannot hold up).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from saerad.datasets.base import Study
from saerad.encoders.store import EmbeddingSet
from saerad.sae.model import GatedSAE, GatedSAEConfig

NORMAL = [
    "The lungs are clear.",
    "Heart size is within normal limits.",
    "No pneumothorax is seen.",
    "The mediastinal contours are unremarkable.",
    "Osseous structures are intact.",
    "No focal airspace consolidation.",
]
EFFUSION = [
    "Small right pleural effusion.",
    "There is a moderate left pleural effusion.",
    "Bilateral pleural effusions, larger on the right.",
    "Layering pleural effusion on the left with basilar atelectasis.",
]
CARDIO = ["The heart is enlarged.", "Moderate cardiomegaly.", "Cardiomegaly with prominent vasculature."]
NO_EFFUSION = "No pleural effusion."


def make_report(rng: np.random.Generator, effusion: bool, cardio: bool) -> str:
    parts = list(rng.choice(NORMAL, size=3, replace=False))
    parts.append(str(rng.choice(EFFUSION)) if effusion else NO_EFFUSION)
    if cardio:
        parts.append(str(rng.choice(CARDIO)))
    rng.shuffle(parts)
    return " ".join(parts)


def make_split(n: int, seed: int, prefix: str) -> tuple[list[Study], EmbeddingSet]:
    rng = np.random.default_rng(seed)
    effusion = rng.random(n) < 0.25
    cardio = rng.random(n) < 0.2
    studies, ids = [], []
    for i in range(n):
        iid = f"{prefix}{i:04d}"
        studies.append(
            Study(
                study_id=f"s-{iid}",
                patient_id=f"p-{prefix}{i // 2}",  # two studies per patient
                image_paths=(Path(f"{iid}.png"),),
                image_ids=(iid,),
                findings=make_report(rng, bool(effusion[i]), bool(cardio[i])),
            )
        )
        ids.append(iid)
    x = rng.normal(0, 0.1, size=(n, 8)).astype(np.float32)
    x[:, 0] += effusion * rng.uniform(1.0, 2.0, n)
    x[:, 1] += cardio * rng.uniform(1.0, 2.0, n)
    return studies, EmbeddingSet(ids=ids, tokens=torch.from_numpy(x), encoder="test")


@pytest.fixture(scope="session")
def synthetic():
    train_studies, train = make_split(240, 0, "tr")
    held_studies, held = make_split(160, 1, "ho")
    return train_studies + held_studies, train, held


@pytest.fixture(scope="session")
def tiny_sae() -> GatedSAE:
    sae = GatedSAE(GatedSAEConfig(d_in=8, d_sae=5))
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[0, 0] = 1.0
        sae.W_enc[1, 1] = 1.0
        sae.W_enc[4:, 3] = 1.0  # noise dims: fires on random images
        sae.W_enc[5, 4] = 1.0
        sae.b_gate.copy_(torch.tensor([-0.5, -0.5, -1.0, -0.1, -0.05]))  # feature 2: z = 0 never passes
    return sae


@pytest.fixture(scope="session")
def iu_studies(shared_data: Path) -> list[Study]:
    """Real IU findings sections as one-image studies keyed by report uid (the images are not shipped)."""
    from saerad.datasets.iu_xray import load_iu_xray

    return [
        Study(s.study_id, s.patient_id, (Path(f"{s.study_id}.png"),), (s.study_id,), findings=s.findings)
        for s in load_iu_xray(shared_data / "iu-reports", require_findings=True)
    ]
