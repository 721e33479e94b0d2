"""Forecasting one step ahead: sunspots (1921-1987 held out) and Mackey-Glass.

Each row gives the test metric on the original scale beside persistence and the least-squares
AR(p) baseline fitted on the earlier parts.  For sunspots on this split the published figures
to beat are ARIMA ~306 and a neural network ~351 test MSE (Zhang 2003).

    python scripts/results_forecasting.py
    python scripts/results_forecasting.py --tasks sunspots --cells lstm
"""

from __future__ import annotations

import click

from _results import table

PUBLISHED = "Published on the sunspot split (test MSE, Zhang 2003): ARIMA ~306, neural network ~351."


@click.command()
@click.option("--tasks", default="sunspots,mackey-glass", show_default=True, help="Comma-separated tasks.")
@click.option("--cells", default="lstm,gru", show_default=True, help="Comma-separated cells.")
@click.option("--hidden", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--steps", default=1500, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=3e-3, show_default=True, type=float, help="Adam's learning rate.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out-root", default="runs/results/forecasting", show_default=True)
def main(tasks, cells, hidden, steps, lr, seed, out_root):
    """Train each cell on each series and table the test metric against the baselines."""
    commands = {f"{task}-{cell}": ["--task", task, "--cell", cell, "--hidden", hidden,
                                   "--optimizer", "adam", "--lr", lr, "--clip", 1.0, "--batch", 16,
                                   "--steps", steps, "--seed", seed]
                for task in tasks.split(",") for cell in cells.split(",")}
    table(commands, out_root)
    if "sunspots" in tasks.split(","):
        click.echo("\n" + PUBLISHED)


if __name__ == "__main__":
    main()
