"""Stream an LSTM with truncated BPTT: memory over 10^6 steps and steps per second, ours vs PyTorch.

Each contender runs in its own process (so each one's peak RSS is its own), all of them fed the
same stream (B = 1, a noisy sine, predicting the next value) in blocks; the blocks are
interleaved, one contender's block after another's, so load on a busy machine hits all alike.
Reported: peak RSS after 10^4, 10^5 and 10^6 steps (those within --steps) and its growth from
the first checkpoint, and the median time per step over the blocks, with ratios to PyTorch.

Contenders (PyTorch ones only when torch imports):
  bptt-seq       k1 = k2: TBPTT, whole windows through SequenceModel's fused sequence path
  bptt-seq-compiled   bptt-seq on the compiled LSTM kernels (bptt.nn.compiled; needs numba)
  bptt-step      k1 = k2: TBPTT on the step path (fast_path=False), per-step loss_fn
  torch-lstm     k1 = k2: nn.LSTM over each k-step chunk, backward, step, detach
  torch-cell     k1 = k2: an nn.LSTMCell loop, backward every k steps, detach
  bptt-k2        k2 > k1: TBPTT, pieces between update and cut points through the sequence
                 path, their tape reused by the overlapping windows
  bptt-k2-step   k2 > k1: TBPTT on the step path (fast_path=False)
  bptt-k2-compiled    bptt-k2 on the compiled LSTM kernels
  torch-cell-k2  k2 > k1: an nn.LSTMCell loop, each step from a detached state, cotangents
                 chained back k2 steps at each update (multi-root autograd.backward)

Run it with torch available as ``PYTHONPATH=. /work/torchenv/bin/python scripts/bench_tbptt.py``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import click
import numpy as np

CONTENDERS = ("bptt-seq", "bptt-seq-compiled", "bptt-step", "torch-lstm", "torch-cell", "bptt-k2",
              "bptt-k2-compiled", "bptt-k2-step", "torch-cell-k2")
CHECKPOINTS = (10**4, 10**5, 10**6)


def block_data(index, block, dtype=np.float32):
    """Block ``index`` of the stream: inputs x (block, 1, 1) and next-value targets y."""
    t = np.arange(index * block, (index + 1) * block + 1)
    noise = np.random.default_rng(index).standard_normal(len(t)) * 0.1
    s = (np.sin(0.05 * t) + noise).astype(dtype)
    return s[:-1, None, None], s[1:, None, None]


_FIRST_CALL = """
import time
import numpy as np
from bptt import nn
from bptt.nn import compiled
start = time.perf_counter()
compiled.use(True)
imported = time.perf_counter()
y, _ = nn.LSTM(1, 8)(np.zeros((2, 1, 1), np.float32))
y.sum().backward()
print(imported - start, time.perf_counter() - imported)
"""


def _compiled_first_call():
    """The compiled LSTM path's first-call cost (float32 forward and backward) as a line to print:
    numba's import, then the loops compiled into an empty cache, then loaded from it, each in a
    fresh process."""
    try:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            runs = [subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, check=True,
                                   capture_output=True, text=True).stdout.split() for _ in range(2)]
    except subprocess.CalledProcessError as err:
        return f"compiled path unavailable: {err.stderr.strip().splitlines()[-1]}"
    (numba, compile_), (_, load) = ([float(t) for t in r] for r in runs)
    return (f"compiled path, first call: numba import {numba:.2f} s, then compile {compile_:.2f} s "
            f"(empty cache) or cache load {load:.2f} s")


def peak_rss_mb():
    """This process's peak resident set size since it started or since ``reset_peak_rss``.

    Linux's VmHWM: ``getrusage``'s ru_maxrss would also count the parent's resident set at the
    fork that started this process (a parent that imported torch gave every worker its floor)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**10


def reset_peak_rss():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


# -- contenders: each returns feed(x, y) that trains on one block -------------------------------

def make_bptt(hidden, k1, k2, fast):
    import bptt
    from bptt import nn
    from bptt.credit.tbptt import TBPTT

    bptt.seed(0)
    model = nn.SequenceModel("lstm", 1, hidden, 1)
    opt = bptt.optim.SGD(model.parameters(), lr=1e-3)
    window_loss = (lambda p, t: nn.mse_loss(p, t, reduction="none").mean(axis=(1, 2))) if fast else None
    trainer = TBPTT(model, nn.mse_loss, opt, k1, k2, fast_path=fast, window_loss=window_loss)
    return lambda x, y: trainer.run(x, y)


def make_torch(hidden, k1, k2, kind, threads):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    head = torch.nn.Linear(hidden, 1)
    rnn = torch.nn.LSTM(1, hidden) if kind == "lstm" else torch.nn.LSTMCell(1, hidden)
    params = list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=1e-3)
    mse = torch.nn.functional.mse_loss
    zeros = torch.zeros(1, 1, hidden) if kind == "lstm" else torch.zeros(1, hidden)
    carry = {"state": (zeros, zeros.clone())}

    def update(loss):
        opt.zero_grad()
        loss.backward()
        opt.step()

    def feed_lstm(x, y):
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        for a in range(0, len(x), k1):
            out, state = rnn(x[a:a + k1], carry["state"])
            update(mse(head(out), y[a:a + k1]))
            carry["state"] = tuple(s.detach() for s in state)

    def feed_cell(x, y):
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        h, c = carry["state"]
        losses = []
        for t in range(len(x)):
            h, c = rnn(x[t], (h, c))
            losses.append(mse(head(h), y[t]))
            if len(losses) == k1:
                update(torch.stack(losses).mean())
                losses = []
                h, c = h.detach(), c.detach()
        carry["state"] = (h, c)

    # k2 > k1: an in-place optimizer step would corrupt the graphs of the overlapping steps
    # (autograd refuses), so the cell runs functionally on weight versions that updates replace;
    # an update's gradient sums over the versions its window ran with
    names = [n for n, _ in rnn.named_parameters()]
    version = {"now": [p.detach().clone().requires_grad_() for p in rnn.parameters()]}
    tape = []   # (input leaves, output state, loss, weight version) of the last k2 steps
    pending = {"n": 0}

    def feed_cell_k2(x, y):
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        for t in range(len(x)):
            leaves = tuple(s.detach().requires_grad_() for s in carry["state"])
            weights = version["now"]
            h, c = torch.func.functional_call(rnn, dict(zip(names, weights)), (x[t], leaves))
            tape.append((leaves, (h, c), mse(head(h), y[t]), weights))
            del tape[:-k2]
            carry["state"] = (h, c)
            pending["n"] += 1
            if pending["n"] < k1:
                continue
            pending["n"] = 0
            head.zero_grad()
            used = list({id(w): w for *_, w in tape}.values())
            for ws in used:
                for w in ws:
                    w.grad = None
            g = None
            for i in range(len(tape) - 1, -1, -1):
                leaves, out, loss, _ = tape[i]
                roots, grads = [], []
                if i >= len(tape) - k1:
                    roots.append(loss)
                    grads.append(torch.tensor(1.0 / k1))
                if g is not None:
                    roots += list(out)
                    grads += list(g)
                torch.autograd.backward(roots, grads, retain_graph=True)
                g = tuple(leaf.grad for leaf in leaves)
                for leaf in leaves:
                    leaf.grad = None
            with torch.no_grad():
                for p in head.parameters():
                    p -= 1e-3 * p.grad
                grads = [sum(ws[j].grad for ws in used if ws[j].grad is not None)
                         for j in range(len(names))]
                version["now"] = [(w - 1e-3 * gw).requires_grad_()
                                  for w, gw in zip(version["now"], grads)]

    return {"lstm": feed_lstm, "cell": feed_cell, "cell-k2": feed_cell_k2}[kind]


def make(name, hidden, k, k1, k2, threads):
    if name.endswith("-compiled"):
        from bptt.nn import compiled

        compiled.use(True)
        name = name[:-len("-compiled")]
    if name == "bptt-seq":
        return make_bptt(hidden, k, k, True)
    if name == "bptt-step":
        return make_bptt(hidden, k, k, False)
    if name == "bptt-k2":
        return make_bptt(hidden, k1, k2, True)
    if name == "bptt-k2-step":
        return make_bptt(hidden, k1, k2, False)
    kind = name[len("torch-"):]
    return make_torch(hidden, k1 if kind == "cell-k2" else k,
                      k2 if kind == "cell-k2" else k, kind, threads)


def worker(name, hidden, k, k1, k2, threads, block, conn):
    """Train one block per message received; answer (seconds, peak RSS in MB)."""
    try:
        feed = make(name, hidden, k, k1, k2, threads)
        conn.send(("ready", peak_rss_mb()))
        while True:
            index = conn.recv()
            if index is None:
                break
            x, y = block_data(index, block)
            start = time.perf_counter()
            feed(x, y)
            conn.send((time.perf_counter() - start, peak_rss_mb()))
    except Exception:
        conn.send(("error", traceback.format_exc()))


def ask(conn, name, message=None):
    if message is not None:
        conn.send(message)
    answer = conn.recv()
    if answer[0] == "error":
        raise click.ClickException(f"{name} failed:\n{answer[1]}")
    return answer


def torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@click.command()
@click.option("--steps", default=10**6, show_default=True, type=click.IntRange(min=1),
              help="Steps streamed per contender.")
@click.option("--block", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Steps per interleaved block (a multiple of k, k1 keeps windows aligned).")
@click.option("--hidden", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--k", default=50, show_default=True, type=click.IntRange(min=1),
              help="k1 = k2 of the detach-every-k contenders.")
@click.option("--k1", default=25, show_default=True, type=click.IntRange(min=1),
              help="k1 of the k2 > k1 contenders.")
@click.option("--k2", default=50, show_default=True, type=click.IntRange(min=1),
              help="k2 of the k2 > k1 contenders.")
@click.option("--only", multiple=True, type=click.Choice(CONTENDERS),
              help="Run only these contenders (repeatable); default all available.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="BLAS and torch threads per contender.")
def main(steps, block, hidden, k, k1, k2, only, threads):
    """Stream B = 1, H = 128 LSTM training with truncated BPTT: peak RSS and time per step."""
    if k2 < k1:
        raise click.BadParameter(f"need k2 >= k1, got k1={k1}, k2={k2}", param_hint="--k2")
    names = [n for n in (only or CONTENDERS) if not n.startswith("torch") or torch_available()]
    skipped = sorted(set(only or CONTENDERS) - set(names))
    if skipped:
        click.echo(f"torch not importable: skipping {', '.join(skipped)}")
    # children inherit the environment: one BLAS thread each unless told otherwise, set before
    # numpy loads there (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are left as they are)
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(threads)
    ctx = mp.get_context("spawn")
    pipes, procs = {}, []
    for name in names:
        parent, child = ctx.Pipe()
        p = ctx.Process(target=worker, args=(name, hidden, k, k1, k2, threads, block, child), daemon=True)
        p.start()
        child.close()     # so a worker that dies closes its pipe instead of hanging us
        pipes[name] = parent
        procs.append(p)
    for name in names:
        ask(pipes[name], name)
    n_blocks = -(-steps // block)
    times = {n: [] for n in names}
    marks = {n: {} for n in names}
    wall = time.perf_counter()
    try:
        for b in range(n_blocks):
            for name in names:
                seconds, rss = ask(pipes[name], name, b)
                times[name].append(seconds)
                done = (b + 1) * block
                for c in (*CHECKPOINTS, n_blocks * block):
                    if done >= c and c not in marks[name] and c <= n_blocks * block:
                        marks[name][c] = rss
            if (b + 1) % max(1, n_blocks // 10) == 0:
                click.echo(f"  {(b + 1) * block} steps, {time.perf_counter() - wall:.0f} s", err=True)
    finally:
        for name in names:
            try:
                pipes[name].send(None)
            except OSError:
                pass      # that worker is gone already
        for p in procs:
            p.join(timeout=10)
    click.echo(f"B=1, H={hidden}, LSTM, {n_blocks * block} steps in blocks of {block}; "
               f"k1=k2={k} and k1={k1}, k2={k2}; {threads} thread(s)")
    shown = sorted({c for c in (*CHECKPOINTS, n_blocks * block) if c <= n_blocks * block})
    header = "".join(f"{'RSS@' + format(c, '.0e'):>12}" for c in shown)
    click.echo(f"{'contender':<18}{'us/step':>10}{'steps/s':>10}{header}{'growth MB':>11}  ratio")
    per_step = {n: 1e6 * statistics.median(times[n]) / block for n in names}
    for name in names:
        us = per_step[name]
        rss = "".join(f"{marks[name][c]:>12.1f}" for c in shown)
        growth = marks[name][shown[-1]] - marks[name][shown[0]]
        ref = "torch-cell-k2" if "-k2" in name else "torch-lstm"
        ratio = f"{us / per_step[ref]:.2f}x vs {ref}" if ref in per_step else ""
        click.echo(f"{name:<18}{us:>10.1f}{1e6 / us:>10.0f}{rss}{growth:>11.1f}  {ratio}")
    for name, ref in (("bptt-seq-compiled", "bptt-seq"), ("bptt-k2-compiled", "bptt-k2")):
        if name in per_step and ref in per_step:
            click.echo(f"{name} vs {ref} (the numpy kernels): {per_step[name] / per_step[ref]:.2f}x")
    if any(n.endswith("-compiled") for n in names):
        click.echo(_compiled_first_call())
    for name in ("bptt-k2", "bptt-k2-step", "bptt-k2-compiled"):
        if "torch-cell" in per_step and name in per_step:
            click.echo(f"{name} vs torch-cell (the k1=k2 LSTMCell loop): "
                       f"{per_step[name] / per_step['torch-cell']:.2f}x")


if __name__ == "__main__":
    main()
