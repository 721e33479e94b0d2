"""What a run leaves besides its checkpoint: ``result.json``, the figures, the summary line."""

from __future__ import annotations

import csv
import os

import numpy as np

from bptt.io import save_json
from bptt.runs.build import predict
from bptt.runs.load import LoadedRun
from bptt.runs.rundir import METRICS, RESULT, read_metrics

__all__ = ["result", "write_result", "summary_line"]


def result(run: LoadedRun) -> tuple[dict, np.ndarray]:
    """The run's test score beside the task's baselines, and its gradient curve now.

    Parameters
    ----------
    run : LoadedRun
        A loaded run, or the one being trained.

    Returns
    -------
    dict
        The ``result.json`` object: task, metric, test value, baselines, steps, seconds, cell,
        seq_len, k1, k2, the k2 the gradient curves suggest, and for a task whose baselines are
        levels the level the test value reached (``perplexity`` too for bits per character).
    np.ndarray
        The gradient curves, (B, T) (``LoadedRun.gradient_curves``).
    """
    curves = run.gradient_curves()
    out = {
        "task": run.task.name,
        "metric": run.task.metric,
        "test": run.score("test"),
        "baselines": {k: float(v) for k, v in run.task.baselines().items()},
        "steps": run.step,
        "seconds": round(run.seconds, 2),
        "cell": run.config.cell,
        "seq_len": run.config.seq_len,
        "k1": run.config.k1,
        "k2": run.config.k2,
        "suggested_k2": _suggested_k2(curves),
    }
    if out["metric"] == "bpc":
        out["perplexity"] = 2.0 ** out["test"]
    if run.task.has_levels:
        out["level"] = run.task.level_reached(out["test"])
    return out, curves


def _suggested_k2(curves):
    """``suggest_truncation`` of the median curve; None when no gradient reaches the state."""
    from bptt.diagnostics import suggest_truncation

    median = np.median(curves, axis=0)
    return int(suggest_truncation(median)) if median.sum() > 0 else None


def write_result(run: LoadedRun, gradflow_start: np.ndarray) -> dict:
    """Write ``result.json``, ``gradflow.csv`` and the figures into the run directory.

    Parameters
    ----------
    run : LoadedRun
        At the end of training (its ``metrics.csv`` complete).
    gradflow_start : np.ndarray
        The gradient curves at step 0, (B, T).

    Returns
    -------
    dict
        The ``result.json`` object.
    """
    from bptt.diagnostics import plots

    summary, end = result(run)
    save_json(os.path.join(run.path, RESULT), summary)
    out, k2 = run.path, summary["suggested_k2"]
    stages = {"start (step 0)": gradflow_start, f"end (step {run.step})": end}
    with open(os.path.join(out, "gradflow.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["stage", "example"] + [f"t{t}" for t in range(end.shape[1])])
        for label, curves in stages.items():
            writer.writerows([label, i, *map(float, c)] for i, c in enumerate(curves))
    plots.plot_gradient_decay(stages, path=os.path.join(out, "gradflow.png"), truncation=k2,
                              title=f"{run.task.name}, {run.config.cell}: dL/dh_t at the start and the end "
                                    f"(dotted: suggested k2 = {k2})")
    plots.plot_training(read_metrics(os.path.join(out, METRICS)), run.task.metric,
                        path=os.path.join(out, "loss.png"))
    if run.task.forecasting:
        x, y, mask = run.task.test_set()
        plots.plot_predictions(run.task.unscale(predict(run.model, x)), run.task.unscale(y), mask,
                               path=os.path.join(out, "predictions.png"),
                               title=f"{run.task.name}: test predictions")
    return summary


def summary_line(result: dict, out: str | None = None) -> str:
    """One line: the test metric beside each baseline, the steps and the seconds.

    Parameters
    ----------
    result : dict
        A ``result.json`` object.
    out : str, optional
        The run directory, named at the end.

    Returns
    -------
    str
    """
    baselines = ", ".join(f"{k} {v:.4g}" for k, v in result["baselines"].items())
    where = f" -> {out}" if out else ""
    level = ""
    if "level" in result:
        level = ("; above every level" if result["level"] is None else
                 f"; reached the {result['level']} level ({result['baselines'][result['level']]:.3f})")
    return (f"{result['task']} T={result['seq_len']} {result['cell']}: test {result['metric']} "
            f"{result['test']:.4g} (baselines: {baselines}){level}; {result['steps']} steps, "
            f"{result['seconds']:.1f} s{where}")
