"""One BLAS thread or two: the main job quiet and beside a busy core, and the products of recurrent
training with one thread against two, the measurement behind bptt's default thread count.

Two parts, both printed as Markdown tables (``--markdown FILE`` also writes them, with the date,
the machine, the ``OPENBLAS_*`` variables set and the command line, for the docs):

1. The main job, ``bptt train --steps N`` (the adding problem, an LSTM, the defaults otherwise),
   each run a subprocess of its own, for three contenders: the default (no thread variable set:
   whatever bptt and OpenBLAS choose), ``OPENBLAS_NUM_THREADS=1`` and ``OPENBLAS_NUM_THREADS=2``;
   each quiet and beside a busy core, a process burning the last CPU of this one's affinity
   (started before the runs and killed after; the runs themselves are not pinned, as a user's
   are not).  Each round runs every contender quiet and busy, the quiet and busy blocks in
   alternating order and the contenders in the orders of ``bench_rnn.orders``; the table gives
   medians of the training time (``result.json``'s ``seconds``, with its range) and of the wall
   time, the ratio busy / quiet, also over the runs alone timed clean (other processes below
   ``CLEAN`` CPUs), and the ratio to the one-thread quiet time.  The goal a default thread count
   must meet: beside one busy core, the default run takes at most ``GOAL`` times its quiet time.
2. The float32 products an LSTM's training does (G = 4 gates), over a grid of batch sizes B and
   hidden sizes H: per step ``(B, H) @ (H, G*H)``, and gate by gate as bptt's forward runs it at
   B > 1, ``G x (B, H) @ (H, H)`` (``kernels.gate_major``); over all T steps at once the input
   projection ``(T*B, I) @ (I, G*H)`` and the recurrent weight gradient ``(G*H, T*B) @ (T*B, H)``.
   Each is timed in this process under threadpoolctl's limit of one thread and of two,
   alternating within every round, quiet and then beside the busy core; the table gives, per
   shape, the multiply-adds and the ratio two threads / one twice: of the best times over the
   rounds (nearest to what an idle machine gives) and the median of the rounds' ratios, and how
   many CPUs other processes kept busy during its quiet timings.  From it: the crossover, the
   fewest multiply-adds from which on two threads are faster by more than 10 % (``WIN``) at every
   shape timed quiet and clean (others below ``CLEAN``), and whether two threads ever win beside
   a busy core.

The summary at the end proposes the rule for the default thread count from these figures.  On a
machine that others use at the same time the absolute times are noisy: the header has the load
averages, and each part says how many CPUs other processes kept busy while it ran.

Notes
-----
Run it with no thread variable (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``) set: the script
sets one per run of part 1, and part 2 needs two BLAS threads.  The runs and the summary use the
bptt that ``python -m bptt`` imports (``PYTHONPATH=DIR`` measures another copy; the header says
which).  The defaults take about six minutes on an otherwise idle 2-core machine, up to about
fifteen on a loaded one (two threads beside other work are slow); ``--steps``, ``--rounds``,
``--reps`` and the grid options trade time for precision.

Examples
--------
::

    PYTHONPATH=. python scripts/bench_threads.py --markdown threads.md
    PYTHONPATH=. python scripts/bench_threads.py --steps 40 --rounds 2 \\
        --batches 1,64 --sizes 64,512 --reps 3
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import NamedTuple

import click
import numpy as np
from threadpoolctl import ThreadpoolController

import bptt
from bench_compiled import _blas_env, _grid
from bench_rnn import orders
from bptt.runs import config as train_config

#: What a bptt run is started with.
TRAIN = [sys.executable, "-m", "bptt", "train"]
#: Variables that set BLAS thread counts: none of them is passed to the runs but the contender's.
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS")
#: The contenders of part 1, by name: the value of OPENBLAS_NUM_THREADS (None: not set).
CONTENDERS = {"default": None, "OPENBLAS_NUM_THREADS=1": "1", "OPENBLAS_NUM_THREADS=2": "2"}
#: Two threads "win" when they take less than 1 / WIN of one thread's time.
WIN = 1.1
#: The most a default run may take beside a busy core, as a multiple of its quiet time.
GOAL = 1.3
#: Each timing of part 2 repeats a product until it has done at least this many multiply-adds.
TIMED_MACS = 1e8
#: A shape counts towards the quiet crossover when other processes kept fewer CPUs than this busy
#: during its quiet timings.
CLEAN = 0.25
#: Gate blocks of an LSTM.
G = 4

# The busy core's process: spins until killed, or until its parent is gone (then it is reparented).
_BURN = """import os
parent = os.getppid()
print(flush=True)
while os.getppid() == parent:
    for _ in range(10 ** 6):
        pass
"""


@contextlib.contextmanager
def busy_core(busy=True):
    """With ``busy``, a process burning the last CPU of this one's affinity for the block: pinned
    there from its start, running before the block begins, killed when it ends (also on Ctrl-C),
    and gone by itself soon after this process if that is killed outright.  Yields its process id
    as a tuple (empty without ``busy``)."""
    if not busy:
        yield ()
        return
    cpu = max(os.sched_getaffinity(0))
    proc = subprocess.Popen([sys.executable, "-c", _BURN], stdout=subprocess.PIPE,
                            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    try:
        proc.stdout.readline()      # it has started and is spinning
        yield (proc.pid,)
    finally:
        proc.kill()
        proc.wait()


class Others:
    """How many CPUs other processes kept busy, on average, over the blocks timed: the machine's
    busy time (``/proc/stat``, steal included) less this process's, its waited-for children's (the
    runs, a busy core's process that has ended) and that of the children still running that a
    block names."""

    def __init__(self):
        self.cpu = self.wall = 0.0

    @staticmethod
    def _now(running):
        tick = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as f:
            user, nice, system, _, _, irq, softirq, steal = map(int, f.readline().split()[1:9])
        usage = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        ours = sum(u.ru_utime + u.ru_stime for u in usage)
        for pid in running:
            with open(f"/proc/{pid}/stat") as f:
                utime, stime = map(int, f.read().rsplit(")", 1)[1].split()[11:13])
            ours += (utime + stime) / tick
        return time.perf_counter(), (user + nice + system + irq + softirq + steal) / tick - ours

    @contextlib.contextmanager
    def block(self, running=()):
        """Count the block, less the CPU time of the processes ``running`` (ids of children that
        run through it)."""
        wall, cpu = self._now(running)
        yield
        end_wall, end_cpu = self._now(running)
        self.wall += end_wall - wall
        self.cpu += end_cpu - cpu

    def share(self):
        return self.cpu / self.wall

    def __str__(self):
        return f"{self.share():.2f}"


def _train(steps, threads, out):
    """Training seconds (``result.json``) and wall seconds of ``bptt train --steps steps`` into
    ``out``, with OPENBLAS_NUM_THREADS=threads (None: no thread variable)."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if threads is not None:
        env["OPENBLAS_NUM_THREADS"] = threads
    start = time.perf_counter()
    done = subprocess.run([*TRAIN, "--steps", str(steps), "--no-progress", "--out", out],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise click.ClickException(f"bptt train failed (OPENBLAS_NUM_THREADS={threads}):\n{done.stderr}")
    with open(os.path.join(out, "result.json")) as f:
        return json.load(f)["seconds"], wall


def main_job(steps, n_rounds, emit):
    """Part 1: the table of the main job's times.  Returns the medians {(contender, busy): (train s,
    wall s)} and, per contender, busy / quiet over the runs timed clean (``CLEAN``; None without a
    clean run of each)."""
    names, square = list(CONTENDERS), orders(len(CONTENDERS))
    runs = {(name, busy): [] for name in names for busy in (False, True)}    # (train s, wall s, others)
    total = {busy: Others() for busy in (False, True)}
    count = itertools.count()
    with tempfile.TemporaryDirectory(prefix="bench_threads.") as tmp:
        for r in range(n_rounds):
            for busy in ((False, True) if r % 2 == 0 else (True, False)):
                with busy_core(busy) as burner:
                    for name in (names[i] for i in square[r % len(square)]):
                        others = Others()
                        out = os.path.join(tmp, f"run{next(count)}")
                        with total[busy].block(burner), others.block(burner):
                            seconds, wall = _train(steps, CONTENDERS[name], out)
                        runs[name, busy].append((seconds, wall, others.share()))
                        click.echo(f"round {r + 1}/{n_rounds}, {'busy' if busy else 'quiet'}, {name}: "
                                   f"{seconds:.2f} s training, {wall:.2f} s wall, others {others} CPUs",
                                   err=True)
    med = {k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for k, v in runs.items()}
    clean = {}
    for name in names:
        quiet_s, busy_s = ([t[0] for t in runs[name, b] if t[2] < CLEAN] for b in (False, True))
        clean[name] = statistics.median(busy_s) / statistics.median(quiet_s) if quiet_s and busy_s else None
    one = med["OPENBLAS_NUM_THREADS=1", False][0]

    def train_s(name, busy):
        seconds = [t[0] for t in runs[name, busy]]
        return f"{med[name, busy][0]:.2f} ({min(seconds):.2f}-{max(seconds):.2f})"

    def clean_ratio(name):
        n = [sum(t[2] < CLEAN for t in runs[name, b]) for b in (False, True)]
        return f"{'-' if clean[name] is None else f'{clean[name]:.2f}'} ({n[0]}; {n[1]})"
    emit(f"## The main job: `bptt train --steps {steps}`\n")
    emit(f"Medians (and ranges) over {n_rounds} rounds; training seconds from result.json, wall seconds "
         f"of the whole command; busy: a process burning CPU {max(os.sched_getaffinity(0))}, the run not "
         f"pinned. Other processes kept {total[False]} CPUs busy on average during the quiet runs, "
         f"{total[True]} during the busy ones; clean: the runs during which they kept fewer than {CLEAN:g} "
         f"(how many quiet; busy).\n")
    emit("| contender | quiet train s | busy train s | busy / quiet | busy / quiet, clean | quiet wall s "
         "| busy wall s | quiet / 1 thread quiet | busy / 1 thread quiet |")
    emit("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        (q, qw), (b, bw) = med[name, False], med[name, True]
        emit(f"| {name} | {train_s(name, False)} | {train_s(name, True)} | {b / q:.2f} | {clean_ratio(name)} "
             f"| {qw:.2f} | {bw:.2f} | {q / one:.2f} | {b / one:.2f} |")
    return med, clean


def _products(B, H, T, I, rng):
    """(name, shape, multiply-adds, run) of each product of part 2 at (B, H); gate by gate only
    for B > 1 (at B = 1 bptt's step is one GEMV into a row)."""
    def rand(*shape):
        return rng.random(shape, dtype=np.float32) - 0.5

    def product(a, b):
        out = np.empty(b.shape[:-2] + (a.shape[-2], b.shape[-1]), np.float32)
        return lambda: np.matmul(a, b, out=out)
    TB = T * B
    found = [("step", f"{B} x {H} x {G * H}", B * H * G * H, product(rand(B, H), rand(H, G * H)))]
    if B > 1:
        found.append(("step, gate by gate", f"{G} x {B} x {H} x {H}", G * B * H * H,
                      product(rand(B, H), rand(G, H, H))))
    return found + [("input projection", f"{TB} x {I} x {G * H}", TB * I * G * H,
                     product(rand(TB, I), rand(I, G * H))),
                    ("dW_hh", f"{G * H} x {TB} x {H}", G * H * TB * H, product(rand(TB, G * H).T, rand(TB, H)))]


class Ratio(NamedTuple):
    """Two threads / one at a shape: the ratio of the best times over rounds (nearest to what an
    otherwise idle machine gives), and the median of the rounds' ratios."""

    best: float
    median: float

    def wins(self, key):
        return getattr(self, key) < 1 / WIN

    def __str__(self):
        return f"{self.best:.2f} | {self.median:.2f}"


class Row(NamedTuple):
    name: str
    B: int
    H: int
    macs: int
    quiet: Ratio
    busy: Ratio
    others: float       # CPUs that other processes kept busy during the quiet timings

    def where(self):
        return f"B={self.B} H={self.H}: {self.macs:.3g}"


def _one_or_two(run, macs, reps, controller):
    """Median seconds with one BLAS thread, and the ``Ratio`` two threads / one, over ``reps``
    rounds, the two alternating."""
    repeat = max(1, round(TIMED_MACS / macs))
    for n in (1, 2):                        # warm up: the pool at both sizes, first-call work
        with controller.limit(limits=n, user_api="blas"):
            run()
    seconds = {1: [], 2: []}
    for r in range(reps):
        for n in ((1, 2)[i] for i in orders(2)[r % 2]):
            with controller.limit(limits=n, user_api="blas"):
                start = time.perf_counter()
                for _ in range(repeat):
                    run()
                seconds[n].append((time.perf_counter() - start) / repeat)
    one, two = seconds[1], seconds[2]
    ratio = Ratio(min(two) / min(one), statistics.median(b / a for a, b in zip(one, two)))
    return statistics.median(one), ratio


def products(Bs, Hs, T, I, reps, emit):
    """Part 2: the table of two threads / one per product and shape; returns its ``Row``s."""
    controller = ThreadpoolController()
    with controller.limit(limits=2, user_api="blas"):
        if min(p["num_threads"] for p in controller.select(user_api="blas").info()) < 2:
            raise click.ClickException("numpy's BLAS has fewer than 2 threads: unset OPENBLAS_NUM_THREADS "
                                       "and OMP_NUM_THREADS, and run on 2 CPUs or more")
    rng = np.random.default_rng(0)
    rows, total = [], {busy: Others() for busy in (False, True)}
    emit("\n## Products: two threads / one\n")
    emit(f"float32, G = {G}, T = {T}, I = {I}; {reps} rounds per shape and condition, the two thread counts "
         f"alternating; below 1 two threads are faster. best: the ratio of the best times over the rounds, "
         f"nearest to an idle machine's; median: the median of the rounds' ratios. busy: a process burning "
         f"CPU {max(os.sched_getaffinity(0))}. others: the CPUs that other processes kept busy during the "
         f"quiet timings.\n")
    emit("| product | B | H | m x k x n | multiply-adds | 1 thread us (quiet) | 2 / 1 quiet, best "
         "| 2 / 1 quiet, median | 2 / 1 busy, best | 2 / 1 busy, median | others |")
    emit("|---|---|---|---|---|---|---|---|---|---|---|")
    for H in Hs:
        for B in Bs:
            for name, shape, macs, run in _products(B, H, T, I, rng):
                others = Others()
                with total[False].block(), others.block():
                    one, quiet = _one_or_two(run, macs, reps, controller)
                with total[True].block(), busy_core():
                    busy = _one_or_two(run, macs, reps, controller)[1]
                rows.append(Row(name, B, H, macs, quiet, busy, others.share()))
                emit(f"| {name} | {B} | {H} | {shape} | {macs:.3g} | {one * 1e6:.1f} | {quiet} | {busy} "
                     f"| {others} |")
    emit(f"\nOther processes kept {total[False]} CPUs busy on average during the quiet timings, "
         f"{total[True]} during the busy ones.")
    return rows


def crossover(rows, key):
    """The fewest multiply-adds from which on two threads win quiet at every row timed clean (see
    ``CLEAN``), by the ratios ``key`` ('best' or 'median'); None when the clean row of most
    multiply-adds does not win."""
    clean = [row for row in rows if row.others < CLEAN]
    lost = max((row.macs for row in clean if not row.quiet.wins(key)), default=-1)
    return min((row.macs for row in clean if row.macs > lost), default=None)


def summary(med, clean, rows, emit):
    """The crossovers per product, the main job's figures and the rule they propose."""
    config, _ = train_config.prepare(train_config.TrainConfig())
    job_macs = config.batch * config.hidden * G * config.hidden
    emit("\n## Crossovers\n")
    emit(f"Two threads win: less than 1 / {WIN:g} of one thread's time. From: the fewest multiply-adds "
         f"from which on two threads win quiet at every shape timed clean (other processes below {CLEAN:g} "
         f"CPUs during its quiet timings).\n")
    emit("| product | clean shapes | quiet, best: from | quiet, median: from | smallest shape won quiet (best) "
         "| shapes won busy (best; median) | lowest 2 / 1 busy, median |")
    emit("|---|---|---|---|---|---|---|")
    kinds = {name: [row for row in rows if row.name == name]
             for name in ("step", "step, gate by gate", "input projection", "dW_hh")}
    kinds["per step, both forms"] = kinds["step"] + kinds["step, gate by gate"]

    def macs(x):
        return "never" if x is None else f"{x:.3g}"
    for name, group in kinds.items():
        won = [row for row in group if row.quiet.wins("best")]
        lowest = min(group, key=lambda row: row.busy.median)
        emit(f"| {name} | {sum(row.others < CLEAN for row in group)} of {len(group)} "
             f"| {macs(crossover(group, 'best'))} | {macs(crossover(group, 'median'))} | "
             f"{min(won, key=lambda row: row.macs).where() if won else 'none'} | "
             f"{sum(row.busy.wins('best') for row in group)}; {sum(row.busy.wins('median') for row in group)} "
             f"of {len(group)} | {lowest.busy.median:.2f} ({lowest.where()}) |")
    x = crossover(kinds["per step, both forms"], "best")
    busy_wins = sorted((row for row in rows if row.busy.wins("median")), key=lambda row: row.macs)
    slowdown = {name: med[name, True][0] / med[name, False][0] for name in CONTENDERS}

    def seconds(busy):
        return ", ".join(f"{name} {med[name, busy][0]:.2f}" for name in CONTENDERS)
    emit("\n## Summary\n")
    emit(f"- The main job (B={config.batch}, H={config.hidden}, T={config.seq_len}): per-step product "
         f"{job_macs:.3g} multiply-adds; training seconds quiet: {seconds(False)}; busy: {seconds(True)}.")

    def verdict(ratio):
        return "none" if ratio is None else f"{ratio:.2f}, {'met' if ratio <= GOAL else 'NOT met'}"
    emit(f"- Goal, default busy / quiet <= {GOAL:g}: clean runs {verdict(clean['default'])}; all runs "
         f"{verdict(slowdown['default'])}. Busy / quiet of each contender, clean runs: "
         + ", ".join(f"{name} {'-' if r is None else f'{r:.2f}'}" for name, r in clean.items())
         + "; all runs: " + ", ".join(f"{name} {ratio:.2f}" for name, ratio in slowdown.items()) + ".")
    emit(f"- Beside a busy core (medians) two threads won at {len(busy_wins)} of {len(rows)} shapes"
         + (f", the smallest {busy_wins[0].name} {busy_wins[0].where()}" if busy_wins else "") + ".")
    if not any(row.others < CLEAN for row in kinds["per step, both forms"]):
        emit(f"- No per-step product was timed clean (other processes below {CLEAN:g} CPUs): this run shows "
             "no quiet crossover; run it again on a quieter machine.")
        return
    emit(f"- Quiet (best of rounds, clean shapes), two threads beat one by more than {WIN - 1:.0%} at every "
         "per-step product " + ("of those measured: never" if x is None else f"from {x:.3g} multiply-adds on")
         + ".")
    if x is None:
        emit("- Proposed rule: one thread for every size measured.")
    else:
        emit(f"- Proposed rule: one thread when the largest per-step product (B x H x {G}H) has fewer than "
             f"{x:.3g} multiply-adds; from there on the CPUs available, which pays on an otherwise idle "
             f"machine" + ("." if busy_wins else " only: two threads never won beside a busy core."))
        emit(f"- The main job's per-step product, {job_macs:.3g} multiply-adds, is "
             + ("below" if job_macs < x else "at or above") + " the crossover.")


def _source():
    """The git commit of the bptt that the runs import (the page names no local paths)."""
    source = os.path.dirname(os.path.dirname(os.path.abspath(bptt.__file__)))
    git = ["git", "-C", source]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"bptt {bptt.__version__}, not from a git checkout"
    changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                             text=True).stdout
    return f"commit {commit}" + (" with uncommitted changes" if changed else "")


def _header(argv):
    """The Markdown header: date, machine, BLAS settings, command line and load."""
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    blas = ThreadpoolController().select(user_api="blas").info()
    openblas = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("OPENBLAS_")]
    path = f"PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])} " if "PYTHONPATH" in os.environ else ""
    return ["# BLAS threads: one or two", "",
            f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
            f"- machine: {model}, {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} available); "
            + ", ".join(f"{p['internal_api']} {p['version']} ({p.get('architecture', '?')})" for p in blas),
            f"- BLAS variables: {_blas_env()}; OPENBLAS_* set: {', '.join(openblas) or 'none'}",
            f"- command: `{path}{shlex.join(['python', *argv])}`",
            f"- bptt measured: {_source()}",
            "- load average (1, 5, 15 min) at the start: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()),
            "- other processes may run at the same time: each part says how many CPUs they kept busy", ""]


@click.command()
@click.option("--steps", default=100, show_default=True, help="Steps of each `bptt train` run.")
@click.option("--rounds", "n_rounds", default=3, show_default=True, help="Rounds of the main job.")
@click.option("--batches", default="1,8,32,64,256", show_default=True, help="Batch sizes B of the products.")
@click.option("--sizes", default="32,64,128,256,512,1024", show_default=True, help="Hidden sizes H.")
@click.option("--seq-len", "T", default=50, show_default=True, help="Steps T of the all-steps products.")
@click.option("--inputs", "I", default=32, show_default=True, help="Input size I of the input projection.")
@click.option("--reps", default=9, show_default=True, help="Rounds per product shape and condition.")
@click.option("--markdown", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also write the tables, with the header, to this file.")
def main(steps, n_rounds, batches, sizes, T, I, reps, markdown):
    """The main job's time with one, two and the default BLAS threads, quiet and beside a busy
    core; two threads against one on each product of a grid; the rule they propose."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))    # run the finally blocks: no busy core left
    lines = []

    def emit(text=""):
        click.echo(text)
        lines.append(text)
    for line in _header(sys.argv):
        emit(line)
    med, clean = main_job(steps, n_rounds, emit)
    rows = products(*_grid(batches, sizes), T, I, reps, emit)
    summary(med, clean, rows, emit)
    emit("\nLoad average (1, 5, 15 min) at the end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    if markdown:
        with open(markdown, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
