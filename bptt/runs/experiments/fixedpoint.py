"""The experiment behind ``bptt fixedpoint``: one fixed-point network trained with each gradient.

For each static task (``bptt.data.tasks.static``: two spirals, pattern completion) and each gradient
method, the same network, ``Sequential(FixedPoint(cell, I, H), Linear(H, O))`` from the same
initial weights, makes the same number of Adam updates on the same batches.  Per method it
records the loss curve, the test score, the median seconds per update, the peak memory of one
update (``tracemalloc``: every numpy allocation), the mean forward iterations, and the cosine of
its first gradient with the converged RBP gradient at the same weights and batch.  After training,
``diagnostics.fixed_point_gradients`` measures, on the RBP-trained network, how BPTT through the
last k iterations and k Neumann terms approach RBP as k grows (Liao et al. 2018).

A method list is comma-separated; ``neumann:k`` uses k terms and ``bptt:k`` backpropagates
through the last k iterations only (``bptt`` alone: through all of them)::

    rbp,gmres,bicgstab,neumann:3,bptt,bptt:3
"""

from __future__ import annotations

import csv
import os
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np

from bptt.errors import ConfigError, option_float, option_integer

__all__ = ["DEFAULT_METHODS", "Method", "MethodResult", "parse_methods", "build", "train_method", "run"]

DEFAULT_METHODS = "rbp,gmres,bicgstab,neumann:3,bptt,bptt:3"
_METHODS = ("rbp", "gmres", "bicgstab", "neumann", "bptt")


@dataclass(frozen=True)
class Method:
    """A gradient method: ``grad`` of ``FixedPoint`` and its truncation k (Neumann terms, BPTT steps)."""

    grad: str
    k: int | None = None

    @property
    def label(self):
        return self.grad if self.k is None else f"{self.grad}:{self.k}"

    def options(self):
        """The ``FixedPoint`` options this method sets."""
        if self.grad == "neumann":
            return {"grad": "neumann", "neumann_terms": self.k}
        if self.grad == "bptt":
            return {"grad": "bptt", "unroll": self.k}
        return {"grad": self.grad}


def parse_methods(text=None):
    """``"rbp,neumann:3,bptt:5"`` -> Methods; ``DEFAULT_METHODS`` when None; ConfigError for ``--grad``."""
    methods = []
    for token in (t.strip() for t in (DEFAULT_METHODS if text is None else text).split(",")):
        grad, sep, k = token.partition(":")
        if grad not in _METHODS:
            raise ConfigError("--grad", f"unknown method {token!r}; methods are {', '.join(_METHODS)} "
                                        f"(neumann:k for k terms, bptt:k for the last k iterations)")
        if sep and grad not in ("neumann", "bptt"):
            raise ConfigError("--grad", f"{token!r}: only neumann:k and bptt:k take a k")
        if sep and not (k.isdigit() and int(k) >= 1):
            raise ConfigError("--grad", f"{token!r}: k must be a positive integer")
        methods.append(Method(grad, int(k) if sep else (20 if grad == "neumann" else None)))
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise ConfigError("--grad", f"a method is given twice in {text!r}")
    return methods


def build(task, cell, hidden, *, tol, damping, contractive, seed, method, cell_options=None):
    """The float64 network ``Sequential(FixedPoint, Linear)`` for ``task``, initialised from ``seed``;
    ``cell_options`` go to the cell (None: its defaults)."""
    from bptt import nn

    rng = np.random.default_rng([seed, 0])
    layer = nn.FixedPoint(cell, task.input_size, hidden, tol=tol, max_iter=500, damping=damping,
                          contractive=contractive, dtype=np.float64, rng=rng, **method.options(),
                          **(cell_options or {}))
    return nn.Sequential(layer, nn.Linear(hidden, task.output_size, dtype=np.float64, rng=rng))


@dataclass
class MethodResult:
    """One method's run on one task (see the module docstring for what each number measures)."""

    task: str
    method: Method
    metric: str
    score: float
    losses: np.ndarray
    seconds: float
    peak_mb: float
    iterations: float
    cosine: float

    def line(self, width=0):
        return (f"{self.task:<8}  {self.method.label:<{width}}  test {self.metric} {self.score:.3f}  "
                f"{self.seconds * 1e3:7.1f} ms/update  peak {self.peak_mb:6.2f} MB  "
                f"cosine to RBP {self.cosine:.4f}  forward iterations {self.iterations:.0f}  "
                f"final loss {self.losses[-1]:.4f}")


def _flat_grad(model):
    return np.concatenate([p.grad.reshape(-1) for p in model.parameters()])


def _first_gradient(model, task, x, y, **options):
    """The gradient of the loss at the current weights, with the FixedPoint layer set to ``options``."""
    with model[0].using(**options):
        model.zero_grad()
        task.loss(model(x), y).backward()
    return _flat_grad(model)


def train_method(task, method, *, cell="rnn", hidden=32, steps=300, lr=0.01, batch=64, tol=1e-5, damping=1.0,
                 contractive=0.95, seed=0, cell_options=None):
    """Train one network with one method on one task; returns ``(MethodResult, model)``."""
    from bptt import optim
    from bptt.tape import no_grad

    model = build(task, cell, hidden, tol=tol, damping=damping, contractive=contractive, seed=seed, method=method,
                  cell_options=cell_options)
    data = np.random.default_rng([seed, 1])
    x, y = task.batch(batch, data, np.float64)
    reference = _first_gradient(model, task, x, y, grad="rbp", grad_tol=1e-10, grad_max_iter=2000)
    opt = optim.Adam(model.parameters(), lr=lr)
    losses, seconds, iterations = [], [], []
    peak = 0
    for step in range(steps):
        if step:
            x, y = task.batch(batch, data, np.float64)
        traced = step == 1                       # one update under tracemalloc, left out of the timing
        if traced:
            tracemalloc.start()
        start = time.perf_counter()
        opt.zero_grad()
        loss = task.loss(model(x), y)
        loss.backward()
        if step == 0:
            g = _flat_grad(model)
            cosine = float(g @ reference / (np.linalg.norm(g) * np.linalg.norm(reference)))
        opt.step()
        elapsed = time.perf_counter() - start
        if traced:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        else:
            seconds.append(elapsed)
        losses.append(loss.item())
        iterations.append(model[0].last.iterations)
    xt, yt = task.test_set(np.float64)
    with no_grad():
        score = task.score(model(xt).data, yt)
    return MethodResult(task=task.name, method=method, metric=task.metric, score=score, losses=np.array(losses),
                        seconds=float(np.median(seconds)) if seconds else float("nan"), peak_mb=peak / 2**20,
                        iterations=float(np.mean(iterations)), cosine=cosine), model


def write_csv(path, results):
    """One row per (task, method): the numbers of the summary lines."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "method", "metric", "score", "ms_per_update", "peak_mb", "cosine_to_rbp",
                         "forward_iterations", "final_loss"])
        for r in results:
            writer.writerow([r.task, r.method.label, r.metric, repr(r.score), repr(r.seconds * 1e3),
                             repr(r.peak_mb), repr(r.cosine), repr(r.iterations), repr(float(r.losses[-1]))])
    return path


def run(tasks=None, grads=None, *, cell="rnn", hidden=32, steps=300, lr=0.01, batch=64, tol=1e-5, damping=1.0,
        contractive=0.95, ks=(1, 2, 5, 10, 20, 50), seed=0, out="fixedpoint.png", echo=None):
    """Train every method on every task, write the figures and the CSV, and return the results.

    Parameters
    ----------
    tasks : sequence of str, optional
        Names of ``bptt.data.tasks.static.STATIC_TASKS``; all of them when None.
    grads : str, optional
        A method list for ``parse_methods``; ``DEFAULT_METHODS`` when None.
    cell : str
        The registered cell of the FixedPoint layer, in the cell grammar (``rnn:nonlinearity=relu``).
    hidden, steps, batch : int
    lr, tol, damping : float
    contractive : float or None
        The bound on ``||weight_hh||_2`` (None: no rescaling).
    ks : sequence of int
        Truncations of the gradient-agreement measurement.
    seed : int
    out : str or path-like
        The loss-curve figure; the agreement figure and the CSV are written beside it
        (``NAME_agreement.png``, ``NAME.csv``).
    echo : callable, optional
        Called with each summary line as soon as its run ends, and last with the paths written.

    Returns
    -------
    (list of MethodResult, {task: diagnostics.FixedPointGradients})

    Raises
    ------
    ConfigError
        Naming the command-line option at fault.
    """
    from bptt.diagnostics import plots
    from bptt.diagnostics import fixed_point_gradients
    from bptt.data.tasks.static import STATIC_TASKS, get_static
    from bptt.runs.config import parse_cell

    methods = parse_methods(grads)
    tasks = list(STATIC_TASKS) if tasks is None else tasks
    for name in tasks:
        if name not in STATIC_TASKS:
            raise ConfigError("--task", f"unknown task {name!r}; choose from {', '.join(STATIC_TASKS)}")
    label = cell        # as written, for the figures' titles
    cell, cell_options = parse_cell(cell, "--cell")
    for option, value in (("--hidden", hidden), ("--steps", steps), ("--batch", batch)):
        option_integer(value, option)
    option_float(lr, "--lr", 0, low_open=True)
    if not 0 < option_float(tol, "--tol", 0, low_open=True) < 1:
        raise ConfigError("--tol", f"need a tolerance in (0, 1), got {tol!r}")
    if not 0 < option_float(damping, "--damping", 0, low_open=True) <= 1:
        raise ConfigError("--damping", f"need a damping in (0, 1], got {damping!r}")
    if contractive is not None and not 0 < option_float(contractive, "--contractive", 0, low_open=True) < 1:
        raise ConfigError("--contractive", f"need a bound in (0, 1), got {contractive!r}")
    ks = [option_integer(k, "--ks") for k in ks]
    ext = os.path.splitext(os.fspath(out))[1].lower().lstrip(".")
    if ext not in plots.FORMATS:
        raise ConfigError("--out", f"{os.fspath(out)!r} must end in {', '.join('.' + f for f in plots.FORMATS)}")
    width = max(len(m.label) for m in methods)
    results, agreement = [], {}
    for name in tasks:
        task = get_static(name, seed=seed)
        rbp_model = None
        for method in methods:
            result, model = train_method(task, method, cell=cell, hidden=hidden, steps=steps, lr=lr, batch=batch,
                                         tol=tol, damping=damping, contractive=contractive, seed=seed,
                                         cell_options=cell_options)
            results.append(result)
            if method.grad == "rbp":
                rbp_model = model
            if echo is not None:
                echo(result.line(width))
        if rbp_model is not None:
            x, y = task.train_set(np.float64)
            # tight tolerances: BPTT-k starts from h*, which should not carry the training's tol
            with rbp_model[0].using(tol=1e-10, grad_tol=1e-10, max_iter=2000, grad_max_iter=2000):
                agreement[name] = fixed_point_gradients(rbp_model, x, y, task.loss, ks=ks)
    stem = os.path.splitext(os.fspath(out))[0]
    title = f"FixedPoint({label}, H={hidden}) + Linear, Adam lr={lr:g}, tol={tol:g}"
    plots.plot_fixed_point_training({name: {r.method.label: r.losses for r in results if r.task == name}
                                     for name in tasks}, path=out, title=title)
    written = [os.fspath(out)]
    if agreement:
        plots.plot_gradient_agreement(agreement, path=f"{stem}_agreement.{ext}",
                                      title=f"{title}: gradients of the RBP-trained network (solved to 1e-10)")
        written.append(f"{stem}_agreement.{ext}")
    written.append(write_csv(f"{stem}.csv", results))
    if echo is not None:
        echo("wrote " + ", ".join(written))
    return results, agreement
