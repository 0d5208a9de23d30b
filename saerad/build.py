"""``saerad build``: dataset -> embeddings -> SAE -> feature dictionary (+ OOD check) -> bundle, resumably.

Stages (:mod:`saerad.stages`) write under a work directory (default ``<out>.work``) and are skipped
when current; long ones resume inside themselves too (embedding shards, SAE checkpoints). The split
is :mod:`saerad.datasets.split`'s: the SAE and the feature statistics learn from the training
patients, descriptions are scored on the held-out patients, the out-of-distribution check is
calibrated on the training patients' images, and the test patients (a dataset's
official test split, else a patient hash) are never read, so ``saerad evaluate`` on the same data
measures unseen patients. The work directory is the build's own: a stage that re-runs because its
inputs changed discards its stale outputs there (embedding shards, SAE checkpoints).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saerad.bundle import DataEntry, EncoderEntry, ReportDefaults, write_bundle
from saerad.datasets import Study, load_dataset
from saerad.datasets.split import DEFAULT_POLICY, HELD_OUT, TRAIN, Partition, SplitPolicy, partition, vector_rows
from saerad.datasets.terms import data_terms
from saerad.errors import ConfigError
from saerad.features.dictionary import DICTIONARY_VERSION
from saerad.ood import METHOD as OOD_METHOD
from saerad.sae.run import DEFAULT_ARCHITECTURE, resolve_architecture
from saerad.stages import Stage, fingerprint, path_fingerprint, run_stage, studies_fingerprint

log = logging.getLogger(__name__)

STAGES = ("embed", "train-sae", "dictionary", "ood", "bundle")


@dataclass
class BuildConfig:
    """Everything a build depends on; changing a field re-runs the stages that use it."""

    dataset: str
    root: Path
    out: Path
    encoder: str = "default"
    embeddings: Path | None = None  # precomputed class tokens (e.g. from `saerad embed` on many GPUs)
    augment: int = 0  # extra augmented views per training image (SAE training only)
    expansion: float | None = None  # None: saerad.sae.run.auto_expansion
    describer: str = "extractive"
    describer_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"max_pvalue": 0.05}
    findings_from_all_described: bool = False  # bundle default: also features whose score fails the bar
    include_report_text: bool = True
    work_dir: Path | None = None
    seed: int = 0
    sae_architecture: str | None = None  # None: saerad.sae.run.DEFAULT_ARCHITECTURE
    sae_steps: int | None = None
    sae_lambda: float | None = None
    sae_target_l0: float | None = None  # None: saerad.sae.run.DEFAULT_TARGET_L0 unless sae_lambda is given
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
    policy: SplitPolicy = DEFAULT_POLICY  # who is train / held-out / test (cross-validation sets a fold)

    def __post_init__(self) -> None:
        self.root, self.out = Path(self.root), Path(self.out)
        self.work_dir = Path(self.work_dir) if self.work_dir else self.out.parent / f"{self.out.name}.work"
        if self.describer not in ("extractive", "llm"):
            raise ConfigError(f"unknown describer {self.describer!r}; choose extractive or llm")
        if self.expansion is not None and self.expansion <= 0:
            raise ConfigError("--expansion must be positive")
        resolve_architecture(self.sae_architecture, self.sae_lambda)  # bad SAE settings fail now, not after the embedding


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


# ---------------------------------------------------------------------------- the build
@dataclass
class BuildResult:
    out: Path
    ran: dict[str, bool]


def build(cfg: BuildConfig) -> BuildResult:
    """Run every stage that is not current and write the bundle to ``cfg.out``."""
    studies = [s for s in load_dataset(cfg.dataset, cfg.root) if s.image_paths]
    if not studies:
        raise ConfigError(f"dataset {cfg.dataset} at {cfg.root} has no images")
    split = partition(studies, cfg.policy)
    studies = split.fitting()  # the test patients are never read
    if not split.train:
        raise ConfigError(f"dataset {cfg.dataset} at {cfg.root} has no training patients (all are test or held out)")
    if not any(s.labels is not None or (s.findings or s.impression) for s in split.train):
        raise ConfigError(
            f"dataset {cfg.dataset} at {cfg.root} has neither labels nor report text for its training images, "
            "so no feature could be described: add a reports.csv (folder datasets) or use a labelled dataset"
        )
    work = cfg.work_dir
    paths = _Paths(work)
    _describer(cfg, paths)  # refuse bad describer options now, not after an hour of training
    work.mkdir(parents=True, exist_ok=True)
    ran: dict[str, bool] = {}

    ran["embed"] = run_stage(
        work,
        Stage(
            "embed",
            inputs={
                "images": studies_fingerprint(studies, with_text=False),
                "embeddings_file": path_fingerprint(Path(cfg.embeddings)) if cfg.embeddings else None,
            },
            params={"encoder": cfg.encoder, "dataset": cfg.dataset, "augment": cfg.augment, "seed": cfg.seed},
            outputs=[paths.embeddings],
            run=lambda: _embed(cfg, studies, paths.embeddings),
        ),
        force=cfg.force,
    )

    roles = {r: sorted(i for s in getattr(split, r) for i in s.image_ids) for r in (TRAIN, HELD_OUT)}
    ran["train-sae"] = run_stage(
        work,
        Stage(
            "train-sae",
            inputs={"embeddings": path_fingerprint(paths.embeddings), "split": fingerprint(roles)},
            params={
                "architecture": sae_architecture(cfg),
                "expansion": cfg.expansion,
                "seed": cfg.seed,
                "steps": cfg.sae_steps,
                "lambda": cfg.sae_lambda,
                "target_l0": cfg.sae_target_l0,
                "batch_size": cfg.sae_batch_size,
            },
            outputs=paths.sae_outputs,
            run=lambda: _train_sae(cfg, split, paths),
        ),
        force=cfg.force,
    )

    ran["dictionary"] = run_stage(
        work,
        Stage(
            "dictionary",
            inputs={
                "sae": path_fingerprint(paths.sae / "sae.safetensors"),
                "split": fingerprint(roles),
                "reports": studies_fingerprint(studies, with_text=True),
            },
            params={"describer": cfg.describer, "options": cfg.describer_options, "top_images": cfg.top_images,
                    "version": DICTIONARY_VERSION},
            outputs=[paths.dictionary],
            run=lambda: _dictionary(cfg, split, paths),
        ),
        force=cfg.force,
    )

    ran["ood"] = run_stage(
        work,
        Stage(
            "ood",
            inputs={"embeddings": path_fingerprint(paths.embeddings), "split": fingerprint(roles)},
            params={"method": OOD_METHOD},
            outputs=[paths.ood],
            run=lambda: _ood(split, paths),
        ),
        force=cfg.force,
    )

    ran["bundle"] = run_stage(
        work,
        Stage(
            "bundle",
            inputs={
                "sae": path_fingerprint(paths.sae / "sae.safetensors"),
                "dictionary": path_fingerprint(paths.dictionary),
                "diffusion": path_fingerprint(cfg.diffusion) if cfg.diffusion else None,
                "ood": path_fingerprint(paths.ood),
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
            run=lambda: _bundle(cfg, split, paths),
        ),
        force=cfg.force,
    )
    return BuildResult(out=cfg.out, ran=ran)


def sae_architecture(cfg: BuildConfig) -> str:
    """The SAE architecture a build trains (resolved here, so a new default re-runs the stage)."""
    return cfg.sae_architecture or DEFAULT_ARCHITECTURE


class _Paths:
    """Where each stage writes under the work directory."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.embeddings = work / "embeddings.safetensors"
        self.sae = work / "sae"  # the SAE run: final SAE, metrics.json, run.json, checkpoints/
        self.sae_outputs = [self.sae / "sae.safetensors", self.sae / "sae_config.json", self.sae / "metrics.json"]
        self.dictionary = work / "dictionary.json"
        self.ood = work / "ood"
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
    from saerad.datasets.ids import base_id
    from saerad.encoders.store import EmbeddingSet

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


def _train_sae(cfg: BuildConfig, split: Partition, paths: _Paths) -> None:
    from saerad.encoders.store import EmbeddingSet
    from saerad.sae.run import default_train_config, train_sae

    emb = EmbeddingSet.load(paths.embeddings)
    rows = vector_rows(emb.ids, split.role_of_image())
    train = emb.tokens[rows[TRAIN]]
    tcfg = default_train_config(
        len(train), architecture=sae_architecture(cfg), steps=cfg.sae_steps, lam=cfg.sae_lambda, target_l0=cfg.sae_target_l0,
        batch_size=cfg.sae_batch_size, seed=cfg.seed,
    )
    # The work directory is the build's: checkpoints of a superseded run there are stale.
    train_sae(
        train, emb.tokens[rows[HELD_OUT]] if rows[HELD_OUT] else None, paths.sae,
        expansion=cfg.expansion, n_images=sum(len(s.image_ids) for s in split.train), cfg=tcfg,
        device=cfg.device, progress=cfg.progress, overwrite=True,
        meta={"encoder": cfg.encoder, "dataset": cfg.dataset},
    )


def _dictionary(cfg: BuildConfig, split: Partition, paths: _Paths) -> None:
    from saerad.encoders.store import EmbeddingSet
    from saerad.features import build_dictionary
    from saerad.sae.architectures import load_sae

    emb = EmbeddingSet.load(paths.embeddings).originals()  # augmented views have no report of their own
    rows = vector_rows(emb.ids, split.role_of_image())
    dictionary = build_dictionary(
        load_sae(paths.sae),
        emb.select([emb.ids[i] for i in rows[TRAIN]]),
        split.fitting(),
        describer=_describer(cfg, paths),
        held_out=emb.select([emb.ids[i] for i in rows[HELD_OUT]]) if rows[HELD_OUT] else None,
        top_k=cfg.top_images,
        progress=cfg.progress,
    )
    dictionary.save(paths.dictionary)


def _ood(split: Partition, paths: _Paths) -> None:
    from saerad.encoders.store import EmbeddingSet

    check = calibrate_ood(EmbeddingSet.load(paths.embeddings), split)
    if paths.ood.exists():
        shutil.rmtree(paths.ood)
    check.save(paths.ood)


def calibrate_ood(emb, split: Partition):
    """The out-of-distribution check (:mod:`saerad.ood`) from the training patients' class tokens in
    ``emb`` (original images only: augmented views are not images a user sends)."""
    from saerad.ood import calibrate

    emb = emb.originals()
    rows = vector_rows(emb.ids, split.role_of_image())[TRAIN]
    if not rows:
        raise ConfigError("no class tokens of training patients to calibrate the out-of-distribution check on")
    patient = {i: s.patient_id for s in split.train for i in s.image_ids}
    return calibrate(emb.tokens[rows], [patient[emb.ids[i]] for i in rows],
                     meta={"calibrated_on": "training patients' original images", "encoder": emb.encoder})


def add_ood_to_bundle(bundle: str | Path | None, dataset: str, root: str | Path, *,
                      embeddings: str | Path | None = None, device: str = "cpu", progress: bool = True):
    """Calibrate the out-of-distribution check of an existing bundle on its training patients and
    write it into the bundle (``saerad calibrate-ood``); returns the check.

    The training patients are :mod:`saerad.datasets.split`'s default ones on ``dataset`` at
    ``root``, the patients ``saerad build`` trained that bundle on. Their class tokens come from
    ``embeddings`` (``saerad embed`` with the bundle's encoder, e.g. the build's
    ``<out>.work/embeddings.safetensors``) or are computed here.
    """
    import tempfile

    from saerad.bundle import Bundle
    from saerad.encoders.store import EmbeddingSet

    loaded = Bundle.load(bundle)
    trained_on = loaded.manifest.data.dataset
    if trained_on != dataset:
        raise ConfigError(f"bundle {loaded.manifest.name!r} was trained on {trained_on}, not {dataset}: "
                          "calibrate it on its own training data")
    studies = [s for s in load_dataset(dataset, root) if s.image_paths]
    split = partition(studies, DEFAULT_POLICY)
    expected = loaded.manifest.data.splits.get(TRAIN)
    found = sum(len(s.image_ids) for s in split.train)
    if expected is not None and expected != found:
        log.warning("the bundle was trained on %d images of training patients; %s at %s has %d",
                    expected, dataset, root, found)
    if embeddings is not None:
        emb = EmbeddingSet.load(embeddings)
        loaded.check_tokens(emb)
        return _install_ood(loaded, calibrate_ood(emb, split))
    from saerad.encoders.extract import EmbedJob, items_from_studies, run_embedding

    encoder = loaded.load_encoder(device)
    with tempfile.TemporaryDirectory(prefix="saerad-ood-") as tmp:
        job = EmbedJob(out=Path(tmp) / "train.safetensors", num_workers=0, progress=progress,
                       meta={"dataset": dataset, "root": str(root)})
        run_embedding(items_from_studies(split.train), encoder, job)
        return _install_ood(loaded, calibrate_ood(EmbeddingSet.load(job.out), split))


def _install_ood(loaded, check):
    from saerad.bundle import add_ood_check

    add_ood_check(loaded.path, check)
    return check


def _describer(cfg: BuildConfig, paths: _Paths):
    from saerad.features.describers import make_describer

    options = cfg.describer_options if cfg.describer == "extractive" else {"cache_dir": paths.llm_cache, **cfg.describer_options}
    try:
        return make_describer(cfg.describer, **options)
    except (TypeError, ValueError) as exc:  # an option the describer does not have
        raise ConfigError(f"invalid {cfg.describer} describer options {cfg.describer_options}: {exc}") from exc


def _bundle(cfg: BuildConfig, split: Partition, paths: _Paths) -> None:
    from saerad.encoders import load_encoder
    from saerad.features.dictionary import FeatureDictionary
    from saerad.ood import TypicalityCheck
    from saerad.sae.architectures import load_sae

    sae = load_sae(paths.sae)
    dictionary = FeatureDictionary.load(paths.dictionary)
    if not cfg.include_report_text:
        dictionary = dictionary.without_report_text()
    sae_run = json.loads((paths.sae / "metrics.json").read_text(encoding="utf-8"))
    encoder = load_encoder(cfg.encoder, device="cpu")
    diffusion = None
    if cfg.diffusion is not None:
        from saerad.bundle import DiffusionEntry
        from saerad.diffusion.model import read_metadata

        diffusion = DiffusionEntry(config=read_metadata(cfg.diffusion))
    description, terms = data_terms(cfg.dataset)
    studies = split.fitting()
    data = DataEntry(
        dataset=cfg.dataset,
        description=description,
        license=cfg.license or terms,
        n_images=len({i for s in studies for i in s.image_ids}),
        n_studies=len(studies),
        n_patients=len({s.patient_id for s in studies}),
        # images, not vectors: augmented views of the training images only ever train the SAE
        splits={r: sum(len(s.image_ids) for s in getattr(split, r)) for r in (TRAIN, HELD_OUT)} | {
            "test_excluded": sum(len(s.image_ids) for s in split.test)
        },
    )
    write_bundle(
        cfg.out,
        name=cfg.name or cfg.out.name,
        version=cfg.version,
        encoder=EncoderEntry(spec=encoder.spec, dim=encoder.dim, describe=encoder.describe()),
        sae=sae,
        sae_metrics=sae_run["held_out"] or sae_run["train"],
        dictionary=dictionary,
        data=data,
        report=ReportDefaults(usable_only=not cfg.findings_from_all_described),
        diffusion_dir=cfg.diffusion,
        diffusion=diffusion,
        ood=TypicalityCheck.load(paths.ood),
        build={
            "command": "saerad build",
            "dataset": cfg.dataset,
            "encoder": cfg.encoder,
            "expansion": sae_run["expansion"],
            "describer": cfg.describer,
            "describer_options": cfg.describer_options,
            "sae_train_config": sae_run["train_config"],
            "include_report_text": cfg.include_report_text,
            "seed": cfg.seed,
            "split": {"policy": "saerad.datasets.split (official split, else patient hash)",
                      "sae_metrics_on": "held-out patients" if sae_run["held_out"] else "training vectors"},
        },
        overwrite=True,
    )
