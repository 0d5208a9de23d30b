"""Full metric suite (no CheXbert) on 3,858 report pairs - the size of the MIMIC-CXR test set.

    python bench/bench_metrics.py [--pairs 3858] [--resamples 500]

Pairs are built from the IU X-ray findings in ../shared/data: each reference is a real findings
section and its "prediction" the findings of another, random report (realistic lengths and
vocabulary, realistic low overlap). Timed: ``saerad.eval.scoring.score_systems`` end to end - rule
labels of both sides, BLEU-1..4, METEOR 1.5 (Java), ROUGE-L (coco + rouge-score), CheXpert-rule
F1 in both conventions, 500 bootstrap resamples of everything, and the three output files.
Target: <= 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 60.0


def _pairs(n: int, seed: int) -> tuple[dict[str, str], dict[str, str]]:
    path = Path(os.environ.get("SAERAD_SHARED_DATA", REPO.parent / "shared" / "data")) / "iu-reports" / "reports.jsonl"
    if not path.is_file():
        sys.exit(f"{path} not found (set SAERAD_SHARED_DATA)")
    findings = [r["findings"] for r in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if r.get("findings")]
    rng = random.Random(seed)
    refs, preds = {}, {}
    for i in range(n):
        a, b = rng.randrange(len(findings)), rng.randrange(len(findings))
        refs[f"s{i}"], preds[f"s{i}"] = findings[a], findings[b]
    return refs, preds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3858)
    parser.add_argument("--resamples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from saerad.eval.meteor import meteor_unavailable_reason
    from saerad.eval.scoring import ScoreOptions, score_systems

    refs, preds = _pairs(args.pairs, args.seed)
    reason = meteor_unavailable_reason()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory() as out:
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        metrics = score_systems(refs, {"random-other-report": preds}, out, ScoreOptions(n_resamples=args.resamples, chexbert=False))
        total = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        score_systems(refs, {"random-other-report": preds}, out, ScoreOptions(n_resamples=args.resamples, chexbert=False, meteor=False))
        python_only = time.perf_counter() - t0
    python_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    java_cpu = (child1.ru_utime + child1.ru_stime) - (child0.ru_utime + child0.ru_stime)
    text = metrics["systems"]["random-other-report"]["text"]
    rule = metrics["systems"]["random-other-report"]["chexpert_rule"]["uncertain_positive"]
    print(f"## Metric suite on {args.pairs} pairs ({args.resamples} bootstrap resamples, no CheXbert)\n")
    print(f"{os.cpu_count()} CPUs, 1-min load average at start {load:.1f} (other jobs on the machine slow the wall time).\n")
    print("| run | wall s | CPU s (Python) | CPU s (Java) | target | result |")
    print("|---|---|---|---|---|---|")
    status = "PASS" if total <= TARGET_S else "MISS"
    label = "full suite incl. METEOR 1.5" + ("" if reason is None else f" (METEOR unavailable: {reason})")
    print(f"| {label} | {total:.1f} | {python_cpu:.1f} | {java_cpu:.1f} | <= {TARGET_S:.0f} wall | {status} |")
    print(f"| same without METEOR | {python_only:.1f} | - | - | - | - |\n")
    print("| metric | value | 95% CI |")
    print("|---|---|---|")
    for name, entry in list(text.items()) + [(f"rule {k}", rule[k]) for k in ("micro_14", "macro_14", "micro_5", "macro_5")]:
        if "unavailable" in entry:
            print(f"| {name} | unavailable: {entry['unavailable']} | |")
        else:
            lo, hi = entry["ci95"]
            print(f"| {name} | {entry['value']:.4f} | [{lo:.4f}, {hi:.4f}] |")


if __name__ == "__main__":
    main()
