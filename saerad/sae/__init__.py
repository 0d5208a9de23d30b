"""Sparse autoencoders on class tokens: gated (the default), BatchTopK, JumpReLU and Matryoshka
models, training steps, the trainer, metrics."""

from saerad.sae.architectures import ARCHITECTURES, get_architecture, load_sae
from saerad.sae.base import SAEConfig, SparseAutoencoder
from saerad.sae.metrics import SAEMetrics, evaluate_sae
from saerad.sae.model import GatedSAE, GatedSAEConfig
from saerad.sae.trainer import SAETrainer, TrainConfig

__all__ = [
    "ARCHITECTURES", "GatedSAE", "GatedSAEConfig", "SAEConfig", "SAEMetrics", "SAETrainer", "SparseAutoencoder",
    "TrainConfig", "evaluate_sae", "get_architecture", "load_sae",
]
