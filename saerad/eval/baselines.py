"""Baselines every results table should show (docs/method.md#evaluation).

* Normal template: the same normal findings text for every study. It scores well on text metrics
  (normal studies dominate) and shows what a model gains beyond "say normal".
* Nearest-neighbour retrieval: the training report of the most similar class token (cosine), from
  a different patient - what the image encoder alone buys, without an SAE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from saerad.errors import ConfigError

# Written for saerad in standard normal-study wording; covers the structures every findings
# section describes.
NORMAL_TEMPLATE = (
    "The heart size is normal. The mediastinal and hilar contours are within normal limits. "
    "The lungs are clear. There is no pleural effusion or pneumothorax. "
    "No acute osseous abnormality is seen."
)


def normal_template_reports(n: int, template: str = NORMAL_TEMPLATE) -> list[str]:
    return [template] * n


@dataclass(frozen=True)
class Retrieved:
    """For each query: the retrieved pool index and its cosine similarity."""

    index: np.ndarray  # (Q,) int
    similarity: np.ndarray  # (Q,) float


def nearest_neighbours(
    query_tokens: np.ndarray,
    pool_tokens: np.ndarray,
    query_patients: Sequence[str],
    pool_patients: Sequence[str],
    *,
    chunk: int = 256,
) -> Retrieved:
    """Cosine nearest neighbour of each query in the pool, never from the query's own patient."""
    q = _unit(np.asarray(query_tokens, dtype=np.float32))
    p = _unit(np.asarray(pool_tokens, dtype=np.float32))
    if q.ndim != 2 or p.ndim != 2 or q.shape[1] != p.shape[1]:
        raise ConfigError(f"query tokens {q.shape} and pool tokens {p.shape} do not match")
    if len(p) == 0:
        raise ConfigError("the retrieval pool is empty")
    pool_patients = np.asarray([str(x) for x in pool_patients])
    index = np.empty(len(q), dtype=np.int64)
    similarity = np.empty(len(q), dtype=np.float64)
    for start in range(0, len(q), chunk):
        sims = q[start : start + chunk] @ p.T
        for i, patient in enumerate(query_patients[start : start + chunk]):
            row = sims[i]
            same = pool_patients == str(patient)
            if same.all():
                raise ConfigError(f"no pool study from another patient for query {start + i}")
            if same.any():
                row = np.where(same, -np.inf, row)
            best = int(np.argmax(row))
            index[start + i] = best
            similarity[start + i] = float(row[best])
    return Retrieved(index=index, similarity=similarity)


def retrieval_reports(
    query_ids: Sequence[str],
    query_patients: Sequence[str],
    pool_ids: Sequence[str],
    pool_patients: Sequence[str],
    pool_texts: Sequence[str],
    embeddings,
) -> tuple[list[str], list[str]]:
    """Retrieved report text and retrieved id for each query image id.

    ``embeddings`` is an :class:`~saerad.encoders.store.EmbeddingSet` (anything with ``ids`` and a
    ``tokens`` (N, dim) tensor/array) holding every query and pool image id.
    """
    lookup = {image_id: row for row, image_id in enumerate(embeddings.ids)}
    missing = [i for i in list(query_ids) + list(pool_ids) if i not in lookup]
    if missing:
        raise ConfigError(f"{len(missing)} image ids have no class token in the embedding set, e.g. {missing[0]!r}")
    tokens = embeddings.tokens
    tokens = tokens.numpy() if hasattr(tokens, "numpy") else np.asarray(tokens)
    q = tokens[[lookup[i] for i in query_ids]]
    p = tokens[[lookup[i] for i in pool_ids]]
    found = nearest_neighbours(q, p, query_patients, pool_patients)
    return [pool_texts[j] for j in found.index], [pool_ids[j] for j in found.index]


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
