"""Time a training step (forward, MSE loss, backward) of bptt's fused RNN/LSTM/GRU against PyTorch.

Each configuration runs every contender once per round, the orders of the rounds a balanced
Latin square (``orders``), so that load on a shared machine, and what one contender leaves
behind for the next, hit them alike; the table quotes medians over rounds and the ratio of
medians bptt / PyTorch (below 1 means bptt is faster).  PyTorch is used when importable, e.g.::

    PYTHONPATH=. /work/torchenv/bin/python scripts/bench_rnn.py --quick
    PYTHONPATH=. env -u OPENBLAS_CORETYPE /work/torchenv/bin/python scripts/bench_rnn.py

PyTorch runs with as many threads as numpy's BLAS (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``
or the number of CPUs, in that order); with one thread the process is kept on one CPU
(``pin_to_one_cpu``).
"""

from __future__ import annotations

import os
import statistics
import time

import click
import numpy as np

import bptt
from bptt import nn


def pin_to_one_cpu():
    """With one thread (``_blas_threads() == 1``), keep the process on one CPU and tell XLA (if
    JAX starts later) to run without its Eigen thread pool: XLA's CPU backend runs its larger
    products on threads of its own whatever its flags say (1.8 CPUs busy for one jitted dot,
    measured), so one thread each is only fair on one CPU.  Returns the CPU, or None with more
    threads."""
    if _blas_threads() != 1 or not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    return cpu


def step_shape(command):
    """The click options of the LSTM step's shape that ``bench_peers.py`` and ``bench_blas.py``
    share (and this script's defaults): hidden sizes, B, T and I."""
    for option in (click.option("--input-size", default=32, show_default=True),
                   click.option("--seq-len", default=100, show_default=True),
                   click.option("--batch", default=32, show_default=True),
                   click.option("--sizes", default="32,128,512", show_default=True, help="Hidden sizes H.")):
        command = option(command)
    return command


def _blas_threads():
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return os.cpu_count() or 1


def _ours(cell, size, dtype, x, target):
    module = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](x.shape[2], size, dtype=dtype)

    def train_step():
        module.zero_grad()
        y, _ = module(x)
        nn.mse_loss(y, target).backward()
    return train_step


def _compiled(step):
    """``step`` on the compiled LSTM kernels (``bptt.nn.compiled``)."""
    from bptt.nn import compiled

    def run(*args):
        with compiled.enabled():
            return step(*args)
    return run


def _torch_contenders(torch, cell, size, dtype, x, target):
    tdtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
    xt, tt = torch.tensor(x), torch.tensor(target)
    module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        x.shape[2], size).to(tdtype)

    def whole():
        module.zero_grad()
        y, _ = module(xt)
        torch.nn.functional.mse_loss(y, tt).backward()
    out = {f"torch nn.{cell.upper()}": whole}
    if cell == "lstm":
        lstm_cell = torch.nn.LSTMCell(x.shape[2], size).to(tdtype)

        def loop():
            lstm_cell.zero_grad()
            h = c = torch.zeros(x.shape[1], size, dtype=tdtype)
            ys = []
            for t in range(x.shape[0]):
                h, c = lstm_cell(xt[t], (h, c))
                ys.append(h)
            torch.nn.functional.mse_loss(torch.stack(ys), tt).backward()
        out["torch LSTMCell loop"] = loop
    return out


def orders(n):
    """Orders of n contenders, a balanced Latin square (Williams 1949): each contender follows
    every other equally often, so that what one leaves behind (a cold cache, a thread pool still
    spinning) falls on all alike.  n rows for an even n, 2n for an odd one."""
    first, low, high = [0], 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    rows = [[(v + i) % n for v in first] for i in range(n)]
    return rows + [row[::-1] for row in rows] if n % 2 else rows


def rounds(reps, n):
    """``reps`` rounded up to a whole number of ``orders(n)``."""
    k = len(orders(n))
    return -(-reps // k) * k


def _time(contenders, reps):
    """Median seconds of each contender over ``rounds(reps, ...)`` rounds, in ``orders``."""
    names = list(contenders)
    for fn in contenders.values():      # warm up: first-call allocations, lazy initialisation
        fn()
    times = {n: [] for n in names}
    square = orders(len(names))
    for r in range(rounds(reps, len(names))):
        for i in square[r % len(square)]:
            start = time.perf_counter()
            contenders[names[i]]()
            times[names[i]].append(time.perf_counter() - start)
    return {n: statistics.median(v) for n, v in times.items()}


@click.command()
@click.option("--cells", default="lstm,gru,rnn", show_default=True, help="Comma-separated cells.")
@click.option("--sizes", default=None, help="Hidden sizes [32,128,512; --quick: 32,128].")
@click.option("--dtypes", default=None, help="float32,float64 [--quick: float32].")
@click.option("--batch", default=32, show_default=True)
@click.option("--seq-len", default=100, show_default=True)
@click.option("--input-size", default=32, show_default=True)
@click.option("--reps", default=None, type=int, help="Rounds per configuration [15; --quick: 5].")
@click.option("--quick", is_flag=True, help="H in {32, 128}, float32, 5 rounds: about a minute.")
@click.option("--no-torch", is_flag=True, help="Time bptt alone.")
def main(cells, sizes, dtypes, batch, seq_len, input_size, reps, quick, no_torch):
    """Median ms per training step of bptt's fused kernels and PyTorch, with ratios."""
    sizes = [int(s) for s in (sizes or ("32,128" if quick else "32,128,512")).split(",")]
    dtypes = [np.dtype(d).type for d in (dtypes or ("float32" if quick else "float32,float64")).split(",")]
    reps = reps or (5 if quick else 15)
    cpu = pin_to_one_cpu()
    torch = None
    if not no_torch:
        try:
            import torch
            torch.set_num_threads(_blas_threads())
        except ImportError:
            click.echo("torch is not importable: timing bptt alone", err=True)
    env = ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    click.echo(f"B={batch} T={seq_len} I={input_size}; {reps} rounds; BLAS threads {_blas_threads()}; "
               f"{'all CPUs' if cpu is None else f'on CPU {cpu} alone'}; {env}"
               + (f"; torch {torch.__version__} with {torch.get_num_threads()} threads" if torch else ""))
    from bptt.nn import compiled
    if not compiled.available():
        click.echo("bptt-compiled skipped: needs numba (pip install 'bptt[compiled]')", err=True)
    click.echo("\n| cell | dtype | H | bptt | ms | reference | ref ms | bptt / ref |")
    click.echo("|---|---|---|---|---|---|---|---|")
    for cell in cells.split(","):
        for dtype in dtypes:
            for size in sizes:
                rng = np.random.default_rng(0)
                bptt.seed(0)
                x = rng.standard_normal((seq_len, batch, input_size)).astype(dtype)
                target = rng.standard_normal((seq_len, batch, size)).astype(dtype)
                contenders = {"bptt": _ours(cell, size, dtype, x, target)}
                if cell == "lstm" and compiled.available():
                    with compiled.enabled():        # float64 layers past LOOP_UNITS stay on numpy
                        runs_compiled = compiled.handles(x, np.empty((4 * size, size), dtype))
                    if runs_compiled:
                        contenders["bptt-compiled"] = _compiled(_ours(cell, size, dtype, x, target))
                if torch is not None:
                    contenders.update(_torch_contenders(torch, cell, size, dtype, x, target))
                med = _time(contenders, reps)
                ours = {n: med.pop(n) * 1e3 for n in list(med) if n.startswith("bptt")}
                name = np.dtype(dtype).name
                for variant, ms in ours.items():
                    if not med:
                        click.echo(f"| {cell} | {name} | {size} | {variant} | {ms:.2f} | - | - | - |")
                    for ref, seconds in med.items():
                        click.echo(f"| {cell} | {name} | {size} | {variant} | {ms:.2f} | {ref} | "
                                   f"{seconds * 1e3:.2f} | {ms / (seconds * 1e3):.2f} |")

if __name__ == "__main__":
    main()
