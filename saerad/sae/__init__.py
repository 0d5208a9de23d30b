"""Gated sparse autoencoder on class tokens: model, fast training steps, trainer, metrics."""

from saerad.sae.metrics import SAEMetrics, evaluate_sae
from saerad.sae.model import GatedSAE, GatedSAEConfig
from saerad.sae.trainer import SAETrainer, TrainConfig

__all__ = ["GatedSAE", "GatedSAEConfig", "SAEMetrics", "SAETrainer", "TrainConfig", "evaluate_sae"]
