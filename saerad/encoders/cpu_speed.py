"""Exact-up-to-rounding speed-ups for Dinov2 inference on the CPU (fp32).

Why: on the AMD EPYC CPUs of our dev machines, PyTorch's default fp32 ``F.linear`` goes through MKL,
which runs there at ~40% of what oneDNN reaches (measured 22 vs 56 GFLOP/s for a ViT-S MLP GEMM on 2
cores); onnxruntime's MLAS is in the oneDNN range. Routing the linear layers through oneDNN, fusing
fc1 + exact GELU into one oneDNN call and folding DINOv2's layer scale into the preceding linear
layer closes most of the gap without a second runtime. The model keeps its weights' meaning
(state_dict keys are untouched except layer-scale vectors, which become ones).

:func:`speed_up_for_cpu` checks itself: it compares the patched model's output with the original on
a random input and undoes nothing silently - if the check fails it raises, and the caller reloads the
plain model.
"""

from __future__ import annotations

import logging
import types

import torch
from torch import nn

log = logging.getLogger(__name__)


def onednn_linear_available() -> bool:
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        x, w, b = torch.randn(3, 8), torch.randn(4, 8), torch.randn(4)
        out = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return torch.allclose(out, torch.nn.functional.linear(x, w, b), atol=1e-5)


def _plain(x: torch.Tensor) -> bool:
    """The oneDNN ops have no autograd formula: anything but fp32 CPU inference takes the plain path."""
    return (x.dtype != torch.float32 or x.device.type != "cpu" or torch.is_autocast_enabled("cpu")
            or torch.is_grad_enabled())


def _linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if _plain(x):
        return nn.functional.linear(x, self.weight, self.bias)
    return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


def _mlp_forward(self, hidden: torch.Tensor) -> torch.Tensor:
    if _plain(hidden):
        return self.fc2(self.activation_fn(self.fc1(hidden)))
    hidden = torch.ops.mkldnn._linear_pointwise(hidden, self.fc1.weight, self.fc1.bias, "gelu", [], "none")
    return self.fc2(hidden)


def _output_projection(layer: nn.Module) -> nn.Linear | None:
    attention = getattr(layer, "attention", None)
    for path in ("o_proj", "output.dense"):  # transformers 5 / 4 names
        module = attention
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.Linear):
            return module
    return None


@torch.no_grad()
def _fold_layer_scale(linear: nn.Linear, scale_module: nn.Module) -> bool:
    scale = getattr(scale_module, "lambda1", None)
    if scale is None or linear.bias is None or scale.shape != linear.bias.shape:
        return False
    linear.weight.mul_(scale[:, None])
    linear.bias.mul_(scale)
    scale.fill_(1.0)
    scale_module.forward = types.MethodType(lambda self, h: h, scale_module)
    return True


@torch.no_grad()
def speed_up_for_cpu(model: nn.Module, probe: torch.Tensor, *, rtol: float = 1e-4) -> dict:
    """Patch ``model`` in place; returns what was done. Raises RuntimeError if outputs change."""
    if not onednn_linear_available():
        return {"onednn_linear": False}
    reference = model(pixel_values=probe).last_hidden_state
    done = {"onednn_linear": 0, "fused_gelu": 0, "folded_layer_scale": 0}
    for module in model.modules():
        if type(module) is nn.Linear:
            module.forward = types.MethodType(_linear_forward, module)
            done["onednn_linear"] += 1
        elif hasattr(module, "fc1") and hasattr(module, "fc2") and _is_exact_gelu(getattr(module, "activation_fn", None)):
            module.forward = types.MethodType(_mlp_forward, module)
            done["fused_gelu"] += 1
        if hasattr(module, "layer_scale1") and hasattr(module, "layer_scale2"):
            projection, fc2 = _output_projection(module), getattr(getattr(module, "mlp", None), "fc2", None)
            if projection is not None and isinstance(fc2, nn.Linear):
                done["folded_layer_scale"] += _fold_layer_scale(projection, module.layer_scale1)
                done["folded_layer_scale"] += _fold_layer_scale(fc2, module.layer_scale2)
    patched = model(pixel_values=probe).last_hidden_state
    error = float((patched - reference).norm() / reference.norm())
    if not error < rtol:
        raise RuntimeError(f"CPU fast path changed the model's output (relative error {error:.1e})")
    done["check_relative_error"] = error
    return done


def _is_exact_gelu(activation) -> bool:
    from transformers.activations import GELUActivation

    return isinstance(activation, GELUActivation) and getattr(activation, "act", None) is nn.functional.gelu
