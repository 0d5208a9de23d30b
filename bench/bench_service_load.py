"""Load benchmark of the HTTP service (issue 6): 8 concurrent clients, 400 reports, real images.

Starts ``saerad serve`` in a subprocess on a free port, waits for /readyz, sends a short warm-up,
then ``--requests`` POST /v1/reports from ``--clients`` threads cycling over the covid-cxr images, and
prints a Markdown table: errors (target 0), p50/p95 latency, throughput, and the server's resident
memory before and after the run (from /proc/<pid>/status; target: growth < 10% after warm-up).

    python bench/bench_service_load.py [--bundle runs/bundles/covid] [--requests 400] [--clients 8]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` plus its children (uvicorn worker processes), in KiB."""
    total = 0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(p) for p in task.read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def load_images(root: Path, limit: int) -> list[tuple[str, bytes]]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        sys.exit(f"no images under {root}")
    return [(p.name, p.read_bytes()) for p in files]


def start_server(args: argparse.Namespace, port: int, workdir: Path, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        SAERAD_JOB_DB=str(workdir / "jobs.sqlite3"),
        **({"SAERAD_INFERENCE_THREADS": str(args.inference_threads)} if args.inference_threads else {}),
        **({"SAERAD_TORCH_THREADS": str(args.torch_threads)} if args.torch_threads else {}),
        SAERAD_LOG_LEVEL="INFO",
    )
    cmd = [sys.executable, "-c", "from saerad.cli import main; main()", "serve",
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers)]
    if args.bundle:
        cmd += ["--bundle", args.bundle]
    log = log_path.open("wb")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)


def wait_ready(base: str, proc: subprocess.Popen, timeout: float, log_path: Path) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    sys.exit(f"server not ready after {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")


def run_load(base: str, images: list[tuple[str, bytes]], n: int, clients: int, fmt: str):
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(n))
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=base, timeout=120) as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                name, data = images[i % len(images)]
                t0 = time.perf_counter()
                try:
                    r = http.post("/v1/reports", params={"format": fmt}, files={"file": (name, data)})
                    ok = r.status_code == 200
                    detail = f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, detail = False, f"{type(exc).__name__}: {exc}"
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if not ok:
                        errors.append(detail)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None, help="bundle dir (default: the embedded default bundle)")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "covid-cxr")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--inference-threads", type=int, default=None,
                    help="SAERAD_INFERENCE_THREADS (default: the service's)")
    ap.add_argument("--torch-threads", type=int, default=None, help="SAERAD_TORCH_THREADS (default: the service's)")
    ap.add_argument("--images", type=int, default=100, help="distinct images cycled over")
    ap.add_argument("--format", default="json", choices=["json", "text", "fhir"])
    args = ap.parse_args()

    images = load_images(args.data, args.images)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="saerad-bench-") as tmp:
        workdir = Path(tmp)
        log_path = workdir / "server.log"
        proc = start_server(args, port, workdir, log_path)
        try:
            ready_s = wait_ready(base, proc, 600, log_path)
            _, warm_errors, _ = run_load(base, images, args.warmup, args.clients, args.format)
            rss_before = rss_kib(proc.pid)
            latencies, errors, wall = run_load(base, images, args.requests, args.clients, args.format)
            rss_after = rss_kib(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    growth = (rss_after - rss_before) / rss_before if rss_before else float("nan")
    p50, p95 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.95) * 1000
    throughput = len(latencies) / wall
    cores = os.cpu_count()
    print(f"## Service load benchmark ({args.requests} x POST /v1/reports?format={args.format}, "
          f"{args.clients} clients, {len(images)} covid-cxr images, {cores} CPU cores, "
          f"workers={args.workers}, inference_threads={args.inference_threads or 'default'}, "
          f"torch_threads={args.torch_threads or 'default'})\n")
    print(f"bundle: `{args.bundle or 'embedded default'}`; server ready after {ready_s:.1f} s\n")
    print("| metric | value | target | result |")
    print("|---|---|---|---|")
    print(f"| errors | {len(errors)} / {len(latencies)} (warm-up: {len(warm_errors)}) | 0 | "
          f"{'PASS' if not errors and not warm_errors else 'MISS'} |")
    print(f"| latency p50 | {p50:.0f} ms | report | - |")
    print(f"| latency p95 | {p95:.0f} ms | report | - |")
    print(f"| latency mean | {statistics.fmean(latencies) * 1000:.0f} ms | report | - |")
    print(f"| throughput | {throughput:.2f} req/s ({wall:.1f} s wall) | report | - |")
    print(f"| server RSS after warm-up | {rss_before / 1024:.0f} MiB | report | - |")
    print(f"| server RSS after run | {rss_after / 1024:.0f} MiB ({growth * 100:+.1f}%) | growth < 10% | "
          f"{'PASS' if growth < 0.10 else 'MISS'} |")
    if errors:
        print("\nfirst errors:")
        for e in errors[:5]:
            print(f"- {e}")


if __name__ == "__main__":
    main()
