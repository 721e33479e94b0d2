"""The compiled LSTM kernels against the numpy ones: where each is faster, kernels only.

One forward and backward of an LSTM layer (``compiled.lstm_forward``/``lstm_backward`` called
directly, whatever ``MAX_UNITS`` says, against ``bptt.nn.cells.lstm``'s numpy kernels) over a
grid of batch sizes B and hidden sizes H, T steps, I inputs; the two alternate within every
round, the table gives the median ratio compiled / numpy (below 1: the compiled kernels are
faster), the crossover that ``bptt.nn.compiled.MAX_UNITS`` (B x H) is set from::

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=. python scripts/bench_compiled.py

Needs numba (``pip install 'bptt[compiled]'``).
"""

from __future__ import annotations

import os
import statistics
import time

import click
import numpy as np

from bptt.nn import compiled
from bptt.nn.cells import lstm


def _window(forward, backward, x, state, weights, gy):
    def run():
        _, _, res = forward(x, state, weights, False)
        backward(res, gy, state, True, True, True)
    return run


@click.command()
@click.option("--batches", default="1,2,4,8,16", show_default=True, help="Batch sizes B.")
@click.option("--sizes", default="32,64,128,256", show_default=True, help="Hidden sizes H.")
@click.option("--steps", "T", default=50, show_default=True)
@click.option("--inputs", "I", default=8, show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--reps", default=21, show_default=True, help="Rounds per shape.")
def main(batches, sizes, T, I, dtype, reps):
    """Median ratio compiled / numpy per (B, H)."""
    if not compiled.available():
        raise click.ClickException("needs numba: pip install 'bptt[compiled]'")
    compiled.use(True)          # compiles the loops (or loads them from numba's cache) once
    compiled.use(False)         # the numpy side must not dispatch to them
    dt = np.dtype(dtype)
    Bs, Hs = [int(b) for b in batches.split(",")], [int(h) for h in sizes.split(",")]
    rng = np.random.default_rng(0)
    env = ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in ("OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
                                                                  "OPENBLAS_L2_SIZE"))
    click.echo(f"LSTM forward+backward, T={T}, I={I}, {dtype}; {reps} rounds; {env}")
    click.echo("compiled / numpy, median over rounds (below 1: compiled faster)\n")
    click.echo("| H \\ B | " + " | ".join(map(str, Bs)) + " |")
    click.echo("|---" * (len(Bs) + 1) + "|")
    for H in Hs:
        row = []
        for B in Bs:
            x = rng.standard_normal((T, B, I)).astype(dt)
            state = tuple(np.zeros((B, H), dt) for _ in range(2))
            k = 1 / np.sqrt(H)
            w = tuple(rng.uniform(-k, k, s).astype(dt) for s in ((4 * H, I), (4 * H, H), (4 * H,), (4 * H,)))
            gy = rng.standard_normal((T, B, H)).astype(dt)
            runs = {"numpy": _window(lstm._forward, lstm._backward, x, state, w, gy),
                    "compiled": _window(compiled.lstm_forward, compiled.lstm_backward, x, state, w, gy)}
            for run in runs.values():    # warm up: pooled buffers, first-call dispatch
                run()
            ratios = []
            for r in range(reps):
                seconds = {}
                for name in (("numpy", "compiled") if r % 2 else ("compiled", "numpy")):
                    start = time.perf_counter()
                    runs[name]()
                    seconds[name] = time.perf_counter() - start
                ratios.append(seconds["compiled"] / seconds["numpy"])
            row.append(f"{statistics.median(ratios):.2f}")
        click.echo(f"| {H} | " + " | ".join(row) + " |")
    click.echo(f"\nbptt.nn.compiled.MAX_UNITS = {compiled.MAX_UNITS} (B x H)")


if __name__ == "__main__":
    main()
