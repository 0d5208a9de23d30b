"""Pack what the GPU call needs into an ignored folder (run here, on the CPU, before the call).

The device machine gets a copy of the working tree and nothing else: ``../shared`` stays behind, the
device image lacks a few packages, and the default encoder's weights (42 MiB even in fp16) would
not fit the 64 MiB that travel beside 20 MiB of images. So this step packs (see ``layout.py``):

- nih-cxr14 downscaled (longer side 256 px by default, 8-bit PNG, same folder layout, labels, boxes
  and README with the attribution NIH asks for), so ``load_dataset("nih-cxr14", DIR)`` works there;
- the class tokens of those images, made from the full-size originals (``--embeddings FILE`` reuses
  a file from ``saerad embed``; otherwise they are computed here, about 4 min on 2 busy cores);
- the encoder's architecture and preprocessing files (no weights: the latency check times a
  randomly initialised copy, which does the same arithmetic);
- wheels of the packages the device image lacks (``layout.DEVICE_MISSING``), at the versions
  installed here.

    python bench/gpu/prepare.py --embeddings runs/nih-cxr14/embeddings.safetensors

It refuses to finish when the carry folder plus the working tree exceed 64 MiB, and prints the
device call to make (docs/gpu.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import layout  # noqa: E402

from saerad.errors import ConfigError  # noqa: E402

PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
DEVICE_PYTHON = "3.12"


def shared_nih() -> Path:
    return Path(os.environ.get("SAERAD_SHARED_DATA", layout.REPO.parent / "shared" / "data")) / "nih-cxr14"


def downscale_dataset(source: Path, dest: Path, *, side: int, limit: int | None) -> list[str]:
    """Copy metadata, boxes and README; write each image with its longer side = ``side``."""
    from PIL import Image

    from saerad.datasets import load_dataset
    from saerad.diffusion.data import resize_image
    from saerad.heatmaps.pictures import to_uint8
    from saerad.imaging import load_xray

    load_dataset(layout.DATASET, source)  # validates the source before anything is written
    with (source / "metadata.csv").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames or [], list(reader)
    rows = rows[:limit] if limit else rows
    (dest / "images").mkdir(parents=True)
    for row in rows:
        pixels = load_xray(source / row["image"]).pixels
        h, w = pixels.shape
        scale = side / max(h, w)
        small = resize_image(pixels, (max(1, round(h * scale)), max(1, round(w * scale))))
        Image.fromarray(to_uint8(small), mode="L").save(dest / row["image"], optimize=True)
    with (dest / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    for name in ("boxes.csv", "README.md"):
        if (source / name).is_file():
            shutil.copy2(source / name, dest / name)
    with (dest / "README.md").open("a", encoding="utf-8") as handle:
        handle.write(f"\n\nCarried copy for the GPU script (bench/gpu/prepare.py): {len(rows)} images, longer side "
                     f"{side} px. Same terms and attribution as above.\n")
    return [Path(row["image"]).stem for row in rows]


def carry_embeddings(ids: list[str], dest: Path, *, embeddings: Path | None, encoder_spec: str, source: Path) -> dict:
    """Tokens for ``ids``: selected from ``embeddings`` or computed from the full-size originals."""
    from saerad.encoders.store import EmbeddingSet

    if embeddings is not None:
        tokens = EmbeddingSet.load(embeddings).select(ids)
        origin = str(embeddings)
    else:
        from saerad.datasets import load_dataset
        from saerad.encoders import load_encoder
        from saerad.encoders.extract import EmbedJob, items_from_studies, run_embedding

        wanted = set(ids)
        items = [(i, p) for i, p in items_from_studies(load_dataset(layout.DATASET, source)) if i in wanted]
        encoder = load_encoder(encoder_spec, device="cpu")
        with tempfile.TemporaryDirectory(prefix="saerad-prepare-") as tmp:
            out = Path(tmp) / "tokens.safetensors"
            job = EmbedJob(out=out, batch_size=16, num_workers=1, meta={"dataset": layout.DATASET, "root": str(source)})
            result = run_embedding(items, encoder, job)
            if result.failed:
                raise ConfigError(f"{result.failed} images could not be embedded")
            tokens = EmbeddingSet.load(out).select(ids)
        origin = f"computed here with encoder {encoder_spec!r}"
    tokens.save(dest / layout.EMBEDDINGS)
    return {"file": layout.EMBEDDINGS, "count": len(tokens), "dim": tokens.dim, "encoder": tokens.encoder,
            "source": origin}


def encoder_directory(spec: str) -> Path:
    spec = spec.strip()
    if spec == "default":
        from saerad.encoders.default import ensure_default_encoder

        return ensure_default_encoder()
    return Path(spec[3:] if spec.startswith("hf:") else spec).expanduser()


def carry_encoder_architecture(spec: str, dest: Path, dim: int) -> dict:
    """The encoder's config and preprocessing files, without weights; its width must match the tokens."""
    source = encoder_directory(spec)
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    if int(config.get("hidden_size", -1)) != dim:
        raise ConfigError(f"encoder {spec!r} makes {config.get('hidden_size')}-d tokens but the embeddings are {dim}-d")
    dest.mkdir(parents=True)
    for name in layout.ENCODER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, dest / name)
    options = json.loads((dest / "saerad_encoder.json").read_text()) if (dest / "saerad_encoder.json").is_file() else {}
    options["source"] = {"weights": "none carried: architecture and preprocessing of " + spec}
    (dest / "saerad_encoder.json").write_text(json.dumps(options, indent=2), encoding="utf-8")
    return {"spec": spec, "hidden_size": dim, "files": sorted(p.name for p in dest.iterdir())}


def download_wheels(dest: Path) -> list[str]:
    """Wheels of ``layout.DEVICE_MISSING`` at the versions installed here, for the device's Python."""
    dest.mkdir(parents=True)
    pins = [f"{name}=={metadata.version(name)}" for name in layout.DEVICE_MISSING]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", DEVICE_PYTHON, "--implementation", "cp", "-d", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd + pins, check=True)
    return sorted(p.name for p in dest.glob("*.whl"))


def prepare(args: argparse.Namespace) -> dict:
    dest = Path(args.dest).resolve()
    if dest.exists() and not (dest / layout.MANIFEST).is_file():
        raise ConfigError(f"{dest} exists and was not made by this script: choose another --dest")
    source = Path(args.data)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.monotonic()
    try:
        ids = downscale_dataset(source, tmp / layout.DATASET_DIR, side=args.side, limit=args.images)
        print(f"images: {len(ids)} at {args.side} px")
        emb = carry_embeddings(ids, tmp, embeddings=args.embeddings, encoder_spec=args.encoder, source=source)
        print(f"tokens: {emb['count']} x {emb['dim']} ({emb['source']})")
        enc = carry_encoder_architecture(args.encoder, tmp / layout.ENCODER_DIR, emb["dim"])
        wheels = [] if args.no_wheels else download_wheels(tmp / layout.WHEELS_DIR)
        print(f"wheels: {', '.join(wheels) or 'none'}")
        sizes = {p.name: layout.folder_bytes(p) if p.is_dir() else p.stat().st_size for p in tmp.iterdir()}
        tree = layout.tree_bytes()
        total = tree + sum(sizes.values())
        manifest = {
            "made_by": "bench/gpu/prepare.py", "made_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "source": str(source), "images": len(ids), "side": args.side, "embeddings": emb, "encoder": enc,
            "wheels": wheels, "bytes": sizes, "working_tree_bytes": tree, "travel_bytes": total,
            "seconds": round(time.monotonic() - started, 1),
        }
        (tmp / layout.MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if total > layout.TRAVEL_LIMIT:
            raise ConfigError(f"carry folder + working tree = {total / 2**20:.1f} MiB, over the 64 MiB that travel: "
                              "pass --images or --side to pack less")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", type=Path, default=layout.DEFAULT_CARRY, help="carry folder (ignored by git)")
    ap.add_argument("--data", type=Path, default=shared_nih(), help="the nih-cxr14 folder")
    ap.add_argument("--side", type=int, default=256, help="longer image side in the carried copy")
    ap.add_argument("--images", type=int, default=None, help="carry only the first N images (default: all)")
    ap.add_argument("--embeddings", type=Path, default=None,
                    help="class tokens of the full-size images (saerad embed output); default: compute them")
    ap.add_argument("--encoder", default="default", help="encoder spec of the tokens (default, hf:DIR)")
    ap.add_argument("--no-wheels", action="store_true", help="carry no wheels (CPU mode, or an image that has them)")
    args = ap.parse_args()
    try:
        manifest = prepare(args)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    dest = Path(args.dest).resolve()
    rel = os.path.relpath(dest, layout.REPO)
    print(f"\nwrote {dest}: {manifest['travel_bytes'] / 2**20:.1f} MiB travel with the working tree "
          f"(limit 64 MiB) in {manifest['seconds']:.0f} s")
    print(f"device call: command 'bash bench/gpu/run.sh \"$OUT\"', carry ['{rel}'], timeout_s 540 (docs/gpu.md)")


if __name__ == "__main__":
    main()
