"""The checks of the GPU script, one function each (``run.py`` runs each in its own process).

Every check gets a :class:`Context` (mode, device, folders, sizes, its time limit) and a
:class:`Recorder`; what it records is written at once, so a check stopped at its time limit still
leaves what it measured. ``summary`` is the one-line result of the final table; ``targets`` are
(target, measured, met) rows, assessed on the GPU only (``met`` is None in CPU mode).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import layout

REPO = layout.REPO
for _path in (REPO, REPO / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


@dataclass
class Context:
    mode: str  # "gpu" (targets assessed) or "cpu" (tiny sizes: the script's own test)
    device: str
    out: Path  # comes back from the device: only the files the checks mean to return
    carry: Path
    work: Path  # scratch, deleted at the end
    sizes: dict[str, Any]
    time_limit: float
    started: float = field(default_factory=time.monotonic)

    @property
    def gpu(self) -> bool:
        return self.mode == "gpu"

    def seconds_left(self) -> float:
        return self.time_limit - (time.monotonic() - self.started)


class Recorder:
    """A check's results as JSON, rewritten (atomically) on every update."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}

    def update(self, **values: Any) -> None:
        self.data.update(values)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=_jsonable), encoding="utf-8")
        os.replace(tmp, self.path)

    def target(self, name: str, measured: str, met: bool | None, ctx: Context) -> None:
        rows = list(self.data.get("targets", []))
        rows.append({"target": name, "measured": measured, "met": met if ctx.gpu else None})
        self.update(targets=rows)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], Any], device: str, *, warmup: int, repeats: int) -> float:
    """Median wall time of ``fn`` after ``warmup`` calls, synchronising the device around each call."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def package_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# ---------------------------------------------------------------------------------------- env


def check_env(ctx: Context, rec: Recorder) -> None:
    """torch's CUDA build, the device, and the ceilings the other checks are read against."""
    import torch

    rec.update(python=platform.python_version(), torch=torch.__version__, torch_cuda=torch.version.cuda,
               cuda_available=torch.cuda.is_available(),
               packages=package_versions(("numpy", "transformers", "huggingface-hub", "diffusers", "safetensors",
                                          "pydantic", "triton", "pytest")))
    device = torch.device(ctx.device)
    name = "CPU"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no CUDA device")
        props = torch.cuda.get_device_properties(device)
        name = props.name
        rec.update(gpu=props.name, capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                   memory_gib=round(props.total_memory / 2**30, 1), nvidia_smi=_nvidia_smi())
    side = ctx.sizes["gemm_side"]
    bf16 = _gemm_rate(device, side, torch.bfloat16)
    fp32 = _gemm_rate(device, side // 2, torch.float32)  # PyTorch's default fp32 precision (no TF32)
    copy = _copy_rate(device, ctx.sizes["copy_bytes"])
    rec.update(bf16_gemm_flops=bf16, fp32_gemm_flops=fp32, copy_bytes_per_s=copy,
               summary=f"{name}, torch {torch.__version__}: bf16 GEMM {bf16 / 1e12:,.1f} TFLOP/s ({side}^3), "
                       f"fp32 {fp32 / 1e12:,.1f} TFLOP/s, copy {copy / 1e9:,.0f} GB/s (read + write)")


def _gemm_rate(device, side: int, dtype) -> float:
    import torch

    gen = torch.Generator(device=device).manual_seed(0)  # random operands: zeros run faster than real data
    a = torch.randn(side, side, device=device, dtype=dtype, generator=gen)
    b = torch.randn(side, side, device=device, dtype=dtype, generator=gen)
    seconds = median_seconds(lambda: a @ b, str(device), warmup=3, repeats=10)
    return 2 * side**3 / seconds


def _copy_rate(device, nbytes: int) -> float:
    import torch

    src = torch.empty(nbytes // 4, device=device, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), str(device), warmup=2, repeats=10)
    return 2 * src.numel() * 4 / seconds


def _nvidia_smi() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw,"
                              "temperature.gpu", "--format=csv,noheader"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"failed: {exc}"
    return out.stdout.strip() or out.stderr.strip()


# ---------------------------------------------------------------------------------------- tests


def cuda_test_files() -> list[str]:
    """CUDA tests live in ``test_*_cuda.py`` files: only those are collected there, because the
    device image lacks the service's and the evaluation's dependencies that other test files import."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*_cuda.py"))


def check_tests(ctx: Context, rec: Recorder) -> None:
    """The ``cuda``-marked tests: on the GPU every one must run and pass."""
    import xml.etree.ElementTree as ET

    files = cuda_test_files()
    if not files:
        raise RuntimeError("no tests/**/test_*_cuda.py files found")
    report = ctx.work / "cuda-tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-m", "cuda", "-p", "no:cacheprovider",
           f"--junitxml={report}", *files]
    rec.update(command=" ".join(cmd[1:]))
    proc = subprocess.run(cmd, cwd=REPO, timeout=max(5.0, ctx.seconds_left() - 5.0))
    if not report.is_file():
        raise RuntimeError(f"pytest wrote no report (exit code {proc.returncode})")
    suites = ET.parse(report).getroot()
    suites = [suites] if suites.tag == "testsuite" else list(suites)
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    problems = []
    for case in (c for s in suites for c in s.iter("testcase")):
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is not None:
                problems.append({"test": f"{case.get('classname')}::{case.get('name')}", "kind": tag,
                                 "message": (node.get("message") or "")[:600]})
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    rec.update(files=files, exit_code=proc.returncode, passed=passed, problems=problems, **counts,
               summary=f"{passed} passed, {counts['failures'] + counts['errors']} failed, {counts['skipped']} skipped "
                       f"({len(files)} files)")
    all_ran = counts["skipped"] == 0 and counts["failures"] == 0 and counts["errors"] == 0 and passed > 0
    rec.target("every CUDA test runs and passes", f"{passed}/{counts['tests']}", all_ran, ctx)
    if ctx.gpu and not all_ran:
        raise RuntimeError(f"CUDA tests: {rec.data['summary']}")


# ---------------------------------------------------------------------------------------- sae


def check_sae(ctx: Context, rec: Recorder) -> None:
    """Every registered SAE architecture's training step beside the three-matmul reference."""
    import bench_sae_throughput as bench
    import torch

    s = ctx.sizes["sae"]
    result = bench.measure(torch.device(ctx.device), s["d"], s["m"], s["batch"], torch.bfloat16, warmup=s["warmup"],
                           steps=s["steps"], compile=s["compile"],
                           on_update=lambda r: rec.update(result=r, table=bench.format_result(r, targets=False)))
    parts = []
    for arch, best in result.get("best", {}).items():
        row = next(r for r in result["rows"] if r["step"] == best["step"])
        parts.append(f"{arch} {best['samples_per_s'] / 1e6:.3f} M samples/s ({best['step']}, "
                     f"{row['of_roofline']:.2f} of roofline, {best['x_reference_fp32'] or 0:.1f}x reference fp32)")
    failed = [r["step"] for r in result["rows"] if "error" in r]
    rec.update(result=result, table=bench.format_result(result, targets=ctx.gpu),
               summary="; ".join(parts) + (f"; FAILED rows: {', '.join(failed)}" if failed else ""))
    for name, measured, met in bench.gated_targets(result):
        rec.target(f"gated SAE step {name}", measured, met, ctx)
    checks = result.get("gradient_check", {})
    rec.target("steps match autograd (fp32)", ", ".join(f"{a} {'PASS' if c['pass'] else 'MISS'}" for a, c in checks.items()),
               all(c["pass"] for c in checks.values()), ctx)


# ---------------------------------------------------------------------------------------- embedding


def carried_items(ctx: Context, count: int) -> list[tuple[str, Path]]:
    """``count`` (id, path) items cycling through the carried nih-cxr14 images (ids made unique)."""
    from saerad.datasets import load_dataset
    from saerad.encoders.extract import items_from_studies

    base = items_from_studies(load_dataset(layout.DATASET, ctx.carry / layout.DATASET_DIR))
    return [(f"{base[k % len(base)][0]}~{k // len(base)}", base[k % len(base)][1]) for k in range(count)]


def check_embedding(ctx: Context, rec: Recorder) -> None:
    """A Rad-DINO-sized ViT-B/14 at 518 px through the real embedding job, decoding in worker processes."""
    import bench_embedding as bench
    import torch

    from saerad.encoders import load_encoder

    e = ctx.sizes["embedding"]
    ckpt = bench.write_vit_checkpoint(ctx.work / "vit", hidden=e["hidden"], layers=e["layers"], heads=e["heads"],
                                      image_size=e["image_size"])
    encoder = load_encoder(f"hf:{ckpt}", device=ctx.device, precision="bf16" if ctx.gpu else "fp32")
    items = carried_items(ctx, e["images"])
    workers = e["workers"] or max(1, min(14, (os.cpu_count() or 2) - 2))
    rec.update(model=f"ViT-B/14-shaped Dinov2 (hidden {e['hidden']}, {e['layers']} layers), random weights",
               image_size=e["image_size"], precision=encoder.precision, batch=e["batch"], workers=workers,
               images=len(items), image_source="the carried nih-cxr14 copy (small PNGs: decoding costs less than "
                                               "for a full-size film)")
    warm = items[: e["batch"] * 2]
    bench.time_job(warm, encoder, ctx.work, batch_size=e["batch"], num_workers=workers, shard_size=len(warm))
    rate, cpu_seconds = bench.time_job(items, encoder, ctx.work, batch_size=e["batch"], num_workers=workers,
                                       shard_size=2048)
    rec.update(images_per_s=rate, cpu_seconds=cpu_seconds)
    pixels = torch.randn(e["batch"], 3, e["image_size"], e["image_size"])
    if ctx.device == "cuda":
        pixels = pixels.pin_memory()
    seconds = median_seconds(lambda: encoder.encode(pixels), ctx.device, warmup=1, repeats=5)
    model_rate = e["batch"] / seconds
    rec.update(model_only_images_per_s=model_rate,
               summary=f"{rate:,.0f} img/s end to end ({workers} decode workers), model only {model_rate:,.0f} img/s, "
                       f"{encoder.precision}, batch {e['batch']}, {e['image_size']} px")
    rec.target(">= 400 img/s end to end (ViT-B/14 @ 518)", f"{rate:,.0f} img/s", rate >= 400, ctx)


# ---------------------------------------------------------------------------------------- diffusion


def check_diffusion(ctx: Context, rec: Recorder) -> None:
    """A short bf16 training run on the carried images; the exported fp16 model comes back in $OUT."""
    import numpy as np

    from saerad.datasets.terms import data_terms
    from saerad.diffusion.data import from_model, load_pairs
    from saerad.diffusion.invert import ddim_invert, ddim_sample
    from saerad.diffusion.metrics import composition
    from saerad.diffusion.model import load_diffusion
    from saerad.diffusion.train import preset, train_diffusion, write_sample_grid
    from saerad.encoders.store import EmbeddingSet

    p = ctx.sizes["diffusion"]
    tokens = EmbeddingSet.load(ctx.carry / layout.EMBEDDINGS)
    pairs = load_pairs(tokens, ctx.carry / layout.DATASET_DIR, dataset=layout.DATASET, resolution=p["resolution"],
                       progress=False)
    train, test = pairs.split()  # test patients (saerad.datasets.split) are never trained on
    train_seconds = ctx.seconds_left() - p["reserve_s"]
    if train_seconds < 10:
        raise RuntimeError(f"only {train_seconds:.0f} s left to train")
    cfg = preset("gpu", resolution=p["resolution"], architecture=p["architecture"], batch_size=p["batch_size"],
                 steps=p["steps"], lr=p["lr"], warmup_steps=p["warmup_steps"], ema_decay=p["ema_decay"],
                 checkpoint_every=p["checkpoint_every"], sample_every=0, log_every=p["log_every"], device=ctx.device,
                 max_minutes=train_seconds / 60.0)
    cfg.meta.update(dataset=layout.DATASET, embeddings=layout.EMBEDDINGS, encoder=tokens.encoder,
                    split="saerad.datasets.split: test patients left out", n_test_images_left_out=len(test),
                    preset="gpu", data_terms=data_terms(layout.DATASET)[1],
                    note="trained by the GPU script (bench/gpu/run.py): a short run, not a converged model")
    rec.update(train_images=len(train), test_images=len(test), resolution=p["resolution"],
               architecture=p["architecture"], batch_size=p["batch_size"], step_target=p["steps"],
               time_cap_s=round(train_seconds))
    run_dir = ctx.work / "diffusion-run"
    meta = train_diffusion(train, run_dir, cfg, progress=False)
    shutil.copytree(run_dir / "diffusion", ctx.out / "diffusion", dirs_exist_ok=True)
    if (run_dir / "train_log.jsonl").is_file():  # written every log_every steps
        shutil.copy2(run_dir / "train_log.jsonl", ctx.out / "train_log.jsonl")
    steps, wall = int(meta["steps"]), float(meta["wall_seconds"])
    rec.update(steps=steps, wall_seconds=wall, steps_per_s=steps / wall, images_per_s=steps * cfg.batch_size / wall,
               final_loss=meta["final_loss"], stopped_early=meta["stopped_early"], parameters=meta["parameters"],
               checkpoint="diffusion/ (fp16 safetensors, config.json, metadata.json)")

    model = load_diffusion(ctx.out / "diffusion", device=ctx.device)
    shown = test if len(test) else train  # a tiny CPU-mode set may have no test patient
    k = min(p["ssim_images"], len(shown))
    x0 = shown.images[:k].float().to(ctx.device)
    cond = shown.tokens[:k].to(ctx.device)
    rebuilt = ddim_sample(model, ddim_invert(model, x0, cond, steps=p["ddim_steps"]), cond, steps=p["ddim_steps"])
    ssims = [composition(a, b)["ssim"] for a, b in zip(from_model(x0), from_model(rebuilt))]
    write_sample_grid(model, shown, ctx.out / "samples.png", steps=p["ddim_steps"], seed=0)
    which = "test" if len(test) else "training"
    rec.update(reconstruction_ssim=float(np.mean(ssims)), ssim_images=k, ssim_on=which,
               samples_png=f"samples.png: rows {which} images | DDIM reconstructions | fresh samples",
               summary=f"{steps:,} steps in {wall:.0f} s ({steps / wall:.1f} steps/s, {steps * cfg.batch_size / wall:,.0f} "
                       f"img/s), {p['architecture']} UNet at {p['resolution']} px, batch {cfg.batch_size}, final loss "
                       f"{meta['final_loss']:.4f}, {which} reconstruction SSIM {np.mean(ssims):.3f} (n={k})")


# ---------------------------------------------------------------------------------------- latency


def random_weight_encoder(ctx: Context):
    """The carried encoder architecture with random weights: the same arithmetic as the real one."""
    import torch
    from transformers import AutoConfig, AutoModel

    from saerad.encoders import load_encoder

    target = ctx.work / "encoder"
    shutil.copytree(ctx.carry / layout.ENCODER_DIR, target, dirs_exist_ok=True)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(target)).save_pretrained(target)
    return load_encoder(f"hf:{target}", device=ctx.device)


def check_latency(ctx: Context, rec: Recorder) -> None:
    """One film, 4 features localised: encode + DDIM inversion + one sampling batch + maps."""
    import torch

    from saerad.datasets import load_dataset
    from saerad.datasets.split import partition
    from saerad.diffusion.data import resize_image
    from saerad.diffusion.intervene import Edit, intervene
    from saerad.diffusion.model import TokenConditionedUNet, load_diffusion
    from saerad.encoders.store import EmbeddingSet
    from saerad.imaging import load_xray
    from saerad.sae.architectures import load_sae

    q = ctx.sizes["latency"]
    tokens = EmbeddingSet.load(ctx.carry / layout.EMBEDDINGS)
    trained = ctx.out / "diffusion"
    if (trained / "model.safetensors").is_file():
        model, weights = load_diffusion(trained, device=ctx.device), "trained by this run's diffusion check"
    else:
        torch.manual_seed(0)
        model = TokenConditionedUNet.from_architecture(ctx.sizes["diffusion"]["architecture"], token_dim=tokens.dim,
                                                       resolution=ctx.sizes["diffusion"]["resolution"])
        model, weights = model.to(ctx.device).eval(), "random (no checkpoint from the diffusion check)"
    sae = load_sae(REPO / "saerad" / "default_bundle" / "sae", device=ctx.device).eval()
    if sae.cfg.d_in != tokens.dim:
        raise RuntimeError(f"the default bundle's SAE takes {sae.cfg.d_in}-d tokens, the carried ones are {tokens.dim}-d")
    encoder = random_weight_encoder(ctx)

    studies = load_dataset(layout.DATASET, ctx.carry / layout.DATASET_DIR)
    study = (partition(studies).test or studies)[0]  # an image of a patient the model did not train on
    image_id, path = study.image_ids[0], study.image_paths[0]
    film = resize_image(load_xray(path).pixels, q["film_side"])  # a full-size input: resizing is part of the cost
    token = tokens.select([image_id]).tokens[0]
    with torch.no_grad():
        codes = sae.encode(token[None].to(ctx.device))[0].cpu()
    contribution = codes * sae.W_dec.detach().norm(dim=1).cpu()
    features = [int(i) for i in torch.argsort(-contribution)[: q["features"]]]
    edits = [Edit((i,), "remove") for i in features]
    rec.update(diffusion_weights=weights, resolution=model.resolution, ddim_steps=q["steps"], features=features,
               image=image_id, active_features=int((codes > 0).sum()), film=f"{q['film_side']} x {q['film_side']}",
               encoder="carried encoder architecture, random weights (the real weights do not fit the carry)")

    def localise() -> tuple[float, float]:
        _sync(ctx.device)
        t0 = time.perf_counter()
        encoder.encode_images([film])  # the real encoder's arithmetic; the real token comes from the carry
        _sync(ctx.device)
        t1 = time.perf_counter()
        result = intervene(model, sae, encoder, film, edits, steps=q["steps"], measure=False, token=token)
        _sync(ctx.device)
        if len(result.heatmaps) != len(edits):
            raise RuntimeError(f"{len(result.heatmaps)} maps for {len(edits)} edits")
        return t1 - t0, time.perf_counter() - t0

    localise()  # warm-up: kernel selection, allocator
    runs = [localise() for _ in range(q["repeats"])]
    totals = [total for _, total in runs]
    best, median = min(totals), statistics.median(totals)
    encode_ms = 1e3 * statistics.median(encode for encode, _ in runs)
    rec.update(runs_s=totals, best_s=best, median_s=median, encode_ms=encode_ms,
               summary=f"{median:.2f} s median of {len(runs)} (best {best:.2f} s; encode {encode_ms:.0f} ms), "
                       f"{len(edits)} features, {model.resolution} px, {q['steps']} DDIM steps, diffusion weights: {weights}")
    rec.target("4 features localised at 256 px <= 2 s", f"{median:.2f} s", median <= 2.0 and model.resolution == 256, ctx)


CHECKS: dict[str, Callable[[Context, Recorder], None]] = {
    "env": check_env,
    "tests": check_tests,
    "sae": check_sae,
    "embedding": check_embedding,
    "diffusion": check_diffusion,
    "latency": check_latency,
}
