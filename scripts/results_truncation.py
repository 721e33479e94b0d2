"""The effect of truncation: k2 shorter and longer than the distance the information travels.

Every run detaches every k steps (k1 = k2 = k; ceil(T / k) updates per training sequence) and
sees the same number of training sequences, so the rows differ only in how far back the
gradient reaches.

* Adding problem, T = 50: the first marked number lies 25 to 49 steps before the loss.  Short
  truncations fail only when very short: the rule "add a marked number into the cell and keep
  it" is also taught by the second marker whenever it falls inside the last window, and the
  weights are shared over time, so the same rule stores the first marker too.  With k = 1 no
  marker is ever inside the window but the last step's (1 sequence in 25).
* Delayed recall, T = 20: the symbol at step 0 must travel 19 steps and nothing like it ever
  falls inside a shorter window, so any k < 20 stays at chance (1/8) while full BPTT learns it.

    python scripts/results_truncation.py
    python scripts/results_truncation.py --adding-ks 1,50 --recall-ks 10,20 --sequences 500
"""

from __future__ import annotations

import click

from _results import table


def _commands(task, seq_len, ks, sequences, seed):
    return {f"{task}-k{k}": ["--task", task, "--seq-len", seq_len, "--k1", k, "--k2", k,
                             "--steps", sequences * -(-seq_len // k), "--seed", seed]
            for k in ks}


def _ints(text):
    return [int(k) for k in text.split(",") if k]


@click.command()
@click.option("--adding-len", default=50, show_default=True, type=click.IntRange(min=2))
@click.option("--adding-ks", default="1,5,50", show_default=True,
              help="Truncation lengths for the adding problem (empty: skip it).")
@click.option("--recall-len", default=20, show_default=True, type=click.IntRange(min=2))
@click.option("--recall-ks", default="5,10,20", show_default=True,
              help="Truncation lengths for delayed recall (empty: skip it).")
@click.option("--sequences", default=1500, show_default=True, type=click.IntRange(min=1),
              help="Training sequences per run (each makes ceil(T / k) updates).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out-root", default="runs/results/truncation", show_default=True)
def main(adding_len, adding_ks, recall_len, recall_ks, sequences, seed, out_root):
    """Train with each truncation length and table the test metric against the baseline."""
    commands = {**_commands("adding", adding_len, _ints(adding_ks), sequences, seed),
                **_commands("recall", recall_len, _ints(recall_ks), sequences, seed)}
    table(commands, out_root)


if __name__ == "__main__":
    main()
