"""The one SAE training entry: sizing, defaults, and its resume policy."""

from __future__ import annotations

import pytest
import torch

from saerad.errors import ConfigError
from saerad.sae.run import DEFAULT_TARGET_L0, auto_expansion, default_train_config, train_sae


@pytest.mark.parametrize(("n_images", "dim", "expected"), [(377_000, 768, 64.0), (423, 384, 0.5), (3_000, 384, 2.0),
                                                           (10, 384, 0.125)])
def test_auto_expansion_keeps_two_images_per_feature(n_images, dim, expected):
    assert auto_expansion(n_images, dim) == expected


def test_defaults_ask_for_a_sparsity_unless_lambda_is_given():
    controlled = default_train_config(6_000)
    assert controlled.target_l0 == DEFAULT_TARGET_L0 and controlled.batch_size == 512 and controlled.steps == 6000
    fixed = default_train_config(6_000, lam=1.5)
    assert fixed.target_l0 is None and fixed.lam == 1.5
    large = default_train_config(1_000_000, target_l0=20.0, lr=3e-4)
    assert large.target_l0 == 20.0 and large.batch_size == 4096 and large.steps == 20 * 1_000_000 // 4096
    assert large.lr == 3e-4


def test_one_folder_one_run(tmp_path):
    tokens = torch.randn(64, 8, generator=torch.Generator().manual_seed(0)) * 3 + 1
    cfg = default_train_config(64, steps=12, batch_size=16, checkpoint_every=4)
    sae, metrics = train_sae(tokens[:48], tokens[48:], tmp_path / "run", expansion=2, cfg=cfg, progress=False)
    assert sae.cfg.d_sae == 16 and metrics["vectors"] == {"train": 48, "held_out": 16}
    assert metrics["held_out"]["l0"] >= 0 and (tmp_path / "run" / "metrics.json").is_file()
    again, _ = train_sae(tokens[:48], tokens[48:], tmp_path / "run", expansion=2, cfg=cfg, progress=False)
    assert torch.equal(again.W_enc, sae.W_enc)  # the same run: resumed at its end, nothing retrained
    other = default_train_config(64, steps=16, batch_size=16, checkpoint_every=4)
    with pytest.raises(ConfigError, match="different run"):
        train_sae(tokens[:48], None, tmp_path / "run", expansion=2, cfg=other, progress=False)
    replaced, metrics = train_sae(tokens[:48], None, tmp_path / "run", expansion=2, cfg=other, progress=False, overwrite=True)
    assert replaced.cfg.meta["steps"] == 16 and metrics["held_out"] is None
