"""Feature atlas: wall time of a fresh build, of a resumed one, and of counterfactual strips.

    OMP_NUM_THREADS=1 python bench/bench_atlas.py [--bundle B] [--dataset covid-cxr --root ../shared/data/covid-cxr]
        [--embeddings FILE] [--counterfactuals 2 --counterfactual-features 115,181]

Builds the atlas of every feature of the bundle (the embedded one by default) on a dataset of
../shared/data into a temporary folder, then builds it again (the rerun resumes: tokens, thumbnails
and pages are reused), and prints the time of each stage. Without ``--embeddings`` the class tokens
are computed in the fresh build (bench_embedding.py measures that stage alone). Target: a fresh
build of a few hundred features without counterfactuals in at most 5 minutes on 2 CPU cores.
With ``--counterfactuals N`` a third build adds N strips per listed feature (seconds per strip).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 300.0
STAGES = ("tokens", "activations", "thumbnails", "counterfactuals", "pages")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = Path(os.environ.get("SAERAD_SHARED_DATA", REPO.parent / "shared" / "data"))
    parser.add_argument("--bundle", default=None, help="bundle directory (default: the embedded one)")
    parser.add_argument("--dataset", default="covid-cxr")
    parser.add_argument("--root", type=Path, default=shared / "covid-cxr")
    parser.add_argument("--embeddings", type=Path, default=None, help="reuse class tokens (skips embedding)")
    parser.add_argument("--counterfactuals", type=int, default=0, help="strips per feature in a third build")
    parser.add_argument("--counterfactual-features", default="", help="features that get strips, e.g. 115,181")
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args()
    if not args.root.is_dir():
        sys.exit(f"{args.root} not found (set SAERAD_SHARED_DATA)")

    from saerad.atlas import AtlasOptions, build_atlas, parse_feature_spec
    from saerad.bundle import Bundle
    from saerad.datasets import load_dataset
    from saerad.encoders.store import EmbeddingSet

    bundle = Bundle.load(args.bundle)
    studies = load_dataset(args.dataset, args.root)
    tokens = EmbeddingSet.load(args.embeddings) if args.embeddings else None
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-atlas-") as tmp:
        site = Path(tmp) / "site"
        for name in ("fresh", "resumed"):
            result = build_atlas(bundle, studies, site, AtlasOptions(progress=False), dataset=args.dataset,
                                 embeddings=tokens)
            rows.append((name, result, TARGET_S if name == "fresh" else None))
        if args.counterfactuals:
            chosen = parse_feature_spec(args.counterfactual_features)
            opts = AtlasOptions(progress=False, counterfactuals=args.counterfactuals, counterfactual_features=chosen,
                                steps=args.steps)
            result = build_atlas(bundle, studies, site, opts, dataset=args.dataset, embeddings=tokens)
            rows.append((f"+ strips ({args.counterfactuals}/feature, {args.steps} steps)", result, None))

    print(f"## Feature atlas: {bundle.manifest.name} on {args.dataset}"
          f" ({'tokens from ' + args.embeddings.name if tokens is not None else 'tokens computed in the fresh build'})\n")
    print("| build | features | images | " + " | ".join(f"{s} s" for s in STAGES) + " | total s | strips | target | result |")
    print("|---" * (len(STAGES) + 7) + "|")
    for name, r, target in rows:
        total = sum(r.seconds.values())
        stages = " | ".join(f"{r.seconds[s]:.1f}" if s in r.seconds else "–" for s in STAGES)
        verdict = "–" if target is None else ("PASS" if total <= target else "MISS")
        goal = f"<= {target:.0f} s" if target else "–"
        print(f"| {name} | {r.features} | {r.images} | {stages} | {total:.1f} | {r.strips} | {goal} | {verdict} |")
    strip_row = next((r for n, r, _ in rows if n.startswith("+")), None)
    if strip_row is not None and strip_row.strips:
        print(f"\nseconds per strip: {strip_row.seconds['counterfactuals'] / strip_row.strips:.1f}")


if __name__ == "__main__":
    main()
