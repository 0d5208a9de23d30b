"""Training batches for the SAE: the whole set resident on the device, shuffled by index, resumable.

Which vectors train and which are held out is decided by :mod:`saerad.datasets.split`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from saerad.errors import ConfigError


class ResidentBatches(Iterator[torch.Tensor]):
    """Endless batches from a tensor kept on the training device, shuffled by index.

    The stream is the concatenation of per-epoch permutations seeded by ``(seed, epoch)``, so batch
    ``k`` is a pure function of ``k``: starting at ``start_step`` after a restart reproduces the
    uninterrupted run exactly. Works when the set is smaller than one batch.
    """

    def __init__(self, tokens: torch.Tensor, batch_size: int, *, seed: int = 0, start_step: int = 0) -> None:
        if tokens.ndim != 2 or tokens.shape[0] == 0:
            raise ConfigError("need a non-empty (N, d) tensor of training vectors")
        if batch_size <= 0:
            raise ConfigError(f"batch size must be positive, got {batch_size}")
        self.tokens, self.batch_size, self.seed = tokens, batch_size, seed
        self._pos = start_step * batch_size
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.tokens.shape[0], generator=gen).to(self.tokens.device)
            self._epoch = epoch
        return self._perm

    def __next__(self) -> torch.Tensor:
        n = self.tokens.shape[0]
        parts, need = [], self.batch_size
        while need:
            epoch, offset = divmod(self._pos, n)
            take = min(need, n - offset)
            parts.append(self._permutation(epoch)[offset : offset + take])
            self._pos += take
            need -= take
        index = parts[0] if len(parts) == 1 else torch.cat(parts)
        return self.tokens[index]
