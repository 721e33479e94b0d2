"""A sweep's throughput with 1 and 2 worker processes: the same 8-run grid, wall-clock time.

Each repetition runs the spec afresh (a new sweep directory) once per worker count, the counts
interleaved, and times the whole ``bptt sweep`` command (cluster start, every run, the report).
Prints the median seconds, runs per hour and the speed-up over one worker.

    python scripts/bench_sweep.py
    python scripts/bench_sweep.py --workers 1,2 --reps 3
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time

import click

from bptt.cli import main as bptt

HERE = os.path.dirname(os.path.abspath(__file__))


def _sweep_seconds(spec, workers, root):
    out = os.path.join(root, f"workers-{workers}")
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):    # the sweep's own lines: not the table
        bptt(["sweep", spec, "--out", out, "--workers", str(workers), "--no-progress"],
             standalone_mode=False)
    return time.perf_counter() - started


@click.command()
@click.option("--spec", default=os.path.join(HERE, "sweeps", "throughput.toml"), show_default=True,
              type=click.Path(exists=True, dir_okay=False))
@click.option("--workers", default="1,2", show_default=True, help="Comma-separated worker counts.")
@click.option("--reps", default=1, show_default=True, type=click.IntRange(min=1))
def main(spec, workers, reps):
    """Time the sweep SPEC at each worker count; print runs per hour and the speed-up."""
    from bptt.runs.sweep import load_spec

    counts = [int(w) for w in workers.split(",")]
    n_runs = len(load_spec(spec).runs)
    seconds = {w: [] for w in counts}
    with tempfile.TemporaryDirectory() as root:
        for _ in range(reps):
            for w in counts:
                seconds[w].append(_sweep_seconds(spec, w, root))
    click.echo(f"{n_runs} runs of {os.path.relpath(spec)}, median of {reps} repetition(s)")
    click.echo("| workers | seconds | runs per hour | speed-up |\n|---|---|---|---|")
    base = statistics.median(seconds[counts[0]])
    for w in counts:
        s = statistics.median(seconds[w])
        click.echo(f"| {w} | {s:.0f} | {3600 * n_runs / s:.0f} | {base / s:.2f} |")


if __name__ == "__main__":
    main()
