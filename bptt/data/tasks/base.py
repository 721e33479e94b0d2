"""What every task shares: sizes, loss and metric, fixed validation/test sets, scoring."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from bptt.errors import integer
from bptt.rng import generator

__all__ = ["Task", "METRICS"]

METRICS = {"mse": "mse", "rmse": "mse", "mae": "mse", "accuracy": "cross_entropy",
           "cross_entropy": "cross_entropy"}   # metric -> the loss it belongs with


class Task:
    """A sequence task: batches ``(x, y, mask)`` shaped (T, B, ...) drawn from a Generator.

    Subclasses set the attributes below and implement ``_generate(n, rng)`` and ``baselines()``.

    Attributes
    ----------
    name : str
    input_size, output_size : int
        I and O (O = number of classes for 'cross_entropy' tasks).
    loss : {'mse', 'cross_entropy'}
        What training minimises, per step (``bptt.data.tasks.loss_function``).
    metric : {'mse', 'rmse', 'mae', 'accuracy', 'cross_entropy'}
        What ``score`` reports.
    seq_len : int
        T.
    seed : int
        Fixes the validation and test sets (and a synthetic series).
    kind : {'sequences', 'series', 'text'}
        What the data are: independent sequences drawn fresh (the toy tasks), one series cut in
        time order into parts (forecasting; these tasks also have ``unscale``), or one text of
        character ids (inputs (T, B) int64 for an embedding, not (T, B, I) values).  Callers ask
        the task (``kind``, ``streamable``, ``forecasting``) instead of testing its class.
    has_levels : bool
        True when the baselines are levels a model steps through (``level_reached`` names the
        one a value is at).
    description : str
        One line: what the task tests.
    """

    name = ""
    input_size = output_size = seq_len = 0
    loss = "mse"
    metric = "mse"
    kind = "sequences"
    has_levels = False
    description = ""

    def __init__(self, seed: int = 0, validation_size: int = 512, test_size: int = 1000) -> None:
        who = f"task {self.name!r}"
        self.seed = integer(seed, "seed", who, least=0)
        self.validation_size = integer(validation_size, "validation_size", who)
        self.test_size = integer(test_size, "test_size", who)
        self._fixed: dict[str, Any] = {}

    @property
    def forecasting(self) -> bool:
        """True for a series task."""
        return self.kind == "series"

    @property
    def streamable(self) -> bool:
        """True when the parts are one long stream (a series or a text) that stateful training
        and scoring read with the state carried (``bptt.runs.streams``)."""
        return self.kind != "sequences"

    # --- data ---------------------------------------------------------------------------------
    def batch(self, batch_size: int,
              rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A fresh batch.

        Parameters
        ----------
        batch_size : int
            B.
        rng : numpy.random.Generator, optional
            The package-wide generator when None.

        Returns
        -------
        x : np.ndarray
            float32 (T, B, I).
        y : np.ndarray
            float32 (T, B, O) for 'mse' tasks; int64 class indices (T, B) for 'cross_entropy'.
        mask : np.ndarray
            float32 (T,): 1 at the steps the loss and metric count, 0 elsewhere.
        """
        return self._generate(integer(batch_size, "batch_size", f"task {self.name!r}"), generator(rng))

    def validation_set(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fixed validation set ``(x, y, mask)``, the same for the same seed."""
        return self._fixed_set("validation", 1, self.validation_size)

    def test_set(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fixed test set ``(x, y, mask)``, the same for the same seed."""
        return self._fixed_set("test", 2, self.test_size)

    def _fixed_set(self, part, stream, size):
        if part not in self._fixed:
            # A stream of its own per part: the test set does not move when validation_size does.
            self._fixed[part] = self._generate(size, np.random.default_rng([self.seed, stream]))
        return self._fixed[part]

    def _generate(self, n, rng):
        raise NotImplementedError

    # --- scoring ------------------------------------------------------------------------------
    def score(self, pred: ArrayLike, y: ArrayLike, mask: ArrayLike) -> float:
        """The task's metric of predictions ``pred`` against ``y`` over the steps ``mask`` selects.

        Parameters
        ----------
        pred : np.ndarray
            (T, B, O): values for 'mse' tasks, logits for 'cross_entropy' tasks.
        y, mask : np.ndarray
            As returned by ``batch`` / ``test_set``.

        Returns
        -------
        float
            Averaged over the selected steps and the batch (weighted by ``mask``).
        """
        pred = np.asarray(pred, dtype=np.float64)
        y = np.asarray(y)
        mask = np.asarray(mask, dtype=np.float64)
        T, B = y.shape[:2]
        want = (T, B, self.output_size)
        if pred.shape != want:
            raise ValueError(f"task {self.name!r}: score needs pred of shape (T, B, O) = {want}, "
                             f"got {pred.shape}")
        if mask.shape != (T,):
            raise ValueError(f"task {self.name!r}: score needs mask of shape (T,) = {(T,)}, "
                             f"got {mask.shape}")
        if mask.sum() <= 0:
            raise ValueError(f"task {self.name!r}: mask selects no step")
        if self.loss == "cross_entropy":
            if self.metric == "accuracy":
                per = (pred.argmax(axis=-1) == y).astype(np.float64)
            else:
                from scipy.special import log_softmax

                per = -np.take_along_axis(log_softmax(pred, axis=-1), y[..., None], axis=-1)[..., 0]
        else:
            d = self._errors(pred, y)
            per = np.abs(d).mean(axis=-1) if self.metric == "mae" else (d * d).mean(axis=-1)
        value = float((per * mask[:, None]).sum() / (mask.sum() * B))
        return float(np.sqrt(value)) if self.metric == "rmse" else value

    def _errors(self, pred, y):
        return pred - y

    def baselines(self) -> dict[str, float]:
        """``{name: metric value}`` of simple reference predictors on the test set."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: sizes, loss, metric, baselines (what ``bptt tasks`` prints)."""
        return {"name": self.name, "description": self.description, "forecasting": self.forecasting,
                "input_size": self.input_size, "output_size": self.output_size,
                "seq_len": self.seq_len, "loss": self.loss, "metric": self.metric,
                "sizes": self.sizes(), "baselines": self.baselines()}

    def sizes(self) -> dict[str, int | None]:
        """Sequences (toy tasks) or time points (series) in each part."""
        return {"train": None, "validation": self.validation_size, "test": self.test_size}

    def __repr__(self) -> str:
        return (f"<task {self.name}: T={self.seq_len} I={self.input_size} O={self.output_size} "
                f"loss={self.loss} metric={self.metric}>")
