"""Training runs: the engine behind ``bptt train`` and ``bptt evaluate`` (``train``, ``resume``,
``evaluate``).

A run trains a ``SequenceModel`` on a task from ``bptt.data.tasks`` with truncated BPTT and keeps
everything in one directory::

    runs/NAME/
      config.json      every option, resolved (seq_len, k1, k2 and lr filled in)
      metrics.csv      one row per optimizer update, flushed after each sequence's rows:
                       step, train_loss, val_metric (filled at the sequence boundary at or after
                       every multiple of val_every and at the end), grad_norm (before clipping),
                       clipped (0/1), lr, seconds (training time so far)
      checkpoint.npz   model and optimizer state, both random generators' states, the step
                       counter, training seconds and the start-of-training gradient curve;
                       written atomically
      result.json      task, metric, test value, baselines, steps, seconds (the training loop's,
                       summed over resumes; not the final scoring and figures), cell, seq_len,
                       k1, k2 and the k2 that the final gradient curve suggests; for a task
                       whose baselines are levels (lag) the level the test value reached
      loss.png         training loss and validation metric against steps
      gradflow.png     ||dL/dh_t|| against lag at the start and the end of training
      gradflow.csv     the curves drawn there, one row per (stage, example)
      predictions.png  forecasting tasks only: test predictions against the truth

How steps count
---------------
A step is one optimizer update.  Each training *sequence* is one ``task.batch(batch, rng)`` of
independent sequences of length T (windows of the training part for series), fed through
``bptt.TBPTT`` from a zero state, which is reset before the next sequence.  With
``k1 = k2 = T`` (the default, full BPTT) a sequence gives one update; with ``k1 < T`` it gives
``ceil(T / k1)`` (the last from ``trainer.finish()`` when k1 does not divide T).  A run draws
whole sequences until it has made at least ``steps`` updates, so ``steps`` is rounded up to a
whole number of sequences and ``result.json`` reports the updates actually made.  Validation and
checkpoints happen at sequence boundaries, where no recurrent state is carried: a checkpoint
therefore needs no TBPTT state, and resuming from it continues exactly as an uninterrupted run.
Ctrl-C (KeyboardInterrupt) and a NaN/inf loss both leave the checkpoint at the last boundary
reached with finite numbers.  With ``stateful`` (``bptt.runs.streams``) a sequence is instead one
window of k1 steps of the B training streams, the state carried from window to window, and the
checkpoint also holds the stream's position and what TBPTT carries (``TBPTT.stream_state``).
Which of the two a run does is its walk (``bptt.runs.walks``).

The modules around this one: ``config`` (``TrainConfig``, ``prepare``), ``build`` (model,
optimizer, predictions), ``load`` (``load_run``: a run read back and checked), ``artifacts``
(``result.json``, the figures, the summary line), ``rundir`` (the files under faults).  The
library prints nothing of its own: messages go to the ``echo`` a caller passes (standard error
by default) and progress to its ``progress``; the command line passes its own.

The training batches come from their own generator, seeded by ``(seed, a fixed tag)`` and kept
in the checkpoint, so they never coincide with the task's fixed validation and test sets.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict
from typing import Callable

import numpy as np

from bptt import rng as bptt_rng
from bptt.errors import ConfigError, Interrupted, RunError, option_integer
from bptt.io import save_json, save_npz
from bptt.nn import recompute
from bptt.runs import artifacts, rundir
from bptt.runs.build import build_model, build_optimizer, threads_for
from bptt.runs.config import TrainConfig, prepare
from bptt.runs.load import LoadedRun, check_meta, load_config, load_run, load_weights, run_meta
from bptt.runs.rundir import CHECKPOINT, CONFIG, METRICS
from bptt.runs.walks import build_walk

__all__ = ["TrainConfig", "TrainingDiverged", "train", "resume", "evaluate", "echo_stderr", "progress_display"]

#: The training-batch stream is seeded from (seed, this tag), never from ``seed`` alone, so it
#: cannot coincide with a task's fixed validation or test stream drawn from the same integer.
_DATA_STREAM = 0x7472616E


class TrainingDiverged(RunError):
    """The loss or gradient norm became NaN or infinite; the last good checkpoint was kept."""


def echo_stderr(message: str) -> None:
    """The library's default ``echo``: one line to standard error.

    Parameters
    ----------
    message : str
    """
    print(message, file=sys.stderr, flush=True)


class _Silent:
    """The progress display of ``progress=None``."""

    def __init__(self, total):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, *done):
        pass


def progress_display(progress: Callable | None) -> Callable:
    """The ``progress`` a caller passed, checked before anything starts.

    Parameters
    ----------
    progress : callable or None
        ``progress(total)`` returns a context manager with ``update(...)``.

    Returns
    -------
    callable
        ``progress``, or for None one whose display shows nothing.

    Raises
    ------
    TypeError
        Anything else.
    """
    if not progress:
        return _Silent
    if not callable(progress):
        raise TypeError(f"progress must be None or a callable progress(total), got {progress!r}")
    return progress


def train(config: TrainConfig, out, progress: Callable | None = None, on_update: Callable | None = None,
          echo: Callable[[str], None] = echo_stderr, threads: int | None = None) -> dict:
    """Train a fresh run, checkpointing into ``out``; return the ``result.json`` object.

    Parameters
    ----------
    config : TrainConfig
        Validated here: ``ConfigError`` names the bad option.
    out : str or path
        The run directory; created if missing.  One that already holds a run, or any other
        files, is refused.  It is locked while the run trains.
    progress : callable, optional
        ``progress(total)`` returning a context manager with ``update(steps, loss)``, called
        after each sequence with the updates it made and the running (exponentially averaged)
        loss; the command line passes its bar (``bptt.cli.ProgressBar``).  None shows nothing.
    on_update : callable, optional
        Called as ``on_update(step, record)`` after every update, ``record`` TBPTT's dict.
    echo : callable
        Where messages go, one string per call; standard error by default.
    threads : int, optional
        BLAS threads; by default the user's (``bptt.threads``, ``OPENBLAS_NUM_THREADS``) or else
        one for small layers (``bptt.blas.default_threads``).

    Returns
    -------
    dict
        The object written to ``result.json``.

    Raises
    ------
    ConfigError
        An invalid option, a task (a CSV) that cannot be built, or an ``out`` that holds files.
    RunLocked
        Another process holds ``out``.
    TrainingDiverged
        On a NaN or infinite loss or gradient norm; the checkpoint keeps the last finite state.
    KeyboardInterrupt
        Re-raised once the state at the last sequence boundary is saved to the checkpoint.
    """
    out, progress = os.fspath(out), progress_display(progress)
    config, task = prepare(config)
    rundir.check_fresh(out)
    with rundir.lock(out, echo):
        rundir.check_fresh(out)     # again, now that no other process can be starting a run here
        with threads_for(config, threads):
            run = _Run(config, task, out)
            run.gradflow_start = run.gradient_curves()
            save_npz(os.path.join(out, CHECKPOINT), run.snapshot())   # from here on the folder is a run
            save_json(os.path.join(out, CONFIG), asdict(run.config))
            return _execute(run, rundir.MetricsLog(os.path.join(out, METRICS)), progress, on_update, echo)


def resume(out, steps: int | None = None, progress: Callable | None = None, on_update: Callable | None = None,
           echo: Callable[[str], None] = echo_stderr, threads: int | None = None) -> dict:
    """Continue the run in ``out`` from its checkpoint up to ``steps`` updates in total.

    The metrics and parameters then equal those of an uninterrupted run; rows an interrupted
    run logged after its checkpoint are dropped.

    Parameters
    ----------
    out : str or path
        The run directory.
    steps : int, optional
        The updates to reach in total; None keeps the stored target.  One at or below the
        updates already made is a ``ConfigError`` and changes nothing.
    progress, on_update, echo, threads :
        As for ``train``.

    Returns
    -------
    dict
        The object written to ``result.json``.

    Raises
    ------
    ConfigError
        ``out`` is not a run, its ``config.json`` holds a bad value (naming the file and key),
        or ``steps`` is not above the updates made.
    RunLocked, CorruptRun, RunMismatch
        Another process holds ``out``; a file of the run is unreadable; the checkpoint is not
        of this configuration and task, or the data changed.
    TrainingDiverged, KeyboardInterrupt
        As for ``train``.
    """
    out, progress = os.fspath(out), progress_display(progress)
    if not any(os.path.isfile(os.path.join(out, n)) for n in (CONFIG, CHECKPOINT)):
        raise ConfigError("--resume", f"{out}: not a run directory (no {CONFIG})")
    with rundir.lock(out, echo):
        if not os.path.exists(os.path.join(out, CONFIG)):
            # killed between its first checkpoint and config.json: the checkpoint has it all
            meta = rundir.load_checkpoint(out, "--resume")["meta"]
            try:
                stored = {**meta["config"], "steps": meta["steps"]}
            except (KeyError, TypeError):
                raise rundir.CorruptRun(f"{out}: no {CONFIG}, and {CHECKPOINT} does not record "
                                        f"the configuration either") from None
            save_json(os.path.join(out, CONFIG), stored)
            echo(f"note: {out} lacked {CONFIG} (a run killed as it started); restored it from "
                 f"{CHECKPOINT}")
        config, task = load_config(out, "--resume")
        arrays = rundir.load_checkpoint(out, "--resume")
        run = _Run(config, task, out)
        run.restore(arrays)
        if steps is not None:
            steps = option_integer(steps, "--steps")
            if steps <= run.step:
                raise ConfigError("--steps", f"{out} has made {run.step} updates already, so "
                                             f"--steps {steps} leaves nothing to do; ask for more, "
                                             f"or re-score it with bptt evaluate {out}")
            run.config.steps = steps
            save_json(os.path.join(out, CONFIG), asdict(run.config))
        echo(f"resuming {out} at step {run.step} of {run.config.steps}")
        log = rundir.MetricsLog(os.path.join(out, METRICS), keep_through_step=run.step)
        with threads_for(config, threads):
            return _execute(run, log, progress, on_update, echo)


def evaluate(run_dir, threads: int | None = None) -> dict:
    """Re-score a run's checkpoint on its task's test set.

    Parameters
    ----------
    run_dir : str or path
    threads : int, optional
        As for ``train``.

    Returns
    -------
    dict
        The same object as the run's ``result.json`` (its steps and seconds are the
        checkpoint's).

    Raises
    ------
    ConfigError, CorruptRun, RunMismatch
        As ``bptt.runs.load.load_run`` (nothing is written, so no lock is taken).
    """
    run = load_run(run_dir)
    with threads_for(run.config, threads):
        return artifacts.result(run)[0]


# -- the run being trained ---------------------------------------------------------------------
class _Run(LoadedRun):
    """A run being trained: a loaded run with its optimizer, trainer, walk and generators, between
    sequences."""

    def __init__(self, config, task, out):
        from bptt.credit.tbptt import TBPTT
        from bptt.data import tasks

        super().__init__(out, config, task, build_model(config, task))
        self.optimizer = build_optimizer(config, self.model)
        self.data_rng = np.random.default_rng([config.seed, _DATA_STREAM])
        self.walk = build_walk(task, config, self.data_rng)
        self.trainer = TBPTT(self.model, tasks.loss_function(task), self.optimizer, config.k1, config.k2,
                             clip_norm=config.clip or None, window_loss=self.walk.window_loss,
                             checkpoint=config.checkpoint, max_bias=config.max_bias)
        if config.checkpoint is not None:
            self._check_budget()
        self.gradflow_start = None
        self.meta = run_meta(config, task)

    # checkpoint <-> arrays
    def snapshot(self):
        """Everything a resume needs, as ``{name: array}`` copies (the npz layout)."""
        arrays = {"model." + k: v for k, v in self.model.state_dict().items()}
        arrays.update({"optim." + k: np.array(v, copy=True) for k, v in self.optimizer.state_dict().items()})
        arrays["rng.package"] = _json_array(bptt_rng.get_state())
        arrays["rng.data"] = _json_array(self.data_rng.bit_generator.state)
        arrays["step"] = np.asarray(self.step, dtype=np.int64)
        arrays["seconds"] = np.asarray(self.seconds, dtype=np.float64)
        arrays["meta"] = np.asarray(json.dumps({**self.meta, "steps": self.config.steps}))
        if self.gradflow_start is not None:
            arrays["gradflow_start"] = self.gradflow_start
        arrays.update(self.walk.snapshot(self.trainer))
        return arrays

    def restore(self, arrays):
        """Load a checkpoint's arrays (``rundir.load_checkpoint``) after checking they belong here.

        Raises
        ------
        RunMismatch
            A checkpoint of another configuration or task, or a CSV changed since training.
        CorruptRun
            Arrays that do not fit the model, the optimizer or the generators.
        """
        path = os.path.join(self.path, CHECKPOINT)
        check_meta(arrays["meta"], self.meta, path)
        load_weights(self.model, arrays, path)
        try:
            self.optimizer.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("optim.")})
            bptt_rng.set_state(json.loads(str(arrays["rng.package"])))
            self.data_rng.bit_generator.state = json.loads(str(arrays["rng.data"]))
            self.step = int(arrays["step"])
            self.seconds = float(arrays["seconds"])
        except (ValueError, TypeError, KeyError) as err:
            raise rundir.CorruptRun(f"{path}: does not fit the run's model ({err})") from None
        self.gradflow_start = arrays.get("gradflow_start")
        self.walk.restore(self.trainer, arrays)

    def parameters_finite(self):
        return all(np.isfinite(p.data).all() for p in self.model.parameters())

    def _check_budget(self):
        """A memory budget too small for the model's windows is a usage error, found here, before
        the run folder holds anything: one window of zeros runs through the checkpointed layers
        (their footprints, measured now, are cached for training)."""
        c = self.config
        T = min(c.k2, c.seq_len)
        zeros = (np.zeros((T, c.batch), np.int64) if self.task.kind == "text"
                 else np.zeros((T, c.batch, self.task.input_size), np.float32))
        try:
            self.model(zeros, checkpoint=c.checkpoint)
        except recompute.BudgetError as err:
            raise ConfigError("--checkpoint", str(err)) from None

    def updates(self):
        """Train on the walk's next stretch (one sequence, or one window of the streams),
        yielding each update's record as it is made."""
        yield from self.walk.updates(self.trainer)


def _json_array(state):
    # A generator's state holds 128-bit integers, which no numeric npz array can; a JSON string
    # array can, and loads without unpickling.
    return np.asarray(json.dumps(state))


def _execute(run, log, progress, on_update, echo):
    try:
        _loop(run, log, os.path.join(run.path, CHECKPOINT), progress, on_update, echo)
    finally:
        log.close()
    return artifacts.write_result(run, run.gradflow_start)


def _loop(run, log, ckpt_path, progress, on_update, echo):
    """Draw sequences until ``config.steps`` updates are made, logging and checkpointing.

    Each sequence's rows are written before the checkpoint that follows them, so the log is
    never behind the checkpoint.
    """
    config = run.config
    good = run.snapshot()
    base, started = run.seconds, time.perf_counter()
    running = None   # exponentially averaged loss, for the progress display
    try:
        with progress(max(config.steps - run.step, 0)) as bar:
            while run.step < config.steps:
                before, rows = run.step, []
                for record in run.updates():
                    run.step += 1
                    loss, norm = float(record["loss"]), float(record["grad_norm"])
                    rows.append([run.step, loss, None, norm, int(bool(record["clipped"])),
                                 float(run.optimizer.lr), round(base + time.perf_counter() - started, 3)])
                    if not (math.isfinite(loss) and math.isfinite(norm)):
                        break
                    running = loss if running is None else 0.98 * running + 0.02 * loss
                    if on_update is not None:
                        on_update(run.step, record)
                finite = math.isfinite(loss) and math.isfinite(norm)
                if not (finite and run.parameters_finite()):
                    log.write_rows(rows)
                    save_npz(ckpt_path, good)
                    what = (f"loss {loss}, gradient norm {norm}" if not finite
                            else "the parameters became NaN or infinite")
                    clip = f"{config.clip:g}" if config.clip else "0, none"
                    raise TrainingDiverged(
                        f"training diverged at step {run.step}: {what}; try a lower --lr (now "
                        f"{config.lr:g}) or a --clip limit (now {clip}). {ckpt_path} keeps the last "
                        f"good state, after step {int(good['step'])}")
                crossed = run.step // config.val_every > before // config.val_every
                if crossed or run.step >= config.steps:
                    rows[-1][2] = run.score("validation")
                run.seconds = base + time.perf_counter() - started
                log.write_rows(rows)
                good = run.snapshot()
                if crossed or run.step >= config.steps:
                    save_npz(ckpt_path, good)
                bar.update(run.step - before, running)
    except KeyboardInterrupt as err:
        save_npz(ckpt_path, good)
        message = (f"interrupted: saved the state after step {int(good['step'])} to {ckpt_path}; "
                   f"continue with: bptt train --resume {run.path}")
        echo(message)
        raise Interrupted(message) from err
