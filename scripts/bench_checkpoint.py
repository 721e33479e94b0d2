"""Checkpointed BPTT: peak memory and time of one forward+backward of an LSTM layer, ours vs PyTorch.

One LSTM layer (I = H = 256, B = 16, float32, fused kernels) over T steps, the loss's cotangent
given for every output (``y.backward(gy)``), the input needing no gradient.  Contenders:

  none          bptt, everything on the tape
  forward       bptt, the unchecked forward alone, recording nothing: recomputing every step once
                costs at least this much more than 'none'
  sqrt          bptt, checkpoint='sqrt'
  <size>        bptt, checkpoint='<size>' (a memory budget, e.g. 12MB), one per --budgets entry
  torch         nn.LSTM over the whole sequence (only when torch imports)
  torch-sqrt    nn.LSTM over ceil(sqrt(T)) chunks, each wrapped in torch.utils.checkpoint

Each contender runs in its own process, so its peak RSS is its own; memory is the peak RSS of the
process (its peak reset once the library has run a tiny LSTM and the data are made, Linux's
/proc/self/clear_refs) over making the layer and its plan, a 4-step warm-up and one full
forward+backward (not timed), minus the RSS before.  With ``--traced`` ours also report the peak of
the bytes allocated during one more forward+backward, by tracemalloc (PyTorch's allocator is
invisible to it), which leaves out what the C allocator keeps after a free; the kernels' scratch
buffers are freed before it (``release_scratch``), so it counts them.  "Beyond y" is that peak
less the output y, which a checkpointed layer keeps whole (the layers above read it): the memory
checkpointing acts on.  A budget's row also
shows its plan (slots, steps recomputed per step) and its traced peak against the budget.  The
repetitions are interleaved, one contender's run after another's, so load on a busy machine hits
all alike; time is the median.  Ratios are to 'none' (ours) and to 'torch' (PyTorch's), and
ours to PyTorch's for the same T.

``--long T`` then runs ``checkpoint='sqrt'`` alone at that length (one forward+backward, traced)
and prints what the unchecked path would need there, from the growth per step of its traced
peak between the two lengths measured, against the machine's memory.

Run it as ``PYTHONPATH=. python scripts/bench_checkpoint.py`` or, for the PyTorch columns,
``PYTHONPATH=. /work/torchenv/bin/python scripts/bench_checkpoint.py``.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import resource
import statistics
import time
import traceback

import click
import numpy as np

from bench_tbptt import ask, peak_rss_mb, reset_peak_rss, torch_available   # the same protocol

from bptt.nn import recompute as ck

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


def make_bptt(T, policy, x, gy):
    import bptt
    from bptt import nn

    bptt.seed(0)
    layer = nn.LSTM(I, H)
    if policy == "forward":          # the unchecked forward alone: what "sqrt" adds at least
        from bptt.tape import no_grad

        def forward(n=T):
            with no_grad():
                layer(x[:n])
        return forward, "forward only"
    checkpoint = None if policy == "none" else policy
    info = ""
    if checkpoint is not None:       # the plan is computed once per (T, budget): not timed
        weights = tuple(p.data for p in layer.parameters())
        state = (np.zeros((B, H), np.float32),) * 2
        pol = ck.resolve(checkpoint)
        fp = ck.footprint(layer.cell_type, True, x, state, weights, {}, need_x=False)
        p = ck.plan(pol, T, lambda: fp)
        if pol.kind == "bytes":
            slots = fp.slots(T, pol.n)
            info = f"{slots} slots: {ck.plan_cost(T, slots) / T:.2f}"
            if p.kind == "segments":
                info += f", {len(p.bounds)} segments"

    def run(n=T):
        layer.zero_grad()
        y, _ = layer(x[:n], checkpoint=checkpoint)
        y.backward(gy[:n])
    return run, info


def make_torch(T, policy, x, gy, threads):
    import torch
    from torch.utils.checkpoint import checkpoint

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    layer = torch.nn.LSTM(I, H)
    x, gy = torch.from_numpy(x), torch.from_numpy(gy)
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
    return run, ""


def traced_mb(run):
    """The tracemalloc peak of one ``run()``, in MB, the kernels' scratch buffers freed first."""
    import gc
    import tracemalloc

    from bptt.nn.kernels import release_scratch

    release_scratch()
    gc.collect()
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def warm_up(torch):
    """A tiny LSTM's forward+backward: the library's one-off set-up (PyTorch loads kernels and
    starts its allocator on first use) is not a contender's memory."""
    if torch:
        import torch
        y, _ = torch.nn.LSTM(2, 2)(torch.zeros(2, 1, 2))
        y.sum().backward()
    else:
        from bptt import nn
        y, _ = nn.LSTM(2, 2)(np.zeros((2, 1, 2), np.float32))
        y.backward(np.ones((2, 1, 2), np.float32))


def worker(name, T, threads, traced, conn):
    """Memory first (peak RSS growth of one forward+backward, then the traced peak), then one
    timed forward+backward per message."""
    try:
        warm_up(name.startswith("torch"))
        x, gy = data(T)
        reset_peak_rss()    # the imports and making the data are not the contender's memory
        before = rss_mb()
        run, info = (make_torch(T, name, x, gy, threads) if name.startswith("torch")
                     else make_bptt(T, name, x, gy))
        run(4)
        run()
        rss = peak_rss_mb() - before
        trace = traced_mb(run) if traced and not name.startswith("torch") else None
        conn.send(("ready", rss, trace, info))
        while conn.recv() is not None:
            start = time.perf_counter()
            run()
            conn.send((time.perf_counter() - start,))
    except Exception:
        conn.send(("error", traceback.format_exc()))


def measure(T, names, repeats, threads, traced):
    """{name: (peak MB, median seconds, traced MB or None, plan)}, the contenders' runs
    interleaved."""
    ctx = mp.get_context("spawn")
    procs, conns = {}, {}
    try:
        for name in names:
            parent, child = ctx.Pipe()
            procs[name] = ctx.Process(target=worker, args=(name, T, threads, traced, child), daemon=True)
            procs[name].start()
            conns[name] = parent
        memory = {name: ask(conns[name], name)[1:] for name in names}
        times = {name: [] for name in names}
        for _ in range(repeats):
            for name in names:
                times[name].append(ask(conns[name], name, True)[0])
        return {name: (memory[name][0], statistics.median(times[name]), *memory[name][1:])
                for name in names}
    finally:
        for name, conn in conns.items():
            conn.send(None)
        for p in procs.values():
            p.join(timeout=60)


@click.command()
@click.option("--steps", default="1000,10000", show_default=True, help="Sequence lengths T, comma-separated.")
@click.option("--budgets", default="36MB,48MB,75MB;200MB,270MB,330MB", show_default=True,
              help="Memory budgets (per layer, bptt.nn.recompute.memory_budget), comma-separated; "
              "';' between those of each --steps entry (one list: the same for every T).")
@click.option("--repeats", default="3", show_default=True,
              help="Interleaved repetitions per T (one number, or one per --steps entry).")
@click.option("--threads", default=1, show_default=True, help="torch.set_num_threads for PyTorch.")
@click.option("--no-none", "skip_none", default="", help="T values (comma-separated) at which the "
              "unchecked contenders are skipped (when they would not fit in memory).")
@click.option("--traced", is_flag=True, help="Also the tracemalloc peak of ours (one more run each).")
@click.option("--no-torch", is_flag=True, help="Skip the PyTorch contenders even if torch imports.")
@click.option("--long", "long_T", default=0, help="Then checkpoint='sqrt' alone at this T, traced, "
              "and what the unchecked path would need there (0: skip).")
def main(steps, budgets, repeats, threads, skip_none, traced, no_torch, long_T):
    lengths = [int(s) for s in steps.split(",")]
    reps = [int(r) for r in repeats.split(",")]
    reps = reps * len(lengths) if len(reps) == 1 else reps
    lists = [[b for b in part.split(",") if b] for part in budgets.split(";")]
    lists = lists * len(lengths) if len(lists) == 1 else lists
    if len(reps) != len(lengths) or len(lists) != len(lengths):
        raise click.BadParameter("need one --repeats and one --budgets list, or one per --steps entry")
    skipped = {int(s) for s in skip_none.split(",") if s}
    has_torch = torch_available() and not no_torch
    if not has_torch and not no_torch:
        click.echo("torch is not importable: PyTorch columns skipped")
    click.echo(f"LSTM I = H = {H}, B = {B}, float32; one forward+backward; memory = peak RSS growth; "
               f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    traced_head = ("traced MB | vs none | beyond y MB | vs none | ", "---|---|---|---|") if traced else ("", "")
    click.echo(f"| T | contender | plan | peak MB | vs none | {traced_head[0]}time s | vs none | PyTorch "
               "| peak MB | vs torch | time s | vs torch | ours / PyTorch memory | ours / PyTorch time |")
    click.echo(f"|---|---|---|---|---|{traced_head[1]}---|---|---|---|---|---|---|---|---|")
    unchecked = {}
    for T, r, own in zip(lengths, reps, lists):
        ours = ([] if T in skipped else ["none", "forward"]) + ["sqrt"] + own
        theirs = ([] if T in skipped or not has_torch else ["torch"]) + (["torch-sqrt"] if has_torch else [])
        res = measure(T, ours + theirs, r, threads, traced)
        base, tbase = res.get("none"), res.get("torch")
        if base is not None and traced:
            unchecked[T] = base[2]
        pairs = {"none": "torch", "sqrt": "torch-sqrt"}
        for name in ours:
            mem, sec, trace, info = res[name]
            row = [str(T), name, info, f"{mem:.0f}", _ratio(mem, base, 0)]
            if traced:
                within = ""
                if info and name != "forward":
                    budget = ck.resolve(name).n / 2**20
                    within = f" ({trace / budget:.2f} of the budget)"
                beyond = trace - y_mb(T)
                row += [f"{trace:.1f}{within}", _ratio(trace, base, 2), f"{beyond:.1f}",
                        "" if base is None else f"{beyond / (base[2] - y_mb(T)):.2f}"]
            row += [f"{sec:.2f}", _ratio(sec, base, 1)]
            other = pairs.get(name)
            if other in res:
                tmem, tsec, _, _ = res[other]
                row += [other, f"{tmem:.0f}", _ratio(tmem, tbase, 0), f"{tsec:.2f}", _ratio(tsec, tbase, 1),
                        f"{mem / tmem:.2f}", f"{sec / tsec:.2f}"]
            else:
                row += [""] * 7
            click.echo("| " + " | ".join(row) + " |")
    if long_T:
        long_run(long_T, unchecked)


def long_run(T, unchecked):
    """checkpoint='sqrt' alone at T, and the unchecked path's need there, extrapolated."""
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    if len(unchecked) >= 2:
        (t0, m0), (t1, m1) = sorted(unchecked.items())[:2]
        per_step = (m1 - m0) / (t1 - t0)
        need = (m0 + per_step * (T - t0)) / 2**10
        click.echo(f"unchecked at T = {T}: {per_step * 2**10:.0f} KB a step (traced, between T = {t0} "
                   f"and {t1}), so about {need:.1f} GiB; this machine has {machine:.1f} GiB")
    res = measure(T, ["sqrt"], 1, 1, True)
    mem, sec, trace, _ = res["sqrt"]
    click.echo(f"checkpoint='sqrt' at T = {T}: peak RSS growth {mem:.0f} MB, traced {trace:.1f} MB "
               f"(y {y_mb(T):.1f} MB), {sec:.1f} s for one forward+backward")


def y_mb(T):
    """The output y's MiB: every layer-level method keeps it for the layers above."""
    return T * B * H * 4 / 2**20


def _ratio(value, base, index):
    return "" if base is None else f"{value / base[index]:.2f}"


if __name__ == "__main__":
    main()
