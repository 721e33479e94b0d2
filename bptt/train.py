"""Training runs: the engine behind ``bptt train`` and ``bptt evaluate``.

A run trains a ``SequenceModel`` on a task from ``bptt.tasks`` with truncated BPTT and keeps
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
                       k1, k2 and the k2 that the final gradient curve suggests
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
reached with finite numbers.  With ``stateful`` (``bptt.streams``) a sequence is instead one
window of k1 steps of the B training streams, the state carried from window to window, and the
checkpoint also holds the stream's position and what TBPTT carries (``TBPTT.stream_state``).

The training batches come from their own generator, seeded by ``(seed, a fixed tag)`` and kept
in the checkpoint, so they never coincide with the task's fixed validation and test sets.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields

import click
import numpy as np

import bptt
from bptt import rng as bptt_rng
from bptt import streams
from bptt.config import ConfigError
from bptt.nn import cell as cell_registry
from bptt.io import load_npz, save_json, save_npz

__all__ = ["TrainConfig", "ConfigError", "TrainingDiverged", "train", "resume", "evaluate",
           "summary_line", "default_out", "read_metrics", "prepare", "build_task", "build_model",
           "build_optimizer", "predict",
           "OPTIMIZERS", "CELLS", "INITS", "NONLINEARITIES", "METRIC_COLUMNS"]

CELLS = cell_registry.names()
INITS = cell_registry.INITS
#: Every value some registered cell accepts for ``nonlinearity``.
NONLINEARITIES = tuple(dict.fromkeys(v for c in cell_registry.registered()
                                     for v in getattr(c.options.get("nonlinearity"), "choices", None) or ()))
#: TrainConfig fields that are cell options: passed to the cells that take them.
_CELL_OPTIONS = ("forget_bias", "nonlinearity")
#: option value -> (class name in bptt.optim, default learning rate)
OPTIMIZERS = {
    "sgd": ("SGD", 0.1),
    "adam": ("Adam", 1e-2),
    "rmsprop": ("RMSprop", 1e-3),
    "adagrad": ("Adagrad", 1e-2),
    "adadelta": ("Adadelta", 1.0),
    "adamw": ("AdamW", 1e-2),
}
METRIC_COLUMNS = ("step", "train_loss", "val_metric", "grad_norm", "clipped", "lr", "seconds")
CONFIG, METRICS, CHECKPOINT, RESULT = "config.json", "metrics.csv", "checkpoint.npz", "result.json"
#: The training-batch stream is seeded from (seed, this tag), never from ``seed`` alone, so it
#: cannot coincide with a task's fixed validation or test stream drawn from the same integer.
_DATA_STREAM = 0x7472616E
#: Examples of the validation set used for the gradient-flow curves.
_GRADFLOW_EXAMPLES = 32


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN or infinite; the last good checkpoint was kept."""


@dataclass
class TrainConfig:
    """Every option of a run, as stored in ``config.json``.

    None means: ``seq_len`` the task's own default, ``k1`` the sequence length, ``k2`` k1,
    ``lr`` the optimizer's default in ``OPTIMIZERS``; ``prepare`` fills them in.  ``data``,
    ``columns`` and ``target`` train on a user's CSV series instead of a named task.
    ``forget_bias`` and ``nonlinearity`` go to the cells that take them (LSTM; RNN and IndRNN);
    ``nonlinearity=None`` is the cell's own default.  ``task='text'`` reads the UTF-8 file
    ``data``.  ``stateful`` trains on the training part cut into ``batch`` streams with the state
    carried (``bptt.streams``); ``epochs``, which needs it, then fixes ``steps``.  ``embed`` is
    the embedding width of a text model (None: ``hidden``).
    """

    task: str = "adding"
    seq_len: int | None = None
    cell: str = "lstm"
    hidden: int = 64
    layers: int = 1
    k1: int | None = None
    k2: int | None = None
    optimizer: str = "adam"
    lr: float | None = None
    clip: float = 1.0
    batch: int = 64
    steps: int = 2000
    seed: int = 0
    val_every: int = 100
    forget_bias: float = 1.0
    init: str = "default"
    nonlinearity: str | None = None
    data: str | None = None
    columns: list[str] = field(default_factory=list)
    target: str | None = None
    stateful: bool = False
    epochs: int | None = None
    embed: int | None = None


def prepare(config):
    """Validate ``config`` and build its task; return ``(resolved config, task)``.

    The resolved copy has seq_len, k1, k2 and lr filled in.

    Raises
    ------
    ConfigError
        Naming the option, the value and what is allowed; also a task (a CSV) that cannot be
        built, with the task's own message (a CSV's names the file and line).
    """
    from bptt import tasks

    c = TrainConfig(**asdict(config))
    c.columns = list(c.columns)
    if c.task == "text" and c.data is None:
        raise ConfigError("--data", "--task text reads a UTF-8 text file: give it with --data")
    if c.data is None and c.task not in tasks.names():
        raise ConfigError("--task", f"unknown task {c.task!r}; choose from {', '.join(tasks.names())}")
    if c.data is None and (c.columns or c.target):
        raise ConfigError("--data", "--column and --target select columns of a CSV given with --data")
    if c.data is not None and not c.target and c.task != "text":
        raise ConfigError("--target", f"name the column of {c.data} to forecast")
    for option, value, allowed in (("--cell", c.cell, cell_registry.names()),
                                   ("--optimizer", c.optimizer, tuple(OPTIMIZERS))):
        if value not in allowed:
            raise ConfigError(option, f"unknown value {value!r}; choose from {', '.join(allowed)}")
    cell = cell_registry.get(c.cell)
    if c.init not in cell.inits:
        raise ConfigError("--init", f"unknown value {c.init!r} for --cell {c.cell}; choose from "
                                    f"{', '.join(cell.inits)}")
    if c.nonlinearity is not None and "nonlinearity" not in cell.options:
        takes = [k.name for k in cell_registry.registered() if "nonlinearity" in k.options]
        raise ConfigError("--nonlinearity", f"{c.nonlinearity!r} applies to --cell {', '.join(takes)} "
                                            f"only (the gated cells use tanh and sigmoid)")
    for key, value in cell_options(c).items():
        try:
            cell.options[key].validate(f"--cell {c.cell}", key, value)
        except ValueError as err:
            raise ConfigError("--" + key.replace("_", "-"), str(err)) from None
    for option in ("hidden", "layers", "batch", "steps", "val_every") + (("seq_len",) if c.seq_len else ()) \
            + (("epochs",) if c.epochs is not None else ()) + (("embed",) if c.embed is not None else ()):
        _check_positive_int(option, getattr(c, option))
    task = build_task(c)
    c.seq_len = task.seq_len
    # As in TBPTT, k2 defaults to k1; with neither given both are T: full BPTT.
    c.k1 = c.seq_len if c.k1 is None else c.k1
    c.k2 = c.k1 if c.k2 is None else c.k2
    _check_positive_int("k1", c.k1)
    _check_positive_int("k2", c.k2)
    if c.k2 < c.k1:
        raise ConfigError("--k2", f"k2 = {c.k2} is shorter than k1 = {c.k1}; need k2 >= k1 "
                                  f"(k2 = k1 detaches every k1 steps; k1 = k2 = T is full BPTT)")
    if c.k1 > c.seq_len:
        raise ConfigError("--k1", f"k1 = {c.k1} exceeds the sequence length {c.seq_len}; "
                                  f"need 1 <= k1 <= T")
    c.lr = OPTIMIZERS[c.optimizer][1] if c.lr is None else float(c.lr)
    if not (math.isfinite(c.lr) and c.lr > 0):
        raise ConfigError("--lr", f"need a positive learning rate, got {c.lr}")
    c.clip = float(c.clip)
    if not (math.isfinite(c.clip) and c.clip >= 0):
        raise ConfigError("--clip", f"need a gradient-norm limit >= 0 (0: no clipping), got {c.clip}")
    streams.configure(c, task)
    return c, task


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError("--" + name.replace("_", "-"), f"need a positive integer, got {value!r}")


# -- building the pieces ---------------------------------------------------------------------
def build_task(config):
    """The task ``config`` names, or a user's CSV series when ``config.data`` is set."""
    from bptt import tasks

    try:
        if config.task == "text":
            return tasks.text(config.data, **({"seq_len": config.seq_len} if config.seq_len else {}))
        if config.data is not None:
            return tasks.from_csv(config.data, config.target, columns=config.columns or None,
                                  **({"seq_len": config.seq_len} if config.seq_len else {}))
        return tasks.get(config.task, seq_len=config.seq_len)
    except (ValueError, OSError) as err:
        option = "--data" if config.data is not None else "--task"
        if config.seq_len and "seq_len" in str(err):
            option = "--seq-len"
        raise ConfigError(option, str(err)) from None


def cell_options(config):
    """The cell options ``config`` sets for its cell: those of ``forget_bias`` and
    ``nonlinearity`` that the cell takes (None: the cell's default)."""
    takes = cell_registry.get(config.cell).options
    return {k: getattr(config, k) for k in _CELL_OPTIONS if k in takes and getattr(config, k) is not None}


def build_model(config, task):
    """A ``SequenceModel`` for ``task`` (a ``LanguageModel`` for a text task), drawn from the
    package generator seeded with ``config.seed``."""
    bptt.seed(config.seed)
    if isinstance(task, bptt.tasks.TextTask):
        return bptt.nn.LanguageModel(config.cell, task.output_size, config.embed or config.hidden,
                                     config.hidden, num_layers=config.layers, init=config.init,
                                     **cell_options(config))
    return bptt.nn.SequenceModel(config.cell, task.input_size, config.hidden, task.output_size,
                                 num_layers=config.layers, init=config.init, **cell_options(config))


def build_optimizer(config, model):
    """The ``bptt.optim`` optimizer ``config.optimizer`` names, at ``config.lr``, over ``model``'s parameters."""
    from bptt import optim

    return getattr(optim, OPTIMIZERS[config.optimizer][0])(model.parameters(), lr=config.lr)


def predict(model, x):
    """The model's outputs over a whole set, on the fast path, without recording.

    Shapes: x (T, B, I) -> (T, B, O) np.ndarray.
    """
    model.eval()
    try:
        with bptt.no_grad():
            y, _ = model(x)
    finally:
        model.train()
    return np.asarray(y.data)


def _json_array(state):
    # A generator's state holds 128-bit integers, which no numeric npz array can; a JSON string
    # array can, and loads without unpickling.
    return np.asarray(json.dumps(state))


# -- the run ---------------------------------------------------------------------------------
class _Run:
    """One run's state between sequences: model, optimizer, generators, step, training seconds."""

    def __init__(self, config, task, out):
        from bptt import tasks
        from bptt.tbptt import TBPTT

        self.config, self.task, self.out = config, task, out
        self.model = build_model(config, self.task)
        self.optimizer = build_optimizer(config, self.model)
        self.loss_fn = tasks.loss_function(self.task)
        self.trainer = TBPTT(self.model, self.loss_fn, self.optimizer, config.k1, config.k2,
                             clip_norm=config.clip or None)
        self.data_rng = np.random.default_rng([config.seed, _DATA_STREAM])
        self.stream = (streams.StreamTraining(self.task, self.model, self.optimizer, self.loss_fn, config)
                       if config.stateful else None)
        self.val = self.task.validation_set()
        self.step = 0
        self.seconds = 0.0
        self.gradflow_start = None

    # checkpoint <-> arrays
    def snapshot(self):
        """Everything a resume needs, as ``{name: array}`` copies (the npz layout)."""
        arrays = {"model." + k: v for k, v in self.model.state_dict().items()}
        arrays.update({"optim." + k: np.array(v, copy=True) for k, v in self.optimizer.state_dict().items()})
        arrays["rng.package"] = _json_array(bptt_rng.get_state())
        arrays["rng.data"] = _json_array(self.data_rng.bit_generator.state)
        arrays["step"] = np.asarray(self.step, dtype=np.int64)
        arrays["seconds"] = np.asarray(self.seconds, dtype=np.float64)
        if self.gradflow_start is not None:
            arrays["gradflow_start"] = self.gradflow_start
        if self.stream is not None:
            arrays.update(self.stream.snapshot())
        return arrays

    def restore(self, arrays):
        self.model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
        self.optimizer.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("optim.")})
        bptt_rng.set_state(json.loads(str(arrays["rng.package"])))
        self.data_rng.bit_generator.state = json.loads(str(arrays["rng.data"]))
        self.step = int(arrays["step"])
        self.seconds = float(arrays["seconds"])
        self.gradflow_start = arrays.get("gradflow_start")
        if self.stream is not None:
            self.stream.restore(arrays)

    def parameters_finite(self):
        return all(np.isfinite(p.data).all() for p in self.model.parameters())

    # measurements
    def validate(self):
        if self.stream is not None:
            return streams.score(self.model, self.task, "validation")
        x, y, mask = self.val
        return float(self.task.score(predict(self.model, x), y, mask))

    def gradient_curves(self):
        """Top-layer ||dL/dh_t|| per example on the first validation examples: (B, T)."""
        from bptt.diagnostics import hidden_grad_norms

        x, y, mask = self.val
        x, y = x[:, :_GRADFLOW_EXAMPLES], y[:, :_GRADFLOW_EXAMPLES]
        norms = hidden_grad_norms(self.model, x, y, self.loss_fn, mask=mask, per_example=True)
        self.model.zero_grad()
        return np.asarray(norms[-1]).T

    def updates(self):
        """Train on one freshly drawn sequence, yielding each update's record as it is made.

        The sequence goes to the TBPTT trainer k1 steps at a time (which trains exactly as
        feeding it at once), so every record arrives, and is timed, when its update is done.
        """
        if self.stream is not None:
            yield from self.stream.updates()
            return
        x, y, mask = self.task.batch(self.config.batch, self.data_rng)
        self.trainer.reset_state()
        k1 = self.config.k1
        for start in range(0, len(x), k1):
            window = slice(start, start + k1)
            yield from self.trainer.run(x[window], y[window], mask[window])
        yield from self.trainer.finish() or ()


class _MetricsLog:
    """``metrics.csv``, one row per update, flushed per row so a crash loses nothing written."""

    def __init__(self, path, keep_through_step=None):
        if keep_through_step is None or not os.path.exists(path):
            rows = []
        else:   # on resume, drop the rows an interrupted run wrote after its last checkpoint
            with open(path, newline="") as f:
                rows = [r for r in csv.reader(f)][1:]
            rows = [r for r in rows if r and int(r[0]) <= keep_through_step]
        self.file = open(path, "w", newline="")
        self.writer = csv.writer(self.file)
        self.writer.writerow(METRIC_COLUMNS)
        self.writer.writerows(rows)
        self.file.flush()

    def write_rows(self, rows):
        self.writer.writerows(["" if v is None else v for v in row] for row in rows)
        self.file.flush()

    def close(self):
        self.file.close()


def read_metrics(path):
    """``metrics.csv`` as ``{column: np.ndarray}`` (float; an empty val_metric reads as NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {c: np.array([float(r[c]) if r[c] != "" else np.nan for r in rows]) for c in METRIC_COLUMNS}


def _load_config(run_dir):
    path = os.path.join(run_dir, CONFIG)
    try:
        with open(path) as f:
            stored = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{run_dir}: not a run directory (no {CONFIG})") from None
    known = {f.name for f in fields(TrainConfig)}
    return prepare(TrainConfig(**{k: v for k, v in stored.items() if k in known}))


def default_out(config, root="runs"):
    """A fresh run directory: ``runs/TASK-CELL`` (``-T`` and the length if given), numbered if taken."""
    task = os.path.splitext(os.path.basename(config.data))[0] if config.data else config.task
    base = os.path.join(root, f"{task}-{config.cell}" + (f"-T{config.seq_len}" if config.seq_len else ""))
    out, n = base, 1
    while os.path.exists(out):
        n += 1
        out = f"{base}-{n}"
    return out


def train(config, out, progress=False, on_update=None, echo=None):
    """Train a fresh run, checkpointing into ``out``; return the ``result.json`` object.

    Parameters
    ----------
    config : TrainConfig
        Validated here: ``ConfigError`` names the bad option.
    out : str or path
        The run directory; created if missing.  One that already holds a checkpoint is refused.
    progress : bool
        Show click's progress bar with the running (exponentially averaged) loss on stderr.
    on_update : callable, optional
        Called as ``on_update(step, record)`` after every update, ``record`` TBPTT's dict.
    echo : callable, optional
        Where messages go; ``click.echo`` to stderr by default.

    Returns
    -------
    dict
        The object written to ``result.json``.

    Raises
    ------
    ConfigError
        An invalid option, or a task (a CSV) that cannot be built.
    TrainingDiverged
        On a NaN or infinite loss or gradient norm; the checkpoint keeps the last finite state.
    KeyboardInterrupt
        Re-raised once the state at the last sequence boundary is saved to the checkpoint.
    """
    out = os.fspath(out)
    config, task = prepare(config)
    if os.path.exists(os.path.join(out, CHECKPOINT)):
        raise ConfigError("--out", f"{out} already holds a run; continue it with --resume {out} "
                                   f"or choose another --out")
    run = _Run(config, task, out)
    run.gradflow_start = run.gradient_curves()
    return _execute(run, progress, on_update, echo)


def resume(out, steps=None, progress=False, on_update=None, echo=None):
    """Continue the run in ``out`` from its checkpoint up to ``steps`` updates in total.

    ``steps=None`` keeps the stored target.  The metrics and parameters then equal those of
    an uninterrupted run; rows an interrupted run logged after its checkpoint are dropped.
    The other parameters and the return value are as for ``train``.
    """
    out = os.fspath(out)
    try:
        config, task = _load_config(out)
    except FileNotFoundError as err:
        raise ConfigError("--resume", str(err)) from None
    if steps is not None:
        _check_positive_int("steps", steps)
        config.steps = steps
    run = _Run(config, task, out)
    try:
        arrays = load_npz(os.path.join(out, CHECKPOINT))
    except FileNotFoundError:
        raise ConfigError("--resume", f"{out} holds no {CHECKPOINT} to resume from") from None
    run.restore(arrays)
    (echo or _stderr)(f"resuming {out} at step {run.step} of {config.steps}")
    return _execute(run, progress, on_update, echo, resumed=True)


def _stderr(message):
    click.echo(message, err=True)


def _execute(run, progress, on_update, echo, resumed=False):
    os.makedirs(run.out, exist_ok=True)
    save_json(os.path.join(run.out, CONFIG), asdict(run.config))
    log = _MetricsLog(os.path.join(run.out, METRICS), keep_through_step=run.step if resumed else None)
    try:
        _loop(run, log, os.path.join(run.out, CHECKPOINT), progress, on_update, echo or _stderr)
    finally:
        log.close()
    return _finish(run)


def _loop(run, log, ckpt_path, progress, on_update, echo):
    """Draw sequences until ``config.steps`` updates are made, logging and checkpointing."""
    config = run.config
    good = run.snapshot()
    save_npz(ckpt_path, good)
    base, started = run.seconds, time.perf_counter()
    running = [None]   # the progress bar's running loss, read by its item_show_func

    def show(_):
        return "" if running[0] is None else f"loss {running[0]:.4g}"

    stream = sys.stderr
    bar = click.progressbar(length=max(config.steps - run.step, 0), label="training", show_pos=True,
                            item_show_func=show, file=stream, hidden=not (progress and stream.isatty()))
    try:
        with bar:
            while run.step < config.steps:
                before, rows = run.step, []
                for record in run.updates():
                    run.step += 1
                    loss, norm = float(record["loss"]), float(record["grad_norm"])
                    rows.append([run.step, loss, None, norm, int(bool(record["clipped"])),
                                 float(run.optimizer.lr), round(base + time.perf_counter() - started, 3)])
                    if not (math.isfinite(loss) and math.isfinite(norm)):
                        break
                    running[0] = loss if running[0] is None else 0.98 * running[0] + 0.02 * loss
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
                    rows[-1][2] = run.validate()
                run.seconds = base + time.perf_counter() - started
                log.write_rows(rows)
                good = run.snapshot()
                if crossed or run.step >= config.steps:
                    save_npz(ckpt_path, good)
                bar.update(run.step - before)
    except KeyboardInterrupt:
        save_npz(ckpt_path, good)
        echo(f"interrupted: saved the state after step {int(good['step'])} to {ckpt_path}; "
             f"continue with: bptt train --resume {run.out}")
        raise


def _result(run):
    """The run's test score beside the task's baselines, and its gradient curve at the end."""
    x, y, mask = run.task.test_set()
    curves = run.gradient_curves()
    result = {
        "task": run.task.name,
        "metric": run.task.metric,
        "test": (streams.score(run.model, run.task, "test") if run.stream is not None
                 else float(run.task.score(predict(run.model, x), y, mask))),
        "baselines": {k: float(v) for k, v in run.task.baselines().items()},
        "steps": run.step,
        "seconds": round(run.seconds, 2),
        "cell": run.config.cell,
        "seq_len": run.config.seq_len,
        "k1": run.config.k1,
        "k2": run.config.k2,
        "suggested_k2": _suggested_k2(curves),
    }
    if result["metric"] == "bpc":
        result["perplexity"] = 2.0 ** result["test"]
    return result, curves


def _suggested_k2(curves):
    """``suggest_truncation`` of the median curve; None when no gradient reaches the state."""
    from bptt.diagnostics import suggest_truncation

    median = np.median(curves, axis=0)
    return int(suggest_truncation(median)) if median.sum() > 0 else None


def _finish(run):
    result, end = _result(run)
    save_json(os.path.join(run.out, RESULT), result)
    _write_plots(run, end, result["suggested_k2"])
    return result


def _write_plots(run, end, suggested_k2):
    from bptt import plots

    out = run.out
    stages = {"start (step 0)": run.gradflow_start, f"end (step {run.step})": end}
    with open(os.path.join(out, "gradflow.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["stage", "example"] + [f"t{t}" for t in range(end.shape[1])])
        for label, curves in stages.items():
            writer.writerows([label, i, *map(float, c)] for i, c in enumerate(curves))
    plots.plot_gradient_decay(stages, path=os.path.join(out, "gradflow.png"),
                              truncation=suggested_k2,
                              title=f"{run.task.name}, {run.config.cell}: dL/dh_t at the start and the end "
                                    f"(dotted: suggested k2 = {suggested_k2})")
    plots.plot_training(read_metrics(os.path.join(out, METRICS)), run.task.metric,
                        path=os.path.join(out, "loss.png"))
    if run.task.forecasting:
        x, y, mask = run.task.test_set()
        plots.plot_predictions(run.task.unscale(predict(run.model, x)), run.task.unscale(y), mask,
                               path=os.path.join(out, "predictions.png"),
                               title=f"{run.task.name}: test predictions")



def evaluate(run_dir):
    """Re-score a run's checkpoint on its task's test set.

    Returns the same object as the run's ``result.json`` (its steps and seconds are the
    checkpoint's).
    """
    run_dir = os.fspath(run_dir)
    run = _Run(*_load_config(run_dir), run_dir)
    run.restore(load_npz(os.path.join(run_dir, CHECKPOINT)))
    return _result(run)[0]


def summary_line(result, out=None):
    """One line: the test metric beside each baseline, the steps and the seconds."""
    baselines = ", ".join(f"{k} {v:.4g}" for k, v in result["baselines"].items())
    where = f" -> {out}" if out else ""
    return (f"{result['task']} T={result['seq_len']} {result['cell']}: test {result['metric']} "
            f"{result['test']:.4g} (baselines: {baselines}); {result['steps']} steps, "
            f"{result['seconds']:.1f} s{where}")
