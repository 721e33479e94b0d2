"""Toy tasks that isolate a long-range dependency: adding, copy memory, delayed XOR, recall.

Each draws fresh sequences from a ``numpy.random.Generator``; what must travel through time, and
how far, is set by the options, and each task's baselines say what a model that does not carry
the information achieves.
"""

from __future__ import annotations

import numpy as np

from bptt.errors import integer
from bptt.data.tasks.base import Task

__all__ = ["Adding", "CopyMemory", "Parity", "Recall"]

_CONFIDENT = 1e9   # logit gap that makes a softmax put all its mass on one class in float64


def _positive(task, label, value, least=1):
    return integer(value, label, f"task {task!r}", least)


def _last_step_mask(T):
    mask = np.zeros(T, dtype=np.float32)
    mask[-1] = 1
    return mask


class Adding(Task):
    """The adding problem, in the two-channel form of Le, Jaitly & Hinton (2015).

    Channel 0 holds numbers drawn uniformly from [0, 1]; channel 1 is zero except for two ones,
    one at a random step of the first half and one in the second half.  The target, scored at
    the last step only, is the sum of the two marked numbers.  Predicting 1.0 regardless gives
    an MSE of Var(u1 + u2) = 1/6; "solved" means test MSE below 0.01.

    Parameters
    ----------
    seq_len : int
        T >= 2.
    seed, validation_size, test_size :
        As ``Task``.
    """

    name = "adding"
    input_size, output_size = 2, 1
    loss = metric = "mse"
    description = "sum of two marked numbers in a long sequence (last step)"

    def __init__(self, seq_len: int = 50, seed: int = 0, validation_size: int = 512,
                 test_size: int = 1000) -> None:
        self.seq_len = _positive(self.name, "seq_len", seq_len, least=2)
        super().__init__(seed, validation_size, test_size)

    def _generate(self, n, rng):
        T, half = self.seq_len, self.seq_len // 2
        x = np.zeros((T, n, 2), dtype=np.float32)
        x[:, :, 0] = rng.random((T, n))
        cols = np.arange(n)
        first = rng.integers(0, half, size=n)
        second = rng.integers(half, T, size=n)
        x[first, cols, 1] = 1
        x[second, cols, 1] = 1
        y = np.zeros((T, n, 1), dtype=np.float32)
        y[-1, :, 0] = x[first, cols, 0] + x[second, cols, 0]
        return x, y, _last_step_mask(T)

    def baselines(self) -> dict[str, float]:
        """MSE of always predicting 1.0 (about 1/6)."""
        x, y, mask = self.test_set()
        return {"constant 1.0": self.score(np.ones_like(y), y, mask)}


class CopyMemory(Task):
    """Copy memory (Hochreiter & Schmidhuber 1997; the form of Arjovsky, Shah & Bengio 2016).

    Symbols: 0 blank, 1..8 data, 9 delimiter, given one-hot.  The input is 10 data symbols, then
    ``delay - 1`` blanks, the delimiter, and 10 more blanks (T = delay + 20 steps); the target is
    blank for the first delay + 10 steps and then the 10 data symbols.  Every step is scored.
    The memoryless strategy (blank until the delimiter has passed, then uniform over the 8 data
    symbols) has cross-entropy 10 log(8) / (delay + 20).

    Parameters
    ----------
    delay : int
        How long the symbols must be kept (>= 1).
    seq_len : int, optional
        The total length instead (``delay = seq_len - 20``), so ``bptt train --seq-len`` means
        the same for every task; give one of the two.
    """

    name = "copy"
    input_size = output_size = 10
    loss = metric = "cross_entropy"
    description = "reproduce 10 symbols after a delay (all steps)"
    n_symbols, n_copy = 8, 10

    def __init__(self, delay: int | None = None, seq_len: int | None = None, seed: int = 0,
                 validation_size: int = 512, test_size: int = 1000) -> None:
        if delay is None and seq_len is None:
            delay = 100
        elif delay is None:
            delay = _positive(self.name, "seq_len", seq_len, least=21) - 20
        elif seq_len is not None and seq_len != delay + 20:
            raise ValueError(f"task 'copy': seq_len={seq_len} and delay={delay} disagree "
                             f"(seq_len = delay + 20); give one of them")
        self.delay = _positive(self.name, "delay", delay)
        self.seq_len = self.delay + 20
        super().__init__(seed, validation_size, test_size)

    def _generate(self, n, rng):
        T, k = self.seq_len, self.n_copy
        data = rng.integers(1, self.n_symbols + 1, size=(k, n))
        symbols = np.zeros((T, n), dtype=np.int64)
        symbols[:k] = data
        symbols[self.delay + k - 1] = 9
        x = np.eye(self.input_size, dtype=np.float32)[symbols]
        y = np.zeros((T, n), dtype=np.int64)
        y[-k:] = data
        return x, y, np.ones(T, dtype=np.float32)

    def memoryless_logits(self, batch_size: int) -> np.ndarray:
        """Logits of the memoryless strategy, shape (T, B, 10)."""
        T, k = self.seq_len, self.n_copy
        logits = np.full((T, batch_size, self.output_size), -_CONFIDENT)
        logits[:T - k, :, 0] = 0
        logits[T - k:, :, 1:self.n_symbols + 1] = 0
        return logits

    def baselines(self) -> dict[str, float]:
        """Cross-entropy of the memoryless strategy on the test set (= 10 log 8 / T)."""
        x, y, mask = self.test_set()
        return {"memoryless": self.score(self.memoryless_logits(y.shape[1]), y, mask)}


class Parity(Task):
    """Delayed XOR / sequential parity of a random bit stream.

    The input is a stream of bits (0 or 1).  At step t the target is the parity (XOR) of the
    ``order`` bits ending ``delay`` steps back, ``x[t-delay-order+1] ^ ... ^ x[t-delay]``; steps
    where that window does not fit are masked out.  ``order=2`` is the delayed XOR;
    ``order=seq_len, delay=0`` is the parity of the whole sequence, scored at the last step.
    The targets are balanced coin flips, so no model that lacks the bits beats 50% accuracy.

    Parameters
    ----------
    seq_len : int
    order : int
        Number of bits XORed (>= 1).
    delay : int
        Steps between the newest bit in the window and the answer (>= 0).
    """

    name = "parity"
    input_size, output_size = 1, 2
    loss, metric = "cross_entropy", "accuracy"
    description = "XOR of bits seen a delay earlier (delayed XOR; sequential parity)"

    def __init__(self, seq_len: int = 50, order: int = 2, delay: int = 10, seed: int = 0,
                 validation_size: int = 512, test_size: int = 1000) -> None:
        self.seq_len = _positive(self.name, "seq_len", seq_len)
        self.order = _positive(self.name, "order", order)
        self.delay = _positive(self.name, "delay", delay, least=0)
        if self.delay + self.order > self.seq_len:
            raise ValueError(f"task 'parity': delay + order = {self.delay + self.order} must not "
                             f"exceed seq_len = {self.seq_len}")
        super().__init__(seed, validation_size, test_size)

    def _generate(self, n, rng):
        T, first = self.seq_len, self.delay + self.order - 1
        bits = rng.integers(0, 2, size=(T, n))
        # running parity p[t] = x[0] ^ ... ^ x[t-1]; the window's parity is the XOR of two of them
        p = np.concatenate([np.zeros((1, n), dtype=np.int64), np.cumsum(bits, axis=0) % 2])
        t = np.arange(first, T)
        y = np.zeros((T, n), dtype=np.int64)
        y[first:] = p[t - self.delay + 1] ^ p[t - self.delay - self.order + 1]
        mask = np.zeros(T, dtype=np.float32)
        mask[first:] = 1
        return bits[..., None].astype(np.float32), y, mask

    def baselines(self) -> dict[str, float]:
        """Accuracy of always answering the test set's majority class (about 0.5)."""
        x, y, mask = self.test_set()
        sel = y[mask > 0]
        majority = int(np.bincount(sel.ravel(), minlength=2).argmax())
        logits = np.zeros(y.shape + (2,))
        logits[..., majority] = 1
        return {"majority class": self.score(logits, y, mask)}


class Recall(Task):
    """Delayed recall of a single input after a lag.

    At step 0 one of ``n_symbols`` symbols is shown (one-hot); the steps after it are blank until
    the last, where a cue channel is set and the target is the symbol from step 0 (lag
    ``seq_len - 1``).  Only the last step is scored.  Chance accuracy is 1 / n_symbols.

    Parameters
    ----------
    seq_len : int
        T >= 2: the lag plus one.
    n_symbols : int
        Alphabet size K >= 2; inputs have K + 1 channels (the last is the cue).
    """

    name = "recall"
    loss, metric = "cross_entropy", "accuracy"
    description = "recall one symbol after a lag (last step)"

    def __init__(self, seq_len: int = 50, n_symbols: int = 8, seed: int = 0, validation_size: int = 512,
                 test_size: int = 1000) -> None:
        self.seq_len = _positive(self.name, "seq_len", seq_len, least=2)
        self.n_symbols = _positive(self.name, "n_symbols", n_symbols, least=2)
        self.input_size, self.output_size = self.n_symbols + 1, self.n_symbols
        super().__init__(seed, validation_size, test_size)

    def _generate(self, n, rng):
        T, K = self.seq_len, self.n_symbols
        symbol = rng.integers(0, K, size=n)
        x = np.zeros((T, n, K + 1), dtype=np.float32)
        x[0, np.arange(n), symbol] = 1
        x[-1, :, K] = 1
        y = np.zeros((T, n), dtype=np.int64)
        y[-1] = symbol
        return x, y, _last_step_mask(T)

    def baselines(self) -> dict[str, float]:
        """Accuracy of always answering the test set's most frequent symbol (about 1/K)."""
        x, y, mask = self.test_set()
        majority = int(np.bincount(y[-1], minlength=self.n_symbols).argmax())
        logits = np.zeros(y.shape + (self.n_symbols,))
        logits[..., majority] = 1
        return {"majority class": self.score(logits, y, mask)}
