"""A trained run read back: ``bptt.load_run(path)``.

Loading checks what ``bptt evaluate`` and ``bptt train --resume`` check: ``config.json`` holds
valid options (a bad one names the file and the key), the checkpoint is a bptt checkpoint
written by a run of this configuration and task, and the data (a user's CSV, a task's fixed
sets) are those it was trained and scored on.
"""

from __future__ import annotations

import os
from dataclasses import asdict, fields

import numpy as np

from bptt.errors import ConfigError
from bptt.runs import rundir, streams
from bptt.runs.build import build_model, predict, task_fingerprint, threads_for
from bptt.runs.config import TrainConfig, prepare, upgrade
from bptt.runs.rundir import CHECKPOINT, CONFIG, RunMismatch

__all__ = ["LoadedRun", "load_run", "load_config", "run_meta", "check_meta", "load_weights"]

#: Examples of the validation set used for the gradient-flow curves.
_GRADFLOW_EXAMPLES = 32


class LoadedRun:
    """A run's model with the weights of its checkpoint, its resolved configuration and its task.

    Parameters
    ----------
    path : str
        The run directory.
    config : TrainConfig
        Resolved (``bptt.runs.config.prepare``).
    task : bptt.data.tasks.Task
    model : SequenceModel or LanguageModel
    step : int
        The updates the weights have had.
    seconds : float
        Training seconds so far.

    Examples
    --------
    >>> run = bptt.load_run("runs/adding-lstm")            # doctest: +SKIP
    >>> run.score("test")                                  # result.json's test value
    >>> x, y, mask = run.task.test_set()
    >>> y_pred = bptt.runs.build.predict(run.model, x)     # (T, B, O)
    """

    def __init__(self, path: str, config: TrainConfig, task, model, step: int = 0, seconds: float = 0.0):
        self.path, self.config, self.task, self.model = path, config, task, model
        self.step, self.seconds = step, seconds

    def __repr__(self):
        return f"<run {self.path}: {self.task.name}, {self.config.cell}, step {self.step}>"

    def score(self, part: str = "test") -> float:
        """The task's metric of the model on a fixed part, as the run scores it.

        A stateful run reads the part as one stream with the state carried
        (``bptt.runs.streams.score``); any other scores the part's fixed sequences, each from a
        zero state (``bptt.runs.build.predict``).  The BLAS threads are the run's
        (``bptt.runs.build.threads_for``), so the test value is ``result.json``'s to the bit.

        Parameters
        ----------
        part : {'test', 'validation'}

        Returns
        -------
        float
        """
        if part not in ("test", "validation"):
            raise ValueError(f"score: part must be 'test' or 'validation', got {part!r}")
        with threads_for(self.config):
            if self.config.stateful:
                return streams.score(self.model, self.task, part)
            x, y, mask = self.task.test_set() if part == "test" else self.task.validation_set()
            return float(self.task.score(predict(self.model, x), y, mask))

    def gradient_curves(self) -> np.ndarray:
        """Top-layer ||dL/dh_t|| per example on the first validation examples.

        Returns
        -------
        np.ndarray
            (B, T).
        """
        from bptt.data import tasks
        from bptt.diagnostics import hidden_grad_norms

        x, y, mask = self.task.validation_set()
        x, y = x[:, :_GRADFLOW_EXAMPLES], y[:, :_GRADFLOW_EXAMPLES]
        norms = hidden_grad_norms(self.model, x, y, tasks.loss_function(self.task), mask=mask, per_example=True)
        self.model.zero_grad()
        return np.asarray(norms[-1]).T


def load_run(path, option: str = "RUN_DIR") -> LoadedRun:
    """Read back the run in ``path``: its configuration, task and the model of its checkpoint.

    Parameters
    ----------
    path : str or path-like
        A run directory (``bptt train --out``).
    option : str
        What a ``ConfigError`` names: the command-line argument that gave ``path``.

    Returns
    -------
    LoadedRun
        With the checkpoint's weights, step and training seconds.

    Raises
    ------
    ConfigError
        ``path`` holds no ``config.json`` or no checkpoint, or a bad value in ``config.json``
        (naming the file and the key).
    CorruptRun
        A file of the run cannot be read, or the checkpoint does not fit the model.
    RunMismatch
        The checkpoint is of another configuration or task, or the data changed since.
    """
    path = os.fspath(path)
    config, task = load_config(path, option)
    model = build_model(config, task)
    arrays = rundir.load_checkpoint(path, option)
    check_meta(arrays["meta"], run_meta(config, task), os.path.join(path, CHECKPOINT))
    load_weights(model, arrays, os.path.join(path, CHECKPOINT))
    return LoadedRun(path, config, task, model, step=int(arrays["step"]), seconds=float(arrays["seconds"]))


def load_config(run_dir: str, option: str):
    """The run's ``config.json``, validated and resolved, and its task.

    Parameters
    ----------
    run_dir : str
    option : str
        What a ``ConfigError`` for a missing ``config.json`` names.

    Returns
    -------
    (TrainConfig, bptt.data.tasks.Task)
        As ``prepare`` returns them.

    Raises
    ------
    ConfigError
        A bad value names the file and the key.
    CorruptRun
        ``config.json`` is not a JSON object.
    """
    stored = upgrade(rundir.read_config(run_dir, option))
    path = os.path.join(run_dir, CONFIG)
    known = [f.name for f in fields(TrainConfig)]
    unknown = sorted(set(stored) - set(known))
    if unknown:
        raise ConfigError(path, f"unknown key(s) {', '.join(map(repr, unknown))}; a run's "
                                f"{CONFIG} holds {', '.join(known)}")
    try:
        return prepare(TrainConfig(**stored))
    except ConfigError as err:
        key = err.option.lstrip("-").replace("-", "_")
        key = "columns" if key == "column" else key
        raise ConfigError(f"{path}, key {key!r}" if key in known else path, err.message) from None


def run_meta(config: TrainConfig, task) -> dict:
    """The record a checkpoint keeps of what wrote it.

    Parameters
    ----------
    config : TrainConfig
        Resolved.
    task : bptt.data.tasks.Task

    Returns
    -------
    dict
        ``config`` (every option but ``steps``, which a resume may raise), the task's name and
        ``fingerprint`` (``task_fingerprint``), and ``data_sha256`` of a user's file (or None).
    """
    return {"config": {k: v for k, v in asdict(config).items() if k != "steps"},
            "task": task.name, "fingerprint": task_fingerprint(task),
            "data_sha256": None if config.data is None else rundir.file_sha256(config.data)}


def check_meta(meta, expected: dict, path: str) -> None:
    """Check a checkpoint's record against the run that reads it.

    Parameters
    ----------
    meta : dict
        The checkpoint's ``meta`` (``rundir.load_checkpoint`` parses it).
    expected : dict
        ``run_meta`` of the run's configuration and task.
    path : str
        The checkpoint, for messages.

    Raises
    ------
    RunMismatch
        A checkpoint of another configuration or task, or a file changed since training.
    """
    stored = meta.get("config") if isinstance(meta, dict) else None
    stored = upgrade(stored) if isinstance(stored, dict) else {}
    wrong = [k for k, v in expected["config"].items() if stored.get(k, "(missing)") != v]
    if wrong:
        then = ", ".join(f"{k}={stored.get(k, '(missing)')!r}" for k in wrong)
        now = ", ".join(f"{k}={expected['config'][k]!r}" for k in wrong)
        raise RunMismatch(f"{path} was written by a run with {then}, but {CONFIG} says {now}; "
                          f"restore {CONFIG} or start a new run")
    if meta.get("data_sha256") != expected["data_sha256"]:
        raise RunMismatch(f"{expected['config']['data']} changed since the run was trained on it (sha256 "
                          f"{str(meta.get('data_sha256'))[:12]}... then, "
                          f"{expected['data_sha256'][:12]}... now); restore the file to "
                          f"evaluate or resume, or train a new run on it")
    if meta.get("fingerprint") != expected["fingerprint"]:
        raise RunMismatch(f"the {expected['task']} task's validation and test data differ from "
                          f"those {path} was trained and scored on (another version of bptt "
                          f"or numpy?); its numbers would not be comparable")


def load_weights(model, arrays: dict, path: str) -> None:
    """Set ``model``'s parameters from a checkpoint's ``model.*`` arrays.

    Parameters
    ----------
    model : bptt.nn.Module
    arrays : dict
        ``rundir.load_checkpoint``'s arrays.
    path : str
        The checkpoint, for messages.

    Raises
    ------
    CorruptRun
        Arrays that do not fit the model.
    """
    try:
        model.load_state_dict({k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")})
    except (ValueError, TypeError, KeyError) as err:
        raise rundir.CorruptRun(f"{path}: does not fit the run's model ({err})") from None

