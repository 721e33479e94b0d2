"""What a sweep's run directories add up to: results.csv, summary.md, figures, the best
configuration and its seed ensemble.

Everything here is read back from the sweep directory (``sweep.json`` and each run's
``config.json``, ``metrics.csv``, ``result.json``, ``checkpoint.npz`` or ``failed.json``), so
``bptt sweep --report`` redoes it at any time, during a sweep or after one.

Model selection looks at the validation metric only: the value of ``val_metric`` at the run's
last step (the validation made at the end of training).  Lower is better except for accuracy.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, fields

import numpy as np

from bptt.runs.config import TrainConfig
from bptt.runs.rundir import CHECKPOINT, CONFIG, METRICS, RESULT, read_metrics
from bptt.runs.sweep import FAILED, SWEEP, configuration_label

__all__ = ["Group", "collect", "summarize", "write_report", "summary_markdown", "best",
           "ensemble", "higher_is_better", "format_mean_std"]

RESULTS, SUMMARY, FIGURES = "results.csv", "summary.md", "figures"


def higher_is_better(metric):
    """Whether a larger value of ``metric`` is better (accuracy) or worse (losses and errors)."""
    return metric == "accuracy"


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _final_validation(run_dir):
    """The validation metric at the last step of ``metrics.csv`` (NaN when there is none)."""
    try:
        val = read_metrics(os.path.join(run_dir, METRICS))["val_metric"]
    except FileNotFoundError:
        return math.nan
    val = val[np.isfinite(val)]
    return float(val[-1]) if len(val) else math.nan


def collect(out):
    """One row per run of the sweep in ``out``: status, every option, seed, metrics, seconds.

    ``status`` is ``done`` (result.json written), ``failed`` (with ``error``), ``interrupted``
    (a checkpoint, no result) or ``pending``.  Options come from the run's ``config.json``
    (resolved: seq_len, k1, k2, lr filled in) once it exists, else from the spec.
    """
    sweep = _read_json(os.path.join(out, SWEEP))
    if sweep is None:
        raise FileNotFoundError(f"{out}: not a sweep directory (no {SWEEP})")
    rows = []
    for run in sweep["runs"]:
        run_dir = os.path.join(out, "runs", run["name"])
        config = _read_json(os.path.join(run_dir, CONFIG)) or run["config"]
        result = _read_json(os.path.join(run_dir, RESULT))
        failure = _read_json(os.path.join(run_dir, FAILED))
        row = {"run": run["name"], "configuration": configuration_label(run["options"]),
               "status": ("failed" if failure else "done" if result
                          else "interrupted" if os.path.exists(os.path.join(run_dir, CHECKPOINT))
                          else "pending")}
        row.update({f.name: config.get(f.name) for f in fields(TrainConfig)})
        row["options"] = run["options"]
        if result and not failure:
            row.update(task_name=result["task"], metric=result["metric"], val=_final_validation(run_dir), test=result["test"],
                       baselines=result["baselines"], updates=result["steps"], seconds=result["seconds"],
                       suggested_k2=result.get("suggested_k2"))
        row["error"] = failure["error"] if failure else ""
        rows.append(row)
    return rows


@dataclass
class Group:
    """One configuration of a sweep over its seeds (finished runs only)."""

    label: str
    options: dict
    task: str
    metric: str
    runs: list
    val: np.ndarray
    test: np.ndarray
    seconds: np.ndarray
    suggested_k2: list
    baselines: dict
    failed: int

    @property
    def n(self):
        return len(self.runs)


def _mean_std(a):
    """Mean and the sample standard deviation (NaN for fewer than two values)."""
    a = np.asarray(a, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else math.nan


def summarize(rows):
    """The finished runs grouped by configuration, each task's groups sorted best first by the
    mean validation metric."""
    groups = {}
    for row in rows:
        if row["status"] not in ("done", "failed"):
            continue
        g = groups.setdefault(row["configuration"], {"rows": [], "failed": 0, "options": row["options"]})
        if row["status"] == "failed":
            g["failed"] += 1
        else:
            g["rows"].append(row)
    out = []
    for label, g in groups.items():
        done = g["rows"]
        if not done:
            continue
        out.append(Group(label, g["options"], done[0]["task_name"],
                         done[0]["metric"], [r["run"] for r in done],
                         np.array([r["val"] for r in done]), np.array([r["test"] for r in done]),
                         np.array([r["seconds"] for r in done]), [r["suggested_k2"] for r in done],
                         done[0]["baselines"], g["failed"]))

    def order(group):
        mean = _mean_std(group.val)[0]
        return (group.task, -mean if higher_is_better(group.metric) else mean)

    return sorted(out, key=order)


def best(groups):
    """``{task: the Group with the best mean validation metric}``; never looks at test values."""
    chosen = {}
    for group in groups:    # summarize's order: best first within each task
        chosen.setdefault(group.task, group)
    return chosen


def format_mean_std(values):
    """``mean ± std`` of ``values`` (just the mean for one value)."""
    mean, std = _mean_std(values)
    return f"{mean:.4g}" if math.isnan(std) else f"{mean:.4g} ± {std:.2g}"


def summary_markdown(groups, rows):
    """summary.md: per task a table of configurations, best validation metric first."""
    lines = []
    failed = [r for r in rows if r["status"] == "failed"]
    unfinished = sum(r["status"] in ("pending", "interrupted") for r in rows)
    for task in dict.fromkeys(g.task for g in groups):
        mine = [g for g in groups if g.task == task]
        metric = mine[0].metric
        baselines = ", ".join(f"{k} {v:.4g}" for k, v in mine[0].baselines.items())
        lines += [f"## {task}", "", f"Test {metric} beside the baselines: {baselines}. Mean ± std "
                  f"(sample, over seeds) of n runs, sorted by the validation {metric} "
                  f"({'higher' if higher_is_better(metric) else 'lower'} is better).", "",
                  f"| configuration | n | validation {metric} | test {metric} | suggested k2 | seconds per run |",
                  "|---|---|---|---|---|---|"]
        for g in mine:
            n = f"{g.n}" + (f" ({g.failed} failed)" if g.failed else "")
            k2 = [k for k in g.suggested_k2 if k is not None]
            k2 = f"{np.median(k2):g}" if k2 else "none"
            lines.append(f"| {g.label} | {n} | {format_mean_std(g.val)} | {format_mean_std(g.test)} | {k2} "
                         f"| {np.mean(g.seconds):.0f} |")
        lines.append("")
    if failed:
        lines += ["## Failed runs", ""] + [f"- {r['run']}: {r['error']}" for r in failed] + [""]
    if unfinished:
        lines += [f"{unfinished} runs not finished yet.", ""]
    return "\n".join(lines)


def _write_results_csv(path, rows):
    option_names = [f.name for f in fields(TrainConfig)]
    baseline_names = list(dict.fromkeys(k for r in rows for k in r.get("baselines", {})))
    columns = (["run", "status"] + option_names + ["metric", "val", "test"]
               + [f"baseline {k}" for k in baseline_names] + ["suggested_k2", "updates", "seconds", "error"])
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in rows:
            values = {**r, **{f"baseline {k}": v for k, v in r.get("baselines", {}).items()}}
            writer.writerow([_cell_text(values.get(c)) for c in columns])


def _cell_text(value):
    """A value of results.csv: lists joined by +, cell options as key=value pairs."""
    if value is None:
        return ""
    if isinstance(value, list):
        return "+".join(value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return value


def _swept_curves(groups, key):
    """For the test-metric figure against ``key``: ``{line label: (x values, means, stds)}``,
    one line per combination of the other options."""
    lines = {}
    for g in groups:
        if key not in g.options:
            continue
        rest = configuration_label({k: v for k, v in g.options.items() if k != key})
        mean, std = _mean_std(g.test)
        lines.setdefault(rest, []).append((g.options[key], mean, 0.0 if math.isnan(std) else std))
    return {label: tuple(zip(*points)) for label, points in lines.items()}


def write_report(out, rows=None):
    """Redo results.csv, summary.md and the figures of the sweep in ``out`` (from ``rows``,
    ``collect(out)`` by default); return ``(rows, groups)``."""
    from bptt.diagnostics import plots

    out = os.fspath(out)
    rows = collect(out) if rows is None else rows
    groups = summarize(rows)
    _write_results_csv(os.path.join(out, RESULTS), rows)
    with open(os.path.join(out, SUMMARY), "w") as f:
        f.write(summary_markdown(groups, rows))
    figures = os.path.join(out, FIGURES)
    swept = _read_json(os.path.join(out, SWEEP))["swept"]
    for task in dict.fromkeys(g.task for g in groups):
        mine = [g for g in groups if g.task == task]
        for key in swept:
            curves = _swept_curves(mine, key)
            if sum(len(x) for x, _, _ in curves.values()) > 1:
                plots.plot_sweep_metric(curves, key, mine[0].metric,
                                        path=os.path.join(figures, f"{task}-test-vs-{key}.png"),
                                        title=f"{task}: test {mine[0].metric} against {key} "
                                              f"(mean ± std over seeds)")
        for g in mine:
            runs = {name: read_metrics(os.path.join(out, "runs", name, METRICS)) for name in g.runs}
            plots.plot_loss_curves(runs, g.metric, path=os.path.join(figures, f"loss-{g.label}.png"),
                                   title=f"{task}, {g.label}: every seed")
    return rows, groups


def ensemble(out, group: Group) -> float:
    """The test metric of the average prediction of ``group``'s runs (its seeds).

    Values are averaged for regression tasks; for classification the class probabilities are
    averaged (their log is scored as logits).

    Parameters
    ----------
    out : str or path
        The sweep directory.
    group : Group
        From ``summarize``.

    Returns
    -------
    float
    """
    from scipy.special import softmax

    from bptt.runs.build import predict
    from bptt.runs.load import load_run

    predictions, task = [], None
    for name in group.runs:
        run = load_run(os.path.join(out, "runs", name))
        task = run.task
        x, y, mask = task.test_set()
        pred = predict(run.model, x).astype(np.float64)
        predictions.append(softmax(pred, axis=-1) if task.loss == "cross_entropy" else pred)
    mean = np.mean(predictions, axis=0)
    if task.loss == "cross_entropy":
        mean = np.log(mean)    # log-probabilities are their own log-softmax
    return float(task.score(mean, y, mask))
