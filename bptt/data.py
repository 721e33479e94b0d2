"""Batching arrays for batch, mini-batch and stochastic gradient descent."""

from __future__ import annotations

import numpy as np

from bptt.rng import generator

__all__ = ["batches"]


def batches(arrays, batch_size=None, shuffle=True, rng=None, axis=0):
    """Yield aligned slices of ``arrays`` along ``axis``, one tuple per (mini-)batch.

    ``batch_size=None`` gives the whole set (batch gradient descent), ``1`` single examples
    (stochastic), anything between mini-batches; the last batch may be smaller.

    Parameters
    ----------
    arrays : sequence of np.ndarray
        Examples along ``axis`` (0 for (N, ...) data, 1 for time-major (T, N, ...) sequences).
    batch_size : int or None
    shuffle : bool
        Visit examples in a new random order each call.
    rng : numpy.random.Generator, optional
        The package-wide generator when None.
    """
    arrays = [np.asarray(a) for a in arrays]
    if not arrays:
        raise ValueError("batches: need at least one array")
    sizes = {a.shape[axis] for a in arrays}
    if len(sizes) != 1:
        raise ValueError(f"batches: arrays hold different numbers of examples along axis {axis}: "
                         f"shapes {[a.shape for a in arrays]}")
    n = sizes.pop()
    size = n if batch_size is None else int(batch_size)
    if size < 1:
        raise ValueError(f"batches: batch_size must be a positive integer or None, got {batch_size!r}")
    order = generator(rng).permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, size):
        idx = order[start:start + size]
        yield tuple(np.take(a, idx, axis=axis) for a in arrays)
