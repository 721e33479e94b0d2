"""Static tasks: one input per example and no time axis, for networks that settle to a fixed point.

- ``TwoSpirals``: Lang & Witbrock's two interleaved spirals, a binary label per point in the plane.
- ``PatternCompletion``: P random ±1 patterns of N bits, each shown with a fraction of its bits
  flipped; the network must give back the stored pattern (Pineda's associative memory).

Both follow one small interface: ``input_size``, ``output_size``, ``metric``, ``train_set()``
(or ``batch(batch_size, rng)`` for fresh noisy examples), ``test_set()`` fixed by the seed,
``loss(logits, y)`` (a Tensor) and ``score(logits, y)`` (a float, lower or higher as ``metric``
says).  Shapes: x (B, I), y (B, O), logits (B, O).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from bptt.nn.losses import binary_cross_entropy_with_logits

if TYPE_CHECKING:
    from bptt.tape import Tensor, TensorLike

__all__ = ["two_spirals", "TwoSpirals", "PatternCompletion", "STATIC_TASKS", "get_static"]


def two_spirals(n: int, turns: float, rng: np.random.Generator,
                dtype: DTypeLike = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Lang & Witbrock's two interleaved spirals, ``turns`` turns each, scaled into the unit disc.

    Returns ``x (2n, 2)`` and ``y (2n, 1)``: n points on the first arm with label 0, their mirror
    images on the second arm with label 1.  Points are spread evenly along the arm's length.
    """
    t = np.sqrt(rng.random(n)) * 2 * np.pi * turns
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (2 * np.pi * turns)
    x = np.concatenate([arm, -arm]).astype(dtype)
    y = np.concatenate([np.zeros(n), np.ones(n)])[:, None].astype(dtype)
    return x, y


class TwoSpirals:
    """Classify points of two interleaved spirals; scored by test accuracy.

    Parameters
    ----------
    n : int
        Training points per arm (the training set is full-batch, 2n points).
    turns : float
    test_size : int
        Test points per arm, drawn independently of the training points.
    seed : int
    """

    name = "spirals"
    metric = "accuracy"
    higher_is_better = True
    input_size, output_size = 2, 1

    def __init__(self, n: int = 100, turns: float = 1.5, test_size: int = 250, seed: int = 0) -> None:
        self.n, self.turns, self.test_size, self.seed = int(n), float(turns), int(test_size), int(seed)

    def train_set(self, dtype: DTypeLike = np.float32) -> tuple[np.ndarray, np.ndarray]:
        return two_spirals(self.n, self.turns, np.random.default_rng([self.seed, 0]), dtype)

    def batch(self, batch_size: int, rng: np.random.Generator,
              dtype: DTypeLike = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """The whole training set (the classic full-batch setting); ``batch_size`` and ``rng`` unused."""
        return self.train_set(dtype)

    def test_set(self, dtype: DTypeLike = np.float32) -> tuple[np.ndarray, np.ndarray]:
        return two_spirals(self.test_size, self.turns, np.random.default_rng([self.seed, 1]), dtype)

    def loss(self, logits: TensorLike, y: TensorLike) -> Tensor:
        return binary_cross_entropy_with_logits(logits, y)

    def score(self, logits: ArrayLike, y: ArrayLike) -> float:
        """Accuracy of ``logits > 0`` against the labels."""
        return float(np.mean((np.asarray(logits) > 0) == (np.asarray(y) > 0.5)))


class PatternCompletion:
    """Recall one of P stored ±1 patterns from a copy with a fraction of its bits flipped.

    The targets are the clean patterns as 0/1 bits; the loss is the binary cross-entropy of one
    logit per bit and the score is the recall error, the fraction of bits read back wrong
    (``logit > 0`` meaning +1).  Showing a corrupted pattern unchanged scores ``flip``.

    Parameters
    ----------
    patterns : int
        P.
    size : int
        N, the bits of a pattern (the input and output size).
    flip : float in [0, 0.5)
        Fraction of bits flipped in each presentation (exactly round(flip * N) of them).
    test_size : int
    seed : int
        Fixes the patterns and the test set.
    """

    name = "patterns"
    metric = "recall error"
    higher_is_better = False

    def __init__(self, patterns: int = 20, size: int = 32, flip: float = 0.2, test_size: int = 500,
                 seed: int = 0) -> None:
        if not 0 <= flip < 0.5:
            raise ValueError(f"PatternCompletion: flip must be in [0, 0.5), got {flip!r}")
        if int(patterns) < 1 or int(size) < 1:
            raise ValueError(f"PatternCompletion: patterns and size must be positive, got {patterns!r}, {size!r}")
        self.patterns_count, self.size, self.flip = int(patterns), int(size), float(flip)
        self.test_size, self.seed = int(test_size), int(seed)
        self.input_size = self.output_size = self.size
        self.patterns = np.random.default_rng([self.seed, 0]).choice([-1.0, 1.0], size=(self.patterns_count, self.size))

    def batch(self, batch_size: int, rng: np.random.Generator,
              dtype: DTypeLike = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """``batch_size`` fresh presentations: x (B, N) corrupted ±1, y (B, N) clean 0/1 bits."""
        which = rng.integers(self.patterns_count, size=batch_size)
        clean = self.patterns[which]
        k = int(round(self.flip * self.size))
        flips = np.argsort(rng.random((batch_size, self.size)), axis=1)[:, :k]
        x = clean.copy()
        np.put_along_axis(x, flips, -np.take_along_axis(x, flips, axis=1), axis=1)
        return x.astype(dtype), ((clean + 1) / 2).astype(dtype)

    def train_set(self, dtype: DTypeLike = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """A fixed set of 10 presentations per pattern (for measurements that need one batch)."""
        return self.batch(10 * self.patterns_count, np.random.default_rng([self.seed, 2]), dtype)

    def test_set(self, dtype: DTypeLike = np.float32) -> tuple[np.ndarray, np.ndarray]:
        return self.batch(self.test_size, np.random.default_rng([self.seed, 1]), dtype)

    def loss(self, logits: TensorLike, y: TensorLike) -> Tensor:
        return binary_cross_entropy_with_logits(logits, y)

    def score(self, logits: ArrayLike, y: ArrayLike) -> float:
        """The fraction of bits recalled wrong."""
        return float(np.mean((np.asarray(logits) > 0) != (np.asarray(y) > 0.5)))


STATIC_TASKS = {"spirals": TwoSpirals, "patterns": PatternCompletion}


def get_static(name: str, **options: Any) -> TwoSpirals | PatternCompletion:
    """A static task by name ('spirals' or 'patterns') with its options."""
    if name not in STATIC_TASKS:
        raise ValueError(f"unknown static task {name!r}; static tasks are: {', '.join(STATIC_TASKS)}")
    return STATIC_TASKS[name](**options)
