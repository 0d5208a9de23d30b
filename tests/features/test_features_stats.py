import numpy as np
import pytest
import torch

from saerad.features.stats import StatsAccumulator, compute_activation_stats, sparse_activations


def _sparse_acts(n=1500, m=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.relu(torch.randn(n, m, generator=g) * 2 - 1.0) * (torch.rand(n, m, generator=g) < 0.4)
    f[:, 7] = 0  # a dead feature
    return f


class _Identity(torch.nn.Module):
    """Stands in for an SAE: encode() returns its input (the activations are the tokens)."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def encode(self, x):
        return x


@pytest.mark.parametrize("batch", [1, 97, 5000])
def test_streaming_stats_match_dense_reference(batch):
    f = _sparse_acts()
    st = compute_activation_stats(_Identity(), f, top_k=6, batch_size=batch)
    fn = f.numpy().astype(np.float64)
    active = fn > 0
    assert st.n == len(fn)
    np.testing.assert_array_equal(st.count, active.sum(0))
    np.testing.assert_allclose(st.frequency, active.mean(0))
    np.testing.assert_allclose(st.max, fn.max(0), rtol=1e-6)
    mean = np.where(active.any(0), fn.sum(0) / np.maximum(active.sum(0), 1), 0)
    np.testing.assert_allclose(st.mean_active, mean, rtol=1e-5)
    assert st.exact_quantiles
    for q in (0.5, 0.9, 0.99):
        ref = [np.quantile(fn[active[:, j], j], q) if active[:, j].any() else 0.0 for j in range(fn.shape[1])]
        np.testing.assert_allclose(st.quantiles[q], ref, rtol=1e-6)
    np.testing.assert_allclose(st.top_values, -np.sort(-fn, axis=0)[:6], rtol=1e-6)
    for j in range(fn.shape[1]):
        rows = [r for r, _ in st.top(j)]
        np.testing.assert_allclose(fn[rows, j], [v for _, v in st.top(j)], rtol=1e-6)
    assert st.top(7) == [] and st.quantiles[0.5][7] == 0 and st.max[7] == 0


def test_ties_resolve_to_the_earlier_row_whatever_the_batch_size():
    f = torch.zeros(20, 2)
    f[[3, 9, 15], 0] = 1.0
    for batch in (1, 4, 20):
        st = compute_activation_stats(_Identity(), f, top_k=2, batch_size=batch)
        assert [r for r, _ in st.top(0)] == [3, 9]


def test_histogram_quantiles_when_over_budget_are_close():
    f = _sparse_acts(n=20000, m=8, seed=1)  # the fallback is for big inputs: dense tails
    exact = compute_activation_stats(_Identity(), f, batch_size=3000)
    approx = compute_activation_stats(_Identity(), f, batch_size=3000, exact_budget=1000)
    assert not approx.exact_quantiles
    alive = exact.count > 0
    for q in (0.5, 0.9, 0.95, 0.99):
        np.testing.assert_allclose(approx.quantiles[q][alive], exact.quantiles[q][alive], rtol=0.03)
        assert (approx.quantiles[q] <= approx.max + 1e-9).all()
    np.testing.assert_array_equal(approx.count, exact.count)


def test_fewer_images_than_k_and_empty_input():
    st = compute_activation_stats(_Identity(), torch.tensor([[1.0, 0.0], [2.0, 0.0]]), top_k=5)
    assert st.top(0) == [(1, 2.0), (0, 1.0)] and st.top_values.shape == (5, 2)
    acc = StatsAccumulator(3)
    empty = acc.finalize()
    assert empty.n == 0 and empty.top(0) == [] and (empty.count == 0).all()


def test_sparse_activations_match_dense():
    f = _sparse_acts(n=300, m=10)
    csc = sparse_activations(_Identity(), f.numpy(), batch_size=64)
    np.testing.assert_allclose(csc.toarray(), f.numpy())
