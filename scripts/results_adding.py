"""The adding problem at T=100: LSTM and GRU below 0.01 test MSE, the tanh RNN beside them.

Runs ``bptt train`` once per cell and prints a markdown row per run: the command, the test MSE
beside the constant-1.0 baseline (~0.167), the k2 the final gradient curve suggests, the updates
made and the wall-clock seconds.

    python scripts/results_adding.py
    python scripts/results_adding.py --cells lstm --steps 500      # a quick look
"""

from __future__ import annotations

import click

from _results import table


@click.command()
@click.option("--seq-len", default=100, show_default=True, type=click.IntRange(min=2))
@click.option("--cells", default="lstm,gru,rnn", show_default=True, help="Comma-separated cells.")
@click.option("--hidden", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--steps", default=3000, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=1e-2, show_default=True, type=float, help="Adam's learning rate.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out-root", default="runs/results/adding", show_default=True)
def main(seq_len, cells, hidden, steps, lr, seed, out_root):
    """Train each cell on the adding problem and table the test MSE against the baseline."""
    commands = {cell: ["--task", "adding", "--seq-len", seq_len, "--cell", cell, "--hidden", hidden,
                       "--optimizer", "adam", "--lr", lr, "--clip", 1.0, "--batch", 64,
                       "--steps", steps, "--seed", seed]
                for cell in cells.split(",")}
    table(commands, out_root)


if __name__ == "__main__":
    main()
