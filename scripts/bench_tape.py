"""Time a forward+backward recorded on the tape against the same computation written by hand in numpy.

The network is a stack of gated layers on a (B, H) batch::

    a = tanh(h @ W + b);  z = sigmoid(h @ U + c);  h = z * a + (1 - z) * h;  loss = sum(h * h)

Both sides compute the same forward and the gradients of every W, b, U, c; the hand-written side
stores exactly the intermediates its backward needs.  Repetitions alternate between the two so
that a busy machine slows both alike; medians are quoted with their ratio.

    python scripts/bench_tape.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/bench_tape.py
"""

from __future__ import annotations

import cProfile
import pstats
import time

import click
import numpy as np

import bptt


def make_params(rng, hidden, layers, dtype):
    """One (W, b, U, c) per layer, scaled so that activations stay in tanh's working range."""
    scale = 1 / np.sqrt(hidden)
    return [tuple(rng.uniform(-scale, scale, shape).astype(dtype)
                  for shape in ((hidden, hidden), (hidden,), (hidden, hidden), (hidden,)))
            for _ in range(layers)]


def tape_step(x, params):
    """Forward and backward on the tape; returns the loss and the gradients in ``params`` order."""
    h = bptt.Tensor(x)
    for W, b, U, c in params:
        a = bptt.tanh(h @ W + b)
        z = bptt.sigmoid(h @ U + c)
        h = z * a + (1 - z) * h
    loss = (h * h).sum()
    for p in params:
        for t in p:
            t.grad = None
    loss.backward()
    return loss.item(), [t.grad for p in params for t in p]


def numpy_step(x, params):
    """The same forward and backward written by hand in numpy."""
    h = x
    saved = []
    for W, b, U, c in params:
        a = np.tanh(h @ W + b)
        z = 0.5 * np.tanh(0.5 * (h @ U + c)) + 0.5   # the tape's stable sigmoid
        saved.append((h, a, z))
        h = z * a + (1 - z) * h
    loss = float((h * h).sum())
    dh = 2 * h
    grads = []
    for (W, b, U, c), (h_in, a, z) in zip(reversed(params), reversed(saved)):
        da = dh * z
        dz = dh * (a - h_in)
        dpre_a = da * (1 - a * a)
        dpre_z = dz * z * (1 - z)
        grads.append((h_in.T @ dpre_a, dpre_a.sum(axis=0), h_in.T @ dpre_z, dpre_z.sum(axis=0)))
        dh = dh * (1 - z) + dpre_a @ W.T + dpre_z @ U.T
    return loss, [g for layer in reversed(grads) for g in layer]


def _time(fn, *args, number):
    start = time.perf_counter()
    for _ in range(number):
        fn(*args)
    return (time.perf_counter() - start) / number


@click.command()
@click.option("--batch", default=32, show_default=True, type=click.IntRange(min=1), help="B: rows of the batch.")
@click.option("--hidden", default=128, show_default=True, type=click.IntRange(min=1), help="H: width of every layer.")
@click.option("--layers", default=4, show_default=True, type=click.IntRange(min=1), help="Gated layers in the chain.")
@click.option("--repeats", default=15, show_default=True, type=click.IntRange(min=1), help="Interleaved repetitions per side.")
@click.option("--number", default=50, show_default=True, type=click.IntRange(min=1), help="Steps timed per repetition.")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float64"]))
@click.option("--seed", default=0, show_default=True, help="Random seed of inputs and weights.")
@click.option("--profile", is_flag=True, help="Also print a cProfile of the tape side (top 15 by own time).")
def main(batch, hidden, layers, repeats, number, dtype, seed, profile):
    """Median time of a recorded forward+backward vs the hand-written numpy one, and their ratio."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, hidden)).astype(dtype)
    arrays = make_params(rng, hidden, layers, dtype)
    params = [tuple(bptt.Tensor(a, requires_grad=True) for a in p) for p in arrays]

    # both sides must compute the same numbers before their times mean anything
    loss_t, grads_t = tape_step(x, params)
    loss_n, grads_n = numpy_step(x, arrays)
    tol = 1e-4 if dtype == "float32" else 1e-10
    worst = max(float(np.max(np.abs(gt - gn)) / (np.max(np.abs(gn)) + 1e-30)) for gt, gn in zip(grads_t, grads_n))
    if abs(loss_t - loss_n) > tol * abs(loss_n) or worst > tol:
        raise click.ClickException(f"tape and numpy disagree: loss {loss_t} vs {loss_n}, "
                                   f"worst relative gradient difference {worst:.3g}")

    times = {"tape": [], "numpy": []}
    for _ in range(repeats):
        times["tape"].append(_time(tape_step, x, params, number=number))
        times["numpy"].append(_time(numpy_step, x, arrays, number=number))
    tape, ref = np.median(times["tape"]), np.median(times["numpy"])
    click.echo(f"forward+backward, {layers} gated layers, B={batch} H={hidden} {dtype}, "
               f"median of {repeats} x {number} steps")
    click.echo(f"  tape   {tape * 1e6:9.1f} us/step  ({layers * 10 + 2} tape entries)")
    click.echo(f"  numpy  {ref * 1e6:9.1f} us/step")
    click.echo(f"  ratio  {tape / ref:9.2f} x")
    if profile:
        prof = cProfile.Profile()
        prof.runcall(_time, tape_step, x, params, number=number * repeats)
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
