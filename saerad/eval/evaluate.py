"""``saerad evaluate``: generate findings for the studies of a dataset and score them.

Which studies: ``split="test"`` takes the dataset's test patients as :mod:`saerad.datasets.split`
draws them (the ones ``saerad build`` never reads); ``split="all"`` every study of ``root``, for a
folder no model has seen. The retrieval baseline draws from a pool of training studies:
``pool`` (another folder of the same dataset kind, all of its studies), else the non-test patients
of ``root``; a pool study of a patient under evaluation is never retrieved.

Beyond :func:`~saerad.eval.scoring.score_systems`' output, ``metrics.json`` gets per system

- ``share_with_finding``: the share of its reports that assert at least one finding (a condition
  other than No Finding positive or uncertain by the rule labeller);
- ``macro_reported``: macro CheXpert-rule F1 (uncertain as positive) over the conditions with at
  least :data:`MIN_REPORTED_POSITIVES` positive references plus No Finding, the conditions the data
  can measure;
- ``subgroups``: per-condition F1 within each value of a dataset's confounding variable (nih-cxr14:
  ``source_folder``, see :data:`SUBGROUP_KEYS`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from saerad.datasets.split import partition
from saerad.errors import ConfigError
from saerad.eval.f1 import label_f1
from saerad.eval.scoring import ScoreOptions, score_systems
from saerad.radtext.conditions import CONDITIONS, NO_FINDING
from saerad.radtext.text import clean_text

SPLITS = ("test", "all")
MIN_REPORTED_POSITIVES = 20
# Datasets whose studies carry a variable that predicts labels through acquisition alone: every
# number is also reported within each of its values (nih-cxr14's README: the two source folders).
SUBGROUP_KEYS: dict[str, str] = {"nih-cxr14": "source_folder"}


def evaluate_dataset(
    dataset: str,
    root: str | Path,
    out_dir: str | Path,
    *,
    bundle: str | Path | None = None,
    baselines: bool = False,
    embeddings: str | Path | None = None,
    encoder: str | None = None,
    device: str = "cpu",
    split: str = "test",
    pool: str | Path | None = None,
    limit: int | None = None,
    options: ScoreOptions | None = None,
    dataset_kwargs: dict | None = None,
) -> dict:
    """Generate reports for the chosen studies (bundle and/or baselines), score them, write OUT/."""
    from saerad.datasets import load_dataset

    options = options or ScoreOptions()
    if bundle is None and not baselines:
        raise ConfigError("nothing to evaluate: give --bundle and/or --baselines")
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "all" and baselines and pool is None:
        raise ConfigError("--split all scores every study of --root, so the retrieval baseline needs --pool DIR")
    studies = load_dataset(dataset, root, **dict(dataset_kwargs or {}))
    parts = partition(studies)
    test = list(studies) if split == "all" else parts.test
    # Loader drops (e.g. MIMIC studies without a frontal image) cover every split it loaded.
    dropped = {f"loader_{k}": v for k, v in (getattr(studies, "dropped", {}) or {}).items()}
    with_findings = [s for s in test if clean_text(s.findings)]
    dropped["no_findings"] = len(test) - len(with_findings)
    test = with_findings[:limit] if limit else with_findings
    if not test:
        raise ConfigError(f"{dataset} at {root}: no {split} study with a findings section (or labels) to score")
    references = {s.study_id: s.findings for s in test}
    systems: dict[str, dict[str, str]] = {}
    unavailable: dict[str, str] = {}
    extra: dict[str, dict[str, dict]] = {}
    out_dir = Path(out_dir)

    tokens = None
    if embeddings is not None:
        from saerad.encoders.store import EmbeddingSet

        tokens = EmbeddingSet.load(embeddings)

    if bundle is not None:
        systems["model"] = _generate_with_bundle(bundle, test, out_dir, device=device, tokens=tokens, progress=options.progress)

    if baselines:
        from saerad.eval.baselines import normal_template_reports, retrieval_reports

        systems["normal-template"] = dict(zip(references, normal_template_reports(len(test)), strict=True))
        pool_studies = _pool(dataset, pool, parts.fitting(), test)
        no_image = [s for s in test if not s.primary_image_id]
        if no_image:
            unavailable["retrieval"] = f"{len(no_image)} evaluated studies have no image"
        else:
            try:
                if tokens is None or not _covers(tokens, test + pool_studies):
                    tokens = _embed(encoder or "default", test + pool_studies, device=device, progress=options.progress)
                texts, got = retrieval_reports(
                    [s.primary_image_id for s in test],
                    [s.patient_id for s in test],
                    [s.primary_image_id for s in pool_studies],
                    [s.patient_id for s in pool_studies],
                    [clean_text(s.findings) for s in pool_studies],
                    tokens,
                )
                systems["retrieval"] = dict(zip(references, texts, strict=True))
                extra["retrieval"] = {s.study_id: {"retrieved_image_id": g} for s, g in zip(test, got, strict=True)}
            except ConfigError as exc:
                unavailable["retrieval"] = str(exc)

    options.meta = {
        **options.meta,
        "dataset": dataset,
        "split": split,
        "section": "findings",
        "dropped": dropped,
        **({"bundle": str(bundle)} if bundle is not None else {}),
        **({"pool": str(pool)} if pool is not None else {}),
    }
    key = SUBGROUP_KEYS.get(dataset)
    groups = {s.study_id: s.extra.get(key, "") for s in test} if key else None

    def extend(metrics: dict, ids: list[str], ref_labels: np.ndarray, pred_labels: dict[str, np.ndarray]) -> None:
        add_summaries(metrics, ids, ref_labels, pred_labels, subgroup=(key, groups) if key else None)

    return score_systems(
        references, systems, out_dir, options, unavailable_systems=unavailable, extra_rows=extra, extend=extend
    )


def _pool(dataset: str, pool: str | Path | None, fitting: list, test: list) -> list:
    """Training studies the retrieval baseline may draw from (with an image and findings), never of
    a patient under evaluation."""
    from saerad.datasets import load_dataset

    if pool is not None:
        if not Path(pool).is_dir():
            raise ConfigError(f"--pool {pool} is not a folder")
        candidates = list(load_dataset(dataset, pool))
    else:
        candidates = fitting
    test_patients = {s.patient_id for s in test}
    kept = [s for s in candidates if clean_text(s.findings) and s.primary_image_id and s.patient_id not in test_patients]
    if not kept:
        where = f"--pool {pool}" if pool is not None else "the non-test patients of --root"
        raise ConfigError(f"{where} holds no {dataset} study with an image and findings for the retrieval baseline")
    return kept


def _covers(tokens, studies: Sequence) -> bool:
    have = set(tokens.ids)
    return all(s.primary_image_id in have for s in studies)


def has_finding(labels: np.ndarray) -> np.ndarray:
    """Rows of a rule-label matrix that assert a finding (a condition other than No Finding
    positive or uncertain)."""
    findings = [i for i, c in enumerate(CONDITIONS) if c != NO_FINDING]
    sub = labels[:, findings]
    return np.any((sub == 1) | (sub == -1), axis=1)


def reported_conditions(reference_labels: np.ndarray, min_positives: int = MIN_REPORTED_POSITIVES) -> list[str]:
    """Conditions with at least ``min_positives`` positive (or uncertain) references, plus No Finding."""
    positive = (reference_labels == 1) | (reference_labels == -1)
    counts = positive.sum(0)
    return [c for i, c in enumerate(CONDITIONS) if counts[i] >= min_positives or c == NO_FINDING]


def macro_over(per_condition: dict[str, float], conditions: Sequence[str]) -> float:
    return float(np.mean([per_condition[c] for c in conditions])) if conditions else 0.0


def add_summaries(
    metrics: dict,
    ids: Sequence[str],
    ref_labels: np.ndarray,
    pred_labels: dict[str, np.ndarray],
    *,
    subgroup: tuple[str, dict[str, str]] | None = None,
) -> None:
    """``share_with_finding``, ``macro_reported`` and ``subgroups`` of every system (module docstring)."""
    reported = reported_conditions(ref_labels)
    metrics["settings"]["macro_reported"] = {
        "conditions": reported,
        "rule": f">= {MIN_REPORTED_POSITIVES} positive references, plus No Finding; uncertain as positive",
    }
    for name, labels in pred_labels.items():
        entry = metrics["systems"][name]
        entry["share_with_finding"] = float(has_finding(labels).mean())
        entry["macro_reported"] = macro_over(label_f1(ref_labels, labels)["per_condition"], reported)
        if subgroup is not None:
            key, group_of = subgroup
            entry["subgroups"] = {}
            for value in sorted({group_of[i] for i in ids}):
                rows = [j for j, i in enumerate(ids) if group_of[i] == value]
                per = label_f1(ref_labels[rows], labels[rows])["per_condition"]
                entry["subgroups"][f"{key}={value}"] = {"n": len(rows), "per_condition": per}


def _embed(encoder_spec: str, studies: Sequence, *, device: str, progress: bool, batch_size: int = 16):
    """Class tokens of each study's primary image (for the retrieval baseline), in batches."""
    import torch
    from tqdm import tqdm

    from saerad.encoders import load_encoder
    from saerad.encoders.store import EmbeddingSet
    from saerad.imaging import load_xray

    enc = load_encoder(encoder_spec, device=device)
    unique = list({s.primary_image_id: s.primary_image for s in studies}.items())
    ids, rows = [], []
    with tqdm(total=len(unique), desc="embedding", disable=not progress, unit="image") as bar:
        for start in range(0, len(unique), batch_size):
            chunk = unique[start : start + batch_size]
            rows.append(enc.encode_images([load_xray(path).pixels for _, path in chunk], batch_size=batch_size))
            ids.extend(image_id for image_id, _ in chunk)
            bar.update(len(chunk))
    return EmbeddingSet(ids=ids, tokens=torch.cat(rows), encoder=enc.spec)


def _generate_with_bundle(bundle, studies: Sequence, out_dir: Path, *, device: str, tokens, progress: bool) -> dict[str, str]:
    """Reports from a bundle; resumable: finished studies are appended to ``generated-model.jsonl``."""
    from tqdm import tqdm

    from saerad.pipeline import Reporter

    reporter = Reporter.from_bundle(bundle, device=device)
    if tokens is not None:
        reporter.bundle.check_tokens(tokens)
    cache = out_dir / "generated-model.jsonl"
    done: dict[str, str] = {}
    if cache.is_file():
        for line in cache.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                done[row["id"]] = row["text"]
            except (json.JSONDecodeError, KeyError):
                break  # a torn last line from an interrupted run: regenerate from here
    todo = [s for s in studies if s.study_id not in done]
    if tokens is not None and not _covers(tokens, todo):
        tokens = None  # the file lacks some studies: encode the images instead
    if tokens is None and any(s.primary_image is None for s in todo):
        raise ConfigError("some studies have no image; report generation needs images (or --embeddings)")
    out_dir.mkdir(parents=True, exist_ok=True)
    with cache.open("a", encoding="utf-8") as handle:
        for study in tqdm(todo, desc="generating", disable=not progress, unit="study"):
            if tokens is not None:
                row = tokens.select([study.primary_image_id]).tokens
                text = reporter.report_tokens(row)[0].findings_text()
            else:
                text = reporter.report(study.primary_image).findings_text()
            handle.write(json.dumps({"id": study.study_id, "text": text}) + "\n")
            handle.flush()
            done[study.study_id] = text
    return {s.study_id: done[s.study_id] for s in studies}
