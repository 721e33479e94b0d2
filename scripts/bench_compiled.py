"""The compiled LSTM kernels against the numpy ones, and the compiled kernels' two ways of running
the steps against each other: kernels only.

One forward and backward of an LSTM layer (``compiled.lstm_forward``/``lstm_backward`` called
directly) over a grid of batch sizes B and hidden sizes H, T steps, I inputs.  Contenders
alternate within every round; each table gives a median ratio over rounds (below 1: the first
is faster).  The first compares the compiled kernels, as ``LOOP_MACS`` dispatches them, with
``bptt.nn.cells.lstm``'s numpy kernels; the next two, forward and backward apart, all steps in
one compiled loop with steps run from Python, the crossovers that ``bptt.nn.compiled.LOOP_MACS``
is set from::

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


def _window(forward, backward, x, state, weights, gy, loop_macs=None):
    def run():
        if loop_macs is not None:
            compiled.LOOP_MACS = loop_macs
        _, _, res = forward(x, state, weights, False)
        backward(res, gy, state, True, True, True)
    return run


def _pass(backward, x, state, weights, gy, loop_macs):
    """One compiled pass, the forward or (from one forward's residuals) the backward."""
    res = compiled.lstm_forward(x, state, weights, False)[2]

    def run():
        compiled.LOOP_MACS = loop_macs
        if backward:
            compiled.lstm_backward(res, gy, state, True, True, True)
        else:
            compiled.lstm_forward(x, state, weights, False)
    return run


def _grid(batches, sizes):
    """The batch sizes and hidden sizes of comma-separated options."""
    return [int(b) for b in batches.split(",")], [int(h) for h in sizes.split(",")]


def _blas_env():
    """The BLAS settings a table was measured under, for its header."""
    return ", ".join(f"{k}={os.environ.get(k, 'unset')}"
                     for k in ("OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))


def _table(title, names, make, Bs, Hs, reps):
    """Rows over H, columns over B: the median over ``reps`` rounds of time(names[0]) /
    time(names[1]), ``make(B, H)`` giving the two runs by name (None: a "-" in the table)."""
    click.echo(f"\n{title}\n")
    click.echo("| H \\ B | " + " | ".join(map(str, Bs)) + " |")
    click.echo("|---" * (len(Bs) + 1) + "|")
    for H in Hs:
        row = []
        for B in Bs:
            runs = make(B, H)
            if runs is None:
                row.append("-")
                continue
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
    """Median ratios compiled / numpy and, per pass, loop / steps per (B, H)."""
    if not compiled.available():
        raise click.ClickException("needs numba: pip install 'bptt[compiled]'")
    compiled.use(True)          # compiles the loops (or loads them from numba's cache) once
    compiled.use(False)         # the numpy side must not dispatch to them
    dt = np.dtype(dtype)
    Bs, Hs = _grid(batches, sizes)
    rng = np.random.default_rng(0)
    click.echo(f"LSTM forward+backward, T={T}, I={I}, {dtype}; {reps} rounds; {_blas_env()}")
    macs = compiled.LOOP_MACS

    def case(B, H):
        x = rng.standard_normal((T, B, I)).astype(dt)
        state = tuple(np.zeros((B, H), dt) for _ in range(2))
        k = 1 / np.sqrt(H)
        w = tuple(rng.uniform(-k, k, s).astype(dt) for s in ((4 * H, I), (4 * H, H), (4 * H,), (4 * H,)))
        return x, state, w, rng.standard_normal((T, B, H)).astype(dt)

    def against_numpy(B, H):
        args = case(B, H)
        return {"numpy": _window(lstm._forward, lstm._backward, *args),
                "compiled": _window(compiled.lstm_forward, compiled.lstm_backward, *args, loop_macs=macs)}

    def loop_or_steps(backward):
        def make(B, H):
            if backward and B == 1:         # it loops either way
                return None
            args = case(B, H)
            return {"loop": _pass(backward, *args, 1 << 62), "steps": _pass(backward, *args, 0)}
        return make
    _table(f"compiled (LOOP_MACS = 2^{macs.bit_length() - 1}) / numpy", ("compiled", "numpy"),
           against_numpy, Bs, Hs, reps)
    for backward, name in ((False, "forward"), (True, "backward")):
        _table(f"{name}: all steps in one compiled loop / steps from Python", ("loop", "steps"),
               loop_or_steps(backward), Bs, Hs, reps)
    compiled.LOOP_MACS = macs
    click.echo(f"\nbptt.nn.compiled.LOOP_MACS = 2^{macs.bit_length() - 1} multiply-adds a step (4 B H^2): "
               "the forward loops up to it, the backward up to a quarter of it, and at B = 1")


if __name__ == "__main__":
    main()
