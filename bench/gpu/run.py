"""The GPU script: every GPU check of the project in one call, each with its own time cap.

On the device (docs/gpu.md gives the exact call; ``run.sh`` installs the carried wheels first)::

    bash bench/gpu/run.sh "$OUT"                       # = python bench/gpu/run.py --out "$OUT"

Here, the same script at tiny sizes in seconds (its CI test, tests/test_gpu_script.py, runs this)::

    python bench/gpu/run.py --cpu --out /tmp/gpu-cpu --carry /tmp/carry-made-with-prepare

Checks, in order: ``env`` (torch's CUDA build, the device, bf16 GEMM rate, copy bandwidth), ``tests``
(the ``cuda``-marked tests), ``sae`` (every registered SAE architecture's step at d=768,
m=49,152, batch 4,096 beside the three-matmul reference), ``embedding`` (ViT-B/14 at 518 px, decoding
overlapped), ``diffusion`` (a short bf16 training run on the carried nih-cxr14 images; the exported
model comes back) and ``latency`` (4 features localised at 256 px with that model).

Isolation: each check runs in its own forked process group, killed at its time limit; what it
recorded until then is kept, its error is recorded, and the next check runs. Time: each check has
a cap, and the whole run a budget (default 420 s) from which the later checks' minimum times are
held back. Output in ``--out``: ``results.json`` (everything), ``results.md`` (the tables printed
last), ``diffusion/`` (config.json, fp16 model.safetensors, metadata.json), ``train_log.jsonl`` and
``samples.png``: with ``run.sh``'s ``run.log``, 8 files, the most that come back.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # see PRELOAD
sys.path.insert(0, str(Path(__file__).resolve().parent))

import layout  # noqa: E402
from checks import CHECKS, Context, Recorder  # noqa: E402

# Sizes of the two modes. GPU: the issues' shapes. CPU: the same code at toy sizes, in seconds.
SIZES: dict[str, dict[str, Any]] = {
    "gpu": {
        "gemm_side": 8192,
        "copy_bytes": 2 * 2**30,
        "sae": {"d": 768, "m": 49_152, "batch": 4096, "warmup": 3, "steps": 20, "compile": True},
        "embedding": {"hidden": 768, "layers": 12, "heads": 12, "image_size": 518, "images": 2048, "batch": 128,
                      "workers": 0},
        # "small" UNet: its fp16 export (8.7 MB) can come back (16 MiB per file); "base" at 256 px cannot.
        "diffusion": {"resolution": 256, "architecture": "small", "batch_size": 64, "steps": 4000, "lr": 2e-4,
                      "warmup_steps": 200, "ema_decay": 0.999, "checkpoint_every": 1000, "log_every": 50,
                      "reserve_s": 35.0, "ssim_images": 8, "ddim_steps": 50},
        "latency": {"steps": 50, "features": 4, "repeats": 3, "film_side": 2048},
    },
    "cpu": {
        "gemm_side": 128,
        "copy_bytes": 2**24,
        "sae": {"d": 32, "m": 256, "batch": 64, "warmup": 1, "steps": 2, "compile": False},
        "embedding": {"hidden": 32, "layers": 1, "heads": 2, "image_size": 42, "images": 8, "batch": 4, "workers": 1},
        "diffusion": {"resolution": 32, "architecture": "tiny", "batch_size": 4, "steps": 4, "lr": 1e-3,
                      "warmup_steps": 2, "ema_decay": 0.9, "checkpoint_every": 2, "log_every": 1, "reserve_s": 20.0,
                      "ssim_images": 2, "ddim_steps": 3},
        "latency": {"steps": 3, "features": 4, "repeats": 1, "film_side": 64},
    },
}
# Seconds: each check's cap, and the least each needs (held back from the checks before it).
CAPS = {"env": 45, "tests": 90, "sae": 90, "embedding": 60, "diffusion": 180, "latency": 60}
FLOORS = {"env": 15, "tests": 30, "sae": 30, "embedding": 25, "diffusion": 60, "latency": 25}
CPU_CAP = 240  # per check in CPU mode (a shared 2-core CI machine)


def run_check(name: str, ctx: Context) -> dict[str, Any]:
    """Run one check in a forked child (its own process group), killed at ``ctx.time_limit``."""
    path = ctx.work / f"{name}.json"
    child = multiprocessing.get_context("fork").Process(target=_child, args=(name, ctx, path), name=f"check-{name}")
    started = time.monotonic()
    print(f"\n=== {name}: up to {ctx.time_limit:.0f} s ===", flush=True)
    child.start()
    child.join(ctx.time_limit)
    timed_out = child.is_alive()
    if timed_out:
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            try:
                os.killpg(child.pid, sig)
            except ProcessLookupError:
                break
            child.join(wait)
            if not child.is_alive():
                break
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data["seconds"] = round(time.monotonic() - started, 1)
    data["time_limit_s"] = round(ctx.time_limit, 1)
    if timed_out:
        data["status"] = "timeout"
        data["error"] = f"stopped at its {ctx.time_limit:.0f} s limit; results up to then are kept"
    elif data.get("status") not in ("ok", "failed"):
        data["status"] = "failed"
        data.setdefault("error", f"the check's process ended with exit code {child.exitcode}")
    print(f"=== {name}: {data['status']} in {data['seconds']:.0f} s ===", flush=True)
    return data


def _child(name: str, ctx: Context, path: Path) -> None:
    os.setpgid(0, 0)  # the parent kills the whole group (DataLoader workers, pytest) at the time limit
    rec = Recorder(path)
    try:
        CHECKS[name](ctx, rec)
    except BaseException as exc:  # noqa: BLE001 - recorded; the next check still runs
        rec.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc().splitlines()[-25:])
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    rec.update(status="ok")
    sys.stdout.flush()
    os._exit(0)


# Imported once before forking, so that each check starts in milliseconds instead of seconds. On the
# GPU only modules that do not ask CUDA anything at import: a forked child can use CUDA only if its
# parent never initialised the driver, and diffusers' import asks torch.accelerator.is_available(),
# which calls cudaGetDeviceCount (unless PYTORCH_NVML_BASED_CUDA_CHECK=1, set at the top of this file,
# answers it from NVML instead). tests/test_gpu_script.py checks that this list asks nothing.
PRELOAD = {
    "gpu": ("torch", "numpy", "transformers"),
    "cpu": ("torch", "numpy", "transformers", "diffusers", "saerad.diffusion.train", "saerad.encoders.extract"),
}


def preload(mode: str) -> None:
    for module in PRELOAD[mode]:
        try:
            __import__(module)
        except Exception as exc:  # noqa: BLE001 - the check that needs it reports the failure
            print(f"preload: cannot import {module}: {exc}", flush=True)


def git_state() -> dict[str, Any] | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=layout.REPO, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=layout.REPO,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "modified_files": len(dirty.stdout.splitlines())}


def returned_files(out: Path) -> dict[str, Any]:
    """What is in ``out`` against the device tool's limits on what comes back."""
    files = sorted(p for p in out.rglob("*") if p.is_file())
    problems = []
    if len(files) > layout.RETURN_MAX_FILES:
        problems.append(f"{len(files)} files, {layout.RETURN_MAX_FILES} come back")
    for f in files:
        rel = f.relative_to(out)
        if f.stat().st_size > layout.RETURN_MAX_FILE_BYTES:
            problems.append(f"{rel} is over 16 MiB")
        if len(rel.parts) - 1 > layout.RETURN_MAX_DEPTH:
            problems.append(f"{rel} is too deep")
    return {"files": [str(f.relative_to(out)) for f in files], "problems": problems}


def summary_table(report: dict[str, Any]) -> str:
    lines = ["| check | status | s | result |", "|---|---|---:|---|"]
    for name, data in report["checks"].items():
        result = data.get("summary") or data.get("error") or data.get("reason") or ""
        if data["status"] not in ("ok", "skipped") and data.get("summary") and data.get("error"):
            result += f" -- {data['error']}"
        lines.append(f"| {name} | {data['status']} | {data.get('seconds', 0):.0f} | {result} |")
    targets = [(name, t) for name, data in report["checks"].items() for t in data.get("targets", [])]
    if targets:
        lines += ["", "| check | target | measured | verdict |", "|---|---|---|---|"]
        for name, t in targets:
            verdict = "not assessed (CPU mode)" if t["met"] is None else ("PASS" if t["met"] else "MISS")
            lines.append(f"| {name} | {t['target']} | {t['measured']} | {verdict} |")
    return "\n".join(lines)


def render(report: dict[str, Any]) -> str:
    env = report["checks"].get("env", {})
    head = (f"# GPU script, {report['mode']} mode: {env.get('gpu') or 'no GPU'}, torch {env.get('torch', '?')}; "
            f"{report['wall_s']:.0f} s of a {report['budget_s']:.0f} s budget")
    parts = [head]
    sae = report["checks"].get("sae", {})
    if sae.get("table"):
        parts += ["## SAE training step", sae["table"]]
    tests = report["checks"].get("tests", {})
    if tests.get("problems"):
        parts += ["## CUDA test failures", "\n".join(f"- {p['test']} ({p['kind']}): {p['message']}"
                                                    for p in tests["problems"])]
    for name, data in report["checks"].items():
        if data.get("traceback"):
            parts += [f"## {name}: error", "```", "\n".join(data["traceback"][-12:]), "```"]
    files = report.get("returned", {})
    if files.get("problems"):
        parts += ["## Output over the device tool's limits", "\n".join(f"- {p}" for p in files["problems"])]
    parts += ["## Summary", summary_table(report)]
    return "\n\n".join(parts) + "\n"


def write_report(out: Path, report: dict[str, Any]) -> None:
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, out / "results.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output folder ($OUT on the device)")
    ap.add_argument("--carry", type=Path, default=layout.DEFAULT_CARRY, help="folder made by bench/gpu/prepare.py")
    ap.add_argument("--cpu", action="store_true", help="CPU mode: tiny sizes, no targets (the script's own test)")
    ap.add_argument("--only", default="", help=f"comma-separated checks to run (of {', '.join(CHECKS)})")
    ap.add_argument("--skip", default="", help="comma-separated checks to leave out")
    ap.add_argument("--budget-s", type=float, default=None, help="whole-run budget in seconds (GPU default 420)")
    ap.add_argument("--cap-s", type=float, default=None, help="every check's time cap in seconds (default: CAPS)")
    ap.add_argument("--diffusion-steps", type=int, default=None, help="training step target (stops earlier at its cap)")
    args = ap.parse_args(argv)

    mode = "cpu" if args.cpu else "gpu"
    wanted = [c.strip() for c in args.only.split(",") if c.strip()] or list(CHECKS)
    skipped = [c.strip() for c in args.skip.split(",") if c.strip()]
    unknown = sorted(set(wanted + skipped) - set(CHECKS))
    if unknown:
        ap.error(f"unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    selected = [c for c in CHECKS if c in wanted and c not in skipped]
    sizes = json.loads(json.dumps(SIZES[mode]))
    if args.diffusion_steps:
        sizes["diffusion"]["steps"] = args.diffusion_steps
    budget = args.budget_s or (420.0 if mode == "gpu" else CPU_CAP * len(CHECKS))
    out, carry = args.out.resolve(), args.carry.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="saerad-gpu-"))
    manifest = carry / layout.MANIFEST
    report: dict[str, Any] = {
        "script": "bench/gpu/run.py", "mode": mode, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "budget_s": budget, "git": git_state(), "carry": str(carry),
        "carry_manifest": json.loads(manifest.read_text()) if manifest.is_file() else None,
        "checks": {}, "wall_s": 0.0,
    }
    if report["carry_manifest"] is None:
        print(f"warning: {carry} has no {layout.MANIFEST}: run bench/gpu/prepare.py first", flush=True)
    started = time.monotonic()
    deadline = started + budget
    preload(mode)
    try:
        for index, name in enumerate(CHECKS):
            if name not in selected:
                report["checks"][name] = {"status": "skipped", "reason": "not selected"}
                continue
            held_back = sum(FLOORS[c] for c in CHECKS[index + 1:] if c in selected) if mode == "gpu" else 0
            cap = args.cap_s or (CAPS[name] if mode == "gpu" else CPU_CAP)
            limit = min(cap, deadline - time.monotonic() - held_back)
            if limit < 1:
                report["checks"][name] = {"status": "skipped", "reason": "out of time (budget spent)"}
                continue
            ctx = Context(mode=mode, device="cuda" if mode == "gpu" else "cpu", out=out, carry=carry, work=work,
                          sizes=sizes, time_limit=limit)
            report["checks"][name] = run_check(name, ctx)
            report["wall_s"] = time.monotonic() - started
            write_report(out, report)  # a device-level kill still leaves the checks done so far
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["wall_s"] = time.monotonic() - started
    (out / "results.md").write_text("", encoding="utf-8")  # listed among the returned files below
    report["returned"] = returned_files(out)
    text = render(report)
    (out / "results.md").write_text(text, encoding="utf-8")
    write_report(out, report)
    print("\n" + text, flush=True)
    return 0 if all(report["checks"][c]["status"] == "ok" for c in selected) else 1


if __name__ == "__main__":
    sys.exit(main())
