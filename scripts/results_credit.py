"""Credit assignment on the lag task: every estimator trained, its gradient measured before and after.

For each cell and estimator, a fresh model (the same seed for all) is measured with
``gradient_alignment`` on a fixed batch at initialisation, trained with Adam on fresh windows of
the lag stream, measured again, and scored on the test set (cross-entropy, against the task's
three levels: 0.662 no memory, 0.519 the lag-3 input only, 0.454 both lags; the nearest is
the level reached).  Seconds per step
are the training time over the steps fed; peak memory is tracemalloc's peak during training
(numpy's arrays included).  ``auto:B`` trains TBPTT with k1 = 1 and the k2 that ``adaptive_k2``
picks at initialisation; RTRL and UORO update every step (k1 = 1).

    PYTHONPATH=. OPENBLAS_NUM_THREADS=1 python scripts/results_credit.py     # H=32, 40 windows: ~20 min
    PYTHONPATH=. python scripts/results_credit.py --cells gru --estimators tbptt:4,uoro --windows 10
"""

from __future__ import annotations

import time
import tracemalloc

import click
import numpy as np

import bptt
from bptt import nn
from bptt.data import tasks
from bptt.credit import RTRL, TBPTT, UORO, gradient_alignment, measured_k2, parse_estimator


def trainer(spec, model, loss_fn, opt, x, y):
    kind, opts = parse_estimator(spec)
    if kind == "tbptt":
        return TBPTT(model, loss_fn, opt, k1=opts["k1"], k2=opts["k2"])
    if kind == "auto":
        return TBPTT(model, loss_fn, opt, k1=1, k2=measured_k2(model, x, y, loss_fn, opts["max_bias"]))
    if kind == "rtrl":
        return RTRL(model, loss_fn, opt, k1=1)
    return UORO(model, loss_fn, opt, k1=1, rng=np.random.default_rng(0))


@click.command()
@click.option("--cells", default="lstm,gru", show_default=True)
@click.option("--estimators", default="tbptt:2,tbptt:4,tbptt:8,tbptt:16,auto:0.1,rtrl,uoro",
              show_default=True)
@click.option("--hidden", default=32, show_default=True, type=int)
@click.option("--seq-len", default=50, show_default=True, type=int, help="Window length T.")
@click.option("--batch", default=8, show_default=True, type=int)
@click.option("--windows", default=40, show_default=True, type=int, help="Training windows.")
@click.option("--lr", default=1e-2, show_default=True, type=float)
@click.option("--samples", default=20, show_default=True, type=int, help="UORO draws per alignment.")
def main(cells, estimators, hidden, seq_len, batch, windows, lr, samples):
    task = tasks.get("lag", seq_len=seq_len)
    loss_fn = tasks.loss_function(task)
    levels = ", ".join(f"{v:.3f}" for v in task.baselines().values())
    xa, ya, ma = task.batch(batch, np.random.default_rng(123))
    xt, yt, mt = task.test_set()
    click.echo(f"lag, T={seq_len}, H={hidden}, B={batch}, {windows} windows ({windows * seq_len} "
               f"steps), Adam lr {lr}; levels {levels}")
    click.echo("| cell | estimator | test cross-entropy | level reached | cosine at init | "
               "cosine after | s/step | peak MB |\n|---|---|---|---|---|---|---|---|")
    for cell in cells.split(","):
        for spec in estimators.split(","):
            model = nn.SequenceModel(cell, 1, hidden, 2, dtype=np.float64,
                                     rng=np.random.default_rng(0))
            align = lambda: gradient_alignment(model, xa.astype(np.float64), ya, loss_fn, [spec],
                                               mask=ma, samples=samples,
                                               rng=np.random.default_rng(1))[spec]
            before = align()
            opt = bptt.optim.Adam(model.parameters(), lr=lr)
            tr = trainer(spec, model, loss_fn, opt, xa.astype(np.float64), ya)
            rng = np.random.default_rng(2)
            tracemalloc.start()
            started = time.perf_counter()
            for _ in range(windows):
                x, y, m = task.batch(batch, rng)
                tr.reset_state()
                tr.run(x.astype(np.float64), y, m)
                tr.finish()
            seconds = (time.perf_counter() - started) / (windows * seq_len)
            peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
            tracemalloc.stop()
            after = align()
            with bptt.no_grad():
                pred, _ = model(xt.astype(np.float64))
            ce = task.score(pred.data, yt, mt)
            label = spec if "auto" not in spec else f"{spec} (k2={tr.k2})"
            click.echo(f"| {cell} | {label} | {ce:.3f} | {task.level_reached(ce)} | {before['cosine']:.3f} | "
                       f"{after['cosine']:.3f} | {seconds:.2e} | {peak:.1f} |")


if __name__ == "__main__":
    main()
