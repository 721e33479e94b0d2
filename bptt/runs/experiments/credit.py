"""The experiment behind ``bptt credit``: every estimator's gradient against the exact one.

For each cell of a list (as ``bptt gradflow`` reads it), a float64 ``SequenceModel`` is built,
optionally trained a few Adam steps with full BPTT on the task, and on one batch of the task
``bptt.credit.gradient_alignment`` compares the exact gradient with truncated BPTT at each length,
adaptive truncation, RTRL and UORO.  The result is a figure of the alignment against the
truncation length per cell, a CSV of every number, and one line per estimator and cell.

An estimator list is comma-separated; bare numbers after ``tbptt:K`` are more truncation
lengths (k1 = k2 = K)::

    tbptt:1,2,4,8,16,32,auto:0.1,uoro,rtrl
"""

from __future__ import annotations

import csv
import os

import numpy as np

from bptt.errors import ConfigError, option_integer

__all__ = ["DEFAULT_ESTIMATORS", "parse_estimators", "measure", "run", "write_csv", "COLUMNS"]

DEFAULT_ESTIMATORS = "tbptt:1,2,4,8,16,32,auto:0.1,uoro,rtrl"

#: The CSV's columns, one row per cell and estimator.
COLUMNS = ("cell", "estimator", "k1", "k2", "cosine", "cosine_std", "cosine_of_mean",
           "relative_error", "relative_error_std", "relative_error_of_mean", "samples")


def parse_estimators(text=None):
    """Expand an estimator list such as ``"tbptt:1,2,4,uoro,rtrl"`` into single specs.

    Returns
    -------
    list of str
        ``gradient_alignment`` specs: ``["tbptt:1", "tbptt:2", "tbptt:4", "uoro", "rtrl"]``.

    Raises
    ------
    ConfigError
        For ``--estimators``, naming the bad entry.
    """
    from bptt.credit import parse_estimator

    specs = []
    for token in (t.strip() for t in (DEFAULT_ESTIMATORS if text is None else text).split(",")):
        if token.isdigit() and specs and specs[-1].startswith("tbptt:"):
            token = f"tbptt:{token}"
        try:
            parse_estimator(token)
        except ValueError as err:
            raise ConfigError("--estimators", str(err)) from None
        if token in specs:
            raise ConfigError("--estimators", f"{token!r} is given twice")
        specs.append(token)
    return specs


def _train(model, task, loss_fn, steps, lr, batch_size, rng):
    """``steps`` Adam updates with full BPTT, one fresh batch each."""
    from bptt.optim import Adam
    from bptt.credit.tbptt import TBPTT

    trainer = TBPTT(model, loss_fn, Adam(model.parameters(), lr=lr), k1=task.seq_len)
    for _ in range(steps):
        x, y, mask = task.batch(batch_size, rng)
        trainer.reset_state()
        trainer.run(x, y, mask)


def measure(spec, task, estimators, *, hidden=16, batch_size=8, samples=100, train_steps=0,
            lr=1e-3, seed=0):
    """``gradient_alignment`` of one cell's model on one batch of ``task``.

    Returns
    -------
    dict
        ``{estimator spec: record}`` as ``bptt.credit.gradient_alignment`` returns it.
    """
    from bptt.data import tasks
    from bptt.credit import gradient_alignment

    rng = np.random.default_rng(seed)
    model = spec.build(task.input_size, hidden, task.output_size, 1, rng)
    loss_fn = tasks.loss_function(task)
    _train(model, task, loss_fn, train_steps, lr, batch_size, rng)
    x, y, mask = task.batch(batch_size, rng)
    return gradient_alignment(model, x.astype(np.float64), y, loss_fn, estimators, mask=mask,
                              samples=samples, rng=rng)


def _truncation(spec, record, T):
    """(k1, k2) of an estimator spec: its window for TBPTT and ``auto``, T (full) otherwise."""
    from bptt.credit import parse_estimator

    kind, opts = parse_estimator(spec)
    if kind == "tbptt":
        return opts["k1"], opts["k2"]
    if kind == "auto":
        return 1, record["k2"]
    return T, T


def write_csv(rows, path):
    """Write ``rows`` (dicts with ``COLUMNS``) to ``path``."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _line(row, width):
    spread = f" ± {row['cosine_std']:.3f}" if row["samples"] > 1 else ""
    return (f"{row['cell']:<{width}}  {row['estimator']:<10}  k2 {row['k2']:>4}  cosine "
            f"{row['cosine']:.3f}{spread}  of the mean {row['cosine_of_mean']:.3f}  relative error "
            f"{row['relative_error']:.3f}")


def run(cells=None, *, task="lag", estimators=None, seq_len=None, hidden=16, batch_size=8,
        samples=100, train_steps=0, lr=1e-3, seed=0, out="credit.png", csv_path=None, echo=None):
    """Measure every cell with every estimator, write the figure and the CSV, return the rows.

    Parameters
    ----------
    cells : str, optional
        A cell list for ``bptt.runs.experiments.gradflow.parse_cells``; every registered cell when None.
    task : str
        A name of ``bptt.data.tasks.names()``.
    estimators : str, optional
        An estimator list for ``parse_estimators``; ``DEFAULT_ESTIMATORS`` when None.
    seq_len : int, optional
        T; the task's own when None.
    hidden, batch_size, samples, train_steps, seed : int
        H, B, UORO's draws, Adam updates before measuring (0: at initialisation), the seed.
    lr : float
        Adam's learning rate for ``train_steps``.
    out : str or path-like
        The figure (.png, .svg or .pdf).
    csv_path : str or path-like, optional
        ``out`` with the extension .csv when None.
    echo : callable, optional
        Called with one line per estimator and cell as soon as the cell is measured, and last
        with the paths written.

    Returns
    -------
    list of dict
        One row per cell and estimator, with ``COLUMNS``.

    Raises
    ------
    ConfigError
        Naming the command-line option at fault.
    """
    from bptt.diagnostics import plots
    from bptt.data import tasks
    from bptt.runs.experiments.gradflow import parse_cells
    from bptt.runs.config import CELLS

    specs = parse_cells(",".join(CELLS) if cells is None else cells)
    names = parse_estimators(estimators)
    for option, value in (("--hidden", hidden), ("--batch-size", batch_size), ("--samples", samples)):
        option_integer(value, option)
    option_integer(train_steps, "--train-steps", least=0)
    if seq_len is not None:
        option_integer(seq_len, "--seq-len")
    if not lr > 0:
        raise ConfigError("--lr", f"need a positive learning rate, got {lr!r}")
    ext = os.path.splitext(os.fspath(out))[1].lower().lstrip(".")
    if ext not in plots.FORMATS:
        raise ConfigError("--out", f"{os.fspath(out)!r} must end in "
                                   f"{', '.join('.' + f for f in plots.FORMATS)}")
    try:
        the_task = tasks.get(task, seq_len=seq_len)
    except ValueError as err:
        raise ConfigError("--seq-len" if "seq_len" in str(err) else "--task", str(err)) from None
    width = max(len(s.label) for s in specs)
    rows = []
    for spec in specs:
        result = measure(spec, the_task, names, hidden=hidden, batch_size=batch_size,
                         samples=samples, train_steps=train_steps, lr=lr, seed=seed)
        for name, record in result.items():
            k1, k2 = _truncation(name, record, the_task.seq_len)
            rows.append({"cell": spec.label, "estimator": name, "k1": k1, "k2": k2,
                         **{c: record[c] for c in COLUMNS[4:]}})
            if echo is not None:
                echo(_line(rows[-1], width))
    csv_path = os.path.splitext(os.fspath(out))[0] + ".csv" if csv_path is None else csv_path
    title = (f"{the_task.name}, T={the_task.seq_len}, H={hidden}, "
             + ("at initialisation" if not train_steps else f"after {train_steps} Adam steps"))
    plots.plot_credit(rows, out, T=the_task.seq_len, title=title)
    write_csv(rows, csv_path)
    if echo is not None:
        echo(f"wrote {os.fspath(out)} and {os.fspath(csv_path)}")
    return rows
