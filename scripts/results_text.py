"""Character-level language modelling on the works of Shakespeare, with the state carried.

The main row, ``bptt train --task shakespeare --stateful`` with the task's defaults: a one-layer
LSTM of 256 units trained statefully (the training text cut into 32 streams, walked in windows of
100 characters, BPTT(100; 100), Adam at 2e-3) for three epochs, its test
bits per character beside the n-gram baselines; then a sample of its text and its loss curve in
bits per character (drawn to ``--figure``).  The truncation rows: a 128-unit LSTM with k1 = k2 = k in
``--truncation-ks``, each run reading the same ``--characters`` of the training streams (so
``--steps`` grows as k shrinks) and only the reach of the gradient differs.

    python scripts/results_text.py
    python scripts/results_text.py --skip-main --truncation-ks 5,20,100
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import shutil
import sys
import time

import click

from bptt.diagnostics import plots
from bptt.runs import sample
from bptt.cli import main as bptt_main
from bptt.runs.rundir import read_metrics

# shakespeare's own defaults (bptt.data.tasks.train_defaults) are the main row's options
MAIN = ["--task", "shakespeare", "--stateful", "--seed", "0"]


def _truncation(ks, characters):
    # B = 32 streams read B * k characters per update: the same characters for every k
    return {f"shakespeare-k{k}": ["--task", "shakespeare", "--stateful", "--hidden", "128", "--batch",
                                  "32", "--seq-len", k, "--lr", "2e-3",
                                  "--steps", characters // (32 * k), "--val-every", "100000",
                                  "--seed", "0"]
            for k in ks}


def run_command(args, out):
    """Run ``bptt train ARGS --out OUT`` afresh in this process; return ``(result.json object,
    wall seconds of the whole command)``."""
    if os.path.exists(out):
        shutil.rmtree(out)
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):     # the command's own summary line: not a table row
        bptt_main(["train", *map(str, args), "--out", out, "--no-progress"], standalone_mode=False)
    seconds = time.perf_counter() - started
    with open(os.path.join(out, "result.json")) as f:
        return json.load(f), seconds


def table(commands, out_root):
    """Run ``{name: args}`` in turn, printing a markdown table: the command, its test metric
    beside the baselines, the suggested k2, the updates and the seconds."""
    click.echo("| command | test metric | baselines | k2 suggested | steps | seconds |\n|---|---|---|---|---|---|")
    for name, args in commands.items():
        result, seconds = run_command(args, os.path.join(out_root, name))
        baselines = ", ".join(f"{k} {v:.4g}" for k, v in result["baselines"].items())
        click.echo(f"| `bptt train {shlex.join(map(str, args))}` | {result['metric']} {result['test']:.4g} "
                   f"| {baselines} | {result['suggested_k2']} | {result['steps']} | {seconds:.0f} |")


def loss_figure(run, path):
    """The run's loss curve with the training loss in bits too, so both curves share a unit."""
    metrics = read_metrics(os.path.join(run, "metrics.csv"))
    metrics["train_loss"] = metrics["train_loss"] / math.log(2)
    plots.plot_training(metrics, "bpc", path=path,
                        title="shakespeare, stateful LSTM 256: bits per character")


@click.command()
@click.option("--skip-main", is_flag=True, help="Only the truncation rows.")
@click.option("--truncation-ks", default="5,20,100", show_default=True,
              help="k1 = k2 of the truncation rows (empty: skip them).")
@click.option("--characters", default=1_000_000, show_default=True,
              help="Training characters each truncation run reads.")
@click.option("--figure", default="docs/shakespeare-loss.png", show_default=True)
@click.option("--out-root", default="runs/results/text", show_default=True)
def main(skip_main, truncation_ks, characters, figure, out_root):
    """Train, table the test bpc beside the baselines, print a sample and copy the loss curve."""
    if not skip_main:
        table({"shakespeare-lstm": MAIN}, out_root)
        run = os.path.join(out_root, "shakespeare-lstm")
        click.echo("\n$ bptt sample " + run + ' --length 500 --temperature 0.8 --prime "ROMEO:" --seed 0')
        click.echo(sample.sample(run, length=500, temperature=0.8, prime="ROMEO:", seed=0))
        loss_figure(run, figure)
    ks = [int(k) for k in truncation_ks.split(",") if k]
    if ks:
        click.echo()
        table(_truncation(ks, characters), out_root)


if __name__ == "__main__":
    main()
