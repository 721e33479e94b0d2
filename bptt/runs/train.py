"""Training runs: the engine behind ``bptt train`` and ``bptt evaluate``.

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

The training batches come from their own generator, seeded by ``(seed, a fixed tag)`` and kept
in the checkpoint, so they never coincide with the task's fixed validation and test sets.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np

import bptt
from bptt import blas
from bptt import rng as bptt_rng
from bptt.nn import recompute as checkpointing
from bptt.runs import rundir
from bptt.runs import streams
from bptt.errors import ConfigError, Interrupted, RunError, option_choice, option_float, option_integer
from bptt.io import save_json, save_npz
from bptt.nn import registry as cell_registry
from bptt.runs.rundir import CHECKPOINT, CONFIG, METRIC_COLUMNS, METRICS, RESULT, RunMismatch, read_metrics

__all__ = ["TrainConfig", "ConfigError", "RunError", "TrainingDiverged", "train", "resume", "evaluate",
           "summary_line", "default_out", "read_metrics", "prepare", "build_task", "build_model",
           "build_optimizer", "predict", "memory_estimate", "task_fingerprint", "threads_for",
           "DEFAULTS", "OPTIMIZERS", "CELLS", "INITS", "NONLINEARITIES", "METRIC_COLUMNS", "SCORE_STEPS"]

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
#: What ``prepare`` fills in for these options when neither the user nor the task sets them.
DEFAULTS = {"hidden": 64, "batch": 64, "steps": 2000}
#: Example-steps (examples times T) that ``predict`` runs at once: bounds the memory of scoring
#: long sequences (about 100 MB for a 64-unit LSTM) without slowing short ones.
SCORE_STEPS = 65536
#: The training-batch stream is seeded from (seed, this tag), never from ``seed`` alone, so it
#: cannot coincide with a task's fixed validation or test stream drawn from the same integer.
_DATA_STREAM = 0x7472616E
#: Examples of the validation set used for the gradient-flow curves.
_GRADFLOW_EXAMPLES = 32


class TrainingDiverged(RunError):
    """The loss or gradient norm became NaN or infinite; the last good checkpoint was kept."""


@dataclass
class TrainConfig:
    """Every option of a run, as stored in ``config.json``.

    None means: ``seq_len`` the task's own default, ``k1`` the sequence length, ``k2`` k1,
    ``lr`` the optimizer's default in ``OPTIMIZERS``, ``hidden``, ``batch`` and ``steps`` the
    task's defaults (``bptt.data.tasks.train_defaults``) or else those in ``DEFAULTS``; ``prepare``
    fills them in.  ``data``,
    ``columns`` and ``target`` train on a user's CSV series instead of a named task.
    ``forget_bias`` and ``nonlinearity`` go to the cells that take them (LSTM; RNN and IndRNN);
    ``nonlinearity=None`` is the cell's own default.  ``task='text'`` reads the UTF-8 file
    ``data``.  ``stateful`` trains on the training part cut into ``batch`` streams with the state
    carried (``bptt.runs.streams``); ``epochs``, which needs it, then fixes ``steps``.  ``embed`` is
    the embedding width of a text model (None: ``hidden``).
    """

    task: str = "adding"
    seq_len: int | None = None
    cell: str = "lstm"
    hidden: int | None = None
    layers: int = 1
    k1: int | None = None
    k2: int | None = None
    optimizer: str = "adam"
    lr: float | None = None
    clip: float = 1.0
    batch: int | None = None
    steps: int | None = None
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
    max_bias: float = 0.1
    checkpoint: str | None = None


def prepare(config):
    """Validate ``config`` and build its task; return ``(resolved config, task)``.

    The resolved copy has seq_len, k1, k2, lr, hidden, batch and steps filled in, and ``data``
    made an absolute path.  Options left as None take the task's defaults first
    (``bptt.data.tasks.train_defaults``: e.g. shakespeare's LSTM of 256 for 8 epochs with
    ``stateful``), then ``DEFAULTS`` and ``OPTIMIZERS``; an option that is given always wins.

    Raises
    ------
    ConfigError
        Naming the option, the value and what is allowed; also a task (a CSV) that cannot be
        built, with the task's own message (a CSV's names the file and line), and sizes whose
        arrays would not fit in this machine's memory (saying how much they ask for).
    """
    from bptt.data import tasks

    c = TrainConfig(**asdict(config))
    for option, value in (("--data", c.data), ("--target", c.target)):
        if value is not None and not isinstance(value, str):
            raise ConfigError(option, f"need a file name or column name, got {value!r}")
    if not isinstance(c.columns, (list, tuple)) or not all(isinstance(v, str) for v in c.columns):
        raise ConfigError("--column", f"need a list of column names, got {c.columns!r}")
    c.columns = list(c.columns)
    _fill_defaults(c)
    if c.task == "text" and c.data is None:
        raise ConfigError("--data", "--task text reads a UTF-8 text file: give it with --data")
    if c.data is None and c.task not in tasks.names():
        raise ConfigError("--task", f"unknown task {c.task!r}; choose from {', '.join(tasks.names())}")
    if c.data is None and (c.columns or c.target):
        raise ConfigError("--data", "--column and --target select columns of a CSV given with --data")
    if c.data is not None and not c.target and c.task != "text":
        raise ConfigError("--target", f"name the column of {c.data} to forecast")
    if c.data is not None:
        c.data = os.path.abspath(c.data)
    for option, value, allowed in (("--cell", c.cell, cell_registry.names()),
                                   ("--optimizer", c.optimizer, tuple(OPTIMIZERS))):
        option_choice(value, allowed, option)
    cell = cell_registry.get(c.cell)
    if c.init not in cell.inits:
        raise ConfigError("--init", f"unknown value {c.init!r} for --cell {c.cell}; choose from "
                                    f"{', '.join(cell.inits)}")
    if c.nonlinearity is not None and "nonlinearity" not in cell.options:
        takes = [k.name for k in cell_registry.registered() if "nonlinearity" in k.options]
        raise ConfigError("--nonlinearity", f"{c.nonlinearity!r} applies to --cell {', '.join(takes)} "
                                            f"only (the gated cells use tanh and sigmoid)")
    c.forget_bias = option_float(c.forget_bias, "--forget-bias")
    for key, value in cell_options(c).items():
        try:
            cell.options[key].validate(f"--cell {c.cell}", key, value)
        except ValueError as err:
            raise ConfigError("--" + key.replace("_", "-"), str(err)) from None
    names = ("hidden", "layers", "batch", "val_every") + (("seq_len",) if c.seq_len else ()) \
        + (("steps",) if c.steps is not None else ()) \
        + (("epochs",) if c.epochs is not None else ()) + (("embed",) if c.embed is not None else ())
    for name in names:
        setattr(c, name, option_integer(getattr(c, name), _option(name)))
    c.seed = option_integer(c.seed, "--seed", least=0)
    task = build_task(c)
    c.seq_len = task.seq_len
    # As in TBPTT, k2 defaults to k1; with neither given both are T: full BPTT.
    c.k1 = option_integer(c.seq_len if c.k1 is None else c.k1, "--k1")
    if c.k2 == "auto":      # adaptive truncation: TBPTT picks k2 from the decay it measures
        c.max_bias = option_float(c.max_bias, "--max-bias", low=0, low_open=True, what="a bias bound")
        if c.max_bias >= 1:
            raise ConfigError("--max-bias", f"need a relative bias bound in (0, 1), got {c.max_bias}")
    else:
        c.k2 = option_integer(c.k1 if c.k2 is None else c.k2, "--k2")
    if c.checkpoint is not None:
        try:
            checkpointing.resolve(c.checkpoint, "--checkpoint")
        except (ValueError, TypeError) as err:
            raise ConfigError("--checkpoint", str(err).removeprefix("--checkpoint: ")) from None
        if c.k2 == "auto":
            raise ConfigError("--checkpoint", "--k2 auto runs one step at a time; checkpointing "
                                              "applies to the sequence path")
    if c.k2 != "auto" and c.k2 < c.k1:
        raise ConfigError("--k2", f"k2 = {c.k2} is shorter than k1 = {c.k1}; need k2 >= k1 "
                                  f"(k2 = k1 detaches every k1 steps; k1 = k2 = T is full BPTT)")
    if c.k1 > c.seq_len:
        raise ConfigError("--k1", f"k1 = {c.k1} exceeds the sequence length {c.seq_len}; "
                                  f"need 1 <= k1 <= T")
    c.lr = option_float(OPTIMIZERS[c.optimizer][1] if c.lr is None else c.lr, "--lr", low=0, low_open=True,
                        what="a learning rate")
    c.clip = option_float(c.clip, "--clip", low=0, what="a gradient-norm limit")
    streams.configure(c, task)
    _check_memory(c, task)
    return c, task


def _fill_defaults(c):
    """Fill the options of ``c`` left as None from its task's defaults, then ``DEFAULTS``.

    A task's ``epochs`` applies to a stateful run given neither ``steps`` nor ``epochs``; its
    ``steps`` to the other runs given neither (``streams.configure`` turns epochs into steps).
    Its ``lr`` is for its ``optimizer``: a run with another optimizer gets that one's default.
    """
    from bptt.data import tasks

    own = tasks.train_defaults(c.task) if c.data is None and c.task in tasks.names() else {}
    if c.steps is None and c.epochs is None:
        if c.stateful and "epochs" in own:
            c.epochs = own["epochs"]
        else:
            c.steps = own.get("steps", DEFAULTS["steps"])
    for name, value in own.items():
        if name in ("steps", "epochs", "optimizer") or getattr(c, name) is not None:
            continue
        if name != "lr" or c.optimizer == own.get("optimizer", c.optimizer):  # lr is the optimizer's
            setattr(c, name, value)
    for name, value in DEFAULTS.items():
        if name != "steps" and getattr(c, name) is None:
            setattr(c, name, value)


def _option(name):
    return "--" + name.replace("_", "-")


def memory_estimate(config, task):
    """Bytes a run of the resolved ``config`` holds at its peak, roughly: parameters with their
    gradients and optimizer state, the training window's activations on the tape, one scoring
    batch's activations, and the fixed validation and test inputs."""
    G = 4   # gate blocks of an LSTM, the most of any cell
    H, L, T = config.hidden, config.layers, config.seq_len
    sizes = [task.input_size] + [H] * L
    params = sum(G * H * (i + H + 2) for i in sizes[:-1]) + (H + 1) * task.output_size
    per_step = L * (G + 3) * H + task.output_size      # gates, states and output of one example
    window = min(T, config.k1 + (T if config.k2 == "auto" else config.k2))
    examples = task.validation_size + task.test_size
    return 4 * (4 * params + per_step * (window * config.batch + SCORE_STEPS)
                + examples * T * task.input_size)


def _check_memory(config, task):
    need = memory_estimate(config, task)
    have, where = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's"
    room = _address_space_left()
    if room is not None and room < have:
        # an allocation past a process limit (ulimit -v) can crash numpy inside a ufunc, which
        # holds no GIL to raise MemoryError with: refuse before training starts
        have, where = room, "the address space this process has left under its limit (ulimit -v),"
    if need > have:
        raise ConfigError("--hidden/--layers/--batch/--seq-len",
                          f"hidden {config.hidden}, layers {config.layers}, batch {config.batch} and "
                          f"seq_len {config.seq_len} ask for about {_gb(need)} of memory, more than "
                          f"{where} {_gb(have)}")


def _address_space_left():
    """Bytes this process may still map under RLIMIT_AS, or None where no limit is set."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        mapped = 0
    return max(soft - mapped, 0)


def _gb(n):
    return f"{n / 2 ** 30:.3g} GiB"


# -- building the pieces ---------------------------------------------------------------------
def build_task(config):
    """The task ``config`` names, or a user's CSV series when ``config.data`` is set."""
    from bptt.data import tasks

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


def tbptt_options(config):
    """The TBPTT options a run passes on: checkpointing, and the bias bound of ``--k2 auto``."""
    return {"checkpoint": config.checkpoint, "max_bias": config.max_bias}


def build_model(config, task):
    """A ``SequenceModel`` for ``task`` (a ``LanguageModel`` for a text task), drawn from the
    package generator seeded with ``config.seed``."""
    bptt.seed(config.seed)
    if isinstance(task, bptt.data.tasks.TextTask):
        return bptt.nn.LanguageModel(config.cell, task.output_size, config.embed or config.hidden,
                                     config.hidden, num_layers=config.layers, init=config.init,
                                     **cell_options(config))
    return bptt.nn.SequenceModel(config.cell, task.input_size, config.hidden, task.output_size,
                                 num_layers=config.layers, init=config.init, **cell_options(config))


def build_optimizer(config, model):
    """The ``bptt.optim`` optimizer ``config.optimizer`` names, at ``config.lr``, over ``model``'s parameters."""
    from bptt import optim

    return getattr(optim, OPTIMIZERS[config.optimizer][0])(model.parameters(), lr=config.lr)


def predict(model, x, batch_size=None):
    """The model's outputs over a whole set, on the fast path, without recording.

    The examples go through ``batch_size`` at a time (each from a zero state, as at once), so
    the memory does not grow with the size of the set; by default as many as make
    ``SCORE_STEPS`` example-steps.

    Shapes: x (T, B, I) -> (T, B, O) np.ndarray.
    """
    if batch_size is None:
        batch_size = max(1, SCORE_STEPS // max(1, x.shape[0]))
    model.eval()
    try:
        with bptt.no_grad():
            parts = [np.asarray(model(x[:, i:i + batch_size])[0].data)
                     for i in range(0, x.shape[1], batch_size)]
    finally:
        model.train()
    return np.concatenate(parts, axis=1)


def task_fingerprint(task):
    """sha256 of the task's fixed validation and test sets: changes when its data do."""
    h = hashlib.sha256()
    for part in (task.validation_set(), task.test_set()):
        for a in part:
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def _json_array(state):
    # A generator's state holds 128-bit integers, which no numeric npz array can; a JSON string
    # array can, and loads without unpickling.
    return np.asarray(json.dumps(state))


# -- the run ---------------------------------------------------------------------------------
class _Run:
    """One run's state between sequences: model, optimizer, generators, step, training seconds."""

    def __init__(self, config, task, out):
        from bptt.data import tasks
        from bptt.credit.tbptt import TBPTT

        self.config, self.task, self.out = config, task, out
        self.model = build_model(config, self.task)
        self.optimizer = build_optimizer(config, self.model)
        self.loss_fn = tasks.loss_function(self.task)
        self.trainer = TBPTT(self.model, self.loss_fn, self.optimizer, config.k1, config.k2,
                             clip_norm=config.clip or None, **tbptt_options(config))
        if config.checkpoint is not None:
            self._check_budget()
        self.data_rng = np.random.default_rng([config.seed, _DATA_STREAM])
        self.stream = (streams.StreamTraining(self.task, self.model, self.optimizer, self.loss_fn, config)
                       if config.stateful else None)
        self.val = self.task.validation_set()
        self.step = 0
        self.seconds = 0.0
        self.gradflow_start = None
        self.meta = {"config": {k: v for k, v in asdict(config).items() if k != "steps"},
                     "task": task.name, "fingerprint": task_fingerprint(task),
                     "data_sha256": None if config.data is None else rundir.file_sha256(config.data)}

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
        if self.stream is not None:
            arrays.update(self.stream.snapshot())
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
        path = os.path.join(self.out, CHECKPOINT)
        self._check_meta(arrays["meta"], path)
        try:
            self.model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
            self.optimizer.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("optim.")})
            bptt_rng.set_state(json.loads(str(arrays["rng.package"])))
            self.data_rng.bit_generator.state = json.loads(str(arrays["rng.data"]))
            self.step = int(arrays["step"])
            self.seconds = float(arrays["seconds"])
        except (ValueError, TypeError, KeyError) as err:
            raise rundir.CorruptRun(f"{path}: does not fit the run's model ({err})") from None
        self.gradflow_start = arrays.get("gradflow_start")
        if self.stream is not None:
            self.stream.restore(arrays)

    def _check_meta(self, meta, path):
        stored = meta.get("config", {}) if isinstance(meta, dict) else {}
        wrong = [k for k, v in self.meta["config"].items() if stored.get(k, "(missing)") != v]
        if wrong:
            then = ", ".join(f"{k}={stored.get(k, '(missing)')!r}" for k in wrong)
            now = ", ".join(f"{k}={self.meta['config'][k]!r}" for k in wrong)
            raise RunMismatch(f"{path} was written by a run with {then}, but {CONFIG} says {now}; "
                              f"restore {CONFIG} or start a new run")
        if meta.get("data_sha256") != self.meta["data_sha256"]:
            raise RunMismatch(f"{self.config.data} changed since the run was trained on it (sha256 "
                              f"{str(meta.get('data_sha256'))[:12]}... then, "
                              f"{self.meta['data_sha256'][:12]}... now); restore the file to "
                              f"evaluate or resume, or train a new run on it")
        if meta.get("fingerprint") != self.meta["fingerprint"]:
            raise RunMismatch(f"the {self.task.name} task's validation and test data differ from "
                              f"those {path} was trained and scored on (another version of bptt "
                              f"or numpy?); its numbers would not be comparable")

    def parameters_finite(self):
        return all(np.isfinite(p.data).all() for p in self.model.parameters())

    # measurements
    def validate(self):
        if self.stream is not None:
            return streams.score(self.model, self.task, "validation")
        x, y, mask = self.val
        return float(self.task.score(predict(self.model, x), y, mask))

    def _check_budget(self):
        """A memory budget too small for the model's windows is a usage error, found here, before
        the run folder holds anything: one window of zeros runs through the checkpointed layers
        (their footprints, measured now, are cached for training)."""
        c = self.config
        T = min(c.k2, c.seq_len)
        shape = (T, c.batch) if isinstance(self.task, bptt.data.tasks.TextTask) else (T, c.batch, self.task.input_size)
        try:
            self.model(np.zeros(shape, np.int64 if len(shape) == 2 else np.float32), checkpoint=c.checkpoint)
        except checkpointing.BudgetError as err:
            raise ConfigError("--checkpoint", str(err)) from None

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


def _load_config(run_dir, option):
    """The run's ``config.json``, validated; a bad value names the file and the key."""
    stored = rundir.read_config(run_dir, option)
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


def default_out(config, root="runs"):
    """A fresh run directory: ``runs/TASK-CELL`` (``-T`` and the length if given), numbered if taken."""
    task = os.path.splitext(os.path.basename(config.data))[0] if config.data else config.task
    base = os.path.join(root, f"{task}-{config.cell}" + (f"-T{config.seq_len}" if config.seq_len else ""))
    out, n = base, 1
    while os.path.exists(out):
        n += 1
        out = f"{base}-{n}"
    return out


def threads_for(config, threads=None):
    """``blas.limit`` for a run of the resolved ``config``: ``threads`` if given, else the user's
    own count or the default for its per-step product, (batch, hidden) @ (hidden, gates*hidden)."""
    gates = len(cell_registry.get(config.cell).gates)
    return blas.limit(threads, config.batch * gates * config.hidden ** 2)


def train(config, out, progress=False, on_update=None, echo=None, threads=None):
    """Train a fresh run, checkpointing into ``out``; return the ``result.json`` object.

    Parameters
    ----------
    config : TrainConfig
        Validated here: ``ConfigError`` names the bad option.
    out : str or path
        The run directory; created if missing.  One that already holds a run, or any other
        files, is refused.  It is locked while the run trains.
    progress : bool or callable
        False or None: no progress display.  A callable ``progress(total)`` returning a context
        manager with ``update(steps, loss)``, called after each sequence with the updates it
        made and the running (exponentially averaged) loss, such as ``bptt.cli.ProgressBar``, the
        command line's bar; True means that bar.
    on_update : callable, optional
        Called as ``on_update(step, record)`` after every update, ``record`` TBPTT's dict.
    echo : callable, optional
        Where messages go (one string per call); standard error by default.
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
    out = os.fspath(out)
    echo = echo or _stderr
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


def resume(out, steps=None, progress=False, on_update=None, echo=None, threads=None):
    """Continue the run in ``out`` from its checkpoint up to ``steps`` updates in total.

    ``steps=None`` keeps the stored target; a ``steps`` at or below the updates already made
    is a ``ConfigError`` and changes nothing.  The metrics and parameters then equal those of
    an uninterrupted run; rows an interrupted run logged after its checkpoint are dropped.
    The other parameters and the return value are as for ``train``.

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
    out = os.fspath(out)
    echo = echo or _stderr
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
        config, task = _load_config(out, "--resume")
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


def _stderr(message):
    print(message, file=sys.stderr, flush=True)


class _Silent:
    """The progress display of ``progress=False``."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, steps, loss):
        pass


def _progress(progress, total):
    if not progress:
        return _Silent()
    if progress is True:
        from bptt.cli import ProgressBar as progress
    return progress(total)


def _execute(run, log, progress, on_update, echo):
    try:
        _loop(run, log, os.path.join(run.out, CHECKPOINT), progress, on_update, echo)
    finally:
        log.close()
    return _finish(run)


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
        with _progress(progress, max(config.steps - run.step, 0)) as bar:
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
                    rows[-1][2] = run.validate()
                run.seconds = base + time.perf_counter() - started
                log.write_rows(rows)
                good = run.snapshot()
                if crossed or run.step >= config.steps:
                    save_npz(ckpt_path, good)
                bar.update(run.step - before, running)
    except KeyboardInterrupt as err:
        save_npz(ckpt_path, good)
        message = (f"interrupted: saved the state after step {int(good['step'])} to {ckpt_path}; "
                   f"continue with: bptt train --resume {run.out}")
        echo(message)
        raise Interrupted(message) from err


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
    if hasattr(run.task, "level_reached"):      # tasks whose baselines are levels to step through
        result["level"] = run.task.level_reached(result["test"])
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
    from bptt.diagnostics import plots

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


def evaluate(run_dir, threads=None):
    """Re-score a run's checkpoint on its task's test set.

    Returns the same object as the run's ``result.json`` (its steps and seconds are the
    checkpoint's).  Raises as ``resume`` does (without taking the lock: nothing is written).
    ``threads`` is as for ``train``.
    """
    run_dir = os.fspath(run_dir)
    config, task = _load_config(run_dir, "RUN_DIR")
    with threads_for(config, threads):
        run = _Run(config, task, run_dir)
        run.restore(rundir.load_checkpoint(run_dir, "RUN_DIR"))
        return _result(run)[0]


def summary_line(result, out=None):
    """One line: the test metric beside each baseline, the steps and the seconds."""
    baselines = ", ".join(f"{k} {v:.4g}" for k, v in result["baselines"].items())
    where = f" -> {out}" if out else ""
    level = ""
    if "level" in result:
        level = ("; above every level" if result["level"] is None else
                 f"; reached the {result['level']} level ({result['baselines'][result['level']]:.3f})")
    return (f"{result['task']} T={result['seq_len']} {result['cell']}: test {result['metric']} "
            f"{result['test']:.4g} (baselines: {baselines}){level}; {result['steps']} steps, "
            f"{result['seconds']:.1f} s{where}")
