"""A run's walk: how it feeds its task to its trainer, one checkpointable stretch at a time.

Two walks share one interface (``Walk``):

* ``Sequences``: each stretch is one freshly drawn batch of independent sequences, fed from a
  zero state k1 steps at a time; nothing is carried across stretches.
* ``bptt.runs.streams.StreamTraining`` (``stateful``): each stretch is one window of k1 steps of
  the B training streams, the state carried from window to window.

The run builds its ``TBPTT`` with the walk's ``window_loss``, asks the walk for the updates of
the next stretch, and puts the walk's ``snapshot`` into its checkpoint.
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol

import numpy as np

from bptt.runs.config import TrainConfig
from bptt.runs.streams import StreamTraining

__all__ = ["Walk", "Sequences", "build_walk"]


class Walk(Protocol):
    """What a run asks of its walk."""

    #: ``window_loss`` for the run's ``TBPTT`` (None: the per-step loss).
    window_loss: Callable | None

    def updates(self, trainer) -> Iterator[dict]:
        """Train on the next stretch, yielding TBPTT's record of each update as it is made."""

    def snapshot(self, trainer) -> dict:
        """What the checkpoint needs to continue the walk, as ``{name: array}`` copies."""

    def restore(self, trainer, arrays: dict) -> None:
        """Continue from a checkpoint's arrays."""


class Sequences:
    """The walk of independent sequences: one ``task.batch`` per stretch, from a zero state.

    The sequence goes to the trainer k1 steps at a time (which trains exactly as feeding it at
    once), so every record arrives, and is timed, when its update is done; when k1 does not
    divide T the last update comes from ``trainer.finish()``.

    Parameters
    ----------
    task : bptt.data.tasks.Task
    config : TrainConfig
        Its ``batch`` and ``k1``.
    rng : numpy.random.Generator
        The run's training-batch generator (its state is the run's to checkpoint).
    """

    window_loss = None

    def __init__(self, task, config: TrainConfig, rng: np.random.Generator):
        self.task, self.batch, self.k1, self.rng = task, config.batch, config.k1, rng

    def updates(self, trainer) -> Iterator[dict]:
        """Draw a batch and train on it, yielding each update's record."""
        x, y, mask = self.task.batch(self.batch, self.rng)
        trainer.reset_state()
        for start in range(0, len(x), self.k1):
            window = slice(start, start + self.k1)
            yield from trainer.run(x[window], y[window], mask[window])
        yield from trainer.finish() or ()

    def snapshot(self, trainer) -> dict:
        """Nothing: no state outlives a stretch (the generator is the run's)."""
        return {}

    def restore(self, trainer, arrays: dict) -> None:
        """Nothing to restore (see ``snapshot``)."""


def build_walk(task, config: TrainConfig, rng: np.random.Generator) -> Walk:
    """The walk of a run of the resolved ``config``.

    Parameters
    ----------
    task : bptt.data.tasks.Task
    config : TrainConfig
    rng : numpy.random.Generator
        The run's training-batch generator.

    Returns
    -------
    Walk
        ``StreamTraining`` for a ``stateful`` run, else ``Sequences``.
    """
    return StreamTraining(task, config) if config.stateful else Sequences(task, config, rng)
