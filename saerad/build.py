"""``saerad build``: dataset -> embeddings -> SAE -> feature dictionary -> bundle, resumably.

Each stage writes its outputs under a work directory (default ``<out>.work``) and then a stamp file
``stamps/<stage>.json`` holding fingerprints of its inputs, its parameters and the sha256 of its
outputs. A stage is skipped when its stamp matches what it would be given now and its outputs are
unchanged on disk; otherwise it runs (and the stages after it, whose input fingerprints then change).
Stages that take long resume inside themselves too: embedding extraction keeps finished shards and the
SAE trainer resumes from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from saerad.bundle import DataEntry, EncoderEntry, ReportDefaults, sha256_file, write_bundle
from saerad.datasets import Study, load_dataset
from saerad.errors import ConfigError
from saerad.fileio import atomic_write_json

log = logging.getLogger(__name__)

STAGES = ("embed", "train-sae", "dictionary", "bundle")
# Training-batch L0 the SAE controller aims at by default: held-out images then have 15-16 active
# features on covid-cxr (bench/bench_sae_quality.py), the sparsity of SAE-Rad's reports.
DEFAULT_TARGET_L0 = 13.5

# What users inherit from each dataset (shown in the manifest and by `saerad report`).
DATA_TERMS: dict[str, tuple[str, str]] = {
    "covid-cxr": (
        "COVID-19 image data collection (Cohen et al., 2020), snapshot of 2020-06-22: frontal chest "
        "X-rays with free-text clinical case notes (not structured radiology reports)",
        "CC BY-NC-SA 4.0 (metadata; images CC BY-NC-SA 4.0, CC BY 4.0 or unstated): non-commercial "
        "research use only; models trained on it inherit the non-commercial terms",
    ),
    "mimic-cxr": (
        "MIMIC-CXR-JPG chest X-rays with MIMIC-CXR free-text reports (findings sections)",
        "PhysioNet Credentialed Health Data License 1.5.0: credentialed users only; do not share "
        "models or bundles that contain report text",
    ),
    "iu-xray": (
        "Indiana University Chest X-ray Collection (Open-i) with its radiology reports",
        "CC BY-NC-ND 4.0: non-commercial research use only",
    ),
    "nih-cxr14": (
        "NIH ChestX-ray14 (Wang et al., \"ChestX-ray8\", CVPR 2017), development subset: frontal chest "
        "X-rays with NIH finding labels mined from reports (no report text; descriptions come from the labels). "
        "Data provider: NIH Clinical Center, https://nihcc.app.box.com/v/ChestXray-NIHCC",
        "Unrestricted use with attribution: link the NIH Clinical Center download site, acknowledge the NIH "
        "Clinical Center as the data provider and cite Wang et al., CVPR 2017",
    ),
    "folder": ("a local folder of X-rays (with reports.csv when present)", "unknown: set by the data's owner"),
}


@dataclass
class BuildConfig:
    """Everything a build depends on; changing a field re-runs the stages that use it."""

    dataset: str
    root: Path
    out: Path
    encoder: str = "default"
    embeddings: Path | None = None  # precomputed class tokens (e.g. from `saerad embed` on many GPUs)
    augment: int = 0  # extra augmented views per training image (SAE training only)
    expansion: float | None = None  # None: see auto_expansion
    describer: str = "extractive"
    describer_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"max_pvalue": 0.05}
    findings_from_all_described: bool = False  # bundle default: also features whose score fails the bar
    include_report_text: bool = True
    work_dir: Path | None = None
    val_fraction: float = 0.15
    seed: int = 0
    sae_steps: int | None = None
    sae_lambda: float | None = None
    sae_target_l0: float | None = None  # None: DEFAULT_TARGET_L0 unless sae_lambda is given
    sae_batch_size: int | None = None
    embed_batch_size: int = 32
    top_images: int = 16
    diffusion: Path | None = None  # a trained `saerad train-diffusion` model directory to ship
    device: str = "cpu"
    name: str | None = None
    version: str = "1"
    license: str | None = None
    force: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root, self.out = Path(self.root), Path(self.out)
        self.work_dir = Path(self.work_dir) if self.work_dir else self.out.parent / f"{self.out.name}.work"
        if self.describer not in ("extractive", "llm"):
            raise ConfigError(f"unknown describer {self.describer!r}; choose extractive or llm")
        if self.expansion is not None and self.expansion <= 0:
            raise ConfigError("--expansion must be positive")


def parse_describer_options(items: Sequence[str]) -> dict[str, Any]:
    """``["max_pvalue=0.05", "min_support=2"]`` -> ``{"max_pvalue": 0.05, "min_support": 2}`` (JSON values)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"describer options are KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def auto_expansion(n_images: int, dim: int) -> float:
    """The largest power of two from 1/8 up to SAE-Rad's x64 that keeps two training images per feature.

    A feature is described from the reports of the images it fires on most; with ~15 active features
    per image, two images per feature leave each feature ~30 images (of several patients) to be
    described from. MIMIC-CXR (377k images, d = 768) gets x64; covid-cxr (423 images, d = 384) x0.5,
    which on held-out tokens beats x1 at equal L0 with a third of the dead features
    (``bench/bench_sae_quality.py``).
    """
    expansion = 64.0
    while expansion > 1 / 8 and 2 * expansion * dim > n_images:
        expansion /= 2
    return expansion


# ---------------------------------------------------------------------------- fingerprints & stamps
def fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def path_fingerprint(path: Path) -> str:
    """sha256 over the content of a file, or of every file under a directory."""
    if path.is_file():
        return sha256_file(path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return fingerprint([(p.relative_to(path).as_posix(), sha256_file(p)) for p in files])


def studies_fingerprint(studies: Sequence[Study], *, with_text: bool) -> str:
    """Image identity by (id, size, mtime), make-style: hashing every image of MIMIC-CXR would take hours."""
    rows = []
    for s in studies:
        for path, image_id in zip(s.image_paths, s.image_ids, strict=True):
            st = path.stat() if path.exists() else None
            rows.append([image_id, s.patient_id, st.st_size if st else None, st.st_mtime_ns if st else None])
        if with_text:
            rows.append([s.study_id, s.findings, s.impression])
    return fingerprint(rows)


@dataclass
class Stage:
    name: str
    inputs: dict[str, str]
    params: dict[str, Any]
    outputs: list[Path]
    run: Callable[[], None]


def stamp_path(work: Path, name: str) -> Path:
    return work / "stamps" / f"{name}.json"


def is_current(work: Path, stage: Stage) -> bool:
    path = stamp_path(work, stage.name)
    if not path.is_file() or not all(p.exists() for p in stage.outputs):
        return False
    stamp = json.loads(path.read_text(encoding="utf-8"))
    if stamp.get("inputs") != stage.inputs or stamp.get("params") != json.loads(json.dumps(stage.params, default=str)):
        return False
    return stamp.get("outputs") == {p.name: path_fingerprint(p) for p in stage.outputs}


def run_stage(work: Path, stage: Stage, *, force: bool = False) -> bool:
    """Run ``stage`` unless it is current; returns whether it ran."""
    if not force and is_current(work, stage):
        log.info("stage %s is current: skipped", stage.name)
        return False
    log.info("stage %s: running", stage.name)
    stamp_path(work, stage.name).unlink(missing_ok=True)
    stage.run()
    missing = [p for p in stage.outputs if not p.exists()]
    if missing:
        raise RuntimeError(f"stage {stage.name} did not produce {missing}")
    stamp = {
        "stage": stage.name,
        "inputs": stage.inputs,
        "params": stage.params,
        "outputs": {p.name: path_fingerprint(p) for p in stage.outputs},
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _atomic_json(stamp_path(work, stage.name), stamp)
    return True


def _atomic_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data, default=str)


# ---------------------------------------------------------------------------- the build
@dataclass
class BuildResult:
    out: Path
    ran: dict[str, bool]


def build(cfg: BuildConfig) -> BuildResult:
    """Run every stage that is not current and write the bundle to ``cfg.out``."""
    studies = load_dataset(cfg.dataset, cfg.root)
    studies = [s for s in studies if s.image_paths]
    if not studies:
        raise ConfigError(f"dataset {cfg.dataset} at {cfg.root} has no images")
    work = cfg.work_dir
    paths = _Paths(work)
    _describer(cfg, paths)  # refuse bad describer options now, not after an hour of training
    work.mkdir(parents=True, exist_ok=True)
    ran: dict[str, bool] = {}

    images_fp = studies_fingerprint(studies, with_text=False)
    ran["embed"] = run_stage(
        work,
        Stage(
            "embed",
            inputs={
                "images": images_fp,
                "embeddings_file": path_fingerprint(Path(cfg.embeddings)) if cfg.embeddings else None,
            },
            params={"encoder": cfg.encoder, "dataset": cfg.dataset, "augment": cfg.augment, "seed": cfg.seed},
            outputs=[paths.embeddings],
            run=lambda: _embed(cfg, studies, paths.embeddings),
        ),
        force=cfg.force,
    )

    n_images = len({i for s in studies for i in s.image_ids})
    expansion = cfg.expansion or auto_expansion(n_images, _token_dim(paths.embeddings))
    sae_params = {
        "expansion": expansion,
        "val_fraction": cfg.val_fraction,
        "seed": cfg.seed,
        "steps": cfg.sae_steps,
        "lambda": cfg.sae_lambda,
        "target_l0": cfg.sae_target_l0,
        "batch_size": cfg.sae_batch_size,
        "groups": fingerprint(sorted({(i, s.patient_id) for s in studies for i in s.image_ids})),
    }
    ran["train-sae"] = run_stage(
        work,
        Stage(
            "train-sae",
            inputs={"embeddings": path_fingerprint(paths.embeddings)},
            params=sae_params,
            outputs=[paths.sae, paths.split, paths.sae_metrics],
            run=lambda: _train_sae(cfg, studies, expansion, paths),
        ),
        force=cfg.force,
    )

    ran["dictionary"] = run_stage(
        work,
        Stage(
            "dictionary",
            inputs={
                "sae": path_fingerprint(paths.sae),
                "split": path_fingerprint(paths.split),
                "reports": studies_fingerprint(studies, with_text=True),
            },
            params={"describer": cfg.describer, "options": cfg.describer_options, "top_images": cfg.top_images},
            outputs=[paths.dictionary],
            run=lambda: _dictionary(cfg, studies, paths),
        ),
        force=cfg.force,
    )

    ran["bundle"] = run_stage(
        work,
        Stage(
            "bundle",
            inputs={
                "sae": path_fingerprint(paths.sae),
                "dictionary": path_fingerprint(paths.dictionary),
                "diffusion": path_fingerprint(cfg.diffusion) if cfg.diffusion else None,
            },
            params={
                "out": str(cfg.out.resolve()),
                "name": cfg.name or cfg.out.name,
                "version": cfg.version,
                "include_report_text": cfg.include_report_text,
                "license": cfg.license,
                "all_described": cfg.findings_from_all_described,
            },
            outputs=[cfg.out],
            run=lambda: _bundle(cfg, studies, expansion, paths),
        ),
        force=cfg.force,
    )
    return BuildResult(out=cfg.out, ran=ran)


class _Paths:
    """Where each stage writes under the work directory."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.embeddings = work / "embeddings.safetensors"
        self.sae = work / "sae"
        self.sae_checkpoints = work / "sae-checkpoints"
        self.split = work / "split.json"
        self.sae_metrics = work / "sae_metrics.json"
        self.dictionary = work / "dictionary.json"
        self.llm_cache = work / "llm-cache"


# ---------------------------------------------------------------------------- stage bodies
def _embed(cfg: BuildConfig, studies: Sequence[Study], out: Path) -> None:
    from saerad.encoders import load_encoder
    from saerad.encoders.extract import EmbedJob, items_from_studies, run_embedding

    if cfg.embeddings is not None:
        _import_embeddings(cfg, studies, out)
        return
    items = items_from_studies(studies)
    encoder = load_encoder(cfg.encoder, device=cfg.device)
    job = EmbedJob(
        out=out,
        batch_size=cfg.embed_batch_size,
        augment=cfg.augment,
        seed=cfg.seed,
        overwrite=True,
        progress=cfg.progress,
        meta={"dataset": cfg.dataset, "root": str(cfg.root)},
    )
    try:
        result = run_embedding(items, encoder, job)
    except ConfigError:
        if not job.parts_dir.exists():
            raise
        # Shards of an earlier job with other inputs (dataset or encoder changed): start over.
        log.info("embed: discarding shards of a different earlier job in %s", job.parts_dir)
        shutil.rmtree(job.parts_dir)
        result = run_embedding(items, encoder, job)
    if not result.merged:
        raise ConfigError("embedding shards are missing after the run; run `saerad build` again to resume")
    if result.failed:
        log.warning("embed: %d image(s) could not be read and were skipped (see %s)", result.failed, job.failures_path)


def _import_embeddings(cfg: BuildConfig, studies: Sequence[Study], out: Path) -> None:
    """Take the dataset's rows (and their augmented views) from a precomputed embedding file."""
    from saerad.encoders.store import EmbeddingSet, base_id

    emb = EmbeddingSet.load(cfg.embeddings)
    if emb.encoder != cfg.encoder:
        raise ConfigError(
            f"{cfg.embeddings} holds class tokens of encoder {emb.encoder!r}, not {cfg.encoder!r}: "
            f"pass --encoder {emb.encoder}"
        )
    wanted = {i for s in studies for i in s.image_ids}
    missing = wanted - {base_id(i) for i in emb.ids}
    if missing:
        log.warning("embed: %d dataset image(s) are not in %s and are left out", len(missing), cfg.embeddings)
    keep = [i for i in emb.ids if base_id(i) in wanted]
    if not keep:
        raise ConfigError(f"{cfg.embeddings} holds none of the dataset's image ids")
    emb.select(keep).save(out)


def _token_dim(path: Path) -> int:
    """Class-token width from the embedding file's header (without reading the tokens)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return int(handle.get_slice("tokens").get_shape()[1])


def _split(cfg: BuildConfig, studies: Sequence[Study], ids: Sequence[str]) -> dict[str, list[str]]:
    """Patient-disjoint train / held-out ids (held-out images score descriptions and the SAE)."""
    from saerad.sae.data import split_ids

    groups = {i: s.patient_id for s in studies for i in s.image_ids}
    split = split_ids(list(ids), val_fraction=cfg.val_fraction, seed=cfg.seed, groups=groups)
    return {"train": [ids[i] for i in split.train], "val": [ids[i] for i in split.val]}


def sae_train_config(
    n_train: int, *, steps: int | None, lam: float | None, batch_size: int | None, seed: int,
    target_l0: float | None = None,
):
    """Training settings scaled to the data.

    Small sets (a few thousand vectors, augmented views included) train on batches of 512 for 6,000
    steps; large ones on batches of 4,096 for about 20 epochs. Without an explicit ``lam`` the
    sparsity is asked for directly: the lambda controller aims at ``DEFAULT_TARGET_L0`` active
    features per training vector (held-out L0 comes out 1-2 higher on covid-cxr).
    """
    from saerad.sae.trainer import TrainConfig

    small = n_train < 50_000
    batch = batch_size or min(512 if small else 4096, n_train)
    default_steps = 6000 if small else max(3000, 20 * n_train // batch)
    kwargs: dict[str, Any] = {"steps": steps or default_steps, "batch_size": batch, "seed": seed}
    if lam is not None:
        kwargs["lam"] = lam
    if target_l0 is not None or lam is None:
        kwargs["target_l0"] = target_l0 or DEFAULT_TARGET_L0
    kwargs["checkpoint_every"] = max(100, kwargs["steps"] // 10)
    kwargs["dead_window_steps"] = min(1000, kwargs["steps"] // 5)
    return TrainConfig(**kwargs)


def fit_sae(
    train,
    d_sae: int,
    tcfg,
    *,
    device: str = "cpu",
    checkpoint_root: Path | None = None,
    progress: bool = True,
    meta: dict[str, Any] | None = None,
):
    """Train a gated SAE on raw class tokens ``train`` (N, d) and export it (scale folded in).

    With ``checkpoint_root`` the run checkpoints there and resumes from the latest checkpoint, but
    only a checkpoint of the same data, width and settings (``run.json`` records them).
    """
    import numpy as np

    from saerad.sae.data import ResidentBatches
    from saerad.sae.trainer import SAETrainer

    trainer = None
    if checkpoint_root is not None:
        key = {
            "data": hashlib.sha256(np.ascontiguousarray(train.numpy()).tobytes()).hexdigest(),
            "d_sae": d_sae,
            "train_config": json.loads(json.dumps(asdict(tcfg))),
        }
        key_file = checkpoint_root / "run.json"
        if key_file.is_file() and json.loads(key_file.read_text(encoding="utf-8")) != key:
            log.info("train-sae: checkpoints in %s belong to another run; starting over", checkpoint_root)
            shutil.rmtree(checkpoint_root)
        latest = SAETrainer.latest_checkpoint(checkpoint_root)
        if latest is not None:
            trainer = SAETrainer.restore(latest, device=device)
            log.info("train-sae: resuming from %s", latest.name)
        _atomic_json(key_file, key)
    if trainer is None:
        trainer = SAETrainer.create(train, d_sae, tcfg, device=device, meta=meta)
    batches = ResidentBatches(train.to(trainer.device), tcfg.batch_size, seed=tcfg.seed, start_step=trainer.state.step)
    trainer.fit(batches, checkpoint_root=checkpoint_root, progress=progress)
    return trainer.export()


def _train_sae(cfg: BuildConfig, studies: Sequence[Study], expansion: float, paths: _Paths) -> None:
    import torch

    from saerad.encoders.store import EmbeddingSet
    from saerad.sae.metrics import evaluate_sae
    from saerad.sae.model import sae_width

    emb = EmbeddingSet.load(paths.embeddings)
    split = _split(cfg, studies, emb.ids)
    train = emb.select(split["train"]).tokens
    val = emb.select(split["val"]).tokens if split["val"] else train
    tcfg = sae_train_config(
        len(train), steps=cfg.sae_steps, lam=cfg.sae_lambda, batch_size=cfg.sae_batch_size, seed=cfg.seed,
        target_l0=cfg.sae_target_l0,
    )
    sae = fit_sae(
        train,
        sae_width(train.shape[1], expansion),
        tcfg,
        device=cfg.device,
        checkpoint_root=paths.sae_checkpoints,
        progress=cfg.progress,
        meta={"encoder": cfg.encoder, "dataset": cfg.dataset},
    )
    metrics = evaluate_sae(sae, val.to(torch.float32)).to_dict()
    metrics["evaluated_on"] = "held-out" if split["val"] else "train (no held-out images)"
    sae.save(paths.sae)
    _atomic_json(paths.split, split)
    _atomic_json(paths.sae_metrics, {"metrics": metrics, "train_config": asdict(tcfg), "expansion": expansion})


def _dictionary(cfg: BuildConfig, studies: Sequence[Study], paths: _Paths) -> None:
    from saerad.encoders.store import EmbeddingSet
    from saerad.labeling import build_dictionary
    from saerad.sae.model import GatedSAE

    emb = EmbeddingSet.load(paths.embeddings)
    split = json.loads(paths.split.read_text(encoding="utf-8"))
    sae = GatedSAE.load(paths.sae)
    held_out = emb.select(split["val"]).originals() if split["val"] else None
    dictionary = build_dictionary(
        sae,
        emb.select(split["train"]).originals(),  # augmented views have no report of their own
        studies,
        describer=_describer(cfg, paths),
        held_out=held_out,
        top_k=cfg.top_images,
        progress=cfg.progress,
    )
    dictionary.save(paths.dictionary)


def _describer(cfg: BuildConfig, paths: _Paths):
    from saerad.labeling.base import make_describer

    options = cfg.describer_options if cfg.describer == "extractive" else {"cache_dir": paths.llm_cache, **cfg.describer_options}
    try:
        return make_describer(cfg.describer, **options)
    except (TypeError, ValueError) as exc:  # an option the describer does not have
        raise ConfigError(f"invalid {cfg.describer} describer options {cfg.describer_options}: {exc}") from exc


def _bundle(cfg: BuildConfig, studies: Sequence[Study], expansion: float, paths: _Paths) -> None:
    from saerad.encoders import load_encoder
    from saerad.encoders.store import is_augmented
    from saerad.labeling.dictionary import FeatureDictionary
    from saerad.sae.model import GatedSAE

    sae = GatedSAE.load(paths.sae)
    dictionary = FeatureDictionary.load(paths.dictionary)
    if not cfg.include_report_text:
        dictionary = dictionary.without_report_text()
    sae_info = json.loads(paths.sae_metrics.read_text(encoding="utf-8"))
    split = json.loads(paths.split.read_text(encoding="utf-8"))
    encoder = load_encoder(cfg.encoder, device="cpu")
    diffusion = None
    if cfg.diffusion is not None:
        from saerad.bundle import DiffusionEntry
        from saerad.diffusion.model import read_metadata

        diffusion = DiffusionEntry(config=read_metadata(cfg.diffusion))
    description, terms = DATA_TERMS.get(cfg.dataset, DATA_TERMS["folder"])
    data = DataEntry(
        dataset=cfg.dataset,
        description=description,
        license=cfg.license or terms,
        n_images=len({i for s in studies for i in s.image_ids}),
        n_studies=len(studies),
        n_patients=len({s.patient_id for s in studies}),
        # images, not vectors: augmented views of the training images only ever train the SAE
        splits={"train": sum(not is_augmented(i) for i in split["train"]), "held_out": len(split["val"])},
    )
    write_bundle(
        cfg.out,
        name=cfg.name or cfg.out.name,
        version=cfg.version,
        encoder=EncoderEntry(spec=encoder.spec, dim=encoder.dim, describe=encoder.describe()),
        sae=sae,
        sae_metrics=sae_info["metrics"],
        dictionary=dictionary,
        data=data,
        report=ReportDefaults(usable_only=not cfg.findings_from_all_described),
        diffusion_dir=cfg.diffusion,
        diffusion=diffusion,
        build={
            "command": "saerad build",
            "dataset": cfg.dataset,
            "encoder": cfg.encoder,
            "expansion": expansion,
            "describer": cfg.describer,
            "describer_options": cfg.describer_options,
            "sae_train_config": sae_info["train_config"],
            "include_report_text": cfg.include_report_text,
            "seed": cfg.seed,
        },
        overwrite=True,
    )
