"""Trained SAE + training embeddings + their reports -> :class:`FeatureDictionary`.

Stages: streaming activation statistics over the training set; top images and their reports (one
per patient as evidence); descriptions; the labels the top reports share; held-out AUROC of each
description; finding rules fitted and cross-validated on every labelled image
(:mod:`saerad.features.rules`). Only the rules hold activations of all images at once, and sparse.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse
import torch

from saerad.features.base import Describer, FeatureEvidence, shared_labels
from saerad.features.describers import make_describer
from saerad.features.dictionary import FeatureDictionary, FeatureStats, TopImage
from saerad.features.label_driven import CANONICAL
from saerad.features.scoring import HeldOutReports, score_descriptions
from saerad.features.stats import DEFAULT_QUANTILES, compute_activation_stats, model_device, sparse_activations
from saerad.features.text import Splitter
from saerad.radtext import Labeler, label_report

log = logging.getLogger(__name__)


@dataclass
class BuildOptions:
    batch_size: int = 4096
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES
    label_share: float = 0.6  # a label is "shared" when this share of the top reports carries it
    min_auroc: float = 0.6  # below: the description is at chance on held-out images -> not usable
    # Label-driven descriptions already passed a false-discovery-controlled test on ALL training
    # reports; held out they only have to stay above chance. (A sparse feature firing on 5% of images
    # cannot reach 0.6 however precise it is: its AUROC is at most about 0.5 + its recall / 2.)
    min_auroc_label: float = 0.5
    min_positives: int = 3  # held-out images needed on each side for a score
    n_contrast: int = 5  # non-activating reports shown to describers that want contrast (LLM)
    contrast_pool: int = 512
    seed: int = 0
    exact_budget: int = 1 << 24
    rules: bool = True  # fit finding rules (saerad.features.rules) where images carry labels


def report_text(study) -> str | None:
    """The report used for a study: its findings section, else its impression."""
    for text in (study.findings, study.impression):
        if text and text.strip():
            return text.strip()
    return None


def _resolve_describer(describer: Describer | str, labeler: Labeler | None, splitter: Splitter | None) -> Describer:
    if not isinstance(describer, str):
        return describer
    if describer == "extractive":
        return make_describer(describer, labeler=labeler, splitter=splitter)
    return make_describer(describer)


def build_dictionary(
    sae,
    train,
    studies: Sequence,
    *,
    describer: Describer | str = "extractive",
    held_out=None,
    top_k: int = 16,
    progress: bool = True,
    labeler: Labeler | None = None,
    splitter: Splitter | None = None,
    **options,
) -> FeatureDictionary:
    """Build the dictionary. ``train``/``held_out``: :class:`~saerad.encoders.store.EmbeddingSet`
    (``ids``, ``tokens``); ``studies`` must cover their image ids (images without a study or report
    simply carry no text). ``options``: fields of :class:`BuildOptions`."""
    from tqdm.auto import tqdm

    opts = BuildOptions(**options)
    train = _originals(train)
    held_out = _originals(held_out) if held_out is not None else None
    labeler = labeler or label_report
    describer = _resolve_describer(describer, labeler, splitter)
    by_image = {iid: s for s in studies for iid in s.image_ids}
    ids = list(train.ids)

    stats = compute_activation_stats(
        sae,
        train.tokens,
        top_k=top_k,
        quantiles=opts.quantiles,
        batch_size=opts.batch_size,
        exact_budget=opts.exact_budget,
        progress=progress,
    )
    d_sae = len(stats.count)

    top_images: list[list[TopImage]] = []
    evidence: list[FeatureEvidence] = []
    for fid in range(d_sae):
        images, reports, patients = [], [], set()
        for row, act in stats.top(fid):
            study = by_image.get(ids[row])
            text = report_text(study) if study is not None else None
            images.append(TopImage(image_id=ids[row], activation=act, report=text))
            if text is not None and study.patient_id not in patients:
                patients.add(study.patient_id)
                reports.append(text)
        top_images.append(images)
        if reports:
            evidence.append(FeatureEvidence(fid, tuple(reports)))

    if describer.needs_contrast and evidence:
        evidence = _with_contrast(sae, train, by_image, evidence, opts)

    corpus = _corpus(by_image[i] for i in ids if i in by_image)
    label_cache: dict[str, dict] = {}

    def labels_of(text: str) -> dict:
        if text not in label_cache:
            label_cache[text] = dict(labeler(text))
        return label_cache[text]

    label_cfg = describer.label_config() if hasattr(describer, "label_config") else None
    matches = {}
    if label_cfg is not None:
        matches = _label_matches(sae, train, by_image, labels_of, label_cfg, opts, progress)
    extra = {"matches": matches} if label_cfg is not None else {}
    found = describer.describe_many(evidence, corpus=corpus, progress=progress, **extra)
    descriptions = {d.feature_id: d.text for d in found}
    for fid, match in matches.items():  # a tracked condition but no top report with text
        if fid not in descriptions:
            descriptions[fid] = CANONICAL[match.condition]

    labels = {
        ev.feature_id: shared_labels([labels_of(r) for r in ev.reports], min_share=opts.label_share)
        for ev in tqdm(evidence, desc="shared labels", disable=not progress)
    }

    described = {fid: t for fid, t in descriptions.items() if t}
    scores = {}
    n_held = 0
    if held_out is not None:
        rows = [i for i, iid in enumerate(held_out.ids) if iid in by_image and report_text(by_image[iid])]
        n_held = len(rows)
        if rows and described:
            tokens = _rows(held_out.tokens, rows)
            acts = sparse_activations(sae, tokens, batch_size=opts.batch_size, progress=progress)
            texts = [report_text(by_image[held_out.ids[i]]) for i in rows]
            reports = HeldOutReports(texts, labeler, splitter=splitter)
            scores = score_descriptions(described, acts, reports, labeler, min_positives=opts.min_positives)

    rules = _finding_rules(sae, train, held_out, by_image, labels_of, opts, progress) if opts.rules else []

    scored = held_out is not None and n_held > 0  # held-out images without reports cannot score anything
    features = []
    for fid in range(d_sae):
        text = described.get(fid)
        score = scores.get(fid)
        auc = None if score is None or score.auroc is None else round(score.auroc, 4)
        if stats.count[fid] == 0 or text is None:
            usable = False
        elif scored:
            bar = opts.min_auroc_label if fid in matches else opts.min_auroc
            usable = auc is not None and (auc > bar if fid in matches else auc >= bar)
        else:
            usable = True  # nothing to check it against: trust it, the meta says it is unscored
        features.append(
            FeatureStats(
                id=fid,
                frequency=float(stats.frequency[fid]),
                mean_activation=float(stats.mean_active[fid]),
                max_activation=float(stats.max[fid]),
                quantiles={_qkey(q): float(v[fid]) for q, v in stats.quantiles.items()},
                top_images=top_images[fid],
                labels=labels.get(fid, {}),
                description=text,
                description_score=auc,
                usable=usable,
            )
        )
    meta = {
        "encoder": getattr(train, "encoder", None),
        "d_sae": d_sae,
        "n_train": stats.n,
        "n_held_out": n_held,
        "scored": scored,
        "top_k": top_k,
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()},
        "describer_config": describer.config(),
        "exact_quantiles": stats.exact_quantiles,
        "n_dead": int((stats.count == 0).sum()),
        "n_described": len(described),
        "n_usable": sum(f.usable for f in features),
        "n_label_driven": sum(1 for fid in described if fid in matches),
        "label_driven": {str(fid): {"condition": m.condition, "train_auroc": round(m.auroc, 4),
                                    "train_odds_ratio": round(m.odds_ratio, 3), "train_pvalue": float(f"{m.pvalue:.3g}")}
                         for fid, m in sorted(matches.items())},
        "mean_l0": float(stats.count.sum() / max(stats.n, 1)),
        "n_rules_usable": sum(r.usable for r in rules),
    }
    log.info(
        "dictionary: %d features, %d dead, %d described, %d usable; %d of %d finding rules usable",
        d_sae, meta["n_dead"], meta["n_described"], meta["n_usable"], meta["n_rules_usable"], len(rules),
    )
    return FeatureDictionary(features=features, describer=describer.name, meta=meta, rules=rules)


def _label_matches(sae, train, by_image, labels_of, cfg, opts: BuildOptions, progress: bool) -> dict:
    """Feature id -> ConditionMatch: the condition each feature's activation over all training
    images tracks (units: one per patient and report text, max activation). A study's own labels
    (label-only datasets) are used as they are; otherwise its report is labelled."""
    from saerad.features.label_driven import match_conditions, presence_matrix, unit_activations, unit_index
    from saerad.radtext.conditions import CONDITIONS

    keys, unit_labels = [], {}
    for iid in train.ids:
        study = by_image.get(iid)
        text = report_text(study) if study is not None else None
        key = (study.patient_id, text) if text is not None else None
        keys.append(key)
        if key is not None and key not in unit_labels:
            unit_labels[key] = dict(study.labels) if study.labels is not None else labels_of(text)
    unit_of_row, units = unit_index(keys)
    if not units:
        return {}
    acts = sparse_activations(sae, train.tokens, batch_size=opts.batch_size, progress=progress)
    acts = unit_activations(acts, unit_of_row, len(units))
    present = presence_matrix([unit_labels[u] for u in units], CONDITIONS)
    return match_conditions(acts, present, CONDITIONS, cfg)


def _image_labels(by_image, ids, labels_of) -> tuple[np.ndarray, list[int]]:
    """Presence ``(len(rows), C)`` of each condition (positive or uncertain) for the images of
    ``ids`` that carry labels or a report, and those rows."""
    from saerad.features.label_driven import presence_matrix
    from saerad.radtext.conditions import CONDITIONS

    rows, label_sets = [], []
    for row, iid in enumerate(ids):
        study = by_image.get(iid)
        if study is None:
            continue
        if study.labels is not None:
            label_sets.append(dict(study.labels))
        elif (text := report_text(study)) is not None:
            label_sets.append(labels_of(text))
        else:
            continue
        rows.append(row)
    return presence_matrix(label_sets, CONDITIONS), rows


def _finding_rules(sae, train, held_out, by_image, labels_of, opts: BuildOptions, progress: bool) -> list:
    """Fit and cross-validate a vote per condition on every labelled image, training and held-out
    patients alike (each patient is scored out of fold: saerad.features.rules)."""
    from saerad.features.rules import fit_rules
    from saerad.radtext.conditions import CONDITIONS

    sets = [train] + ([held_out] if held_out is not None else [])
    present, acts, groups = [], [], []
    for emb in sets:
        p, rows = _image_labels(by_image, list(emb.ids), labels_of)
        if rows:
            present.append(p)
            acts.append(sparse_activations(sae, _rows(emb.tokens, rows), batch_size=opts.batch_size, progress=progress))
            groups += [by_image[emb.ids[r]].patient_id for r in rows]
    if not groups:
        return []
    return fit_rules(scipy.sparse.vstack(acts), np.concatenate(present), groups, CONDITIONS)


def _corpus(studies) -> list[str]:
    """The background reports: each training study's report once, and a text repeated within one
    patient once (case notes are copied onto every image of a patient; a template shared by many
    patients is many reports)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for s in studies:
        text = report_text(s)
        if text is not None and (s.patient_id, text) not in seen:
            seen.add((s.patient_id, text))
            out.append(text)
    return out


def _originals(embeddings):
    """Statistics describe real images: augmented views (``<id>#augK``) would count one image twice
    and put ids without a study in the top lists."""
    from saerad.datasets.ids import is_augmented

    if any(is_augmented(i) for i in embeddings.ids):
        return embeddings.originals()
    return embeddings


def _rows(tokens, rows):
    return tokens[torch.as_tensor(rows, dtype=torch.long)] if torch.is_tensor(tokens) else np.asarray(tokens)[rows]


def _qkey(q: float) -> str:
    return format(q, "g")


def _with_contrast(sae, train, by_image, evidence: list[FeatureEvidence], opts: BuildOptions) -> list[FeatureEvidence]:
    """Attach reports of random training images where each feature is inactive (seeded per feature,
    so prompts and hence LLM cache keys are the same on a rerun)."""
    ids = list(train.ids)
    with_text = [i for i, iid in enumerate(ids) if iid in by_image and report_text(by_image[iid])]
    if not with_text:
        return evidence
    rng = np.random.default_rng(opts.seed)
    pool = np.sort(rng.choice(with_text, size=min(opts.contrast_pool, len(with_text)), replace=False))
    x = torch.as_tensor(_rows(train.tokens, pool), dtype=torch.float32, device=model_device(sae))
    with torch.inference_mode():
        inactive = (sae.encode(x) <= 0).cpu().numpy()  # (pool, d_sae) bool
    out = []
    for ev in evidence:
        candidates = pool[inactive[:, ev.feature_id]]
        order = np.random.default_rng([opts.seed, ev.feature_id]).permutation(len(candidates))
        chosen, seen = [], set(ev.reports)
        for j in order:
            study = by_image[ids[candidates[j]]]
            text = report_text(study)
            if text not in seen:
                seen.add(text)
                chosen.append(text)
                if len(chosen) >= opts.n_contrast:
                    break
        out.append(FeatureEvidence(ev.feature_id, ev.reports, tuple(chosen)))
    return out
