"""The GEMMs of an LSTM training step in numpy's BLAS against PyTorch's and XLA's, side by side.

A layer's training step is mostly these products: per step the recurrent one forward,
(B, H) @ (H, 4H), and back, (B, 4H) @ (4H, H); over all T steps at once the input projection,
(T*B, I) @ (I, 4H), the input's gradient, (T*B, 4H) @ (4H, I), and the weight gradients,
(4H, T*B) @ (T*B, I) and (4H, T*B) @ (T*B, H).  bptt runs the forward's product gate by gate,
4 x (B, H) @ (H, H) (``kernels.gate_major``, ``compiled``), and the compiled backward's too,
4 x (B, H) @ (H, H) on strided views of the gates' cotangents, which OpenBLAS runs faster at
these sizes; both are timed both ways.  The last line per H adds them up as one training step
does (the per-step ones T times), each contender's per-step products as it runs them: numpy's
gate by gate, as the compiled kernels run them, the peers' in one GEMM each (as ``nn.LSTM`` and
the scan do).  The same float32 operands go through
``np.matmul(..., out=)``, ``torch.mm(..., out=)`` and a jitted ``jnp.dot``; each round runs every
contender, in the orders of ``bench_rnn.orders``; the table gives median times, GFLOP/s and the
median ratios numpy / peer (above 1: numpy's BLAS is slower)::

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=. /work/torchenv/bin/python scripts/bench_blas.py

Peers that are not installed are skipped.  Threads, and one CPU for one thread, as in
``bench_peers.py``.
"""

from __future__ import annotations

import os
import statistics
import time

import click
import numpy as np

from bench_rnn import _blas_threads, orders, pin_to_one_cpu, rounds, step_shape


def _products(B, T, I, H):
    """(name, G, M, K, N, times per training step, whose total counts it) of each product of the
    step: G products (M, K) @ (K, N) at once, the G left factors column blocks of one (M, G K)
    array for the backward's."""
    return (("forward, per step", 1, B, H, 4 * H, T, "peers"),
            ("forward, per step, gate by gate", 4, B, H, H, T, "numpy"),
            ("backward, per step", 1, B, 4 * H, H, T, "peers"),
            ("backward, per step, gate by gate", 4, B, H, H, T, "numpy"),
            ("input projection", 1, T * B, I, 4 * H, 1, "all"), ("dx", 1, T * B, 4 * H, I, 1, "all"),
            ("dW_ih", 1, 4 * H, T * B, I, 1, "all"), ("dW_hh", 1, 4 * H, T * B, H, 1, "all"))


def _contenders(a, b):
    """The product a @ b (b (G, K, N) for G products at once) in numpy, PyTorch and JAX."""
    out = np.empty(b.shape[:-2] + (a.shape[-2], b.shape[-1]), np.float32)
    found = {"numpy": lambda: np.matmul(a, b, out=out)}
    try:
        import torch
        ta, tb, to = torch.from_numpy(a), torch.from_numpy(b), torch.empty(out.shape)
        found["PyTorch"] = lambda: torch.matmul(ta, tb, out=to)
    except ImportError:
        pass
    try:
        import jax
        import jax.numpy as jnp
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        dot = jax.jit(jnp.matmul)
        found["JAX"] = lambda: dot(ja, jb).block_until_ready()
    except ImportError:
        pass
    return found


@click.command()
@step_shape
@click.option("--reps", default=15, show_default=True, help="Rounds (rounded up to whole squares).")
def main(sizes, batch, seq_len, input_size, reps):
    """Median time per product and ratios numpy / PyTorch and numpy / JAX."""
    threads = _blas_threads()
    cpu = pin_to_one_cpu()
    try:
        import torch
        torch.set_num_threads(threads)
    except ImportError:
        click.echo("PyTorch not installed: skipped", err=True)
    env = ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    click.echo(f"float32 GEMMs of an LSTM step, B={batch} T={seq_len} I={input_size}; {reps} rounds; "
               f"BLAS threads {threads}; {'all CPUs' if cpu is None else f'on CPU {cpu} alone'}; {env}")
    click.echo("\n| H | product | M x K x N | numpy us (GFLOP/s) | peer | peer us (GFLOP/s) | numpy / peer |")
    click.echo("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for H in (int(s) for s in sizes.split(",")):
        total = {}
        for name, G, M, K, N, count, counted in _products(batch, seq_len, input_size, H):
            a = rng.standard_normal((M, K)).astype(np.float32)
            if G > 1 and name.startswith("backward"):
                a = rng.standard_normal((M, G * K)).astype(np.float32).reshape(M, G, K).transpose(1, 0, 2)
            b = rng.standard_normal((G, K, N) if G > 1 else (K, N)).astype(np.float32)
            runs = _contenders(a, b)
            repeat = max(1, int(2e8 / (G * M * K * N)))     # about 0.4 GFLOP, some ms, per timing
            for run in runs.values():
                run()
            times = {n: [] for n in runs}
            names = list(runs)
            square = orders(len(names))
            for r in range(rounds(reps, len(names))):
                for n in (names[i] for i in square[r % len(square)]):
                    start = time.perf_counter()
                    for _ in range(repeat):
                        runs[n]()
                    times[n].append((time.perf_counter() - start) / repeat)
            flops = 2 * G * M * K * N

            def cell(n):
                t = statistics.median(times[n])
                return f"{t * 1e6:.1f} ({flops / t / 1e9:.0f})"
            for n in names:
                if counted == "all" or (n == "numpy") == (counted == "numpy"):
                    total[n] = total.get(n, 0.0) + count * statistics.median(times[n])
            for peer in names[1:]:
                ratio = statistics.median(x / y for x, y in zip(times["numpy"], times[peer]))
                shape = f"{G} x " * (G > 1) + f"{M} x {K} x {N}"
                click.echo(f"| {H} | {name} | {shape} | {cell('numpy')} | {peer} | {cell(peer)} "
                           f"| {ratio:.2f} |")
        for peer in names[1:]:
            click.echo(f"| {H} | all of a training step | | {total['numpy'] * 1e3:.2f} ms | {peer} | "
                       f"{total[peer] * 1e3:.2f} ms | {total['numpy'] / total[peer]:.2f} |")


if __name__ == "__main__":
    main()
