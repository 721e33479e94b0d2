"""A run's configuration: ``TrainConfig``, the values its options take, and ``prepare``.

``prepare`` validates a ``TrainConfig`` and fills in what was left to defaults, in this order: the
task's own (``bptt.data.tasks.train_defaults``), then ``DEFAULTS``, ``OPTIMIZERS`` and
``TRAIN_CELL_OPTIONS``; an option that is given always wins.  It builds the task on the way,
since a sequence length or a CSV is only known to be valid once the task is built.

The cell grammar
----------------
Every command names a cell the same way, ``CELL[:KEY=VALUE,...]``, the keys being the cell's own
options (``bptt cells`` lists them)::

    lstm:forget_bias=1    rnn:nonlinearity=relu    indrnn:nonlinearity=tanh,recurrent_max=2

A list of cells (``bptt gradflow --cells``, ``bptt credit --cells``) separates its entries with
commas too: a ``KEY=VALUE`` with no cell of its own continues the entry before it, and an entry
also takes ``init`` and ``label``.  ``split_cells`` and ``cell_settings`` read that grammar for
every command; ``parse_cell`` reads one cell.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

from bptt.errors import ConfigError, option_choice, option_float, option_integer
from bptt.nn import recompute
from bptt.nn import registry as cell_registry
from bptt.runs import streams

__all__ = ["TrainConfig", "prepare", "build_task", "default_out", "memory_estimate", "most_gates",
           "cells_taking", "split_cells", "cell_settings", "parse_cell", "cell_request", "upgrade", "CELLS",
           "INITS",
           "NONLINEARITIES", "OPTIMIZERS", "DEFAULTS", "TRAIN_CELL_OPTIONS", "SCORE_STEPS",
           "DEPRECATED_FIELDS"]

CELLS = cell_registry.names()
INITS = cell_registry.INITS
#: Every value some registered cell accepts for ``nonlinearity``.
NONLINEARITIES = tuple(dict.fromkeys(v for c in cell_registry.registered()
                                     for v in getattr(c.options.get("nonlinearity"), "choices", None) or ()))
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
#: bptt train's one choice over a cell's own defaults: its LSTMs start with forget-gate bias 1
#: (Gers et al. 2000; Jozefowicz et al. 2015 find it closes most of the gap to the GRU), as
#: every run since bptt 0.1, the default adding run included, has trained.
TRAIN_CELL_OPTIONS = {"lstm": {"forget_bias": 1.0}}
#: Example-steps (examples times T) that ``bptt.runs.build.predict`` runs at once: bounds the
#: memory of scoring long sequences (about 100 MB for a 64-unit LSTM) without slowing short ones.
SCORE_STEPS = 65536
#: The fields of bptt 0.1 that held cell options, deprecated: ``cell_options`` holds them now.
DEPRECATED_FIELDS = ("forget_bias", "nonlinearity")


@dataclass
class TrainConfig:
    """Every option of a run, as stored in ``config.json``.

    None means: ``seq_len`` the task's own default, ``k1`` the sequence length, ``k2`` k1,
    ``lr`` the optimizer's default in ``OPTIMIZERS``, ``hidden``, ``batch`` and ``steps`` the
    task's defaults (``bptt.data.tasks.train_defaults``) or else those in ``DEFAULTS``; ``prepare``
    fills them in.  ``cell`` is a registered cell, optionally with its options in the cell grammar
    (``"lstm:forget_bias=0"``); ``cell_options`` gives them as a dict instead, and None leaves
    each to the cell's default but for ``TRAIN_CELL_OPTIONS``.  ``prepare`` stores the cell's
    name in ``cell`` and all its options in ``cell_options``.  ``data``, ``columns`` and
    ``target`` train on a user's CSV series instead of a named task; ``task='text'`` reads the
    UTF-8 file ``data``.  ``stateful`` trains on the training part cut into ``batch`` streams
    with the state carried (``bptt.runs.streams``); ``epochs``, which needs it, then fixes
    ``steps``.  ``embed`` is the embedding width of a text model (None: ``hidden``).

    ``forget_bias`` and ``nonlinearity`` are the spellings of bptt 0.1, deprecated: ``prepare``
    moves them into ``cell_options`` with a ``DeprecationWarning``; they go in the next release.
    """

    task: str = "adding"
    seq_len: int | None = None
    cell: str = "lstm"
    cell_options: dict[str, Any] | None = None
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
    forget_bias: float | None = None
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


def prepare(config: TrainConfig) -> tuple[TrainConfig, Any]:
    """Validate ``config`` and build its task; return ``(resolved config, task)``.

    Parameters
    ----------
    config : TrainConfig
        Left unchanged.

    Returns
    -------
    TrainConfig
        A copy with seq_len, k1, k2, lr, hidden, batch, steps and every cell option filled in
        (``cell`` the bare name), and ``data`` made an absolute path.  Options left as None take
        the task's defaults first (``bptt.data.tasks.train_defaults``: e.g. shakespeare's LSTM
        of 256 for 8 epochs with ``stateful``), then ``DEFAULTS``, ``OPTIMIZERS`` and
        ``TRAIN_CELL_OPTIONS``.
    bptt.data.tasks.Task
        The task the run trains on.

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
    option_choice(c.optimizer, tuple(OPTIMIZERS), "--optimizer")
    c.cell, options = cell_request(c)
    if any(getattr(c, k) is not None for k in DEPRECATED_FIELDS):
        warnings.warn("TrainConfig.forget_bias and .nonlinearity (bptt train --forget-bias, "
                      "--nonlinearity) are deprecated and go in the next release; give the cell's "
                      "options with it, cell='lstm:forget_bias=1', or as cell_options",
                      DeprecationWarning, stacklevel=2)
    cell = cell_registry.get(c.cell)
    c.cell_options = cell.resolve(f"--cell {c.cell}", {**TRAIN_CELL_OPTIONS.get(c.cell, {}), **options})
    c.forget_bias = c.nonlinearity = None
    if c.init not in cell.inits:
        raise ConfigError("--init", f"unknown value {c.init!r} for --cell {c.cell}; choose from "
                                    f"{', '.join(cell.inits)}")
    names = ("hidden", "layers", "batch", "val_every") + (("seq_len",) if c.seq_len else ()) \
        + (("steps",) if c.steps is not None else ()) \
        + (("epochs",) if c.epochs is not None else ()) + (("embed",) if c.embed is not None else ())
    for name in names:
        setattr(c, name, option_integer(getattr(c, name), "--" + name.replace("_", "-")))
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
            recompute.resolve(c.checkpoint, "--checkpoint")
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


# -- the cell grammar ----------------------------------------------------------------------------
def cells_taking(option: str) -> list[str]:
    """The registered cells that have the cell option ``option``.

    Parameters
    ----------
    option : str
        E.g. ``"nonlinearity"``.

    Returns
    -------
    list of str
    """
    return [c.name for c in cell_registry.registered() if option in c.options]


def split_cells(text: str, option: str) -> list[tuple[str, list[str], str]]:
    """Split a cell list into its entries.

    Parameters
    ----------
    text : str
        Comma-separated ``CELL[:KEY=VALUE,...]``; a ``KEY=VALUE`` with no cell continues the
        entry before it.
    option : str
        The option a ``ConfigError`` names.

    Returns
    -------
    list of (str, list of str, str)
        Per entry: the cell as written, its ``"KEY=VALUE"`` pairs, and the entry as written.
    """
    groups = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            raise ConfigError(option, f"empty entry in {text!r}; separate cells with single commas")
        if "=" in token and ":" not in token:
            if not groups:
                raise ConfigError(option, f"{token!r} comes before any cell; write cell:key=value, "
                                          f"e.g. lstm:forget_bias=1")
            cell, pairs, spec = groups[-1]
            groups[-1] = (cell, pairs + [token], f"{spec},{token}")
        else:
            cell, _, rest = token.partition(":")
            groups.append((cell.strip(), [rest] if rest.strip() else [], token))
    return groups


def cell_settings(cell, pairs: list[str], spec: str, option: str, keys: tuple[str, ...]) -> dict:
    """The ``KEY=VALUE`` pairs of one entry, each converted and checked.

    Parameters
    ----------
    cell : bptt.nn.registry.CellType
    pairs : list of str
        As ``split_cells`` gives them.
    spec : str
        The entry as written, for messages.
    option : str
        The option a ``ConfigError`` names.
    keys : tuple of str
        The keys allowed: the cell's options, and ``init`` and ``label`` in a list of cells.

    Returns
    -------
    dict
        ``{key: value}``, numbers as floats, in the order given.
    """
    settings = {}
    for pair in pairs:
        key, sep, value = (s.strip() for s in pair.partition("="))
        if not sep or not value:
            raise ConfigError(option, f"{pair!r} in {spec!r} is not key=value")
        if key not in keys:
            raise ConfigError(option, f"unknown key {key!r} for {cell.name} in {spec!r}; allowed keys: "
                                      f"{', '.join(keys) or f'none ({cell.name} has no options)'}")
        if key in settings:
            raise ConfigError(option, f"{key!r} is given twice in {spec!r}")
        settings[key] = _setting(cell, key, value, spec, option)
    return settings


def _setting(cell, key, value, spec, option):
    """The text ``value`` of ``key`` for ``cell``, converted and checked by the cell's option."""
    if key == "label":
        return value
    choices = cell.inits if key == "init" else cell.options[key].choices
    if choices is not None and value not in choices:
        raise ConfigError(option, f"{key}={value!r} in {spec!r}; choose from {', '.join(choices)}")
    if key == "init":
        return value
    if cell.options[key].kind is float:
        try:
            float(value)
        except ValueError:
            raise ConfigError(option, f"{key}={value!r} in {spec!r} is not a number") from None
    try:
        return cell.options[key].validate(cell.name, key, value)
    except ValueError as err:
        raise ConfigError(option, f"{err} in {spec!r}") from None


def parse_cell(text: str, option: str = "--cell") -> tuple[str, dict]:
    """One cell in the cell grammar, ``CELL[:KEY=VALUE,...]``, the keys its own options.

    Parameters
    ----------
    text : str
        E.g. ``"indrnn:nonlinearity=tanh,recurrent_max=2"``.
    option : str
        The option a ``ConfigError`` names.

    Returns
    -------
    (str, dict)
        The registered cell's name and the options given, converted and checked.
    """
    if not isinstance(text, str):
        raise ConfigError(option, f"need a cell name, got {text!r}")
    groups = split_cells(text, option)
    if len(groups) != 1:
        raise ConfigError(option, f"{text!r} names {len(groups)} cells; give one, e.g. lstm:forget_bias=1")
    name, pairs, spec = groups[0]
    cell = cell_registry.get(option_choice(name, cell_registry.names(), option))
    return cell.name, cell_settings(cell, pairs, spec, option, tuple(cell.options))


def cell_request(config: TrainConfig) -> tuple[str, dict]:
    """The cell ``config`` asks for and the options it sets itself.

    Those are the options written in ``cell``, those of ``cell_options`` and the deprecated
    ``forget_bias`` (for a cell that takes it, as in bptt 0.1) and ``nonlinearity``; an option
    set twice is an error.  ``TRAIN_CELL_OPTIONS`` and the cell's defaults are not included.

    Parameters
    ----------
    config : TrainConfig

    Returns
    -------
    (str, dict)
        The registered cell's name and ``{option: value}``, checked.
    """
    name, written = parse_cell(config.cell, "--cell")
    cell = cell_registry.get(name)
    given = {} if config.cell_options is None else config.cell_options
    if not isinstance(given, dict):
        raise ConfigError("--cell-options", f"need a table of cell options, got {given!r}")
    for key, value in given.items():
        if key not in cell.options:
            raise ConfigError("--cell-options", f"unknown key {key!r} for {name}; allowed keys: "
                                                f"{', '.join(cell.options) or 'none'}")
        try:
            cell.options[key].validate(f"--cell {name}", key, value)
        except ValueError as err:
            raise ConfigError("--cell-options", str(err)) from None
    twice = sorted(set(written) & set(given))
    if twice:
        raise ConfigError("--cell", f"{', '.join(twice)} is set both in {config.cell!r} and in cell_options")
    options = {**given, **written}
    if config.forget_bias is not None:
        value = option_float(config.forget_bias, "--forget-bias")
        if "forget_bias" in options:
            raise ConfigError("--forget-bias", f"forget_bias is also given with the cell; give it once, "
                                               f"as --cell {name}:forget_bias={value:g}")
        if "forget_bias" in cell.options:       # bptt 0.1 passed it to the LSTM only
            options["forget_bias"] = value
    if config.nonlinearity is not None:
        if "nonlinearity" not in cell.options:
            raise ConfigError("--nonlinearity", f"{config.nonlinearity!r} applies to --cell "
                                                f"{', '.join(cells_taking('nonlinearity'))} only (the "
                                                f"gated cells use tanh and sigmoid)")
        if "nonlinearity" in options:
            raise ConfigError("--nonlinearity", f"nonlinearity is also given with the cell; give it "
                                                f"once, as --cell {name}:nonlinearity={config.nonlinearity}")
        try:
            options["nonlinearity"] = cell.options["nonlinearity"].validate(f"--cell {name}", "nonlinearity",
                                                                            config.nonlinearity)
        except ValueError as err:
            raise ConfigError("--nonlinearity", str(err)) from None
    return name, options


def upgrade(stored: dict) -> dict:
    """A stored configuration (``config.json``, a checkpoint's record) in today's form.

    bptt 0.1 kept the cell's options in the keys ``forget_bias`` (stored for every cell, used by
    the LSTM) and ``nonlinearity``; they move into ``cell_options``, resolved as ``prepare``
    resolves them, so a run of 0.1 evaluates and resumes.  Anything else is left as it is, for
    ``prepare`` to judge.

    Parameters
    ----------
    stored : dict

    Returns
    -------
    dict
    """
    if "cell_options" in stored or stored.get("cell") not in cell_registry.names():
        return stored
    cell = cell_registry.get(stored["cell"])
    options = {k: stored.get(k) for k in DEPRECATED_FIELDS if stored.get(k) is not None and k in cell.options}
    try:
        resolved = cell.resolve("config", options)
    except ValueError:
        return stored
    return {**stored, **dict.fromkeys(DEPRECATED_FIELDS), "cell_options": resolved}


# -- the run directory and its size ----------------------------------------------------------------
def default_out(config: TrainConfig, root: str = "runs") -> str:
    """A fresh run directory: ``runs/TASK-CELL`` (``-T`` and the length if given), numbered if taken.

    Parameters
    ----------
    config : TrainConfig
        As given (the cell's options, if written after its name, are not part of the name).
    root : str

    Returns
    -------
    str
    """
    task = os.path.splitext(os.path.basename(config.data))[0] if config.data else config.task
    cell = str(config.cell).partition(":")[0]
    base = os.path.join(root, f"{task}-{cell}" + (f"-T{config.seq_len}" if config.seq_len else ""))
    out, n = base, 1
    while os.path.exists(out):
        n += 1
        out = f"{base}-{n}"
    return out


def most_gates() -> int:
    """The most gate blocks of any registered cell.

    Returns
    -------
    int
        4 among the cells shipped (the LSTM's).
    """
    return max(len(c.gates) for c in cell_registry.registered())


def memory_estimate(config: TrainConfig, task) -> int:
    """Bytes a run of the resolved ``config`` holds at its peak, roughly.

    Parameters with their gradients and optimizer state, the training window's activations on
    the tape, one scoring batch's activations, and the fixed validation and test inputs, for a
    cell with the most gate blocks of any (an estimate that holds whatever the cell).

    Parameters
    ----------
    config : TrainConfig
        Resolved by ``prepare``.
    task : bptt.data.tasks.Task

    Returns
    -------
    int
    """
    G = most_gates()
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


# -- the task ------------------------------------------------------------------------------------
def build_task(config: TrainConfig):
    """The task ``config`` names, or a user's CSV series when ``config.data`` is set.

    Parameters
    ----------
    config : TrainConfig

    Returns
    -------
    bptt.data.tasks.Task

    Raises
    ------
    ConfigError
        For ``--data``, ``--task`` or ``--seq-len``, with the task's own message.
    """
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
