"""Stateful training and scoring over long streams: a series or a text read with its state carried.

Training (``bptt train --stateful``).  The training part, as one sequence of (input, next target)
pairs, is cut into B contiguous streams, one per batch column, as PyTorch's word_language_model
example "batchifies" a corpus::

    pairs 0 .. N-1   ->   column j = pairs[j L : (j + 1) L],  L = N // B   (the rest is dropped)

One epoch walks the columns from start to end in windows of k1 steps through ``bptt.TBPTT``,
which carries the state across windows (k2 steps backpropagated at each update) and is reset only
at the start of an epoch.  A window makes one update; the last window of an epoch may be shorter
and makes its update through ``finish``.  Between windows a run can checkpoint: the stream's
position, the epoch, the carried state and the steps a later update still reaches back into
(``TBPTT.stream_state``) join the checkpoint, and a resumed run continues the walk exactly.

Scoring.  The validation and test parts are each scored as one stream with the state carried from
its start to its end, no resets inside (how stateful models are scored).  A text part starts
from a zero state with the character before it as the first input, so every character of the
part is predicted once; a series part is read from the start of the series (the earlier parts
warm the state up) and only its own target times are scored.

Series and texts (``task.streamable``) are streamed; the toy tasks, whose sequences are
independent by construction, are not.  ``StreamTraining`` is the run's walk
(``bptt.runs.walks``) of a stateful run.
"""

from __future__ import annotations

import math

import numpy as np

from bptt.errors import ConfigError
from bptt.tape import no_grad

__all__ = ["batchify", "part_stream", "score", "updates_per_epoch", "window_loss", "configure",
           "StreamTraining"]

#: Steps per forward pass when a part is scored: bounds the memory of a long part.
SCORE_CHUNK = 2000


def batchify(a, streams):
    """Cut a sequence into ``streams`` contiguous columns.

    Parameters
    ----------
    a : np.ndarray
        (N, ...), time first.
    streams : int
        B.

    Returns
    -------
    np.ndarray
        (N // B, B, ...): column j holds ``a[j L:(j + 1) L]`` for L = N // B.
    """
    L = len(a) // streams
    return np.swapaxes(a[:L * streams].reshape(streams, L, *a.shape[1:]), 0, 1)


def part_stream(task, part):
    """One part of ``task`` as one sequence ``(x, y, mask)``, the targets next to their inputs.

    'train' is every pair of the training part; for 'validation' and 'test' see the module
    docstring (a series reads from its start, with the earlier targets masked out).

    Shapes: x (N,) int64 for a text, (N, I) for a series; y (N,) or (N, 1); mask (N,).
    """
    if task.kind == "text":
        if part == "train":
            ids = task.ids[task.parts["train"]]
            return ids[:-1], ids[1:], np.ones(len(ids) - 1, dtype=np.float32)
        return task.stream(part)
    s, h = task.parts[part], task.horizon
    t = np.arange(0, s.stop - h)
    x = task.scaled_inputs[t].astype(np.float32)
    y = task.scaled_target[t + h, None].astype(np.float32)
    mask = (t + h >= s.start).astype(np.float32)
    return x, y, mask


def score(model, task, part):
    """The task's metric of ``model`` on a part read as one stream with its state carried.

    The part goes through ``model(x, state)`` in chunks of ``SCORE_CHUNK`` steps, without
    recording and in eval mode.
    """
    x, y, mask = part_stream(task, part)
    x, y = x[:, None], y[:, None]
    preds, state = [], None
    model.eval()
    try:
        with no_grad():
            for a in range(0, len(x), SCORE_CHUNK):
                out, state = model(x[a:a + SCORE_CHUNK], state)
                preds.append(np.asarray(out.data))
    finally:
        model.train()
    return float(task.score(np.concatenate(preds), y, mask))


def _stream_length(task, config):
    """L, the steps of each of the B training streams."""
    return len(part_stream(task, "train")[0]) // config.batch


def updates_per_epoch(task, config):
    """Updates one epoch makes: ceil(L / k1) for streams of L steps."""
    return math.ceil(_stream_length(task, config) / config.k1)


def configure(config, task):
    """Check that ``task`` can be streamed as ``config`` asks; fill ``config.steps`` from
    ``config.epochs`` when given.

    Raises
    ------
    ConfigError
        A task that is not a series or a text, or a training part too short for B streams of
        T + 1 points each.
    """
    if config.epochs is not None and not config.stateful:
        raise ConfigError("--epochs", "counts passes over the training streams; it needs --stateful "
                                      "(without it, give --steps)")
    if not config.stateful:
        return
    if not task.streamable:
        raise ConfigError("--stateful", f"task {task.name!r} draws independent sequences; stateful "
                                        f"training needs a series or a text task")
    n = task.parts["train"].stop
    need = config.batch * (config.seq_len + 1)
    if n < need:
        unit = "points" if task.forecasting else "characters"
        where = getattr(task, "source", task.name)
        raise ConfigError("--batch", f"{where}: the training part has {n} {unit}, fewer than "
                                     f"batch x (seq_len + 1) = {config.batch} x {config.seq_len + 1} "
                                     f"= {need} for {config.batch} streams; lower --batch or --seq-len")
    if config.epochs is not None:
        config.steps = config.epochs * updates_per_epoch(task, config)


def window_loss(task):
    """``window_loss(y_pred, y)`` -> the (n,) per-step losses of an n-step window, as
    ``bptt.data.tasks.loss_function(task)`` gives them step by step (one entry per window)."""
    from bptt.nn import losses

    if task.loss == "cross_entropy":
        return lambda y_pred, y: losses.cross_entropy(y_pred, y, reduction="none").mean(axis=1)
    return lambda y_pred, y: losses.mse_loss(y_pred, y, reduction="none").mean(axis=(1, 2))


class StreamTraining:
    """The walk of a stateful run: the training part as B streams walked in windows of k1 steps.

    The trainer it is given (the run's ``TBPTT``, built with ``window_loss``) carries the state
    from window to window; the walk resets it at the start of each epoch.

    Parameters
    ----------
    task : SeriesTask or TextTask
        A task whose ``streamable`` is True.
    config : TrainConfig
        Its ``batch`` (B) and ``k1``.

    Attributes
    ----------
    window_loss : callable
        The per-window loss of the task (``window_loss(task)``), for the run's ``TBPTT``.
    epoch : int
        Completed passes over the streams.
    position : int
        Steps of the current pass walked so far (0 at the start of an epoch).
    x, y : np.ndarray
        The streams, (L, B, ...).
    """

    def __init__(self, task, config):
        x, y, _ = part_stream(task, "train")
        self.x, self.y = batchify(x, config.batch), batchify(y, config.batch)
        self.k1 = config.k1
        self.window_loss = window_loss(task)
        self.epoch = 0
        self.position = 0

    def updates(self, trainer):
        """Walk the next window (one update), yielding its record; at the end of the streams
        make the update of a partial window and reset the state for the next epoch.

        Parameters
        ----------
        trainer : bptt.TBPTT

        Returns
        -------
        iterator of dict
            TBPTT's records.
        """
        a, b = self.position, min(self.position + self.k1, len(self.x))
        yield from trainer.run(self.x[a:b], self.y[a:b])
        self.position = b
        if b == len(self.x):
            yield from trainer.finish()
            trainer.reset_state()
            self.epoch += 1
            self.position = 0

    def snapshot(self, trainer):
        """The walk's epoch and position and the trainer's stream state (``TBPTT.stream_state``),
        as ``{name: array}`` copies that join the checkpoint."""
        arrays = {"stream.epoch": np.asarray(self.epoch, dtype=np.int64),
                  "stream.position": np.asarray(self.position, dtype=np.int64)}
        arrays.update({"stream.tbptt." + k: np.array(v, copy=True)
                       for k, v in trainer.stream_state().items()})
        return arrays

    def restore(self, trainer, arrays):
        """Continue the walk, and the trainer's stream, from a ``snapshot``."""
        self.epoch = int(arrays["stream.epoch"])
        self.position = int(arrays["stream.position"])
        prefix = "stream.tbptt."
        trainer.load_stream_state({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
