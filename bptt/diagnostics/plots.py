"""Figures of the gradient-flow measurements: the one module that imports matplotlib.

Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas, never through pyplot, so
drawing them needs no display and leaves alone whatever backend a user has chosen.  Every
function returns the Figure, takes ``ax=`` to draw into an existing Axes instead (a pyplot or
notebook figure), and writes the figure when given ``path=`` (.png, .svg or .pdf).
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from bptt.diagnostics import ParameterGradNorms, decay_rate

__all__ = ["plot_gradient_decay", "plot_jacobian_spectrum", "plot_parameter_grad_flow",
           "plot_gradient_heatmap", "plot_training", "plot_predictions", "plot_sweep_metric",
           "plot_loss_curves", "save"]

FORMATS = ("png", "svg", "pdf")


def _axes(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def save(fig, path, dpi=150):
    """Write ``fig`` to ``path``; the format comes from the extension (png, svg or pdf)."""
    ext = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if ext not in FORMATS:
        raise ValueError(f"plots: cannot write {os.fspath(path)!r}; the file name must end in "
                         f"{', '.join('.' + f for f in FORMATS)}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, format=ext, dpi=dpi)
    return path


def _finish(fig, ax, title, path):
    if title:
        ax.set_title(title)
    if path is not None:
        save(fig, path)
    return fig


def _finish_log(fig, ax, xlabel, ylabel, title, path):
    """A log-scale curve plot's labels, grid and legend, then ``_finish``."""
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small")
    return _finish(fig, ax, title, path)


def _rows(values, who, label):
    """A curve or a stack of curves as a 2-D float array (rows: batches or seeds)."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] < 1:
        raise ValueError(f"{who}: {label!r} must be a curve (T,) or curves (R, T), got shape {np.shape(values)}")
    return a


def _positive(a):
    """Non-positive values as NaN: a log axis cannot show them."""
    return np.where(a > 0, a, np.nan)


def plot_gradient_decay(curves, path=None, *, normalize=False, quantiles=(0.25, 0.75), truncation=None,
                        fit=True, title=None, ax=None):
    """Gradient norm against the lag behind the loss, one line per label, on a log scale.

    Parameters
    ----------
    curves : mapping of str to array_like
        Label -> a curve indexed by timestep (T,), e.g. a row of
        ``diagnostics.hidden_grad_norms``, or curves (R, T), one row per batch example or seed.
        Drawn against lag = T-1-t.
    path : str or path-like, optional
        Also write the figure there.
    normalize : bool
        Divide each curve by its value at lag 0, so curves of different scales start at 1.
    quantiles : (float, float)
        The band drawn around the median of the rows (none for a single curve).
    truncation : int or mapping of str to int, optional
        A dotted vertical line at this lag (e.g. ``diagnostics.suggest_truncation``), one for
        all curves or one per label in the label's colour.
    fit : bool
        Put ``diagnostics.decay_rate`` of the median curve in the legend.
    title : str, optional
    ax : matplotlib Axes, optional
        Draw here instead of on a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not curves:
        raise ValueError("plot_gradient_decay: curves is empty; give at least one label -> curve")
    lo, hi = quantiles
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"plot_gradient_decay: quantiles must be 0 <= low <= high <= 1, got {quantiles}")
    fig, ax = _axes(ax, (7, 4.5))
    for label, values in curves.items():
        a = _rows(values, "plot_gradient_decay", label)[:, ::-1]      # columns now by lag
        if normalize:
            a = a / np.where(a[:, :1] > 0, a[:, :1], np.nan)
        lag = np.arange(a.shape[1])
        median = np.median(a, axis=0)
        text = str(label)
        if fit:
            try:
                f = decay_rate(np.nan_to_num(median[::-1]))
                text += f"  (rate {f.rate:+.4f}/step, x{f.factor:.4f})"
            except ValueError:
                pass    # fewer than two positive points: nothing to fit, the line says it all
        (line,) = ax.plot(lag, _positive(median), label=text, lw=1.6)
        if a.shape[0] > 1:
            band = np.quantile(a, [lo, hi], axis=0)
            ax.fill_between(lag, _positive(band[0]), _positive(band[1]), color=line.get_color(),
                            alpha=0.2, lw=0)
        k = truncation.get(label) if isinstance(truncation, dict) else truncation
        if k is not None:
            ax.axvline(k, color=line.get_color() if isinstance(truncation, dict) else "0.3", ls=":", lw=1.2)
    return _finish_log(fig, ax, "lag T-1-t (steps back from the loss)",
                       "||dL/dh_t|| / ||dL/dh_T-1||" if normalize else "||dL/dh_t||", title, path)


def plot_jacobian_spectrum(spectra, path=None, *, title=None, ax=None):
    """Singular values of dh_T/dh_t against the lag: largest solid, smallest dashed, range shaded.

    Parameters
    ----------
    spectra : array_like or mapping of str to array_like
        (T, H) descending singular values per step (``jacobian_norms(...,
        singular_values=True)[1]``), or (T,) spectral norms alone; a mapping draws one set per label.
    path : str or path-like, optional
    title : str, optional
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not isinstance(spectra, dict):
        spectra = {"": spectra}
    fig, ax = _axes(ax, (7, 4.5))
    for label, values in spectra.items():
        s = np.asarray(values, dtype=np.float64)
        s = s[:, None] if s.ndim == 1 else s
        if s.ndim != 2:
            raise ValueError(f"plot_jacobian_spectrum: {label!r} must be (T,) or (T, H), got shape {np.shape(values)}")
        s = s[::-1]
        lag = np.arange(s.shape[0])
        name = f"{label} " if label else ""
        (line,) = ax.plot(lag, _positive(s[:, 0]), lw=1.6, label=f"{name}largest singular value")
        if s.shape[1] > 1:
            ax.plot(lag, _positive(s[:, -1]), ls="--", lw=1.2, color=line.get_color(),
                    label=f"{name}smallest singular value")
            ax.fill_between(lag, _positive(s[:, -1]), _positive(s[:, 0]), color=line.get_color(), alpha=0.15, lw=0)
    return _finish_log(fig, ax, "lag T-1-t", "singular values of dh_T/dh_t", title, path)


def plot_parameter_grad_flow(stats, path=None, *, title=None, ax=None):
    """Bars of max and mean |grad| per parameter, on a log scale: the per-layer flow chart.

    Parameters
    ----------
    stats : diagnostics.ParameterGradNorms
        From ``diagnostics.parameter_grad_norms(model)`` after a backward pass.
    path : str or path-like, optional
    title : str, optional
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not isinstance(stats, ParameterGradNorms):
        raise TypeError(f"plot_parameter_grad_flow: need the result of diagnostics.parameter_grad_norms, "
                        f"got {type(stats).__name__}")
    fig, ax = _axes(ax, (max(5, 0.6 * len(stats.names) + 2), 4.5))
    where = np.arange(len(stats.names))
    ax.bar(where, _positive(stats.max), width=0.8, color="tab:cyan", alpha=0.6, label="max |grad|")
    ax.bar(where, _positive(stats.mean), width=0.8, color="tab:blue", label="mean |grad|")
    ax.set_xticks(where, stats.names, rotation=45, ha="right", fontsize="small")
    ax.set_yscale("log")
    ax.set_ylabel("|grad|")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return _finish(fig, ax, title, path)


def plot_gradient_heatmap(norms, path=None, *, ylabel="layer", labels=None, title=None, ax=None):
    """Gradient norms as an image: rows (layers or examples) against timesteps, log colour scale.

    Parameters
    ----------
    norms : array_like, shape (R, T)
        E.g. ``hidden_grad_norms(...)`` (rows are layers) or one layer of its ``per_example``
        result transposed to (B, T).
    path : str or path-like, optional
    ylabel : str
        What the rows are.
    labels : sequence of str, optional
        One per row; row numbers when None.
    title : str, optional
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    a = np.asarray(norms, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"plot_gradient_heatmap: norms must be 2-D (rows, T), got shape {a.shape}")
    if labels is not None and len(labels) != a.shape[0]:
        raise ValueError(f"plot_gradient_heatmap: {len(labels)} labels for {a.shape[0]} rows")
    positive = a[a > 0]
    if positive.size == 0:
        raise ValueError("plot_gradient_heatmap: every norm is 0; nothing to draw on a log scale")
    fig, ax = _axes(ax, (8, max(2.5, 0.35 * a.shape[0] + 1.5)))
    image = ax.imshow(np.ma.masked_less_equal(a, 0), aspect="auto", interpolation="nearest",
                      norm=LogNorm(vmin=positive.min(), vmax=positive.max()), cmap="viridis",
                      extent=(-0.5, a.shape[1] - 0.5, a.shape[0] - 0.5, -0.5))
    fig.colorbar(image, ax=ax, label="||dL/dh_t||")
    ax.set_xlabel("timestep t")
    ax.set_ylabel(ylabel)
    if labels is not None:
        ax.set_yticks(np.arange(a.shape[0]), labels)
    return _finish(fig, ax, title, path)


def plot_training(metrics, metric, path=None, *, title=None, ax=None):
    """Training loss per update (and a running mean) with the validation metric, against steps.

    Parameters
    ----------
    metrics : mapping of str to np.ndarray
        Columns ``step``, ``train_loss`` and ``val_metric`` (NaN between validations), as
        ``bptt.runs.train.read_metrics`` returns them from a run's metrics.csv.
    metric : str
        The validation metric's name, for the legend.
    path, title, ax : optional
        As for the other plots.

    Returns
    -------
    matplotlib.figure.Figure
    """
    step = np.asarray(metrics["step"])
    loss = np.asarray(metrics["train_loss"], dtype=np.float64)
    val = np.asarray(metrics["val_metric"], dtype=np.float64)
    fig, ax = _axes(ax, (7, 4))
    ax.plot(step, loss, color="0.75", lw=0.6, label="train loss (per update)")
    width = max(1, len(loss) // 50)
    if len(loss) > width:
        smooth = np.convolve(loss, np.ones(width) / width, mode="valid")
        ax.plot(step[width - 1:], smooth, color="C0", label=f"train loss ({width}-update mean)")
    has = np.isfinite(val)
    ax.plot(step[has], val[has], "o-", color="C1", ms=3, label=f"validation {metric}")
    if np.all(loss[np.isfinite(loss)] > 0) and np.all(val[has] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("step (optimizer update)")
    ax.legend()
    return _finish(fig, ax, title, path)


def plot_predictions(pred, y, mask, path=None, *, title=None, ax=None):
    """Forecasts against the truth at the scored steps, examples in test-set order (output 0).

    Shapes: pred, y (T, B, O); mask (T,).
    """
    steps = np.flatnonzero(np.asarray(mask) > 0)
    truth = np.asarray(y)[steps, :, 0].T.ravel()
    guess = np.asarray(pred)[steps, :, 0].T.ravel()
    fig, ax = _axes(ax, (9, 3.5))
    ax.plot(truth, color="k", lw=1, label="truth")
    ax.plot(guess, color="C3", lw=1, label="prediction")
    ax.set_xlabel("test target (in order)")
    ax.legend()
    return _finish(fig, ax, title, path)


def _numeric(values):
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def plot_sweep_metric(lines, option, metric, path=None, *, title=None, ax=None):
    """A sweep's test metric against one swept option: a line per setting of the other options,
    the mean over seeds with a band of ± one standard deviation.

    Parameters
    ----------
    lines : mapping of str to (values, means, stds)
        Per line label, the option's values (numbers, or names such as cells) and the metric's
        mean and standard deviation over seeds at each.
    option, metric : str
        Axis labels.
    path, title, ax : optional
        As for the other plots.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = _axes(ax, (7, 4))
    every = [v for values, _, _ in lines.values() for v in values]
    numeric = _numeric(every)
    names = sorted(set(map(str, every))) if not numeric else None
    positive = True
    for i, (label, (values, means, stds)) in enumerate(lines.items()):
        x = np.array(values, dtype=np.float64) if numeric else np.array([names.index(str(v)) for v in values])
        order = np.argsort(x)
        x, mean, std = x[order], np.asarray(means)[order], np.asarray(stds)[order]
        ax.plot(x, mean, "o-", color=f"C{i % 10}", ms=4, label=label or "mean")
        ax.fill_between(x, mean - std, mean + std, color=f"C{i % 10}", alpha=0.2, lw=0)
        positive &= bool(np.all(mean - std > 0))
    if numeric and min(every) > 0 and max(every) >= 10 * min(every):
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(np.arange(len(names)), names)
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel(option)
    ax.set_ylabel(f"test {metric}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _finish(fig, ax, title, path)


def plot_loss_curves(runs, metric, path=None, *, title=None, ax=None):
    """The training loss (a running mean) and validation metric of several runs overlaid.

    Parameters
    ----------
    runs : mapping of str to mapping of str to np.ndarray
        Per run label, its metrics.csv columns as ``bptt.runs.train.read_metrics`` returns them.
    metric : str
        The validation metric's name.
    path, title, ax : optional
        As for the other plots.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = _axes(ax, (7, 4))
    positive = True
    for i, (label, m) in enumerate(runs.items()):
        step = np.asarray(m["step"])
        loss = np.asarray(m["train_loss"], dtype=np.float64)
        val = np.asarray(m["val_metric"], dtype=np.float64)
        width = max(1, len(loss) // 50)
        if len(loss) >= width:
            smooth = np.convolve(loss, np.ones(width) / width, mode="valid")
            ax.plot(step[width - 1:], smooth, color=f"C{i % 10}", lw=1, label=f"{label}: train loss")
        has = np.isfinite(val)
        ax.plot(step[has], val[has], "o--", color=f"C{i % 10}", ms=2, lw=0.8,
                label=f"{label}: validation {metric}")
        positive &= bool(np.all(loss[np.isfinite(loss)] > 0) and np.all(val[has] > 0))
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("step (optimizer update)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small")
    return _finish(fig, ax, title, path)


def _panels(n, size):
    fig = Figure(figsize=(size[0] * n, size[1]), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, n, i + 1) for i in range(n)]


def plot_fixed_point_training(curves, path=None, *, title=None):
    """Training loss against updates for every gradient method, one panel per task.

    Parameters
    ----------
    curves : mapping of str to mapping of str to array_like
        ``{task: {method label: loss per update}}``, as ``bptt fixedpoint`` records them.
    path, title : optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, axes = _panels(len(curves), (5.5, 4))
    for ax, (task, by_method) in zip(axes, curves.items()):
        for label, losses in by_method.items():
            a = np.asarray(losses, dtype=np.float64)
            ax.plot(np.arange(1, a.size + 1), _positive(a), lw=1, label=label)
        _finish_log(fig, ax, "update", "training loss", task, None)
    if title:
        fig.suptitle(title)
    if path is not None:
        save(fig, path)
    return fig


def plot_gradient_agreement(agreement, path=None, *, title=None):
    """Cosine and relative error against converged RBP of truncated BPTT and Neumann gradients.

    Parameters
    ----------
    agreement : mapping of str to diagnostics.FixedPointGradients
        One entry per task (or model), drawn as a pair of lines (BPTT-k solid, Neumann-k dashed).
    path, title : optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, (cos_ax, err_ax) = _panels(2, (5.5, 4))
    for i, (name, r) in enumerate(agreement.items()):
        for kind, style in (("bptt", "-o"), ("neumann", "--s")):
            label = f"{name}: {'BPTT, last k iterations' if kind == 'bptt' else 'Neumann, k terms'}"
            cos_ax.plot(r.ks, getattr(r, kind + "_cosine"), style, color=f"C{i}", ms=3, lw=1, label=label)
            err_ax.plot(r.ks, _positive(getattr(r, kind + "_error")), style, color=f"C{i}", ms=3, lw=1, label=label)
    for ax in (cos_ax, err_ax):
        ax.set_xscale("log")
        ax.set_xlabel("k")
        ax.grid(True, which="major", alpha=0.3)
    cos_ax.set_ylabel("cosine similarity to RBP")
    cos_ax.legend(fontsize="small")
    _finish_log(fig, err_ax, "k", "||g - g_RBP|| / ||g_RBP||", None, None)
    if title:
        fig.suptitle(title)
    if path is not None:
        save(fig, path)
    return fig


__all__ += ["plot_fixed_point_training", "plot_gradient_agreement"]
def plot_credit(rows, path=None, *, T=None, title=None, ax=None):
    """Gradient alignment against truncation length, one line per cell (``bptt credit``).

    Truncated BPTT (k1 = k2 = k) is a line against k; RTRL (a star) and UORO (a circle with
    its standard deviation over draws) sit at k = T, adaptive truncation (a square) at the k2
    it chose, each in its cell's colour.

    Parameters
    ----------
    rows : list of dict
        With ``cell``, ``estimator``, ``k1``, ``k2``, ``cosine`` and ``cosine_std``, as
        ``bptt.runs.experiments.credit.run`` returns them.
    T : int, optional
        The sequence length, drawn as a dotted line (where truncation is full BPTT).
    """
    from matplotlib.ticker import FormatStrFormatter

    fig, ax = _axes(ax, (6.4, 4.2))
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    marks = {"rtrl": ("*", 12), "uoro": ("o", 6), "auto": ("s", 6)}
    for i, cell in enumerate(cells):
        colour = f"C{i}"
        mine = [r for r in rows if r["cell"] == cell]
        lines = sorted((r["k2"], r["cosine"]) for r in mine
                       if r["estimator"].startswith("tbptt:") and r["k1"] == r["k2"])
        if lines:
            ax.plot(*zip(*lines), "-", color=colour, marker=".", label=f"{cell}: TBPTT(k)")
        for r in mine:
            kind = r["estimator"].partition(":")[0]
            if kind in marks:
                marker, size = marks[kind]
                # UORO's error bars side by side rather than on top of each other
                k = r["k2"] * 2 ** (0.08 * (i - (len(cells) - 1) / 2)) if kind == "uoro" else r["k2"]
                ax.errorbar([k], [r["cosine"]], yerr=[r["cosine_std"]] if kind == "uoro" else None,
                            fmt=marker, markersize=size, color=colour, capsize=3, linestyle="none")
    for kind, (marker, size) in marks.items():
        ax.plot([], [], marker, color="0.4", markersize=size, linestyle="none",
                label={"rtrl": "RTRL", "uoro": "UORO (± sd)", "auto": "adaptive k2"}[kind])
    if T is not None:
        ax.axvline(T, color="0.6", linestyle=":", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("truncation length k (k1 = k2)")
    ax.set_ylabel("cosine with the exact gradient")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _finish(fig, ax, title, path)
