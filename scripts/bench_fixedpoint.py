"""Time and memory of a fixed-point RNN layer's training update: bptt's FixedPoint against PyTorch.

The layer is a tanh RNN cell run to h* = tanh(W_ih x + b_ih + W_hh h* + b_hh) at constant input,
with the same weights everywhere (PyTorch's ``RNNCell`` initialisation, W_hh rescaled to spectral
norm 0.9), stopped when ||h_{k+1} - h_k|| / max(1, ||h_k||) <= tol.  One update is the forward,
an MSE loss against a fixed target, the backward and an SGD step.  Contenders:

* ``bptt-rbp``: ``bptt.nn.FixedPoint('rnn', grad='rbp')``: one tape entry, Almeida-Pineda adjoint;
* ``torch-deq``: the usual deep-equilibrium recipe in PyTorch: the forward loop under
  ``torch.no_grad()``, one more cell application on the tape, and a backward hook on its output
  that solves the adjoint by fixed-point iteration with ``torch.autograd.grad`` (the same
  stopping rule);
* ``torch-unrolled``: PyTorch unrolling K iterations (default 50) on its tape;
* ``bptt-unrolled``: ``FixedPoint(grad='bptt')``, bptt unrolling every forward iteration.

Each contender runs in its own process (so that memory is its own), one update per round in a
rotating order (load on a shared machine hits all alike); the table gives medians over rounds and
the ratio to ``torch-deq``.  Memory is the growth of peak RSS over the RSS before the first update,
after a one-example update has loaded and initialised the libraries (Linux, /proc).  Run it where torch is installed::

    PYTHONPATH=. /work/torchenv/bin/python scripts/bench_fixedpoint.py
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
import traceback

import click

CONTENDERS = ("bptt-rbp", "torch-deq", "torch-unrolled", "bptt-unrolled")


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024       # kB -> MB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _weights(batch, hidden, inputs, seed):
    """Shared weights and data: PyTorch RNNCell's uniform init, W_hh at spectral norm 0.9."""
    import numpy as np

    rng = np.random.default_rng(seed)
    k = 1 / np.sqrt(hidden)
    w = {"weight_ih": rng.uniform(-k, k, (hidden, inputs)), "weight_hh": rng.uniform(-k, k, (hidden, hidden)),
         "bias_ih": rng.uniform(-k, k, hidden), "bias_hh": rng.uniform(-k, k, hidden)}
    w["weight_hh"] *= 0.9 / np.linalg.norm(w["weight_hh"], 2)
    w = {name: v.astype(np.float32) for name, v in w.items()}
    x = rng.standard_normal((batch, inputs)).astype(np.float32)
    y = (0.5 * rng.standard_normal((batch, hidden))).astype(np.float32)
    return w, x, y


def make_bptt(grad, w, x, y, tol):
    import bptt
    from bptt import nn

    layer = nn.FixedPoint("rnn", x.shape[1], w["weight_hh"].shape[0], tol=tol, max_iter=1000, grad=grad)
    layer.load_state_dict({f"cell.{name}": v for name, v in w.items()})
    opt = bptt.optim.SGD(layer.parameters(), lr=1e-4)

    def update():
        opt.zero_grad()
        nn.mse_loss(layer(x), y).backward()
        opt.step()
        return layer.last.iterations
    return update


def make_torch(kind, w, x, y, tol, unroll):
    import torch

    cell = torch.nn.RNNCell(x.shape[1], w["weight_hh"].shape[0])
    cell.load_state_dict({name: torch.from_numpy(v) for name, v in w.items()})
    opt = torch.optim.SGD(cell.parameters(), lr=1e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    count = {}

    def solve():
        h = torch.zeros(yt.shape)
        for k in range(1, 1001):
            new = cell(xt, h)
            residual = (new - h).norm() / max(1.0, h.norm().item())
            h = new
            if residual <= tol:
                break
        count["k"] = k
        return h

    def deq():
        with torch.no_grad():
            h_star = solve()
        h = cell(xt, h_star)                      # one application on the tape: grads reach x, θ
        h0 = h_star.clone().requires_grad_()
        f0 = cell(xt, h0)                         # the Jacobian at h*, for the adjoint's products

        def adjoint(g):
            mu = g
            for _ in range(1000):
                new = torch.autograd.grad(f0, h0, mu, retain_graph=True)[0] + g
                done = (new - mu).norm() <= tol * g.norm()
                mu = new
                if done:
                    break
            return mu

        h.register_hook(adjoint)
        return h

    def unrolled():
        h = torch.zeros(yt.shape)
        for _ in range(unroll):
            h = cell(xt, h)
        count["k"] = unroll
        return h

    forward = deq if kind == "deq" else unrolled

    def update():
        opt.zero_grad()
        torch.nn.functional.mse_loss(forward(), yt).backward()
        opt.step()
        return count["k"]
    return update


def worker(name, batch, hidden, inputs, tol, unroll, threads, seed, conn):
    """One update per message; answers (seconds, forward iterations), and peak RSS growth at the end."""
    try:
        w, x, y = _weights(batch, hidden, inputs, seed)
        if name.startswith("torch"):
            import torch

            torch.set_num_threads(threads)

            def make(x, y):
                return make_torch(name[len("torch-"):], w, x, y, tol, unroll)
        else:
            def make(x, y):
                return make_bptt("rbp" if name == "bptt-rbp" else "bptt", w, x, y, tol)
        make(x[:1], y[:1])()                       # one-example update: libraries load and initialise
        update = make(x, y)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                           # reset the peak RSS to the current RSS
        base = _status("VmRSS")
        conn.send(("ready", None))
        while conn.recv() is not None:
            start = time.perf_counter()
            k = update()
            conn.send((time.perf_counter() - start, k))
        conn.send((_status("VmHWM") - base, None))
    except Exception:
        conn.send(("error", traceback.format_exc()))


def _ask(conn, name, message=False):
    if message is not False:
        conn.send(message)
    answer = conn.recv()
    if answer[0] == "error":
        raise click.ClickException(f"{name} failed:\n{answer[1]}")
    return answer


@click.command()
@click.option("--batch", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--hidden", "hiddens", default="64,256", show_default=True, help="Comma-separated H.")
@click.option("--inputs", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--tol", default=1e-5, show_default=True, type=float)
@click.option("--unroll", default=50, show_default=True, type=click.IntRange(min=1),
              help="K of torch-unrolled.")
@click.option("--reps", default=30, show_default=True, type=click.IntRange(min=1), help="Rounds (updates).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="BLAS and torch threads per contender.")
@click.option("--seed", default=0, show_default=True, type=int)
def main(batch, hiddens, inputs, tol, unroll, reps, threads, seed):
    """A training update of a fixed-point RNN layer: bptt's RBP against PyTorch's DEQ recipe."""
    try:
        import torch  # noqa: F401
        names = list(CONTENDERS)
    except ImportError:
        names = [n for n in CONTENDERS if not n.startswith("torch")]
        click.echo("torch not importable: bptt contenders only")
    # children inherit this before numpy loads there (OPENBLAS_CORETYPE / L2_SIZE left as they are)
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(threads)
    env = ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    click.echo(f"B={batch} I={inputs} tol={tol:g}; torch-unrolled K={unroll}; {reps} rounds; {threads} thread(s) "
               f"each; {env}")
    click.echo(f"{'H':>4}  {'contender':<15} {'ms/update':>10} {'ratio':>7} {'iterations':>10} {'peak RSS MB':>12}")
    ctx = mp.get_context("spawn")
    for hidden in (int(h) for h in hiddens.split(",")):
        pipes, procs = {}, []
        for name in names:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=worker, args=(name, batch, hidden, inputs, tol, unroll, threads, seed, child),
                            daemon=True)
            p.start()
            child.close()
            pipes[name], procs = parent, procs + [p]
        for name in names:
            _ask(pipes[name], name)
        times = {n: [] for n in names}
        iters = {n: [] for n in names}
        for r in range(reps):
            for name in names[r % len(names):] + names[:r % len(names)]:
                seconds, k = _ask(pipes[name], name, r)
                times[name].append(seconds)
                iters[name].append(k)
        memory = {name: _ask(pipes[name], name, None)[0] for name in names}
        for p in procs:
            p.join()
        ref = statistics.median(times["torch-deq"]) if "torch-deq" in times else None
        for name in names:
            ms = statistics.median(times[name]) * 1e3
            ratio = f"{ms / (ref * 1e3):7.2f}" if ref else f"{'':>7}"
            click.echo(f"{hidden:>4}  {name:<15} {ms:10.2f} {ratio} {statistics.median(iters[name]):10.0f} "
                       f"{memory[name]:12.1f}")


if __name__ == "__main__":
    main()
