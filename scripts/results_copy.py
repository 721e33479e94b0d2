"""Copy memory (Arjovsky et al. 2016) at a delay where the LSTM beats the memoryless baseline.

The baseline outputs blanks until the delimiter and then guesses uniformly among the 8 symbols:
cross-entropy 10 log(8) / (delay + 20).  A model that remembers the 10 symbols goes well below.

    python scripts/results_copy.py
    python scripts/results_copy.py --delay 20 --cells lstm
"""

from __future__ import annotations

import click

from _results import table


@click.command()
@click.option("--delay", default=10, show_default=True, type=click.IntRange(min=1),
              help="Blank steps between the symbols and the delimiter (T = delay + 20).")
@click.option("--cells", default="lstm,gru", show_default=True, help="Comma-separated cells.")
@click.option("--hidden", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--steps", default=4000, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=1e-2, show_default=True, type=float, help="Adam's learning rate.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out-root", default="runs/results/copy", show_default=True)
def main(delay, cells, hidden, steps, lr, seed, out_root):
    """Train each cell on copy memory and table the test cross-entropy against the baseline."""
    commands = {cell: ["--task", "copy", "--seq-len", delay + 20, "--cell", cell, "--hidden", hidden,
                       "--optimizer", "adam", "--lr", lr, "--clip", 1.0, "--batch", 32,
                       "--steps", steps, "--seed", seed]
                for cell in cells.split(",")}
    table(commands, out_root)


if __name__ == "__main__":
    main()
