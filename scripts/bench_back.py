"""The gated cells' numpy backward with the recurrent product gate by gate against one GEMM a step.

From ``bptt.nn.kernels.BACK_BY_GATE`` units on (B > 1) the LSTM's and GRU's backward multiplies
each step's gate cotangents by W_hh gate by gate and sums the parts (``kernels.recurrent_back``);
below, in one (B, G*H) @ (G*H, H).  This times the backward of one forward both ways, kernels
only, over a grid of batch sizes B and hidden sizes H, the two alternating within every round;
each table gives the median ratio over rounds, by gate / one GEMM (below 1: by gate is faster),
the crossover that ``BACK_BY_GATE`` is set from::

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=. python scripts/bench_back.py
"""

from __future__ import annotations

import click
import numpy as np

from bench_compiled import _blas_env, _grid, _table
from bptt.nn import kernels
from bptt.nn.cells import gru, lstm

_CELLS = {"lstm": (lstm, 4, 2), "gru": (gru, 3, 1)}     # module, gates, state arrays


def _backward(cell, T, I, B, H, rng):
    """The two runs, by name: the cell's numpy backward of one forward, by gate and in one GEMM."""
    module, G, n_state = _CELLS[cell]
    k = 1 / np.sqrt(H)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    weights = tuple(rng.uniform(-k, k, s).astype(np.float32) for s in ((G * H, I), (G * H, H), (G * H,), (G * H,)))
    state = tuple(np.zeros((B, H), np.float32) for _ in range(n_state))
    gy = rng.standard_normal((T, B, H)).astype(np.float32)
    res = module._forward(x, state, weights, False)[2]

    def run(by_gate):
        def backward():
            kernels.BACK_BY_GATE = 1 if by_gate else 1 << 30
            module._backward(res, gy, state, False, True, True)
        return backward
    return {"by gate": run(True), "one GEMM": run(False)}


@click.command()
@click.option("--cells", default="lstm,gru", show_default=True)
@click.option("--batches", default="2,4,8,32", show_default=True, help="Batch sizes B (B = 1 is one GEMV).")
@click.option("--sizes", default="128,256,512,1024", show_default=True, help="Hidden sizes H.")
@click.option("--steps", "T", default=100, show_default=True)
@click.option("--inputs", "I", default=32, show_default=True)
@click.option("--reps", default=15, show_default=True, help="Rounds per shape.")
def main(cells, batches, sizes, T, I, reps):
    """Median ratios of the backward's time, by gate / one GEMM, per (B, H)."""
    Bs, Hs = _grid(batches, sizes)
    rng = np.random.default_rng(0)
    click.echo(f"numpy backward, float32, T={T}, I={I}; {reps} rounds; {_blas_env()}")
    threshold = kernels.BACK_BY_GATE
    for cell in cells.split(","):
        _table(f"{cell}: by gate / one GEMM", ("by gate", "one GEMM"),
               lambda B, H: _backward(cell, T, I, B, H, rng), Bs, Hs, reps)
    kernels.BACK_BY_GATE = threshold
    click.echo(f"\nbptt.nn.kernels.BACK_BY_GATE = {threshold}")


if __name__ == "__main__":
    main()
