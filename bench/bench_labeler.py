"""Rule labeller: speed on one core and quality on the hand-labelled sentence files.

    python bench/bench_labeler.py [--repeats 3]

Speed: reports/s labelling the IU X-ray reports (findings + impression) of ../shared/data,
pinned to one CPU core; target >= 500 reports/s. Quality: per-condition F1 on
tests/radtext/labeler_cases.tsv (development set) and labeler_holdout.tsv (held out).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 500.0


def _corpus() -> list[str]:
    root = Path(os.environ.get("SAERAD_SHARED_DATA", REPO.parent / "shared" / "data")) / "iu-reports" / "reports.jsonl"
    if not root.is_file():
        sys.exit(f"{root} not found (set SAERAD_SHARED_DATA)")
    rows = [json.loads(line) for line in root.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [" ".join(filter(None, (r.get("findings"), r.get("impression")))) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from saerad.radtext import label_reports
    from saerad.radtext.casefile import format_scores, load_cases, score_cases

    texts = _corpus()
    label_reports(texts[:50])  # compile + warm caches
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        label_reports(texts)
        best = min(best, time.perf_counter() - t0)
    rate = len(texts) / best
    words = sum(len(t.split()) for t in texts) / len(texts)
    print("## Rule labeller speed (one core)\n")
    print("| reports | mean words/report | best of | seconds | reports/s | target | result |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {len(texts)} | {words:.0f} | {args.repeats} | {best:.2f} | {rate:.0f} | >= {TARGET:.0f} | {'PASS' if rate >= TARGET else 'MISS'} |\n")
    for name in ("labeler_cases.tsv", "labeler_holdout.tsv"):
        print(format_scores(name, score_cases(load_cases(REPO / "tests" / "radtext" / name))))


if __name__ == "__main__":
    main()
