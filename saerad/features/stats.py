"""Per-feature activation statistics, streamed over batches of class tokens.

A MIMIC-CXR-sized run is ~377k images x 49k features: the dense activation matrix (74 GB in fp32)
never exists. Each batch is encoded once and folded into running accumulators:

- counts, sums and maxima of active values (frequency, mean over active values, max), updated from
  the batch's non-zeros only (scatter ops), so the dense batch is read once;
- a running top-k per feature (values + row indices): the table so far plus the batch's non-zeros,
  sorted by (feature, value), keeping k per feature (ties: the earlier row wins);
- quantiles over ACTIVE values. Exact while the number of non-zeros seen stays under
  ``exact_budget`` (a healthy SAE has ~15 active features per image: 377k images -> 5.7M values);
  past that (e.g. an SAE that has not sparsified yet) the values move into per-feature histograms on
  log-spaced bins (relative resolution ~4%, then clamped to each feature's exact min/max), so memory
  stays bounded at ``d_sae * bins`` counters whatever the input size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99)


@dataclass
class ActivationStats:
    """Arrays over features (length ``d_sae``) plus the top-k table; all numpy, on the CPU."""

    n: int  # number of images seen
    count: np.ndarray  # (m,) int64: images where the feature is active (> 0)
    mean_active: np.ndarray  # (m,) mean over active values (0 for dead features)
    max: np.ndarray  # (m,)
    quantiles: dict[float, np.ndarray]  # q -> (m,) over active values (0 for dead features)
    top_values: np.ndarray  # (k, m) descending; entries <= 0 are padding
    top_rows: np.ndarray  # (k, m) row index into the input (meaningless where top_values <= 0)
    exact_quantiles: bool

    @property
    def frequency(self) -> np.ndarray:
        return self.count / max(self.n, 1)

    def top(self, feature: int) -> list[tuple[int, float]]:
        """(row, activation) of the feature's top images, highest first, active ones only."""
        vals, rows = self.top_values[:, feature], self.top_rows[:, feature]
        return [(int(r), float(v)) for v, r in zip(vals, rows) if v > 0]


class _Histogram:
    """Per-feature counts on shared log-spaced bins (the bounded-memory quantile fallback)."""

    def __init__(self, d_sae: int, bins: int, lo: float, hi: float) -> None:
        self.bins, self.log_lo, self.log_hi = bins, math.log(lo), math.log(hi)
        self.counts = np.zeros((d_sae, bins), dtype=np.int32)

    def add(self, feats: np.ndarray, values: np.ndarray) -> None:
        scaled = (np.log(np.maximum(values, 1e-30)) - self.log_lo) / (self.log_hi - self.log_lo)
        b = np.clip((scaled * self.bins).astype(np.int64), 0, self.bins - 1)
        cells, n = np.unique(feats.astype(np.int64) * self.bins + b, return_counts=True)
        self.counts.reshape(-1)[cells] += n.astype(np.int32)  # O(non-zeros), not O(d_sae * bins)

    def quantile(self, q: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        cum = np.cumsum(self.counts, axis=1, dtype=np.int64)
        n = cum[:, -1]
        rank = q * np.maximum(n - 1, 0)
        b = (cum <= rank[:, None]).sum(axis=1).clip(0, self.bins - 1)
        before = np.where(b > 0, np.take_along_axis(cum, np.maximum(b - 1, 0)[:, None], 1)[:, 0], 0)
        inside = np.take_along_axis(self.counts, b[:, None], 1)[:, 0]
        frac = np.where(inside > 0, (rank - before + 0.5) / np.maximum(inside, 1), 0.5).clip(0, 1)
        width = (self.log_hi - self.log_lo) / self.bins
        est = np.exp(self.log_lo + (b + frac) * width)
        return np.where(n > 0, np.clip(est, lo, hi), 0.0)


class StatsAccumulator:
    """Folds activation batches ``(B, d_sae)`` into :class:`ActivationStats` (see module doc)."""

    def __init__(
        self,
        d_sae: int,
        *,
        top_k: int = 16,
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        exact_budget: int = 1 << 24,
        hist_bins: int = 512,
        hist_range: tuple[float, float] = (1e-4, 1e4),
        device: torch.device | str = "cpu",
    ) -> None:
        self.d_sae, self.top_k = d_sae, top_k
        self.qs = tuple(float(q) for q in quantiles)
        self.exact_budget = exact_budget
        self.hist_bins, self.hist_range = hist_bins, hist_range
        dev = torch.device(device)
        self.n = 0
        self.count = torch.zeros(d_sae, dtype=torch.int64, device=dev)
        self.sum = torch.zeros(d_sae, dtype=torch.float64, device=dev)
        self.max = torch.zeros(d_sae, dtype=torch.float32, device=dev)
        self.min_active = torch.full((d_sae,), math.inf, dtype=torch.float32, device=dev)
        self._top_feats = torch.zeros(0, dtype=torch.int64, device=dev)  # flat table, grouped by feature
        self._top_vals = torch.zeros(0, dtype=torch.float32, device=dev)
        self._top_rows = torch.zeros(0, dtype=torch.int64, device=dev)
        self._nz_feats: list[np.ndarray] = []
        self._nz_values: list[np.ndarray] = []
        self._nz_total = 0
        self._hist: _Histogram | None = None

    @torch.no_grad()
    def update(self, f: torch.Tensor) -> None:
        """Fold one batch in. Everything after ``nonzero`` works on the non-zeros only, so the cost is
        one pass over the dense batch plus O(nnz log nnz), not several dense reductions."""
        batch = f.shape[0]
        if batch == 0:
            return
        rows, feats = (f > 0).nonzero(as_tuple=True)
        vals = f[rows, feats].float()
        self.count.index_add_(0, feats, torch.ones_like(feats))
        self.sum.index_add_(0, feats, vals.double())
        self.max.scatter_reduce_(0, feats, vals, reduce="amax")
        self.min_active.scatter_reduce_(0, feats, vals, reduce="amin")
        self._merge_top(feats, vals, rows + self.n)
        self._add_values(feats.to(torch.int32).cpu().numpy(), vals.cpu().numpy())
        self.n += batch

    def _merge_top(self, feats: torch.Tensor, vals: torch.Tensor, rows: torch.Tensor) -> None:
        """Keep each feature's ``top_k`` (value, row) pairs. Stable sorts: on equal values the
        earlier row wins, so the table does not depend on the batch size."""
        feats = torch.cat([self._top_feats, feats])
        vals = torch.cat([self._top_vals, vals])
        rows = torch.cat([self._top_rows, rows])
        order = torch.sort(rows, stable=True).indices
        order = order[torch.sort(vals[order], descending=True, stable=True).indices]
        order = order[torch.sort(feats[order], stable=True).indices]
        feats, vals, rows = feats[order], vals[order], rows[order]
        counts = torch.bincount(feats, minlength=self.d_sae)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(feats), device=feats.device) - starts[feats]
        keep = rank < self.top_k
        self._top_feats, self._top_vals, self._top_rows = feats[keep], vals[keep], rows[keep]

    def _add_values(self, feats: np.ndarray, values: np.ndarray) -> None:
        if self._hist is None and self._nz_total + len(values) > self.exact_budget:
            self._hist = _Histogram(self.d_sae, self.hist_bins, *self.hist_range)
            for fs, vs in zip(self._nz_feats, self._nz_values):
                self._hist.add(fs, vs)
            self._nz_feats, self._nz_values = [], []
        if self._hist is not None:
            self._hist.add(feats, values)
        else:
            self._nz_feats.append(feats)
            self._nz_values.append(values)
            self._nz_total += len(values)

    def finalize(self) -> ActivationStats:
        count = self.count.cpu().numpy()
        total = self.sum.cpu().numpy()
        mean_active = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        max_ = self.max.cpu().numpy().astype(np.float64)
        lo = np.where(count > 0, self.min_active.cpu().numpy(), 0.0)
        if self._hist is not None:
            quantiles = {q: self._hist.quantile(q, lo, max_) for q in self.qs}
        else:
            quantiles = _exact_quantiles(self._nz_feats, self._nz_values, count, self.qs)
        feats = self._top_feats.cpu().numpy()
        counts = np.bincount(feats, minlength=self.d_sae)
        rank = np.arange(len(feats)) - (np.cumsum(counts) - counts)[feats]
        vals = np.zeros((self.top_k, self.d_sae), np.float32)  # padding (0) marks "no more active images"
        rows = np.zeros((self.top_k, self.d_sae), np.int64)
        vals[rank, feats] = self._top_vals.cpu().numpy()
        rows[rank, feats] = self._top_rows.cpu().numpy()
        return ActivationStats(
            n=self.n,
            count=count,
            mean_active=mean_active,
            max=max_,
            quantiles=quantiles,
            top_values=vals,
            top_rows=rows,
            exact_quantiles=self._hist is None,
        )


def _exact_quantiles(
    feats: list[np.ndarray], values: list[np.ndarray], count: np.ndarray, qs: Sequence[float]
) -> dict[float, np.ndarray]:
    """Linear-interpolation quantiles (numpy's default) of each feature's active values."""
    m = len(count)
    if not feats:
        return {q: np.zeros(m) for q in qs}
    f = np.concatenate(feats)
    v = np.concatenate(values).astype(np.float64)
    order = np.lexsort((v, f))
    v = v[order]
    starts = np.concatenate([[0], np.cumsum(count)[:-1]])
    out = {}
    alive = count > 0
    for q in qs:
        pos = q * np.maximum(count - 1, 0)
        lo_i = np.floor(pos).astype(np.int64)
        hi_i = np.minimum(lo_i + 1, np.maximum(count - 1, 0))
        frac = pos - lo_i
        a = v[np.where(alive, starts + lo_i, 0)]
        b = v[np.where(alive, starts + hi_i, 0)]
        out[q] = np.where(alive, a + (b - a) * frac, 0.0)
    return out


def model_device(module: torch.nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def iter_activations(sae, tokens, *, batch_size: int = 4096, progress: bool = False, desc: str = "encode"):
    """Yield ``(start_row, f)`` for consecutive batches of ``tokens`` encoded by ``sae`` (no grad)."""
    from tqdm.auto import tqdm

    device = model_device(sae)
    n = len(tokens)
    with torch.inference_mode(), tqdm(total=n, desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            batch = tokens[start : start + batch_size]
            x = batch if torch.is_tensor(batch) else torch.from_numpy(np.asarray(batch))
            yield start, sae.encode(x.to(device=device, dtype=torch.float32))
            bar.update(min(batch_size, n - start))


def compute_activation_stats(
    sae,
    tokens,
    *,
    top_k: int = 16,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    batch_size: int = 4096,
    exact_budget: int = 1 << 24,
    progress: bool = False,
) -> ActivationStats:
    """One streaming pass of ``sae.encode`` over ``tokens`` ``(N, d_in)`` -> :class:`ActivationStats`.

    ``sae`` is anything with an ``encode(x) -> f`` (``f >= 0``) and a ``cfg.d_sae`` (or whose first
    output tells its width); accumulators live on the SAE's device.
    """
    acc: StatsAccumulator | None = None
    for _, f in iter_activations(sae, tokens, batch_size=batch_size, progress=progress, desc="feature stats"):
        if acc is None:
            acc = StatsAccumulator(
                f.shape[1], top_k=top_k, quantiles=quantiles, exact_budget=exact_budget, device=f.device
            )
        acc.update(f)
    if acc is None:
        d_sae = int(getattr(getattr(sae, "cfg", None), "d_sae", 0))
        acc = StatsAccumulator(d_sae, top_k=top_k, quantiles=quantiles)
    return acc.finalize()


def sparse_activations(sae, tokens, *, batch_size: int = 4096, progress: bool = False, desc: str = "held-out"):
    """All activations of ``tokens`` as a scipy CSC matrix ``(N, d_sae)`` (held-out scoring and the atlas
    need each feature's column; only the non-zeros are kept). ``desc`` labels the progress bar."""
    from scipy import sparse

    rows, cols, vals = [], [], []
    width = int(getattr(getattr(sae, "cfg", None), "d_sae", 0))
    for start, f in iter_activations(sae, tokens, batch_size=batch_size, progress=progress, desc=desc):
        width = f.shape[1]
        r, c = (f > 0).nonzero(as_tuple=True)
        rows.append((r + start).cpu().numpy())
        cols.append(c.cpu().numpy())
        vals.append(f[r, c].float().cpu().numpy())
    if not rows:
        return sparse.csc_matrix((len(tokens), width), dtype=np.float32)
    return sparse.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(tokens), width)
    )
