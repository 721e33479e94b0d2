"""Shared by the ``results_*.py`` scripts: run ``bptt train`` command lines and table them.

Each command runs in this process through the click command itself (``bptt.cli.main``), exactly
as typed in the table, into a fresh run directory under ``--out-root``; its wall-clock seconds
are measured around the whole command (training, validation, the test score and the figures).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import sys
import time

import click

from bptt.cli import main

HEADER = ("| command | test metric | baselines | k2 suggested | steps | seconds |\n"
          "|---|---|---|---|---|---|")


def run(args, out):
    """Run ``bptt train ARGS --out OUT`` afresh; return ``(result.json object, wall seconds)``."""
    if os.path.exists(out):
        shutil.rmtree(out)
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):     # the command's own summary line: not a table row
        main(["train", *map(str, args), "--out", out, "--no-progress"], standalone_mode=False)
    seconds = time.perf_counter() - started
    with open(os.path.join(out, "result.json")) as f:
        return json.load(f), seconds


def row(args, result, seconds):
    """One markdown table row: the command, its test metric beside the baselines, the time."""
    baselines = ", ".join(f"{k} {v:.4g}" for k, v in result["baselines"].items())
    return (f"| `bptt train {shlex.join(map(str, args))}` | {result['metric']} {result['test']:.4g} "
            f"| {baselines} | {result['suggested_k2']} | {result['steps']} | {seconds:.0f} |")


def table(commands, out_root):
    """Run ``{name: args}`` in turn, printing the header and then each row as it finishes."""
    click.echo(HEADER)
    rows = []
    for name, args in commands.items():
        result, seconds = run(args, os.path.join(out_root, name))
        rows.append(row(args, result, seconds))
        click.echo(rows[-1])
    return rows
