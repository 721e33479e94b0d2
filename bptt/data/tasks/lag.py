"""The lag task: a stream whose next bit depends on two inputs a fixed number of steps back.

Pitis's task, as popularised by the "r2rt" recurrent-network tutorial: x_t ~ Bernoulli(0.5) and

    y_t ~ Bernoulli(0.5 + 0.5 x_{t-3} - 0.25 x_{t-8}).

A model that remembers nothing can only predict y's marginal; one that carries x_{t-3} does
better; one that carries both does best.  The three expected cross-entropies, 0.662, 0.519 and
0.454 nats, are levels a training curve visibly steps through, and which one truncated BPTT
reaches depends on whether its window spans the lags.
"""

from __future__ import annotations

import itertools

import numpy as np
from numpy.typing import ArrayLike

from bptt.data.tasks.base import Task

__all__ = ["Lag"]


def _entropy(p):
    """The expected cross-entropy (nats) of predicting Bernoulli(p) with p itself."""
    return float(-sum(q * np.log(q) for q in (p, 1 - p) if q > 0))


class Lag(Task):
    """Predict a bit whose probability depends on the inputs ``short_lag`` and ``long_lag`` back.

    x_t ~ Bernoulli(0.5) (one input channel) and y_t ~ Bernoulli(0.5 + 0.5 x_{t-short_lag} -
    0.25 x_{t-long_lag}), two classes, cross-entropy at every step from ``long_lag`` on (the
    earlier steps of a window lack the history that sets their target).  The batches are
    windows of one endless stream, each drawn with its own history.

    Parameters
    ----------
    seq_len : int
        Window length T > long_lag.
    short_lag, long_lag : int
        The two lags, 1 <= short_lag < long_lag.
    seed, validation_size, test_size :
        As ``Task``.
    """

    name = "lag"
    input_size, output_size = 1, 2
    loss = metric = "cross_entropy"
    has_levels = True
    description = "next bit set by the inputs 3 and 8 steps back (levels 0.662, 0.519, 0.454)"
    weights = (0.5, -0.25)      # of x_{t-short_lag} and x_{t-long_lag} in P(y_t = 1)

    def __init__(self, seq_len: int = 50, short_lag: int = 3, long_lag: int = 8, seed: int = 0,
                 validation_size: int = 512, test_size: int = 1000) -> None:
        for label, value in (("seq_len", seq_len), ("short_lag", short_lag), ("long_lag", long_lag)):
            if int(value) != value or value < 1:
                raise ValueError(f"task 'lag': {label} must be a positive integer, got {value!r}")
        if not short_lag < long_lag < seq_len:
            raise ValueError(f"task 'lag': need short_lag < long_lag < seq_len, got {short_lag}, "
                             f"{long_lag}, {seq_len}")
        self.seq_len, self.short_lag, self.long_lag = int(seq_len), int(short_lag), int(long_lag)
        super().__init__(seed, validation_size, test_size)

    def probability(self, x_short: ArrayLike, x_long: ArrayLike) -> np.ndarray:
        """P(y_t = 1) given x_{t-short_lag} and x_{t-long_lag} (arrays of 0/1)."""
        a, b = self.weights
        return 0.5 + a * np.asarray(x_short) + b * np.asarray(x_long)

    def _generate(self, n, rng):
        T, L = self.seq_len, self.long_lag
        bits = rng.integers(0, 2, size=(T, n))
        p = self.probability(bits[L - self.short_lag:T - self.short_lag], bits[:T - L])
        y = np.zeros((T, n), dtype=np.int64)
        y[L:] = rng.random((T - L, n)) < p
        mask = np.zeros(T, dtype=np.float32)
        mask[L:] = 1
        return bits[..., None].astype(np.float32), y, mask

    def baselines(self) -> dict[str, float]:
        """The expected cross-entropy of the best predictor that knows nothing, x_{t-short_lag}
        only, and both inputs (0.662, 0.519 and 0.454 nats for the default lags)."""
        cases = list(itertools.product((0, 1), repeat=2))        # (x_short, x_long), each 1/4
        p = {c: float(self.probability(*c)) for c in cases}
        marginal = sum(p.values()) / 4
        short = [(p[(s, 0)] + p[(s, 1)]) / 2 for s in (0, 1)]
        return {"no memory": _entropy(marginal),
                f"lag {self.short_lag} only": sum(_entropy(q) for q in short) / 2,
                f"lags {self.short_lag} and {self.long_lag}": sum(_entropy(q) for q in p.values()) / 4}

    def level_reached(self, value: float) -> str | None:
        """The level of ``baselines()`` a test cross-entropy is at: the nearest of the three.

        Parameters
        ----------
        value : float
            A cross-entropy in nats, e.g. a trained model's on the test set.

        Returns
        -------
        str or None
            The name of the nearest level ("no memory", "lag 3 only", "lags 3 and 8" for the
            default lags); None when ``value`` is above the no-memory level by more than half
            the gap between it and the next (a model worse than predicting the marginal).
        """
        levels = sorted(self.baselines().items(), key=lambda item: item[1])
        top, second = levels[-1][1], levels[-2][1]
        if value > top + (top - second) / 2:
            return None
        return min(levels, key=lambda item: abs(item[1] - value))[0]
