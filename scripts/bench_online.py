"""Cost per step of the online estimators against the hidden size, with fitted exponents.

For each cell and each H, one model (float32, one layer, B examples, the lag task's stream) is
trained by each estimator, all fed the same blocks of steps; the blocks are interleaved, one
estimator's block after another's, so load on a busy machine hits all alike.  Reported: the
median seconds per step over the blocks, the ratio to TBPTT(1) (a forward and a backward
through one step, the reference), and the exponent a of a least-squares fit
seconds = c * H^a over the sizes given (and over the largest three, where fixed per-call
overheads weigh less).

RTRL carries the influence of every parameter on the state, so its cost should grow near H^4
(H^2 parameters times a Jacobian of H^2); UORO's should grow like TBPTT(1)'s, near H^2.

    PYTHONPATH=. python scripts/bench_online.py --cells rnn,lstm --hidden 8,16,32,64
"""

from __future__ import annotations

import statistics
import time

import click
import numpy as np

ESTIMATORS = ("tbptt1", "uoro", "rtrl")


def make(estimator, cell, H, seed=0):
    """A trainer of a fresh model: ``feed(x, y)`` trains on one block."""
    import bptt
    from bptt import nn
    from bptt.data import tasks
    from bptt.credit import RTRL, TBPTT, UORO

    task = tasks.get("lag")
    model = nn.SequenceModel(cell, task.input_size, H, task.output_size,
                             rng=np.random.default_rng(seed))
    opt = bptt.optim.SGD(model.parameters(), lr=1e-3)
    loss_fn = tasks.loss_function(task)
    if estimator == "tbptt1":
        trainer = TBPTT(model, loss_fn, opt, k1=1)
    elif estimator == "uoro":
        trainer = UORO(model, loss_fn, opt, k1=1, rng=np.random.default_rng(seed))
    else:
        trainer = RTRL(model, loss_fn, opt, k1=1)
    return lambda x, y: trainer.run(x, y)


def fit_exponent(hs, seconds):
    """a of seconds = c * H^a, least squares in log-log."""
    return float(np.polyfit(np.log(hs), np.log(seconds), 1)[0])


@click.command()
@click.option("--cells", default="rnn,lstm", show_default=True)
@click.option("--hidden", default="8,16,32,64", show_default=True, help="Hidden sizes H.")
@click.option("--batch", default=1, show_default=True, type=int, help="Examples per step B.")
@click.option("--block", default=5, show_default=True, type=int, help="Steps per timed block.")
@click.option("--blocks", default=5, show_default=True, type=int, help="Timed blocks per estimator.")
def main(cells, hidden, batch, block, blocks):
    from bptt.data import tasks

    sizes = [int(h) for h in hidden.split(",")]
    task_rng = np.random.default_rng(0)
    task = tasks.get("lag", seq_len=block + 8)
    for cell in cells.split(","):
        table = {}
        for H in sizes:
            feeds = {e: make(e, cell, H) for e in ESTIMATORS}
            times = {e: [] for e in ESTIMATORS}
            for b in range(blocks + 1):          # block 0 warms up and is not counted
                x, y, _ = task.batch(batch, task_rng)
                x, y = x[-block:], y[-block:]
                for e in ESTIMATORS:
                    t0 = time.perf_counter()
                    feeds[e](x, y)
                    if b:
                        times[e].append((time.perf_counter() - t0) / block)
            table[H] = {e: statistics.median(v) for e, v in times.items()}
        click.echo(f"\n{cell}, B={batch}: median seconds per step (ratio to tbptt1)")
        click.echo("H     " + "".join(f"{e:>22}" for e in ESTIMATORS))
        for H in sizes:
            ref = table[H]["tbptt1"]
            click.echo(f"{H:<6}" + "".join(f"{table[H][e]:>13.2e} ({table[H][e] / ref:>6.1f})"
                                           for e in ESTIMATORS))
        for label, hs in (("all sizes", sizes), ("largest three", sizes[-3:])):
            if len(hs) >= 2:
                exps = {e: fit_exponent(hs, [table[H][e] for H in hs]) for e in ESTIMATORS}
                click.echo(f"exponent a of seconds ~ H^a, {label} ({','.join(map(str, hs))}): "
                           + ", ".join(f"{e} {a:.2f}" for e, a in exps.items()))


if __name__ == "__main__":
    main()
