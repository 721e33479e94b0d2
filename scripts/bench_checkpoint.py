"""Checkpointed BPTT: peak memory and time of one forward+backward of an LSTM layer, ours vs PyTorch.

One LSTM layer (I = H = 256, B = 16, float32, fused kernels) over T steps, the loss's cotangent
given for every output (``y.backward(gy)``), the input needing no gradient.  Contenders:

  none          bptt, everything on the tape
  sqrt          bptt, checkpoint='sqrt'
  <size>        bptt, checkpoint='<size>' (a memory budget, e.g. 12MB), one per --budgets entry
  torch         nn.LSTM over the whole sequence (only when torch imports)
  torch-sqrt    nn.LSTM over ceil(sqrt(T)) chunks, each wrapped in torch.utils.checkpoint

Each contender runs in its own process, so its peak RSS is its own; memory is the peak RSS of the
first forward+backward minus the RSS before it.  With ``--traced`` ours also report the peak of
the bytes numpy allocated during one more forward+backward, by tracemalloc (PyTorch's allocator
is invisible to it), which leaves out what the C allocator keeps after a free.  The repetitions are interleaved, one contender's
run after another's, so load on a busy machine hits all alike; time is the median.  Ratios are
to 'none' (ours) and to 'torch' (PyTorch's), and ours to PyTorch's for the same T.

Run it as ``PYTHONPATH=. python scripts/bench_checkpoint.py`` or, for the PyTorch columns,
``PYTHONPATH=. /work/torchenv/bin/python scripts/bench_checkpoint.py``.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import resource
import statistics
import time
import traceback

import click
import numpy as np

from bench_tbptt import ask, peak_rss_mb, torch_available   # the same subprocess protocol

I = H = 256
B = 16


def rss_mb():
    """The current resident set size (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def data(T):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    gy = (0.01 * rng.standard_normal((T, B, H))).astype(np.float32)
    return x, gy


def make_bptt(T, policy):
    import bptt
    from bptt import checkpoint as ck
    from bptt import nn

    bptt.seed(0)
    layer = nn.LSTM(I, H)
    x, gy = data(T)
    checkpoint = None if policy == "none" else policy
    if checkpoint is not None:       # the plan is computed once per (T, budget): not timed
        weights = tuple(p.data for p in layer.parameters())
        state = (np.zeros((B, H), np.float32),) * 2
        ck.plan(ck.resolve(checkpoint), T,
                lambda: ck.slot_bytes(layer.cell_type, True, x, state, weights, {}))

    def run(n=T):
        layer.zero_grad()
        y, _ = layer(x[:n], checkpoint=checkpoint)
        y.backward(gy[:n])
    return run


def make_torch(T, policy, threads):
    import torch
    from torch.utils.checkpoint import checkpoint

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    layer = torch.nn.LSTM(I, H)
    x, gy = (torch.from_numpy(a) for a in data(T))
    chunk = math.ceil(T / math.ceil(math.sqrt(T)))

    def segment(xs, h, c):
        y, (h, c) = layer(xs, (h, c))
        return y, h, c

    def run(n=T):
        layer.zero_grad()
        if policy == "torch" or n < T:
            y, _ = layer(x[:n])
        else:
            h = c = torch.zeros(1, B, H)
            ys = []
            for a in range(0, T, chunk):
                y, h, c = checkpoint(segment, x[a:a + chunk], h, c, use_reentrant=False)
                ys.append(y)
            y = torch.cat(ys)
        y.backward(gy[:n])
    return run


def traced_mb(run):
    """The tracemalloc peak of one ``run()``, in MB."""
    import tracemalloc

    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def worker(name, T, threads, traced, conn):
    """One forward+backward per message; answer (seconds, peak RSS growth in MB)."""
    try:
        run = make_torch(T, name, threads) if name.startswith("torch") else make_bptt(T, name)
        run(4)          # BLAS and allocator buffers, not the contender's memory
        before = rss_mb()
        conn.send(("ready", traced_mb(run) if traced and not name.startswith("torch") else None))
        while conn.recv() is not None:
            start = time.perf_counter()
            run()
            conn.send((time.perf_counter() - start, peak_rss_mb() - before))
    except Exception:
        conn.send(("error", traceback.format_exc()))


def measure(T, names, repeats, threads, traced):
    """{name: (peak MB, median seconds, traced MB or None)}, the contenders' runs interleaved."""
    ctx = mp.get_context("spawn")
    procs, conns = {}, {}
    try:
        for name in names:
            parent, child = ctx.Pipe()
            procs[name] = ctx.Process(target=worker, args=(name, T, threads, traced, child), daemon=True)
            procs[name].start()
            conns[name] = parent
        traces = {name: ask(conns[name], name)[1] for name in names}
        times = {name: [] for name in names}
        peaks = {}
        for _ in range(repeats):
            for name in names:
                seconds, peak = ask(conns[name], name, True)
                times[name].append(seconds)
                peaks.setdefault(name, peak)
        return {name: (peaks[name], statistics.median(times[name]), traces[name]) for name in names}
    finally:
        for name, conn in conns.items():
            conn.send(None)
        for p in procs.values():
            p.join(timeout=60)


@click.command()
@click.option("--steps", default="1000,10000", show_default=True, help="Sequence lengths T, comma-separated.")
@click.option("--budgets", default="2MB,5MB,12MB", show_default=True,
              help="Memory budgets, comma-separated (per layer, bptt.checkpoint.memory_budget).")
@click.option("--repeats", default="3,1", show_default=True,
              help="Interleaved repetitions per T (one number, or one per --steps entry).")
@click.option("--threads", default=2, show_default=True, help="torch.set_num_threads for PyTorch.")
@click.option("--no-none", "skip_none", default="", help="T values (comma-separated) at which the "
              "unchecked contenders are skipped (when they would not fit in memory).")
@click.option("--traced", is_flag=True, help="Also the tracemalloc peak of ours (one more run each).")
@click.option("--no-torch", is_flag=True, help="Skip the PyTorch contenders even if torch imports.")
def main(steps, budgets, repeats, threads, skip_none, traced, no_torch):
    lengths = [int(s) for s in steps.split(",")]
    reps = [int(r) for r in repeats.split(",")]
    reps = reps * len(lengths) if len(reps) == 1 else reps
    skipped = {int(s) for s in skip_none.split(",") if s}
    has_torch = torch_available() and not no_torch
    if not has_torch and not no_torch:
        click.echo("torch is not importable: PyTorch columns skipped")
    click.echo(f"LSTM I = H = {H}, B = {B}, float32; one forward+backward; memory = peak RSS growth")
    traced_head = ("traced MB | vs none | ", "---|---|") if traced else ("", "")
    click.echo(f"| T | contender | peak MB | vs none | {traced_head[0]}time s | vs none | PyTorch | peak MB "
               "| vs torch | time s | vs torch | ours / PyTorch memory | ours / PyTorch time |")
    click.echo(f"|---|---|---|---|{traced_head[1]}---|---|---|---|---|---|---|---|---|")
    for T, r in zip(lengths, reps):
        ours = ([] if T in skipped else ["none"]) + ["sqrt"] + [b for b in budgets.split(",") if b]
        theirs = ([] if T in skipped or not has_torch else ["torch"]) + (["torch-sqrt"] if has_torch else [])
        res = measure(T, ours + theirs, r, threads, traced)
        base, tbase = res.get("none"), res.get("torch")
        pairs = {"none": "torch", "sqrt": "torch-sqrt"}
        for name in ours:
            mem, sec, trace = res[name]
            row = [str(T), name, f"{mem:.0f}", _ratio(mem, base, 0)]
            if traced:
                row += [f"{trace:.1f}", _ratio(trace, base, 2)]
            row += [f"{sec:.2f}", _ratio(sec, base, 1)]
            other = pairs.get(name)
            if other in res:
                tmem, tsec, _ = res[other]
                row += [other, f"{tmem:.0f}", _ratio(tmem, tbase, 0), f"{tsec:.2f}", _ratio(tsec, tbase, 1),
                        f"{mem / tmem:.2f}", f"{sec / tsec:.2f}"]
            else:
                row += [""] * 7
            click.echo("| " + " | ".join(row) + " |")


def _ratio(value, base, index):
    return "" if base is None else f"{value / base[index]:.2f}"


if __name__ == "__main__":
    main()
