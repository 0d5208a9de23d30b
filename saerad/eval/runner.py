"""The evaluation runner behind ``saerad score`` and ``saerad evaluate``.

Both end in :func:`score_systems`: reference reports + one or more systems' reports -> per-study
labels (CheXpert-rule always, CheXbert when configured), text metrics, clinical F1, bootstrap 95%
CIs over studies (one shared set of resamples), written to ``OUT/``:

* ``metrics.json`` - every number, its CI, and how it was computed (section, split, normalisation,
  resamples, seed, dropped studies, why a column is unavailable);
* ``metrics.md`` - the Markdown tables (also printed by the CLI);
* ``predictions.jsonl`` - one line per (study, system): texts, both label sets, per-study scores.

Studies whose reference is empty are dropped and counted; a reference without a prediction is an
error (a silently shorter test set would inflate nothing but would no longer be the test set).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from saerad.datasets.split import patient_unit
from saerad.errors import ConfigError
from saerad.eval.bootstrap import resample_weights
from saerad.eval.f1 import f1_report
from saerad.eval.io import atomic_write_lines, atomic_write_text
from saerad.eval.text_metrics import TEXT_METRICS, pair_stats, per_pair_scores, text_metrics
from saerad.radtext.conditions import CONDITIONS, CONDITIONS_5
from saerad.radtext.labeler import label_reports
from saerad.radtext.text import clean_text, normalize_report

log = logging.getLogger(__name__)

NORMALISATION = (
    "saerad.radtext.normalize_report: lower case, Penn-Treebank-style tokens (Python, mirrors "
    "coco-caption's PTBTokenizer), punctuation tokens removed"
)
F1_KEYS = ("micro_14", "macro_14", "micro_5", "macro_5")


@dataclass
class ScoreOptions:
    """How to score. ``chexbert``: ``None`` = use it when configured in settings, ``False`` = off,
    or any object with ``label(texts) -> (N, 14) array`` (tests inject a tiny model this way)."""

    n_resamples: int = 500
    seed: int = 0
    meteor: bool = True
    chexbert: object | None = None
    settings: object | None = None
    meta: dict = field(default_factory=dict)
    progress: bool = False


def _settings(options: ScoreOptions):
    if options.settings is None:
        from saerad.eval.settings import EvalSettings

        options.settings = EvalSettings()
    return options.settings


def _chexbert(options: ScoreOptions) -> tuple[object | None, str | None]:
    """(labeller, None) or (None, reason it is unavailable)."""
    if options.chexbert is False:
        return None, "disabled (--no-chexbert)"
    if options.chexbert is not None:
        return options.chexbert, None
    from saerad.eval.chexbert import CheXbertLabeler, chexbert_unavailable_reason

    settings = _settings(options)
    reason = chexbert_unavailable_reason(settings.chexbert_weights, settings.chexbert_tokenizer)
    if reason:
        return None, reason
    return CheXbertLabeler.from_settings(settings), None


def _meteor(options: ScoreOptions):
    if not options.meteor:
        return None, "disabled (--no-meteor)"
    from saerad.eval.meteor import MeteorJava, meteor_unavailable_reason

    settings = _settings(options)
    reason = meteor_unavailable_reason(settings.java)
    if reason:
        return None, reason
    try:
        return MeteorJava(settings.java, settings.meteor_memory), None
    except OSError as exc:
        return None, f"cannot start Java: {exc}"


def score_systems(
    references: Mapping[str, str | None],
    systems: Mapping[str, Mapping[str, str | None]],
    out_dir: str | Path,
    options: ScoreOptions | None = None,
    *,
    unavailable_systems: Mapping[str, str] | None = None,
    extra_rows: Mapping[str, Mapping[str, dict]] | None = None,
) -> dict:
    """Score every system against ``references`` and write the three output files.

    ``unavailable_systems`` maps a system name to why it could not run (shown in the tables);
    ``extra_rows`` adds per-study fields to ``predictions.jsonl`` (e.g. the retrieved study id).
    """
    options = options or ScoreOptions()
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    # Java's METEOR start-up (loading its paraphrase table) overlaps the Python work below.
    meteor, meteor_reason = _meteor(options)
    try:
        ids = sorted(k for k, v in references.items() if clean_text(v))
        dropped = {"empty_reference": len(references) - len(ids)}
        if not ids:
            raise ConfigError("no study has a non-empty reference report")
        refs = [clean_text(references[i]) for i in ids]
        preds: dict[str, list[str]] = {}
        for name, texts in systems.items():
            missing = [i for i in ids if i not in texts]
            if missing:
                raise ConfigError(
                    f"system {name!r} has no report for {len(missing)} of {len(ids)} studies, e.g. {missing[0]!r}"
                )
            preds[name] = [clean_text(texts[i]) for i in ids]

        # Every system's METEOR request is queued now; Java works through them while Python runs.
        norm_refs = [normalize_report(t) for t in refs]
        norm_preds = {name: [normalize_report(t) for t in texts] for name, texts in preds.items()}
        futures = {name: meteor.submit(norm_preds[name], norm_refs) for name in preds} if meteor is not None else {}

        weights = resample_weights(len(ids), options.n_resamples, options.seed)
        rule_refs = label_reports(refs)
        chexbert, chexbert_reason = _chexbert(options)
        chex_refs = chexbert.label(refs) if chexbert is not None else None

        results: dict[str, dict] = {}
        rows: dict[str, list[dict]] = {}
        for name, texts in preds.items():
            log.info("scoring %s (%d studies)", name, len(ids))
            stats = pair_stats(
                norm_preds[name], norm_refs, normalized=True, meteor_future=futures.get(name), meteor_reason=meteor_reason
            )
            rule_pred = label_reports(texts)
            entry = {
                "text": text_metrics(stats, weights),
                "chexpert_rule": f1_report(rule_refs, rule_pred, weights=weights),
            }
            chex_pred = None
            if chexbert is not None:
                chex_pred = chexbert.label(texts)
                entry["chexbert"] = f1_report(chex_refs, chex_pred, weights=weights)
            else:
                entry["chexbert"] = {"unavailable": chexbert_reason}
            results[name] = entry
            rows[name] = _study_rows(name, ids, texts, refs, rule_pred, rule_refs, chex_pred, chex_refs, stats, extra_rows)
    finally:
        if meteor is not None:
            meteor.close()

    metrics = {
        "n_studies": len(ids),
        "dropped": {**dict(options.meta.get("dropped", {})), **dropped},
        "settings": {
            "section": options.meta.get("section", "findings"),
            "split": options.meta.get("split"),
            "dataset": options.meta.get("dataset"),
            "normalisation": NORMALISATION,
            "bootstrap": {"resamples": options.n_resamples, "seed": options.seed, "interval": "percentile 95%"},
            "f1": "zero_division=0; absent conditions count as 0 in macro means; No Finding included in F1-14",
            "meteor": "METEOR 1.5 (pycocoevalcap jar, -l en -norm)" if meteor_reason is None else f"unavailable: {meteor_reason}",
            "chexbert": getattr(chexbert, "source", "injected") if chexbert is not None else f"unavailable: {chexbert_reason}",
            "conditions": list(CONDITIONS),
            "conditions_5": list(CONDITIONS_5),
        },
        "systems": results,
        "unavailable_systems": dict(unavailable_systems or {}),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    for key in ("bundle", "extra"):
        if key in options.meta:
            metrics["settings"][key] = options.meta[key]
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False, default=_json_default) + "\n")
    atomic_write_text(out_dir / "metrics.md", format_markdown(metrics))
    atomic_write_lines(
        out_dir / "predictions.jsonl",
        (json.dumps(row, allow_nan=False, default=_json_default) for name in rows for row in rows[name]),
    )
    return metrics


def _labels_dict(row: np.ndarray) -> dict[str, int | None]:
    return {c: (None if math.isnan(v) else int(v)) for c, v in zip(CONDITIONS, row, strict=True)}


def _study_rows(name, ids, texts, refs, rule_pred, rule_refs, chex_pred, chex_refs, stats, extra_rows) -> list[dict]:
    scores = per_pair_scores(stats)
    out = []
    for i, study in enumerate(ids):
        row = {
            "id": study,
            "system": name,
            "prediction": texts[i],
            "reference": refs[i],
            "labels": {"chexpert_rule": {"prediction": _labels_dict(rule_pred[i]), "reference": _labels_dict(rule_refs[i])}},
            "scores": scores[i],
        }
        if chex_pred is not None:
            row["labels"]["chexbert"] = {"prediction": _labels_dict(chex_pred[i]), "reference": _labels_dict(chex_refs[i])}
        if extra_rows and name in extra_rows and study in extra_rows[name]:
            row.update(extra_rows[name][study])
        out.append(row)
    return out


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def _cell(entry: dict | None) -> str:
    if not entry:
        return "-"
    if "unavailable" in entry:
        return f"unavailable: {entry['unavailable']}"
    value = 100.0 * entry["value"]
    ci = entry.get("ci95")
    return f"{value:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else f"{value:.1f}"


def format_markdown(metrics: dict) -> str:
    """Tables of a metrics dict (values x100 with bootstrap 95% CIs)."""
    s = metrics["settings"]
    lines = [
        f"# Report evaluation ({s.get('dataset') or 'custom'}, split {s.get('split') or 'n/a'}, section {s['section']})",
        "",
        f"{metrics['n_studies']} studies; dropped: "
        + (", ".join(f"{k} {v}" for k, v in metrics["dropped"].items()) or "none")
        + f". Bootstrap: {s['bootstrap']['resamples']} resamples (seed {s['bootstrap']['seed']}), percentile 95% CI. "
        + "Values x100.",
        "",
        f"Text normalisation: {s['normalisation']}. METEOR: {s['meteor']}. CheXbert: {s['chexbert']}.",
        "",
        "## Text metrics",
        "",
        "| System | " + " | ".join(TEXT_METRICS) + " |",
        "|---" * (len(TEXT_METRICS) + 1) + "|",
    ]
    for name, entry in metrics["systems"].items():
        lines.append(f"| {name} | " + " | ".join(_cell(entry["text"].get(m)) for m in TEXT_METRICS) + " |")
    for name, reason in metrics.get("unavailable_systems", {}).items():
        lines.append(f"| {name} | unavailable: {reason} |" + " |" * (len(TEXT_METRICS) - 1))
    lines += [
        "",
        "## Clinical F1",
        "",
        "CheXpert-rule = saerad's rule labeller (never CheXbert). Uncertain labels counted as positive (f1chexbert, "
        "CheXagent) or as negative (LLaVA-Rad).",
        "",
        "| System | Labeller | Uncertain | micro F1-14 | macro F1-14 | micro F1-5 | macro F1-5 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in metrics["systems"].items():
        for labeller, title in (("chexpert_rule", "CheXpert-rule"), ("chexbert", "CheXbert")):
            block = entry[labeller]
            if "unavailable" in block:
                lines.append(f"| {name} | {title} | - | unavailable: {block['unavailable']} | | | |")
                continue
            for convention, label in (("uncertain_positive", "as positive"), ("uncertain_negative", "as negative")):
                cells = " | ".join(_cell(block[convention][k]) for k in F1_KEYS)
                lines.append(f"| {name} | {title} | {label} | {cells} |")
    lines += ["", "## Per-condition F1 (uncertain as positive)", ""]
    columns = []
    for name, entry in metrics["systems"].items():
        for labeller, title in (("chexpert_rule", "rule"), ("chexbert", "CheXbert")):
            if "unavailable" not in entry[labeller]:
                columns.append((f"{name} ({title})", entry[labeller]["uncertain_positive"]["per_condition"]))
    lines.append("| Condition | " + " | ".join(c[0] for c in columns) + " |")
    lines.append("|---" * (len(columns) + 1) + "|")
    for condition in CONDITIONS:
        lines.append(f"| {condition} | " + " | ".join(_cell(c[1][condition]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def score_reports(
    predictions: Mapping[str, str | None],
    references: Mapping[str, str | None],
    out_dir: str | Path,
    options: ScoreOptions | None = None,
    *,
    system: str = "predictions",
) -> dict:
    """``saerad score``: one system's reports (made by anything) against references."""
    return score_systems(references, {system: predictions}, out_dir, options)


def patient_split(patient_id: str, test_fraction: float = 0.2) -> str:
    """Deterministic patient-level split for datasets without an official one ("train"/"test")."""
    return "test" if patient_unit(patient_id) < test_fraction else "train"


def split_studies(studies: Sequence, split: str = "test") -> tuple[list, list]:
    """(evaluation studies, retrieval pool): the official split when the loader set one, else a
    deterministic 80/20 patient hash. The pool is the training split, patient-disjoint from the test."""
    if any(s.split for s in studies):
        test = [s for s in studies if s.split == split]
        train = [s for s in studies if s.split == "train"]
    else:
        test = [s for s in studies if patient_split(s.patient_id) == split]
        train = [s for s in studies if patient_split(s.patient_id) == "train"]
    test_patients = {s.patient_id for s in test}
    return test, [s for s in train if s.patient_id not in test_patients]


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
    limit: int | None = None,
    options: ScoreOptions | None = None,
    dataset_kwargs: dict | None = None,
) -> dict:
    """``saerad evaluate``: generate findings for a dataset's test split and score them."""
    from saerad.datasets import load_dataset

    options = options or ScoreOptions()
    if bundle is None and not baselines:
        raise ConfigError("nothing to evaluate: give --bundle and/or --baselines")
    kwargs = dict(dataset_kwargs or {})
    if dataset == "mimic-cxr":
        kwargs.setdefault("splits", (split, "train") if baselines else (split,))
    studies = load_dataset(dataset, root, **kwargs)
    test, pool = split_studies(studies, split)
    # Loader drops (e.g. MIMIC studies without a frontal image) cover every split it loaded.
    dropped = {f"loader_{k}": v for k, v in (getattr(studies, "dropped", {}) or {}).items()}
    with_findings = [s for s in test if clean_text(s.findings)]
    dropped["no_findings"] = len(test) - len(with_findings)
    test = with_findings[:limit] if limit else with_findings
    if not test:
        raise ConfigError(f"{dataset}: no {split} study with a findings section under {root}")
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
        pool = [s for s in pool if clean_text(s.findings) and s.primary_image_id]
        no_image = [s for s in test if not s.primary_image_id]
        if no_image or not pool:
            unavailable["retrieval"] = (
                f"{len(no_image)} test studies have no image" if no_image else "no training study with image and findings"
            )
        else:
            try:
                if tokens is None:
                    tokens = _embed(encoder or "default", test + pool, device=device, progress=options.progress)
                texts, got = retrieval_reports(
                    [s.primary_image_id for s in test],
                    [s.patient_id for s in test],
                    [s.primary_image_id for s in pool],
                    [s.patient_id for s in pool],
                    [clean_text(s.findings) for s in pool],
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
    }
    return score_systems(references, systems, out_dir, options, unavailable_systems=unavailable, extra_rows=extra)


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
    try:
        from saerad.pipeline import Reporter
    except ImportError as exc:  # the report stage is optional for scoring
        raise ConfigError(f"report generation is not available in this installation: {exc}") from exc
    from tqdm import tqdm

    reporter = Reporter.from_bundle(bundle, device=device)
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
    if tokens is None and any(s.primary_image is None for s in todo):
        raise ConfigError("some test studies have no image; report generation needs images (or --embeddings)")
    out_dir.mkdir(parents=True, exist_ok=True)
    with cache.open("a", encoding="utf-8") as handle:
        for study in tqdm(todo, desc="generating", disable=not progress, unit="study"):
            if tokens is not None:
                row = tokens.select([study.primary_image_id]).tokens
                text = reporter.report_tokens(row)[0].text()
            else:
                text = reporter.report(study.primary_image).text()
            handle.write(json.dumps({"id": study.study_id, "text": text}) + "\n")
            handle.flush()
            done[study.study_id] = text
    return {s.study_id: done[s.study_id] for s in studies}
