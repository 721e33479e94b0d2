"""Why backpropagation: one backward pass against the 1 + n_params forward passes of finite differences.

For MLPs of growing width (inputs -> H -> H -> 1, tanh, MSE on a fixed float64 batch) this times

* ``forward``: one forward pass, nothing recorded;
* ``backprop``: one forward pass on the tape plus one backward, which give the whole gradient;
* ``finite differences``: forward differences, ``(L(theta + eps e_i) - L(theta)) / eps`` for every
  parameter i, i.e. 1 + n_params forward passes;

interleaving the repetitions and quoting medians, checks that the two gradients agree, prints a
table and writes a log-log plot.  Backprop's cost is a small constant times one forward pass;
finite differences' grows with n_params times it.

    python scripts/finite_differences_vs_backprop.py --sizes 2,4,8,16,32 --out fd_vs_backprop.png
"""

from __future__ import annotations

import statistics
import time

import click
import numpy as np

import bptt
from bptt import nn


def make_problem(width, inputs, batch, seed):
    bptt.seed(seed)
    model = nn.Sequential(nn.Linear(inputs, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                          nn.Linear(width, 1)).to(np.float64)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, inputs))
    y = np.sin(x.sum(axis=1, keepdims=True))
    return model, (lambda: nn.mse_loss(model(x), y))


def backprop_gradient(model, loss_fn):
    model.zero_grad()
    loss_fn().backward()
    return np.concatenate([p.grad.ravel() for p in model.parameters()])


def finite_difference_gradient(model, loss_fn, eps):
    """Forward differences over every parameter element: 1 + n_params forward passes."""
    with bptt.no_grad():
        base = loss_fn().item()
        grads = []
        for p in model.parameters():
            flat = p.data.reshape(-1)        # a view: perturbing it perturbs the parameter
            g = np.empty(flat.size)
            for i in range(flat.size):
                old = flat[i]
                flat[i] = old + eps
                g[i] = (loss_fn().item() - base) / eps
                flat[i] = old
            grads.append(g)
    return np.concatenate(grads)


def forward_only(loss_fn):
    with bptt.no_grad():
        return loss_fn().item()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n_params"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.loglog(n, [r["fd"] for r in rows], "o-", label="finite differences (1 + n forward passes)")
    ax.loglog(n, [r["backprop"] for r in rows], "s-", label="backprop (forward on tape + backward)")
    ax.loglog(n, [r["forward"] for r in rows], "^--", label="one forward pass")
    ax.set_xlabel("number of parameters")
    ax.set_ylabel("seconds per gradient (median)")
    ax.set_title("Gradient of an MLP's loss: finite differences vs backprop")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--sizes", default="2,4,8,16,32,64", show_default=True,
              help="Comma-separated hidden widths H of the inputs-H-H-1 MLPs.")
@click.option("--inputs", default=8, show_default=True, type=click.IntRange(min=1), help="Input features.")
@click.option("--batch", default=32, show_default=True, type=click.IntRange(min=1), help="Examples in the batch.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1),
              help="Interleaved repetitions per size (medians are quoted).")
@click.option("--eps", default=1e-7, show_default=True, type=float, help="Finite-difference step.")
@click.option("--seed", default=0, show_default=True, help="Seed for weights and data.")
@click.option("--out", default="fd_vs_backprop.png", show_default=True, type=click.Path(dir_okay=False),
              help="Where to write the log-log plot (PNG).")
def main(sizes, inputs, batch, repeats, eps, seed, out):
    """Time backprop against finite differences for MLPs of growing size and check they agree."""
    try:
        widths = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"need comma-separated integers, got {sizes!r}", param_hint="--sizes")
    if not widths or min(widths) < 1:
        raise click.BadParameter(f"need positive widths, got {sizes!r}", param_hint="--sizes")

    rows = []
    header = (f"{'H':>5} {'n_params':>9} {'forward s':>11} {'backprop s':>11} {'fin.diff. s':>12} "
              f"{'fd/backprop':>12} {'backprop/fwd':>13} {'max rel err':>12}")
    click.echo(header)
    click.echo("-" * len(header))
    for width in widths:
        model, loss_fn = make_problem(width, inputs, batch, seed)
        n_params = model.num_parameters()
        times = {"forward": [], "backprop": [], "fd": []}
        for _ in range(repeats):   # interleaved, so a busy spell hits all three alike
            t, _ = timed(lambda: forward_only(loss_fn))
            times["forward"].append(t)
            t, g_bp = timed(lambda: backprop_gradient(model, loss_fn))
            times["backprop"].append(t)
            t, g_fd = timed(lambda: finite_difference_gradient(model, loss_fn, eps))
            times["fd"].append(t)
        scale = max(np.abs(g_bp).max(), 1e-12)
        err = float(np.abs(g_bp - g_fd).max() / scale)
        row = {"width": width, "n_params": n_params, **{k: statistics.median(v) for k, v in times.items()},
               "err": err}
        rows.append(row)
        click.echo(f"{width:>5} {n_params:>9} {row['forward']:>11.2e} {row['backprop']:>11.2e} "
                   f"{row['fd']:>12.2e} {row['fd'] / row['backprop']:>12.1f} "
                   f"{row['backprop'] / row['forward']:>13.2f} {err:>12.1e}")
        if err > 1e-4:
            raise click.ClickException(f"H={width}: backprop and finite differences disagree "
                                       f"(max |diff| / max |grad| = {err:.2e})")
    plot(rows, out)
    click.echo(f"gradients agree (forward differences, eps={eps:g}); plot written to {out}")


if __name__ == "__main__":
    main()
