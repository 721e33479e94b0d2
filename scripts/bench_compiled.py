"""The compiled LSTM kernels against the numpy ones, and the compiled kernels' two ways of running
the steps against each other: kernels only.

One forward and backward of an LSTM layer (``compiled.lstm_forward``/``lstm_backward`` called
directly) over a grid of batch sizes B and hidden sizes H, T steps, I inputs.  Contenders
alternate within every round; each table gives a median ratio over rounds (below 1: the first
is faster).  The first compares the compiled kernels, as ``LOOP_UNITS`` dispatches them, with
``bptt.nn.cells.lstm``'s numpy kernels; the second all steps in one compiled loop with steps
run from Python, the crossover that ``bptt.nn.compiled.LOOP_UNITS`` (B x H) is set from::

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


def _window(forward, backward, x, state, weights, gy, loop_units=None):
    def run():
        if loop_units is not None:
            compiled.LOOP_UNITS = loop_units
        _, _, res = forward(x, state, weights, False)
        backward(res, gy, state, True, True, True)
    return run


def _table(title, names, make, Bs, Hs, reps):
    """Rows over H, columns over B: the median over ``reps`` rounds of time(names[0]) /
    time(names[1]), ``make(B, H)`` giving the two runs by name."""
    click.echo(f"\n{title}\n")
    click.echo("| H \\ B | " + " | ".join(map(str, Bs)) + " |")
    click.echo("|---" * (len(Bs) + 1) + "|")
    for H in Hs:
        row = []
        for B in Bs:
            runs = make(B, H)
            for run in runs.values():    # warm up: pooled buffers, first-call dispatch
                run()
            ratios = []
            for r in range(reps):
                seconds = {}
                for name in (names if r % 2 else names[::-1]):
                    start = time.perf_counter()
                    runs[name]()
                    seconds[name] = time.perf_counter() - start
                ratios.append(seconds[names[0]] / seconds[names[1]])
            row.append(f"{statistics.median(ratios):.2f}")
        click.echo(f"| {H} | " + " | ".join(row) + " |")


@click.command()
@click.option("--batches", default="1,4,16,32,64", show_default=True, help="Batch sizes B.")
@click.option("--sizes", default="32,64,128,512", show_default=True, help="Hidden sizes H.")
@click.option("--steps", "T", default=50, show_default=True)
@click.option("--inputs", "I", default=8, show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--reps", default=21, show_default=True, help="Rounds per shape.")
def main(batches, sizes, T, I, dtype, reps):
    """Median ratios compiled / numpy and loop / steps per (B, H)."""
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
    units = compiled.LOOP_UNITS

    def case(B, H):
        x = rng.standard_normal((T, B, I)).astype(dt)
        state = tuple(np.zeros((B, H), dt) for _ in range(2))
        k = 1 / np.sqrt(H)
        w = tuple(rng.uniform(-k, k, s).astype(dt) for s in ((4 * H, I), (4 * H, H), (4 * H,), (4 * H,)))
        return x, state, w, rng.standard_normal((T, B, H)).astype(dt)

    def against_numpy(B, H):
        args = case(B, H)
        return {"numpy": _window(lstm._forward, lstm._backward, *args),
                "compiled": _window(compiled.lstm_forward, compiled.lstm_backward, *args, loop_units=units)}

    def loop_or_steps(B, H):
        args = case(B, H)
        return {"loop": _window(compiled.lstm_forward, compiled.lstm_backward, *args, loop_units=1 << 62),
                "steps": _window(compiled.lstm_forward, compiled.lstm_backward, *args, loop_units=0)}
    _table(f"compiled (LOOP_UNITS = {units}) / numpy", ("compiled", "numpy"), against_numpy, Bs, Hs, reps)
    _table("all steps in one compiled loop / steps from Python", ("loop", "steps"), loop_or_steps, Bs, Hs, reps)
    compiled.LOOP_UNITS = units
    click.echo(f"\nbptt.nn.compiled.LOOP_UNITS = {units} (B x H)")


if __name__ == "__main__":
    main()
