"""Sequence tasks with their losses, metrics and baselines: ``get(name, **options)``.

Every task follows one interface (``bptt.data.tasks.base.Task``): ``batch(batch_size, rng)`` gives
``(x (T, B, I), y, mask (T,))``; ``validation_set()`` and ``test_set()`` are fixed by the seed;
``score(pred, y, mask)`` computes the task's metric and ``baselines()`` what simple predictors
reach on the same test set.

Examples
--------
>>> import bptt.data.tasks
>>> task = bptt.data.tasks.get("adding", seq_len=50)
>>> x, y, mask = task.batch(32, np.random.default_rng(0))     # (50, 32, 2), (50, 32, 1), (50,)
>>> loss_fn = bptt.data.tasks.loss_function(task)                   # per step: loss_fn(pred_t, y_t)
"""

from __future__ import annotations

import inspect

from bptt.data.tasks.base import Task
from bptt.data.tasks.forecasting import SeriesTask, from_csv
from bptt.data.tasks import forecasting as _fc
from bptt.data.tasks.lag import Lag
from bptt.data.tasks import toy as _toy
from bptt.data.tasks.text import TextTask, text, shakespeare as _shakespeare

__all__ = ["get", "names", "options", "train_defaults", "loss_function", "from_csv", "catalogue", "format_catalogue",
           "Task", "SeriesTask", "TextTask", "text"]

_REGISTRY = {
    "adding": _toy.Adding,
    "copy": _toy.CopyMemory,
    "parity": _toy.Parity,
    "recall": _toy.Recall,
    "lag": Lag,
    "sine": _fc.sine,
    "mackey-glass": _fc.mackey_glass,
    "lorenz": _fc.lorenz,
    "narma10": _fc.narma10,
    "sunspots": _fc.sunspots,
    "airline": _fc.airline,
    "nile": _fc.nile,
    "shakespeare": _shakespeare,
}

#: ``bptt train`` options a task sets when the user does not (``train_defaults``): the tasks whose
#: usual model differs from bptt train's defaults, which suit the toy tasks.  shakespeare: a
#: char-rnn sized LSTM (embedding width = hidden), BPTT(100; 100) (its seq_len) on 32 streams,
#: clipped at bptt train's 1, about 10 minutes on 2 cores; ``epochs`` with --stateful, ``steps``
#: (about as many characters) without.
_TRAIN_DEFAULTS = {
    "shakespeare": {"hidden": 256, "batch": 32, "optimizer": "adam", "lr": 2e-3, "epochs": 8,
                    "steps": 2500},
}


def names():
    """The registered task names, toy tasks first, then synthetic and real series."""
    return list(_REGISTRY)


def options(name):
    """``{option: default}`` that ``get(name, ...)`` accepts."""
    return {k: p.default for k, p in inspect.signature(_factory(name)).parameters.items()}


def train_defaults(name):
    """``{option: value}`` that ``bptt train`` uses for task ``name`` when not given (the task's
    own ``seq_len`` is in ``options(name)``); empty for a task that keeps bptt train's defaults.

    ``epochs`` applies to stateful runs, ``steps`` to the others, ``lr`` to ``optimizer``.
    """
    _factory(name)      # an unknown task is an error here too
    return dict(_TRAIN_DEFAULTS.get(str(name).lower().replace("_", "-"), {}))


def _factory(name):
    key = str(name).lower().replace("_", "-")
    if key not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; tasks are: {', '.join(_REGISTRY)} "
                         f"(or a CSV through bptt.data.tasks.from_csv)")
    return _REGISTRY[key]


def get(name, **options_):
    """Build a task by name (``-`` and ``_`` are interchangeable), e.g. ``get('adding', seq_len=50)``.

    Options left as None are dropped, so a command line can pass every flag it has.

    Raises
    ------
    ValueError
        Unknown task or option (the message lists the allowed ones), or a bad option value.
    """
    factory = _factory(name)
    allowed = options(name)
    given = {k: v for k, v in options_.items() if v is not None}
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"task {name!r}: unknown option(s) {', '.join(unknown)}; "
                         f"options are: {', '.join(allowed)}")
    return factory(**given)


def loss_function(task):
    """The per-step training loss of ``task``: ``loss_fn(y_pred_t, y_t)`` -> scalar Tensor.

    ``'mse'``: ``bptt.nn.mse_loss`` on (B, O) predictions and targets; ``'cross_entropy'``:
    ``bptt.nn.cross_entropy`` of (B, C) logits against (B,) integer classes.  Both average over
    the batch; masking steps is the caller's business (the task's ``mask``).
    """
    from bptt.nn import losses

    if task.loss == "mse":
        def loss_fn(y_pred_t, y_t):
            return losses.mse_loss(y_pred_t, y_t)
    elif task.loss == "cross_entropy":
        def loss_fn(y_pred_t, y_t):
            return losses.cross_entropy(y_pred_t, y_t)
    else:
        raise ValueError(f"task {task.name!r}: no loss function for loss {task.loss!r}")
    return loss_fn


def catalogue():
    """``describe()`` of every task at its default options: what ``bptt tasks`` shows."""
    return [get(name).describe() for name in names()]


def format_catalogue(rows):
    """A plain-text table of ``catalogue()`` rows: name, T, I->O, sizes, metric, baselines."""
    def sizes(d):
        s = d["sizes"]
        train = "fresh" if s["train"] is None else s["train"]
        return f"{train}/{s['validation']}/{s['test']}"

    def base(d):
        return ", ".join(f"{k} {v:.4g}" for k, v in d["baselines"].items())

    header = ("task", "T", "I->O", "train/val/test", "metric", "baselines (test)")
    lines = [header] + [(d["name"], str(d["seq_len"]), f"{d['input_size']}->{d['output_size']}",
                         sizes(d), d["metric"], base(d)) for d in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) + "  " + line[-1]
                     for line in lines)
