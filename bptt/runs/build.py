"""The pieces of a run built from its resolved configuration: model, optimizer, BLAS threads;
and what a run computes with them on a whole set: predictions and the task's fingerprint."""

from __future__ import annotations

import hashlib

import numpy as np

from bptt import nn
from bptt import rng as bptt_rng
from bptt.tape import no_grad
from bptt import blas
from bptt.nn import registry as cell_registry
from bptt.runs.config import OPTIMIZERS, SCORE_STEPS, TrainConfig

__all__ = ["build_model", "build_optimizer", "predict", "task_fingerprint", "threads_for"]


def build_model(config: TrainConfig, task):
    """The model of a run, drawn from the package generator seeded with ``config.seed``.

    Parameters
    ----------
    config : TrainConfig
        Resolved by ``bptt.runs.config.prepare`` (its ``cell_options`` complete).
    task : bptt.data.tasks.Task

    Returns
    -------
    SequenceModel or LanguageModel
        A ``LanguageModel`` for a text task (character ids in, an embedding first).
    """
    bptt_rng.seed(config.seed)
    options = dict(num_layers=config.layers, init=config.init, **config.cell_options)
    if task.kind == "text":
        return nn.LanguageModel(config.cell, task.output_size, config.embed or config.hidden,
                                     config.hidden, **options)
    return nn.SequenceModel(config.cell, task.input_size, config.hidden, task.output_size, **options)


def build_optimizer(config: TrainConfig, model):
    """The ``bptt.optim`` optimizer ``config.optimizer`` names, at ``config.lr``, over ``model``'s parameters.

    Parameters
    ----------
    config : TrainConfig
        Resolved.
    model : bptt.nn.Module

    Returns
    -------
    optimizer of bptt.optim
    """
    from bptt import optim

    return getattr(optim, OPTIMIZERS[config.optimizer][0])(model.parameters(), lr=config.lr)


def predict(model, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """The model's outputs over a whole set, on the fast path, without recording.

    The examples go through ``batch_size`` at a time (each from a zero state, as at once), so
    the memory does not grow with the size of the set.

    Parameters
    ----------
    model : SequenceModel or LanguageModel
    x : np.ndarray
        (T, B, I), or (T, B) character ids.
    batch_size : int, optional
        By default as many examples as make ``SCORE_STEPS`` example-steps.

    Returns
    -------
    np.ndarray
        (T, B, O).
    """
    if batch_size is None:
        batch_size = max(1, SCORE_STEPS // max(1, x.shape[0]))
    model.eval()
    try:
        with no_grad():
            parts = [np.asarray(model(x[:, i:i + batch_size])[0].data)
                     for i in range(0, x.shape[1], batch_size)]
    finally:
        model.train()
    return np.concatenate(parts, axis=1)


def task_fingerprint(task) -> str:
    """sha256 of the task's fixed validation and test sets: changes when its data do.

    Parameters
    ----------
    task : bptt.data.tasks.Task

    Returns
    -------
    str
        Hex digest.
    """
    h = hashlib.sha256()
    for part in (task.validation_set(), task.test_set()):
        for a in part:
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def threads_for(config: TrainConfig, threads: int | None = None):
    """``blas.limit`` for a run of the resolved ``config``.

    Parameters
    ----------
    config : TrainConfig
    threads : int, optional
        The count to use; by default the user's own (``bptt.threads``, ``OPENBLAS_NUM_THREADS``)
        or else the default for the run's per-step product, (batch, hidden) @ (hidden, gates*hidden).

    Returns
    -------
    context manager
    """
    gates = len(cell_registry.get(config.cell).gates)
    return blas.limit(threads, config.batch * gates * config.hidden ** 2)
