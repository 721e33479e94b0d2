"""Time an LSTM training step (forward, MSE, backward) of bptt against every peer installed.

Peers: PyTorch (``nn.LSTM`` and an ``LSTMCell`` loop), JAX (``jit`` of ``grad`` over
``lax.scan``) and HIPS autograd (a per-step loop in ``autograd.numpy``), each computing the same
float32 LSTM (PyTorch's gate order and formulas) on the same data.  A peer that is not installed
is skipped with a note; with numba installed, bptt also runs on its compiled LSTM kernels
(``bptt.nn.compiled``).  Contenders run once per round in the orders of ``bench_rnn.orders`` (load
on a shared machine, and what one leaves behind for the next, hit them alike); the table quotes
medians and the ratio bptt / peer (below 1: bptt is faster)::

    PYTHONPATH=. /work/torchenv/bin/python scripts/bench_peers.py --reps 7
    OPENBLAS_NUM_THREADS=1 PYTHONPATH=. /work/torchenv/bin/python scripts/bench_peers.py

Every contender gets the same number of threads: numpy's BLAS count (``bench_rnn``), given to
PyTorch with ``set_num_threads`` and to XLA's CPU backend by ``XLA_FLAGS`` before JAX starts (one
thread turns off its Eigen thread pool).  With one thread the process is also kept on one CPU
(``bench_rnn.pin_to_one_cpu``): XLA runs its larger products on two CPUs whatever its flags say.
HIPS autograd runs on numpy and so on its BLAS.
"""

from __future__ import annotations

import os

import click
import numpy as np

import bptt
from bench_rnn import _blas_threads, _compiled, _ours, _time, _torch_contenders, pin_to_one_cpu, step_shape


def _jax_contender(x, target, size):
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(1)
    k = 1 / np.sqrt(size)
    params = {n: jnp.asarray(rng.uniform(-k, k, s).astype(np.float32)) for n, s in
              (("w_ih", (4 * size, x.shape[2])), ("w_hh", (4 * size, size)), ("b", (4 * size,)))}
    xs, ts = jnp.asarray(x), jnp.asarray(target)

    def loss(p):
        def step(carry, x_t):
            h, c = carry
            i, f, g, o = jnp.split(x_t @ p["w_ih"].T + h @ p["w_hh"].T + p["b"], 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h
        zeros = jnp.zeros((x.shape[1], size), jnp.float32)
        _, ys = jax.lax.scan(step, (zeros, zeros), xs)
        return jnp.mean((ys - ts) ** 2)

    grad = jax.jit(jax.grad(loss))
    return lambda: jax.block_until_ready(grad(params))


def _autograd_contender(x, target, size):
    import autograd
    import autograd.numpy as anp

    rng = np.random.default_rng(1)
    k = 1 / np.sqrt(size)
    params = [rng.uniform(-k, k, s).astype(np.float32)
              for s in ((4 * size, x.shape[2]), (4 * size, size), (4 * size,))]
    sig = lambda a: 0.5 * anp.tanh(0.5 * a) + 0.5  # noqa: E731

    def loss(p):
        w_ih, w_hh, b = p
        h = c = anp.zeros((x.shape[1], size), np.float32)
        total = 0.0
        for t in range(x.shape[0]):
            a = anp.dot(x[t], w_ih.T) + anp.dot(h, w_hh.T) + b
            i, f, g, o = a[:, :size], a[:, size:2 * size], a[:, 2 * size:3 * size], a[:, 3 * size:]
            c = sig(f) * c + sig(i) * anp.tanh(g)
            h = sig(o) * anp.tanh(c)
            total = total + anp.sum((h - target[t]) ** 2)
        return total / target.size

    grad = autograd.grad(loss)
    return lambda: grad(params)


def _peers(x, target, size, torch):
    found, missing = {}, []
    if torch is not None:
        found.update(_torch_contenders(torch, "lstm", size, np.float32, x, target))
    else:
        missing.append("PyTorch")
    for name, make in (("JAX jit(grad(scan))", _jax_contender), ("HIPS autograd loop", _autograd_contender)):
        try:
            found[name] = make(x, target, size)
        except ImportError:
            missing.append(name.split()[0])
    return found, missing


@click.command()
@step_shape
@click.option("--reps", default=7, show_default=True, help="Rounds per size.")
def main(sizes, batch, seq_len, input_size, reps):
    """Median ms per LSTM training step of bptt and its peers, with ratios bptt / peer."""
    cpu = pin_to_one_cpu()
    try:
        import torch
        torch.set_num_threads(_blas_threads())
    except ImportError:
        torch = None
    env = ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    click.echo(f"LSTM, float32, B={batch} T={seq_len} I={input_size}; {reps} rounds; BLAS threads "
               f"{_blas_threads()}; XLA_FLAGS={os.environ.get('XLA_FLAGS', 'unset')}; "
               f"{'all CPUs' if cpu is None else f'on CPU {cpu} alone'}; {env}")
    from bptt.nn import compiled
    click.echo("\n| H | bptt | ms | peer | peer ms | bptt / peer |")
    click.echo("|---|---|---|---|---|---|")
    for size in (int(s) for s in sizes.split(",")):
        rng = np.random.default_rng(0)
        bptt.seed(0)
        x = rng.standard_normal((seq_len, batch, input_size)).astype(np.float32)
        target = rng.standard_normal((seq_len, batch, size)).astype(np.float32)
        peers, missing = _peers(x, target, size, torch)
        contenders = {"bptt": _ours("lstm", size, np.float32, x, target)}
        if compiled.available():
            contenders["bptt-compiled"] = _compiled(_ours("lstm", size, np.float32, x, target))
        else:
            missing.append("numba (bptt-compiled)")
        med = _time({**contenders, **peers}, reps)
        ours = {n: med.pop(n) * 1e3 for n in contenders}
        for variant, ms in ours.items():
            for name, seconds in med.items():
                click.echo(f"| {size} | {variant} | {ms:.2f} | {name} | {seconds * 1e3:.2f} | "
                           f"{ms / (seconds * 1e3):.2f} |")
    if missing:
        click.echo(f"\nnot installed, skipped: {', '.join(missing)}")


if __name__ == "__main__":
    main()
