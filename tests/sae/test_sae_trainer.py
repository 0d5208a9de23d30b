"""Training end to end: recovery of a known sparse dictionary, exact resume, schedules, export."""

from __future__ import annotations

import pytest
import torch

from saerad.errors import ConfigError
from saerad.sae.data import ResidentBatches
from saerad.sae.metrics import dictionary_recovery, evaluate_sae
from saerad.sae.model import GatedSAE
from saerad.sae.trainer import SAETrainer, TrainConfig, input_scale_for


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny GEMMs: one thread avoids OpenMP oversubscription on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sparse_dictionary_data(n: int, *, d=32, m_true=128, k=5, seed=1):
    """x = sum of k of m_true unit directions with magnitudes in [0.5, 1.5], plus a constant offset."""
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(m_true, d, generator=gen)
    dirs /= dirs.norm(dim=1, keepdim=True)

    def draw(count: int) -> torch.Tensor:
        idx = torch.rand(count, m_true, generator=gen).argsort(1)[:, :k]
        mags = torch.rand(count, k, generator=gen) + 0.5
        return torch.zeros(count, m_true).scatter_(1, idx, mags) @ dirs + 0.3

    return dirs, draw(n), draw(2000)


def test_recovers_known_sparse_dictionary():
    dirs, train, held_out = sparse_dictionary_data(20_000)
    cfg = TrainConfig(steps=2000, batch_size=256, lr=3e-3, lam=3.0, log_every=100)
    trainer = SAETrainer.create(train, 128, cfg)
    trainer.fit(ResidentBatches(train, cfg.batch_size), progress=False)
    sae = trainer.export()
    metrics = evaluate_sae(sae, held_out)
    recovery = dictionary_recovery(sae.W_dec, dirs)
    assert recovery["true_to_learned"] >= 0.9, recovery
    assert 3.5 <= metrics.l0 <= 6.5, metrics  # the true L0 is 5
    assert metrics.explained_variance > 0.6, metrics
    assert any(rec["sparse_step"] for rec in trainer.state.history)  # the sparse step took over


# Per architecture: the recovery it reaches on 1.5x as many latents as true directions (measured
# 0.98, 0.96, 0.89, 0.84). Matryoshka ranks last by design: its first prefixes must reconstruct on
# their own, so they learn blends of the true directions (see the nested-prefix test below).
RECOVERY = {"gated": 0.93, "batchtopk": 0.92, "jumprelu": 0.85, "matryoshka": 0.8}


def fit_small_dictionary(arch: str, train: torch.Tensor, **kw) -> SAETrainer:
    cfg = TrainConfig(architecture=arch, steps=1000, batch_size=256, lr=3e-3, log_every=100, dead_window_steps=100,
                      lam={"gated": 3.0, "jumprelu": 0.1}.get(arch, 2.0), target_l0=None if arch == "gated" else 3.0, **kw)
    trainer = SAETrainer.create(train, 48, cfg)
    trainer.fit(ResidentBatches(train, cfg.batch_size), progress=False)
    return trainer


@pytest.mark.parametrize("arch", sorted(RECOVERY))
def test_every_architecture_recovers_a_known_dictionary_at_its_true_sparsity(arch):
    dirs, train, held_out = sparse_dictionary_data(20_000, d=16, m_true=32, k=3)
    sae = fit_small_dictionary(arch, train).export()
    metrics = evaluate_sae(sae, held_out)
    recovery = dictionary_recovery(sae.W_dec, dirs)
    assert recovery["true_to_learned"] >= RECOVERY[arch], recovery
    assert 2.4 <= metrics.l0 <= 3.6, metrics  # the true L0 is 3 (gated by its lambda, the others asked for it)
    assert metrics.explained_variance > 0.75, metrics


def test_matryoshka_prefixes_reconstruct_on_their_own():
    """What Matryoshka buys: its first quarter of latents alone explains more than BatchTopK's does."""
    _, train, held_out = sparse_dictionary_data(20_000, d=16, m_true=32, k=3)

    def prefix_ev(arch: str, prefix: int = 12) -> float:
        sae = fit_small_dictionary(arch, train).export()
        with torch.no_grad():
            f = sae.encode(held_out)
            x_hat = f[:, :prefix] @ sae.W_dec[:prefix] + sae.b_dec
        return 1 - float((held_out - x_hat).pow(2).sum() / (held_out - held_out.mean(0)).pow(2).sum())

    assert prefix_ev("matryoshka") > prefix_ev("batchtopk") + 0.1


def small_run_cfg(**kw) -> TrainConfig:
    base = dict(steps=40, batch_size=32, lr=3e-3, lam=1.0, log_every=5, checkpoint_every=10, dead_window_steps=5)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize(("arch", "sparse_max_l0", "target_l0"), [
    ("gated", None, None), ("gated", 64.0, None), ("gated", 64.0, 4.0),
    ("batchtopk", None, 4.0), ("jumprelu", None, 4.0), ("matryoshka", None, 4.0),
])
def test_resume_is_exact(tmp_path, arch, sparse_max_l0, target_l0):
    """Also with AuxK on dead latents (a 5-step window) and the BatchTopK threshold estimate."""
    _, data, _ = sparse_dictionary_data(300, d=16, m_true=48, k=3)
    cfg = small_run_cfg(architecture=arch, sparse_max_l0=sparse_max_l0, target_l0=target_l0)
    straight = SAETrainer.create(data, 64, cfg)
    straight.fit(ResidentBatches(data, cfg.batch_size, seed=cfg.seed), progress=False)

    first = SAETrainer.create(data, 64, cfg)
    batches = ResidentBatches(data, cfg.batch_size, seed=cfg.seed)
    while first.state.step < 20:
        first.train_step(next(batches))
    first.save_checkpoint(tmp_path)
    del first
    resumed = SAETrainer.restore(SAETrainer.latest_checkpoint(tmp_path))
    assert resumed.state.step == 20
    resumed.fit(ResidentBatches(data, cfg.batch_size, seed=cfg.seed, start_step=20), checkpoint_root=tmp_path, progress=False)
    for name, value in straight.sae.state_tensors().items():
        assert torch.equal(value, resumed.sae.state_tensors()[name]), name
    assert torch.equal(straight.last_fired, resumed.last_fired)
    assert straight.state.lam_log_scale == resumed.state.lam_log_scale
    controlled = target_l0 is not None and not straight.arch.fixed_l0
    assert (straight.state.lam_log_scale != 0.0) == controlled
    kept = sorted(p.name for p in tmp_path.glob("step-*"))
    assert kept == ["step-000000030", "step-000000040"]


def test_schedules():
    trainer = SAETrainer.create(torch.randn(50, 4), 8, TrainConfig(steps=100, lam=2.0, lam_warmup_fraction=0.1, lr=1.0,
                                                                   lr_warmup_steps=10, lr_decay_fraction=0.2))
    assert trainer.lam_at(0) == 0.0 and trainer.lam_at(5) == pytest.approx(1.0) and trainer.lam_at(50) == 2.0
    assert trainer.lr_at(0) == pytest.approx(0.1) and trainer.lr_at(50) == 1.0
    assert trainer.lr_at(90) == pytest.approx(0.5) and trainer.lr_at(99) == pytest.approx(0.05)


@pytest.mark.parametrize("start_lam", [0.3, 30.0])
def test_target_l0_controller_reaches_the_asked_sparsity(start_lam):
    """From a lambda far too weak or far too strong, the controller lands near the asked L0."""
    _, train, held_out = sparse_dictionary_data(8000)
    cfg = TrainConfig(steps=800, batch_size=256, lr=3e-3, lam=start_lam, target_l0=8.0, log_every=50)
    fixed = SAETrainer.create(train, 128, TrainConfig(**{**vars(cfg), "target_l0": None}))
    fixed.fit(ResidentBatches(train, cfg.batch_size), progress=False)
    controlled = SAETrainer.create(train, 128, cfg)
    controlled.fit(ResidentBatches(train, cfg.batch_size), progress=False)
    l0_fixed = evaluate_sae(fixed.export(), held_out).l0
    l0_controlled = evaluate_sae(controlled.export(), held_out).l0
    assert abs(l0_fixed - 8.0) > 3.0, l0_fixed  # the starting lambda alone misses the target...
    assert 6.5 <= l0_controlled <= 9.5, l0_controlled  # ...the controller gets there


def test_target_l0_must_be_positive():
    with pytest.raises(ConfigError):
        TrainConfig(target_l0=0.0)


def test_export_acts_on_raw_tokens_like_training(tmp_path):
    """Saved weights on raw class tokens reproduce the training-time (normalised) SAE."""
    raw = torch.randn(200, 12) * 25 + 7  # class tokens are far from unit scale
    trainer = SAETrainer.create(raw, 48, small_run_cfg(steps=30))
    trainer.fit(ResidentBatches(raw, 32), progress=False)
    s = trainer.input_scale
    assert s == pytest.approx(input_scale_for(raw))
    assert float((raw * s).pow(2).sum(1).mean()) == pytest.approx(12.0, rel=1e-4)
    trainer.export().save(tmp_path)
    loaded = GatedSAE.load(tmp_path)
    with torch.no_grad():
        f_train = trainer.sae.encode(raw * s)
        torch.testing.assert_close(loaded.encode(raw), f_train, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(loaded(raw), trainer.sae(raw * s) / s, rtol=1e-4, atol=1e-4)
    assert f_train.gt(0).any()
