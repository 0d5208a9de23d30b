"""Wall time of `saerad figure` (issue 14: <= 30 s on 2 cores at 128 px, 50 steps, 2 features).

Each configuration runs the real command in a fresh process (model loading included), one after the
other in this run, so the ratios between them hold even when the machine is busy:

- ``default``: what a user gets (passive OpenMP waits, threads = the cores not busy);
- ``--threads 1`` and ``--threads 2``: fixed thread counts, passive waits;
- ``active waits, 2 threads``: OpenMP's spinning waits with 2 threads (the behaviour before the
  command set its threads deliberately).

The 1-minute load average before each run is printed: on a shared machine it explains most of the
spread. Features default to the two most active on the image.

    python bench/bench_figure.py --image ../shared/data/covid-cxr/images/000001-2.jpg
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def top_features(image: Path, bundle: str | None, k: int) -> list[int]:
    import torch

    from saerad.bundle import Bundle
    from saerad.encoders import load_encoder
    from saerad.imaging import load_xray

    loaded = Bundle.load(bundle)
    token = load_encoder(loaded.encoder_spec).encode_images([load_xray(image).pixels])
    with torch.no_grad():
        codes = loaded.sae.encode(token)[0]
    return [int(i) for i in torch.argsort(codes, descending=True)[:k]]


def run(image: Path, features: list[int], bundle: str | None, steps: int, extra: list[str], env: dict) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "saerad.cli", "figure", str(image), "--out", str(Path(tmp) / "fig.png"),
               "--steps", str(steps), "--device", "cpu", *extra]
        for i in features:
            cmd += ["--feature", str(i)]
        if bundle:
            cmd += ["--bundle", bundle]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"figure failed: {done.stderr.strip().splitlines()[-1:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", type=Path, default=Path(os.environ.get("SAERAD_SHARED_DATA", REPO.parent / "shared" / "data"))
                    / "covid-cxr/images/000001-2.jpg")
    ap.add_argument("--bundle", default=None, help="bundle directory (default: the embedded one)")
    ap.add_argument("--features", type=int, nargs="*", default=None)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    if not args.image.is_file():
        raise SystemExit(f"{args.image} not found (../shared/data missing?)")
    features = args.features or top_features(args.image, args.bundle, 2)
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    configs = [
        ("default", [], {}),
        ("--threads 1", ["--threads", "1"], {}),
        ("--threads 2", ["--threads", "2"], {}),
        ("active waits, 2 threads", ["--threads", "2"], {"OMP_WAIT_POLICY": "ACTIVE"}),
    ]
    rows = []
    for name, extra, env in configs:
        for _ in range(args.repeats):
            load = os.getloadavg()[0]
            rows.append((name, run(args.image, features, args.bundle, args.steps, extra, {**base, **env}), load))
            print(f"{name}: {rows[-1][1]:.1f} s (load {load:.1f})", flush=True)
    default = min(s for n, s, _ in rows if n == "default")
    print(f"\n`saerad figure`, {args.steps} steps, features {features}, bundle {args.bundle or 'embedded'}, "
          f"{os.cpu_count()} cores")
    print("| configuration | wall s | vs default | 1-min load before |")
    print("|---|---|---|---|")
    for name, seconds, load in rows:
        print(f"| {name} | {seconds:.1f} | {seconds / default:.2f}x | {load:.1f} |")
    print(f"\ntarget: <= 30 s on 2 cores: {'PASS' if default <= 30 else 'MISS'} ({default:.1f} s, default)")


if __name__ == "__main__":
    main()
