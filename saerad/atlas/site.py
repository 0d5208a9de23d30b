"""Build the atlas: bundle + the user's images -> a static site that opens from disk.

Stages, each resumable: class tokens of the images (``--embeddings FILE``, or an embedding job cached
in ``SITE/.cache``), the SAE's sparse activations, a profile per feature, thumbnails, optional
counterfactual strips, then the pages. Costly outputs (tokens, thumbnails, strips) are kept and
reused by a rerun; pages are rendered again (milliseconds each) and written only when they changed.
Every file is written atomically.

Layout of ``SITE/``::

    index.html              sortable, filterable feature table + language search
    search-index.js         the search index (window.SAERAD_ATLAS), see saerad.atlas.search
    features/f00012.html    one page per feature
    img/<hash>.jpg          thumbnails
    cf/<hash>/*.png         counterfactual strips (optional)
    assets/                 atlas.css, atlas.js (hand-written, no third-party code)
    atlas.json              what was built, for scripts
    .cache/                 class tokens for resuming; never served (the service hides dot-paths)
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saerad.atlas.pages import (
    ASSETS,
    FeatureEntry,
    SiteInfo,
    StripRow,
    Tile,
    feature_page,
    index_page,
    page_name,
)
from saerad.atlas.profile import FeatureProfile, profile_features
from saerad.atlas.search import FILE as SEARCH_FILE
from saerad.atlas.search import search_index_js
from saerad.atlas.thumbnails import make_thumbnails
from saerad.errors import ConfigError
from saerad.fileio import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from saerad.bundle import Bundle
    from saerad.datasets.base import Study
    from saerad.encoders.base import ClassTokenEncoder
    from saerad.encoders.store import EmbeddingSet

log = logging.getLogger(__name__)

FORMAT = "saerad-atlas/1"
CACHE = ".cache"
STATIC_FILES = ("atlas.css", "atlas.js")


@dataclass
class AtlasOptions:
    """Options of ``saerad atlas`` (see ``saerad atlas --help``)."""

    features: Sequence[int] | None = None  # None: every feature of the SAE
    top_k: int = 12  # strongest images per feature
    sample_k: int = 12  # random images per feature
    bins: int = 24  # histogram bins
    seed: int = 0
    counterfactuals: int = 0  # images per feature with an add/remove strip (needs a diffusion model)
    counterfactual_features: Sequence[int] | None = None  # None: the described features of the selection
    steps: int = 25  # DDIM steps of the strips
    strength: float = 1.0  # add: multiple of the feature's training 0.99 quantile
    device: str = "cpu"
    batch_size: int = 32  # embedding batch
    workers: int = 2  # thumbnail threads
    title: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.sample_k < 0 or self.bins < 1 or self.counterfactuals < 0 or self.steps < 1:
            raise ConfigError("top-k and bins must be >= 1, sample-k and counterfactuals >= 0, steps >= 1")


@dataclass
class AtlasResult:
    out: Path
    features: int
    images: int  # images with a class token
    thumbnails: int
    strips: int
    pages_written: int
    pages_unchanged: int
    seconds: dict[str, float] = field(default_factory=dict)


def build_atlas(
    bundle: Bundle,
    studies: Sequence[Study],
    out: str | Path,
    options: AtlasOptions | None = None,
    *,
    dataset: str = "images",
    embeddings: EmbeddingSet | None = None,
    encoder: ClassTokenEncoder | None = None,
) -> AtlasResult:
    """Write (or bring up to date) the atlas of ``bundle`` on ``studies`` in ``out``."""
    from saerad.encoders.extract import items_from_studies
    from saerad.features.stats import sparse_activations

    opts = options or AtlasOptions()
    out = _check_out(Path(out))
    timer = _Timer()
    paths = {image_id: str(path) for image_id, path in items_from_studies(studies)}
    if not paths:
        raise ConfigError("the dataset has no images")
    d_sae = int(bundle.sae.cfg.d_sae)
    selected = _selection(opts.features, d_sae, "--features")
    if encoder is not None:
        bundle.check_encoder(encoder)

    with timer("tokens"):
        if embeddings is None:
            encoder = encoder or _encoder(bundle, opts.device)
            embeddings = _embed(paths, encoder, out / CACHE, opts, dataset)
        tokens = _dataset_tokens(embeddings, paths, bundle)
    with timer("activations"):
        codes = sparse_activations(bundle.sae, tokens.tokens, progress=opts.progress, desc="activations")
        profiles = profile_features(codes, selected, top_k=opts.top_k, sample_k=opts.sample_k, bins=opts.bins,
                                    seed=opts.seed)
    with timer("thumbnails"):
        wanted = {tokens.ids[row] for p in profiles for row, _ in (*p.top, *p.sample)}
        thumbs = make_thumbnails(out, {i: paths[i] for i in sorted(wanted)}, workers=opts.workers,
                                 progress=opts.progress)
    entries = [_entry(bundle, p, tokens.ids, thumbs) for p in profiles]
    strips = 0
    if opts.counterfactuals:
        with timer("counterfactuals"):
            encoder = encoder or _encoder(bundle, opts.device)
            entries, strips = _add_strips(bundle, encoder, entries, tokens, paths, out, opts)
    with timer("pages"):
        info = SiteInfo(
            title=opts.title or f"Feature atlas · {bundle.manifest.name}",
            bundle=f"{bundle.manifest.name} {bundle.manifest.version}",
            dataset=dataset,
            n_images=len(tokens),
            licence=bundle.manifest.data.license,
            created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            describer=bundle.dictionary.describer,
        )
        written, unchanged = _write_pages(out, info, entries, opts.progress)
    atomic_write_json(out / "atlas.json", _summary(info, entries, opts, timer.seconds))
    log.info("atlas of %d features on %d images in %s", len(entries), len(tokens), out)
    return AtlasResult(out=out, features=len(entries), images=len(tokens), thumbnails=sum(v is not None for v in thumbs.values()),
                       strips=strips, pages_written=written, pages_unchanged=unchanged, seconds=dict(timer.seconds))


def parse_feature_spec(spec: str | None) -> list[int] | None:
    """``"0-9,12"`` -> [0..9, 12]; ``None`` or empty -> None (all features)."""
    if not spec or not spec.strip():
        return None
    ids: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                ids.extend(range(lo, hi + 1))
            elif part:
                ids.append(int(part))
        except ValueError:
            raise ConfigError(f"bad feature list {spec!r}: use ids and ranges like 0-99,120") from None
    return ids


# ------------------------------------------------------------------------------------ stages


class _Timer:
    """Wall seconds per stage, for the result and ``atlas.json``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - t0, 3)


def _check_out(out: Path) -> Path:
    """Refuse a file, or a non-empty folder that holds no atlas (its files would be scattered there)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; choose a folder for the site")
    if out.is_dir() and any(out.iterdir()) and not any((out / n).exists() for n in ("atlas.json", CACHE, "img")):
        raise ConfigError(f"--out {out} is a non-empty folder that holds no atlas; choose a new or empty folder")
    return out


def _selection(ids: Sequence[int] | None, d_sae: int, flag: str) -> list[int]:
    if ids is None:
        return list(range(d_sae))
    bad = [i for i in ids if not 0 <= int(i) < d_sae]
    if bad:
        raise ConfigError(f"{flag}: feature {bad[0]} does not exist (this SAE has features 0..{d_sae - 1})")
    return sorted({int(i) for i in ids})


def _encoder(bundle: Bundle, device: str) -> ClassTokenEncoder:
    return bundle.load_encoder(device)


def _embed(paths: dict[str, str], encoder: ClassTokenEncoder, cache: Path, opts: AtlasOptions, dataset: str):
    """Class tokens of ``paths`` via the resumable embedding job, kept in ``cache`` for reruns."""
    from saerad.encoders.extract import EmbedJob, run_embedding
    from saerad.encoders.store import EmbeddingSet

    target = cache / "embeddings.safetensors"
    job = EmbedJob(out=target, batch_size=opts.batch_size, progress=opts.progress, meta={"dataset": dataset})
    if target.is_file() and not job.parts_dir.exists():
        cached = EmbeddingSet.load(target)
        if cached.encoder == encoder.spec and set(cached.ids) <= set(paths) and len(cached) >= _expected(paths, job):
            return cached
        log.info("the cached class tokens are of other images or another encoder: embedding again")
        job.overwrite = True
    run_embedding(list(paths.items()), encoder, job)
    return EmbeddingSet.load(target)


def _expected(paths: dict[str, str], job) -> int:
    """Images the cached file should hold: all, minus those the embedding job found unreadable."""
    try:
        failed = json.loads(job.failures_path.read_text(encoding="utf-8"))["count"]
    except (OSError, ValueError, KeyError):
        failed = 0
    return len(paths) - int(failed)


def _dataset_tokens(embeddings: EmbeddingSet, paths: dict[str, str], bundle: Bundle) -> EmbeddingSet:
    """The original views of the dataset's images that have a class token, checked against the SAE."""
    bundle.check_tokens(embeddings)
    ids = [i for i in embeddings.originals().ids if i in paths]
    if not ids:
        raise ConfigError("none of the dataset's images has a class token in the embeddings file: "
                          "was it made from another dataset?")
    if len(ids) < len(paths):
        log.warning("%d of %d images have no class token (unreadable or not in the embeddings file): left out",
                    len(paths) - len(ids), len(paths))
    return embeddings.select(ids)


def tracked_conditions(meta: dict) -> dict[int, str]:
    """Feature id -> the condition its label-driven description tracks (dictionary ``meta``)."""
    out = {}
    for key, value in (meta.get("label_driven") or {}).items():
        if isinstance(value, dict) and value.get("condition") and str(key).isdigit():
            out[int(key)] = str(value["condition"])
    return out


def _entry(bundle: Bundle, profile: FeatureProfile, ids: list[str], thumbs: dict[str, str | None]) -> FeatureEntry:
    stats = bundle.dictionary.get(profile.id)
    tracked = tracked_conditions(bundle.dictionary.meta).get(profile.id)
    return FeatureEntry(
        profile=profile,
        description=stats.description,
        score=stats.description_score,
        usable=stats.usable,
        tracked=tracked,
        shared_labels=tuple(sorted(c for c, v in stats.labels.items() if v == 1)),
        train_frequency=stats.frequency,
        train_quantiles=dict(stats.quantiles),
        top=tuple(Tile(ids[r], thumbs.get(ids[r]), a) for r, a in profile.top),
        sample=tuple(Tile(ids[r], thumbs.get(ids[r]), a) for r, a in profile.sample),
        votes=tuple((r.condition, r.weights[profile.id], r.usable) for r in bundle.dictionary.rules
                    if profile.id in r.weights),
    )


def _add_strips(bundle, encoder, entries, tokens, paths, out: Path, opts: AtlasOptions):
    from tqdm.auto import tqdm

    from saerad.atlas.counterfactuals import StripJob, StripRenderer, pick_images

    if bundle.diffusion_dir is None:
        raise ConfigError("--counterfactuals needs a bundle with a diffusion model (this one has none)")
    chosen = set(_selection(opts.counterfactual_features, int(bundle.sae.cfg.d_sae), "--counterfactual-features")
                 if opts.counterfactual_features is not None else [e.id for e in entries if e.description])
    renderer = StripRenderer(bundle, encoder, steps=opts.steps, strength=opts.strength, device=opts.device)
    jobs = {
        e.id: [StripJob(e.id, tokens.ids[r], paths[tokens.ids[r]], a, tokens.tokens[r])
               for r, a in pick_images(e.profile.top, e.profile.sample, opts.counterfactuals)]
        for e in entries
        if e.id in chosen and bundle.dictionary.get(e.id).frequency > 0  # add needs a training quantile
    }
    rows: dict[int, list[StripRow]] = {}
    with tqdm(total=sum(len(j) for j in jobs.values()), desc="counterfactuals", unit="img",
              disable=not opts.progress) as bar:
        for fid, feature_jobs in jobs.items():
            for job in feature_jobs:
                if (row := renderer.render(out, job)) is not None:
                    rows.setdefault(fid, []).append(row)
                bar.update(1)
    entries = [replace(e, strips=tuple(rows.get(e.id, ()))) for e in entries]
    return entries, sum(len(r) for r in rows.values())


def _write_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write_text(path, text)
    return True


def _write_pages(out: Path, info: SiteInfo, entries: list[FeatureEntry], progress: bool) -> tuple[int, int]:
    from tqdm.auto import tqdm

    static = resources.files("saerad.atlas") / "static"
    files: list[tuple[Path, Any]] = [(out / ASSETS / name, lambda n=name: (static / n).read_text(encoding="utf-8"))
                                     for name in STATIC_FILES]
    files.append((out / SEARCH_FILE, lambda: search_index_js(entries)))
    files.append((out / "index.html", lambda: index_page(info, entries)))
    ids = [e.id for e in entries]
    for k, e in enumerate(entries):
        prev_id = ids[k - 1] if k > 0 else None
        next_id = ids[k + 1] if k + 1 < len(ids) else None
        files.append((out / "features" / page_name(e.id),
                      lambda e=e, p=prev_id, n=next_id: feature_page(info, e, prev_id=p, next_id=n)))
    written = 0
    for path, render in tqdm(files, desc="pages", unit="page", disable=not progress):
        written += _write_if_changed(path, render())
    return written, len(files) - written


def _summary(info: SiteInfo, entries: list[FeatureEntry], opts: AtlasOptions, seconds: dict[str, float]) -> dict:
    options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items() if k != "progress"}
    return {
        "format": FORMAT,
        "site": asdict(info),
        "options": options,
        "seconds": seconds,
        "features": [
            {"id": e.id, "n_active": e.profile.n_active, "n_images": e.profile.n_images, "max": e.profile.max,
             "hist_counts": list(e.profile.hist_counts), "page": f"features/{page_name(e.id)}",
             "top": [[t.image_id, t.activation] for t in e.top], "strips": len(e.strips)}
            for e in entries
        ],
    }
