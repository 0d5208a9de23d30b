"""The GPU script (bench/gpu/) in its CPU mode, so it cannot rot while no GPU is at hand.

prepare.py packs 6 nih-cxr14 images at 32 px with tokens of a tiny 384-d Dinov2 (the width of the
default bundle's SAE); run.py then runs every check on the CPU at toy sizes, in forked processes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "encoders"))
from tiny_dinov2 import make_tiny_dinov2  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHECKS = ["env", "tests", "sae", "embedding", "diffusion", "latency"]


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def carry(shared_data, tmp_path_factory) -> Path:
    if not (shared_data / "nih-cxr14" / "metadata.csv").is_file():
        pytest.skip("nih-cxr14 not in the shared data")
    root = tmp_path_factory.mktemp("gpu-script")
    encoder = make_tiny_dinov2(root / "encoder", hidden=384)
    proc = run("bench/gpu/prepare.py", "--dest", str(root / "carry"), "--data", str(shared_data / "nih-cxr14"),
               "--images", "6", "--side", "32", "--encoder", f"hf:{encoder}", "--no-wheels")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((root / "carry" / "manifest.json").read_text())
    assert manifest["images"] == 6 and manifest["embeddings"]["dim"] == 384 and manifest["travel_bytes"] < 64 * 2**20
    assert "device call" in proc.stdout
    return root / "carry"


def test_cpu_mode_runs_every_check_and_returns_what_the_device_may_send(carry, tmp_path):
    out = tmp_path / "out"
    proc = run("bench/gpu/run.py", "--cpu", "--out", str(out), "--carry", str(carry))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((out / "results.json").read_text())
    assert report["mode"] == "cpu" and list(report["checks"]) == CHECKS
    for name, data in report["checks"].items():
        assert data["status"] == "ok", (name, data.get("error"), data.get("traceback"))
        assert data["summary"] and data["seconds"] <= data["time_limit_s"]
    checks = report["checks"]
    assert checks["tests"]["tests"] > 0 and checks["tests"]["skipped"] == checks["tests"]["tests"]  # no CUDA here
    from saerad.sae.architectures import ARCHITECTURES

    steps = {row["step"] for row in checks["sae"]["result"]["rows"]}
    assert {"reference fp32", "reference bf16"} <= steps
    assert all(any(s.startswith(f"{arch} ") and s.endswith(" dense bfloat16") for s in steps) for arch in ARCHITECTURES)
    assert checks["diffusion"]["steps"] == 4 and 0 < checks["diffusion"]["reconstruction_ssim"] <= 1
    assert checks["latency"]["diffusion_weights"].startswith("trained") and len(checks["latency"]["features"]) == 4
    assert all(t["met"] is None for c in checks.values() for t in c.get("targets", []))  # no verdicts off the GPU

    from saerad.diffusion.model import load_diffusion, read_metadata

    model = load_diffusion(out / "diffusion")
    assert model.resolution == 32 and read_metadata(out / "diffusion")["weights_dtype"] == "float16"
    assert "NIH Clinical Center" in read_metadata(out / "diffusion")["data_terms"]
    assert report["returned"]["problems"] == [] and len(report["returned"]["files"]) <= 7  # run.sh adds run.log
    assert (out / "results.md").read_text() in proc.stdout
    assert "| latency | ok |" in proc.stdout


def test_a_failing_or_overrunning_check_is_recorded_and_the_others_still_run(carry, tmp_path):
    broken = tmp_path / "carry"
    shutil.copytree(carry, broken)
    (broken / "embeddings.safetensors").write_bytes(b"not safetensors")
    out = tmp_path / "out"
    proc = run("bench/gpu/run.py", "--cpu", "--out", str(out), "--carry", str(broken), "--only",
               "tests,sae,diffusion", "--cap-s", "2")
    assert proc.returncode == 1
    checks = json.loads((out / "results.json").read_text())["checks"]
    assert checks["tests"]["status"] == "timeout"  # a nested pytest needs more than 2 s: killed with its group
    assert checks["sae"]["status"] == "ok"
    assert checks["diffusion"]["status"] == "failed" and "BundleError" in checks["diffusion"]["error"]
    assert checks["env"] == {"status": "skipped", "reason": "not selected"}
    assert "| diffusion | failed |" in proc.stdout


def test_gpu_preload_asks_cuda_nothing():
    """A forked check can use CUDA only if the parent never initialised it (see run.PRELOAD)."""
    probe = (
        "import sys; sys.path.insert(0, 'bench/gpu'); import torch; calls = []\n"
        "def spy(module, name):\n"
        "    setattr(module, name, lambda *a, **k: calls.append(f'{module.__name__}.{name}') or 0)\n"
        "for name in ('is_available', 'device_count', 'init', 'current_device'): spy(torch.cuda, name)\n"
        "for name in ('is_available', 'device_count', 'current_accelerator'): spy(torch.accelerator, name)\n"
        "import run\n"
        "run.preload('gpu'); print(calls)\n"
        "run.preload('cpu'); print(calls)\n"  # the probe does see diffusers' import-time question
    )
    proc = run("-c", probe, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    gpu, cpu = proc.stdout.strip().splitlines()[-2:]
    assert gpu == "[]"
    assert "torch.accelerator.is_available" in cpu
