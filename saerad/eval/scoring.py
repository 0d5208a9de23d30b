"""Scoring: references + systems' reports -> every number, written to ``OUT/``.

``saerad score`` and ``saerad evaluate`` both end in :func:`score_systems`: reference reports + one or more systems' reports -> per-study
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from saerad.errors import ConfigError
from saerad.eval.bootstrap import resample_weights
from saerad.eval.f1 import f1_report
from saerad.eval.io import atomic_write_lines, atomic_write_text
from saerad.eval.tables import format_markdown
from saerad.eval.text_metrics import pair_stats, per_pair_scores, text_metrics
from saerad.radtext.conditions import CONDITIONS, CONDITIONS_5
from saerad.radtext.labeler import label_reports
from saerad.radtext.text import clean_text, normalize_report

log = logging.getLogger(__name__)

NORMALISATION = (
    "saerad.radtext.normalize_report: lower case, Penn-Treebank-style tokens (Python, mirrors "
    "coco-caption's PTBTokenizer), punctuation tokens removed"
)


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
    extend: Callable[[dict, list[str], np.ndarray, dict[str, np.ndarray]], None] | None = None,
) -> dict:
    """Score every system against ``references`` and write the three output files.

    ``unavailable_systems`` maps a system name to why it could not run (shown in the tables);
    ``extra_rows`` adds per-study fields to ``predictions.jsonl`` (e.g. the retrieved study id);
    ``extend(metrics, study_ids, reference_rule_labels, {system: rule_labels})`` adds numbers to
    ``metrics`` before it is written.
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
        rule_preds: dict[str, np.ndarray] = {}
        for name, texts in preds.items():
            log.info("scoring %s (%d studies)", name, len(ids))
            stats = pair_stats(
                norm_preds[name], norm_refs, normalized=True, meteor_future=futures.get(name), meteor_reason=meteor_reason
            )
            rule_pred = rule_preds[name] = label_reports(texts)
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
    if extend is not None:
        extend(metrics, ids, rule_refs, rule_preds)
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
