"""The experiment behind ``bptt gradflow``: how far back each cell carries a loss's gradient.

For each cell spec (a cell with its initialisation, forget-gate bias and nonlinearity) and each
seed, a ``SequenceModel`` is built, optionally trained a few Adam steps on the task, and
||dL/dh_t|| is measured for a loss at the last step of a batch from the task
(``diagnostics.hidden_grad_norms``).  The result is a figure of the top layer's curves against the
lag, a CSV of every curve, and one summary line per cell: the decay rate fitted to the median
curve, the factor per step, the memory horizon and a suggested truncation length k2.

A cell list is comma-separated, in the cell grammar of every command
(``bptt.runs.config``): a cell may carry its own settings after a colon, and a ``key=value``
with no cell of its own continues the cell before it; an entry also takes ``init`` and
``label``::

    rnn,lstm,lstm:forget_bias=1,gru,rnn:init=identity,nonlinearity=relu,label=irnn

The models compute in float64: a gradient shrinking by 0.6 per step is 1e-44 after 200 steps,
below float32's smallest normal number, and the tail of the curve would read as zeros.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np

from bptt.diagnostics import decay_rate, hidden_grad_norms, memory_horizon, suggest_truncation
from bptt.errors import ConfigError, option_integer
from bptt.nn import registry as cell_registry
from bptt.runs.config import NONLINEARITIES, cell_settings, split_cells

__all__ = ["DEFAULT_CELLS", "CellSpec", "CellResult", "parse_cells", "measure", "summarize", "run",
           "write_csv"]

#: The comparison drawn with no options: tanh RNN, LSTM at PyTorch's default init, LSTM with
#: forget-gate bias 1 (Gers et al. 2000; Jozefowicz et al. 2015), GRU, IRNN (Le et al. 2015),
#: IndRNN (Li et al. 2018).
DEFAULT_CELLS = "rnn,lstm,lstm:forget_bias=1,gru,rnn:init=identity,nonlinearity=relu,label=irnn,indrnn"

class CellSpec:
    """One model of the comparison: a registered cell, its ``init`` and options, and its label.

    ``CellSpec("lstm", forget_bias=1.0, label="lstm-fb1")``; options not given take the cell's
    defaults, so two specs of the same model compare equal however they were written.
    """

    __slots__ = ("cell", "init", "label", "options")

    def __init__(self, cell, init="default", label="", **options):
        kind = cell_registry.get(cell, "CellSpec")
        self.cell, self.init, self.label = kind.name, init, label
        self.options = kind.resolve("CellSpec", options)

    def _key(self):
        return self.cell, self.init, self.label, tuple(sorted(self.options.items()))

    def __eq__(self, other):
        return isinstance(other, CellSpec) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"CellSpec({self.cell!r}, init={self.init!r}{opts}, label={self.label!r})"

    def build(self, input_size, hidden, output_size, layers, rng):
        """The float64 ``SequenceModel`` this spec describes, initialised from ``rng``."""
        from bptt.nn import SequenceModel

        return SequenceModel(self.cell, input_size, hidden, output_size, num_layers=layers,
                             init=self.init, dtype=np.float64, rng=rng, **self.options)


def parse_cells(text: str | None = None, init: str = "default", forget_bias: float | None = None,
                nonlinearity: str | None = None) -> list[CellSpec]:
    """Parse a cell list such as ``"rnn,lstm:forget_bias=1,rnn:init=identity,nonlinearity=relu"``.

    Parameters
    ----------
    text : str, optional
        Comma-separated registered cells (``bptt.nn.registry.names()``), each optionally followed by
        ``:key=value`` settings; ``DEFAULT_CELLS`` when None.  Keys: ``init`` and ``label`` for
        every cell, and the cell's own options (``nonlinearity`` for rnn, ``forget_bias`` for
        lstm, ``recurrent_max`` for indrnn, ...).
    init, forget_bias, nonlinearity : optional
        The settings of cells that do not give their own, where the cell takes them (None:
        each cell's own default).

    Returns
    -------
    list of CellSpec
        Labelled by ``label=`` or else by the spec as written.

    Raises
    ------
    ConfigError
        For ``--cells`` (or the option whose default is bad), naming the bad cell, key or value
        and the allowed ones.
    """
    if init not in cell_registry.INITS:
        raise ConfigError("--init", f"unknown value {init!r}; choose from {', '.join(cell_registry.INITS)}")
    if nonlinearity is not None and nonlinearity not in NONLINEARITIES:
        raise ConfigError("--nonlinearity", f"unknown value {nonlinearity!r}; choose from "
                                            f"{', '.join(NONLINEARITIES)}")
    defaults = {"forget_bias": forget_bias, "nonlinearity": nonlinearity}
    specs = []
    for name, pairs, spec in split_cells(DEFAULT_CELLS if text is None else text, "--cells"):
        if name not in cell_registry.names():
            raise ConfigError("--cells", f"unknown cell {name!r} in {spec!r}; cells are "
                                         f"{', '.join(cell_registry.names())}")
        cell = cell_registry.get(name)
        given = cell_settings(cell, pairs, spec, "--cells", ("init", *cell.options, "label"))
        settings = {"label": spec, "init": init}
        settings.update((k, v) for k, v in defaults.items() if k in cell.options and v is not None)
        settings.update(given)
        if settings["init"] not in cell.inits:
            raise ConfigError("--cells" if "init" in given else "--init",
                              f"init={settings['init']!r} for {name} in {spec!r}; choose from "
                              f"{', '.join(cell.inits)}")
        specs.append(CellSpec(name, **settings))
    labels = [s.label for s in specs]
    repeated = sorted({l for l in labels if labels.count(l) > 1})
    if repeated:
        raise ConfigError("--cells", f"{', '.join(map(repr, repeated))} appears more than once; give each "
                                     f"its own settings or a label=")
    return specs


def _last_step(T):
    mask = np.zeros(T)
    mask[-1] = 1.0
    return mask


def measure(spec, task, *, hidden=64, layers=1, seeds=5, batch_size=32, train_steps=0, lr=1e-3, seed=0):
    """||dL/dh_t|| of one cell spec on ``task`` over several seeds.

    Each seed s builds the model from ``numpy.random.default_rng([seed, s, 0])`` and draws its
    batches from ``default_rng([seed, s, 1])``, so every cell sees the same data.  With
    ``train_steps``, the model first makes that many Adam updates (full BPTT, the task's own
    mask) on fresh batches.  The loss measured is the task's loss at the last step only.

    Parameters
    ----------
    spec : CellSpec
    task : bptt.data.tasks.Task
    hidden, layers, seeds, batch_size, train_steps : int
    lr : float
        Adam's learning rate for the training steps.
    seed : int

    Returns
    -------
    np.ndarray, shape (seeds, L, T)
        ``hidden_grad_norms`` per seed.
    """
    from bptt import optim
    from bptt.data import tasks
    from bptt.credit.tbptt import TBPTT

    loss_fn = tasks.loss_function(task)
    curves = []
    for s in range(seeds):
        model = spec.build(task.input_size, hidden, task.output_size, layers, np.random.default_rng([seed, s, 0]))
        data = np.random.default_rng([seed, s, 1])
        if train_steps:
            trainer = TBPTT(model, loss_fn, optim.Adam(model.parameters(), lr=lr), k1=task.seq_len)
            for _ in range(train_steps):
                trainer.reset_state()
                trainer.run(*task.batch(batch_size, data))
        x, y, _ = task.batch(batch_size, data)
        norms = hidden_grad_norms(model, x, y, loss_fn, mask=_last_step(len(x)))
        model.zero_grad()
        if not np.all(np.isfinite(norms)):
            after = f" after {train_steps} training steps at lr={lr:g}; lower --lr" if train_steps else ""
            raise ConfigError("--lr" if train_steps else "--cells",
                              f"{spec.label} (seed {s}) gives non-finite gradients{after}")
        curves.append(norms)
    return np.stack(curves)


@dataclass(frozen=True)
class CellResult:
    """One cell's measurements and the numbers read off its median curve.

    Attributes
    ----------
    spec : CellSpec
    norms : np.ndarray, shape (seeds, L, T)
    curve : np.ndarray, shape (T,)
        The top layer's median over seeds of ||dL/dh_t||, each seed's curve divided by its value
        at the last step (seeds with no gradient there left out; zeros if that is every seed).
    fit : diagnostics.DecayFit or None
        Of ``curve``; None when fewer than two lags have a gradient (dead ReLU units, say).
    seed_rates : np.ndarray, shape (seeds,)
        The decay rate of each seed's own top-layer curve (NaN where it cannot be fitted).
    horizon : int or None
        ``memory_horizon(curve)`` (None: beyond T-1; 0 when no gradient reaches the state).
    k2 : int
        ``suggest_truncation(curve)`` (1 when no gradient reaches the state).
    """

    spec: CellSpec
    norms: np.ndarray
    curve: np.ndarray
    fit: object
    seed_rates: np.ndarray
    horizon: int | None
    k2: int

    def line(self, width=0):
        """The one-line summary the command prints."""
        T = self.curve.size
        horizon = f">{T - 1}" if self.horizon is None else str(self.horizon)
        if self.fit is None:
            reach = np.flatnonzero(self.curve[::-1] > 0)
            rate = (f"decay rate n/a (no gradient beyond lag {reach[-1]})" if reach.size
                    else "decay rate n/a (no gradient reaches the state)")
        else:
            spread = ""
            if self.seed_rates.size > 1 and np.any(np.isfinite(self.seed_rates)):
                spread = f" (seeds {np.nanmin(self.seed_rates):+.4f}..{np.nanmax(self.seed_rates):+.4f})"
            rate = f"decay rate {self.fit.rate:+.4f}/step{spread}  factor {self.fit.factor:.4f}/step"
        return f"{self.spec.label:<{width}}  {rate}  memory horizon {horizon} steps  suggested k2 {self.k2}"


def _fit(curve):
    try:
        return decay_rate(curve)
    except ValueError:      # fewer than two lags with a gradient
        return None


def summarize(spec, norms):
    """Read the decay rate, memory horizon and suggested k2 off ``measure``'s curves."""
    top = norms[:, -1, :]
    alive = top[:, -1] > 0
    if alive.any():
        curve = np.median(top[alive] / top[alive, -1:], axis=0)
    else:
        curve = np.zeros(top.shape[1])
    fit = _fit(curve)
    rates = np.array([np.nan if f is None else f.rate for f in map(_fit, top)])
    reached = curve[-1] > 0
    return CellResult(spec=spec, norms=norms, curve=curve, fit=fit, seed_rates=rates,
                      horizon=memory_horizon(curve) if reached else 0,
                      k2=suggest_truncation(curve) if reached else 1)


def write_csv(path, results):
    """Every curve, one row per (cell, seed, layer, step): label, cell, seed, layer, t, lag, norm."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "cell", "seed", "layer", "t", "lag", "norm"])
        for r in results:
            S, L, T = r.norms.shape
            for s in range(S):
                for layer in range(L):
                    writer.writerows([r.spec.label, r.spec.cell, s, layer, t, T - 1 - t, repr(float(v))]
                                     for t, v in enumerate(r.norms[s, layer]))
    return path


def _writable_folder(option, path):
    """Make the folder ``path`` goes into, or a ConfigError saying why it cannot be written."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ConfigError(option, f"cannot write {os.fspath(path)!r}: {folder} is not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise ConfigError(option, f"cannot write {os.fspath(path)!r}: {err.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise ConfigError(option, f"cannot write {os.fspath(path)!r}: {folder} is not writable")


def _positive(option, value):
    option_integer(value, option)


def run(cells=None, *, seq_len=200, hidden=64, layers=1, init="default", forget_bias=None, nonlinearity=None,
        task="adding", train_steps=0, lr=1e-3, seeds=5, batch_size=32, seed=0, out="gradflow.png",
        csv_path=None, echo=None):
    """Measure every cell, write the figure and the CSV, and return the results.

    Parameters
    ----------
    cells : str, optional
        A cell list for ``parse_cells``; ``DEFAULT_CELLS`` when None.
    seq_len, hidden, layers : int
        T, H and L of every model.
    init, forget_bias, nonlinearity :
        Settings of the cells that do not give their own (None: each cell's own default).
    task : str
        A name of ``bptt.data.tasks.names()``; it draws the inputs and targets.
    train_steps : int
        Adam updates before measuring (0: at initialisation).
    lr : float
    seeds, batch_size, seed : int
    out : str or path-like
        The figure (.png, .svg or .pdf).
    csv_path : str or path-like, optional
        The curves; ``out`` with the extension .csv when None.
    echo : callable, optional
        Called with each summary line as soon as its cell is measured, and last with the
        paths written.

    Returns
    -------
    list of CellResult

    Raises
    ------
    ConfigError
        Naming the command-line option at fault.
    """
    from bptt.diagnostics import plots
    from bptt.data import tasks

    specs = parse_cells(cells, init=init, forget_bias=forget_bias, nonlinearity=nonlinearity)
    for option, value in (("--seq-len", seq_len), ("--hidden", hidden), ("--layers", layers),
                          ("--seeds", seeds), ("--batch-size", batch_size)):
        _positive(option, value)
    if isinstance(train_steps, bool) or not isinstance(train_steps, (int, np.integer)) or train_steps < 0:
        raise ConfigError("--train-steps", f"need an integer >= 0, got {train_steps!r}")
    if not lr > 0:
        raise ConfigError("--lr", f"need a positive learning rate, got {lr!r}")
    ext = os.path.splitext(os.fspath(out))[1].lower().lstrip(".")
    if ext not in plots.FORMATS:
        raise ConfigError("--out", f"{os.fspath(out)!r} must end in {', '.join('.' + f for f in plots.FORMATS)}")
    for option, path in (("--out", out), ("--csv", csv_path)):
        _writable_folder(option, path)      # before minutes of measuring, not after
    try:
        the_task = tasks.get(task, seq_len=seq_len)
    except ValueError as err:
        raise ConfigError("--seq-len" if "seq_len" in str(err) else "--task", str(err)) from None
    width = max(len(s.label) for s in specs)
    results = []
    for spec in specs:
        norms = measure(spec, the_task, hidden=hidden, layers=layers, seeds=seeds, batch_size=batch_size,
                        train_steps=train_steps, lr=lr, seed=seed)
        results.append(summarize(spec, norms))
        if echo is not None:
            echo(results[-1].line(width))
    T = the_task.seq_len
    stage = "at initialisation" if not train_steps else f"after {train_steps} Adam steps"
    plots.plot_gradient_decay(
        {r.spec.label: r.norms[:, -1, :] for r in results}, path=out, normalize=True,
        truncation={r.spec.label: r.k2 for r in results},
        title=f"{the_task.name}, T={T}, H={hidden}, {stage}: loss at the last step\n"
              f"median and interquartile range over {seeds} seed{'s' if seeds > 1 else ''}; "
              f"dotted: suggested k2")
    csv_path = os.path.splitext(os.fspath(out))[0] + ".csv" if csv_path is None else csv_path
    write_csv(csv_path, results)
    if echo is not None:
        echo(f"wrote {os.fspath(out)} and {os.fspath(csv_path)}")
    return results
