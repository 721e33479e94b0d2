"""The ``bptt`` command: a thin click group; each subcommand calls into the package.

The package prints nothing and draws no bar of its own: each subcommand passes it ``echo``
(click's) and ``progress`` (``ProgressBar``, click's bar) as callables.

Every subcommand runs inside one guard (``Guarded``): the package's own errors become one clear
message, never a traceback.  A ``ConfigError`` is a usage error (exit status 2) naming the
option; a ``RunError`` (a locked, corrupt or mismatched run, a diverged loss), an ``OSError``
(a file that cannot be read or written) and a ``MemoryError`` are stated runtime errors (exit
status 1).  Ctrl-C and SIGTERM (what ``kill`` and schedulers send) both interrupt the command as
a KeyboardInterrupt, so a run saves its state, and exit with 130 and 143 after one line.
"""

from __future__ import annotations

import contextlib
import math
import re
import signal
import sys

import click

from bptt.data.tasks.static import STATIC_TASKS
from bptt.errors import ConfigError, Interrupted, RunError
from bptt.nn import compiled
from bptt.runs.config import CELLS, DEFAULTS, INITS, NONLINEARITIES, OPTIMIZERS, TrainConfig, cells_taking
from bptt.runs.experiments.gradflow import DEFAULT_CELLS


class Guarded(click.Group):
    """A click group whose subcommands, all of them, report the package's errors as messages."""

    def invoke(self, ctx):
        received = [signal.SIGINT]
        try:
            with _interrupting(received):
                compiled.is_enabled()      # applies BPTT_COMPILED: a wrong value is a usage error
                return super().invoke(ctx)
        except ConfigError as err:
            raise click.BadParameter(err.message, param_hint=f"'{err.option}'") from None
        except RunError as err:
            raise click.ClickException(str(err)) from None
        except OSError as err:
            where = f"{err.filename}: " if err.filename else ""
            raise click.ClickException(f"{where}{err.strerror or err}") from None
        except MemoryError as err:
            raise click.ClickException(f"out of memory ({err or 'an allocation failed'}); "
                                       f"try smaller sizes") from None
        except KeyboardInterrupt as err:
            if not isinstance(err, Interrupted):      # a run that saved its state has said so
                _echo_err("interrupted")
            raise click.exceptions.Exit(128 + received[-1]) from None


@contextlib.contextmanager
def _interrupting(received):
    """SIGTERM raises KeyboardInterrupt as Ctrl-C does, and both append their number to
    ``received``; the handlers before are put back after.  A signal the process ignores stays
    ignored, and outside the main thread (a caller's own thread) the signals are left as they
    are."""
    def interrupt(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    try:
        before = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)
                  if signal.getsignal(s) is not signal.SIG_IGN}
    except ValueError:          # signal handlers can only be set in the main thread
        yield
        return
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


class _Finite(click.ParamType):
    """A finite float (NaN and infinity refused), optionally above ``low``."""

    name = "float"

    def __init__(self, low=-math.inf, low_open=False):
        self.low, self.low_open = low, low_open

    def convert(self, value, param, ctx):
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if v < self.low or (self.low_open and v == self.low):
            self.fail(f"{v} is not in the range x{'>' if self.low_open else '>='}{self.low:g}", param, ctx)
        return v


class ProgressBar:
    """click's progress bar on standard error, for ``bptt.runs.train.train(progress=ProgressBar)``.

    Hidden unless standard error is a terminal; ``update(steps, loss)`` advances it by the
    updates a sequence made and shows the running loss.
    """

    label, show_eta = "training", False

    def __init__(self, total):
        self.note = ""
        self.bar = click.progressbar(length=total, label=self.label, show_pos=True, show_eta=self.show_eta,
                                     file=sys.stderr, item_show_func=lambda _: self.note,
                                     hidden=not sys.stderr.isatty())

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def update(self, steps, loss):
        self.note = "" if loss is None else f"loss {loss:.4g}"
        self.bar.update(steps)


class _RunsBar(ProgressBar):
    """The bar of ``bptt sweep``: ``update(runs, status)`` counts finished runs and shows how
    many are done, running and failed."""

    label, show_eta = "runs", True

    def update(self, runs, status):
        self.note = status
        self.bar.update(runs)


def _echo_above_bar(message):
    """A line printed while a bar may be drawn on a terminal's standard error: the bar's line is
    cleared first, and the bar redraws itself below."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")
    click.echo(message)


def _echo_err(message):
    click.echo(message, err=True)


@click.group(cls=Guarded, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bptt")
def main():
    """bptt: train recurrent networks with backpropagation through time and see how their
    gradients flow."""


_TRAIN_DEFAULTS = TrainConfig()


class _K2(click.ParamType):
    """A positive integer, or 'auto'."""

    name = "INTEGER|auto"

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, int):
            return value
        try:
            k = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a positive integer nor 'auto'", param, ctx)
        if k < 1:
            self.fail(f"{k} is not a positive integer", param, ctx)
        return k


class _Cell(click.ParamType):
    """A cell in the cell grammar, ``CELL[:KEY=VALUE,...]`` (``bptt.runs.config``): the name is
    checked here, the options where they are used."""

    name = "CELL[:KEY=VALUE,...]"

    def convert(self, value, param, ctx):
        click.Choice(CELLS).convert(re.split("[:,]", str(value))[0].strip(), param, ctx)
        return value


_POSITIVE = click.IntRange(min=1)


def _limit(threads, batch, hidden):
    """``blas.limit`` for models of ``hidden`` units on batches of ``batch``, with the most gate
    blocks of any registered cell."""
    from bptt import blas
    from bptt.runs.config import most_gates

    return blas.limit(threads, batch * most_gates() * hidden ** 2)


def _threads_option(command):
    """``--threads N``, the BLAS threads of a command's matrix products."""
    return click.option(
        "--threads", default=None, type=_POSITIVE, metavar="N",
        help="BLAS threads for the matrix products  [default: OPENBLAS_NUM_THREADS (or OMP_, "
             "MKL_) when set, else one thread for small layers and every core for large ones]")(command)


def _task_defaults(option):
    """'; TASK VALUE' for each task with its own default for a bptt train option, for help texts."""
    from bptt.data import tasks

    own = {name: tasks.train_defaults(name).get(option) for name in tasks.names()}
    return "".join(f"; {name} {value:g}" for name, value in own.items() if value is not None)


@main.command()
@click.option("--task", default=_TRAIN_DEFAULTS.task, show_default=True,
              help="A task of `bptt tasks` (ignored with --data).")
@click.option("--seq-len", default=None, type=_POSITIVE,
              help="Sequence length T; the window length for series  [default: the task's own, "
                   "e.g. adding 50, copy 120, sunspots 20]")
@click.option("--cell", default=_TRAIN_DEFAULTS.cell, show_default=True, type=_Cell(),
              help=f"The recurrent cell ({', '.join(CELLS)}), with its options after a colon: "
                   f"lstm:forget_bias=0, indrnn:nonlinearity=tanh,recurrent_max=2 (`bptt cells` lists "
                   f"them). Options not given are the cell's defaults, but for the LSTM's forget-gate "
                   f"bias, which bptt train sets to 1.")
@click.option("--hidden", default=None, type=_POSITIVE,
              help=f"Hidden units H  [default: {DEFAULTS['hidden']}{_task_defaults('hidden')}]")
@click.option("--layers", default=_TRAIN_DEFAULTS.layers, show_default=True, type=_POSITIVE)
@click.option("--k1", default=None, type=_POSITIVE, help="Update every k1 steps  [default: T]")
@click.option("--k2", default=None, type=_K2(),
              help="Backpropagate k2 steps, k2 >= k1, or 'auto': the shortest window whose "
                   "geometric-tail bound on the gradient's relative bias is at most --max-bias, "
                   "chosen again at every update from the decay measured  [default: k1]")
@click.option("--max-bias", default=_TRAIN_DEFAULTS.max_bias, show_default=True,
              type=_Finite(low=0, low_open=True), help="With --k2 auto: the relative bias allowed.")
@click.option("--checkpoint", default=None,
              help="Store only some states and recompute the rest in backward: 'sqrt', a number of "
                   "stored states, or a memory budget per layer such as 500MB  [default: store all]")
@click.option("--optimizer", default=_TRAIN_DEFAULTS.optimizer, show_default=True,
              type=click.Choice(list(OPTIMIZERS)))
@click.option("--lr", default=None, type=_Finite(low=0, low_open=True),
              help="Learning rate  [default: " + ", ".join(f"{k} {v[1]:g}" for k, v in OPTIMIZERS.items())
                   + _task_defaults("lr") + " with adam]")
@click.option("--clip", default=_TRAIN_DEFAULTS.clip, show_default=True, type=_Finite(low=0),
              help="Clip the gradient norm to this (0: no clipping).")
@click.option("--batch", default=None, type=_POSITIVE,
              help=f"Sequences (streams with --stateful) per update  [default: {DEFAULTS['batch']}"
                   f"{_task_defaults('batch')}]")
@click.option("--steps", default=None, type=_POSITIVE,
              help=f"Optimizer updates in total, rounded up to whole sequences (a sequence makes "
                   f"ceil(T/k1) updates)  [default: {DEFAULTS['steps']}{_task_defaults('steps')}; "
                   f"with --resume, the run's own]")
@click.option("--seed", default=_TRAIN_DEFAULTS.seed, show_default=True, type=int)
@click.option("--val-every", default=_TRAIN_DEFAULTS.val_every, show_default=True, type=_POSITIVE,
              help="Validate and checkpoint every this many steps.")
@click.option("--forget-bias", default=None, type=_Finite(),
              deprecated="write --cell lstm:forget_bias=VALUE; --forget-bias goes in the next release.",
              help="Added to the LSTM forget-gate bias at initialisation.")
@click.option("--init", default=_TRAIN_DEFAULTS.init, show_default=True, type=click.Choice(INITS),
              help="Recurrent weight initialisation.")
@click.option("--nonlinearity", default=None, type=click.Choice(NONLINEARITIES),
              deprecated="write --cell CELL:nonlinearity=VALUE; --nonlinearity goes in the next release.",
              help=f"For cells with a nonlinearity option ({', '.join(cells_taking('nonlinearity'))}).")
@click.option("--data", default=None, type=click.Path(exists=True, dir_okay=False, readable=True),
              help="Train on your own series: a CSV file with a header row (with --task text: any "
                   "UTF-8 text, for a character-level language model).")
@click.option("--column", "columns", multiple=True, help="An input column of --data (repeatable).")
@click.option("--target", default=None, help="The column of --data to forecast.")
@click.option("--stateful", is_flag=True,
              help="Cut the training part of a series or text into --batch contiguous streams and "
                   "walk them in windows of k1 with the state carried, reset at each epoch; score "
                   "validation and test as streams.")
@click.option("--epochs", default=None, type=_POSITIVE,
              help="With --stateful: passes over the training streams, instead of --steps  "
                   "[default: none" + _task_defaults("epochs") + "]")
@click.option("--embed", default=None, type=_POSITIVE,
              help="Embedding width of a text task's model  [default: --hidden]")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Run directory  [default: runs/TASK-CELL, or runs/TASK-CELL-TLEN with --seq-len; "
                   "numbered if taken]")
@click.option("--resume", default=None, type=click.Path(exists=True, file_okay=False),
              help="Continue the run in this directory (only --steps may be given with it).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@_threads_option
@click.pass_context
def train(ctx, resume, out, progress, steps, threads, **options):
    """Train a recurrent network on a task with truncated BPTT, writing a run directory.

    A step is one optimizer update.  Each training sequence (a batch from the task) starts from a
    zero state and makes ceil(T/k1) updates; k1 = k2 = T (the default) is full BPTT.  With no
    options: the adding problem at T=50 with an LSTM, in about a minute.  A task may set its own
    defaults (shown in brackets below): `--task shakespeare --stateful` alone trains an LSTM of
    256 (embedding 256) on 32 streams with BPTT(100; 100) and Adam at 0.002 for 8 epochs, about
    10 minutes on 2 cores; options given always win.  The run directory gets
    config.json, metrics.csv, checkpoint.npz, result.json, loss.png, gradflow.png (and
    predictions.png for forecasting); the last line printed is the test metric beside the
    task's baselines.
    """
    from bptt.runs import train as training
    from bptt.runs.artifacts import summary_line
    from bptt.runs.config import default_out

    bar = ProgressBar if progress else None
    if resume is not None:
        given = [p.opts[0] for p in ctx.command.params if p.name not in ("resume", "steps", "progress", "threads")
                 and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"--resume continues a run with its saved configuration; "
                                   f"only --steps and --threads may be given with it, not {', '.join(given)}")
        result = training.resume(resume, steps=steps, progress=bar, echo=_echo_err, threads=threads)
        out = resume
    else:
        options["columns"] = list(options["columns"])
        if steps is not None and options["epochs"] is not None:
            raise click.UsageError("give --steps or --epochs, not both")
        config = TrainConfig(steps=steps, **options)
        out = out or default_out(config)
        result = training.train(config, out, progress=bar, echo=_echo_err, threads=threads)
    click.echo(summary_line(result, out))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print result.json's object instead of a line.")
@_threads_option
def evaluate(run_dir, as_json, threads):
    """Re-score the checkpoint in RUN_DIR on its task's test set, beside the baselines."""
    import json

    from bptt.runs import train as training
    from bptt.runs.artifacts import summary_line

    result = training.evaluate(run_dir, threads=threads)
    click.echo(json.dumps(result, indent=2) if as_json else summary_line(result, run_dir))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@_threads_option
def tasks(as_json, threads):
    """List the tasks and data sets with their sizes, metrics and baselines."""
    import json

    import bptt.data.tasks
    from bptt import blas

    with blas.limit(threads, 0):      # least-squares baselines of a few hundred rows
        rows = bptt.data.tasks.catalogue()
    click.echo(json.dumps(rows, indent=2) if as_json else bptt.data.tasks.format_catalogue(rows))


@main.command()
@click.option("--cells", default=None,
              help=f"Comma-separated cells ({', '.join(CELLS)}), each optionally with settings: "
                   "'lstm:forget_bias=1', 'rnn:init=identity,nonlinearity=relu,label=irnn'. Keys: init, "
                   "label and the cell's own options (`bptt cells` lists them)  [default: "
                   + DEFAULT_CELLS + "]")
@click.option("--seq-len", default=200, show_default=True, type=_POSITIVE, help="Sequence length T.")
@click.option("--hidden", default=64, show_default=True, type=_POSITIVE, help="Hidden units H.")
@click.option("--layers", default=1, show_default=True, type=_POSITIVE)
@click.option("--init", default="default", show_default=True, type=click.Choice(INITS),
              help="Recurrent weight initialisation of cells that do not set their own.")
@click.option("--forget-bias", default=None, type=_Finite(),
              help="LSTM forget-gate bias of LSTMs that do not set their own  [default: the cell's own]")
@click.option("--nonlinearity", default=None, type=click.Choice(NONLINEARITIES),
              help="Of cells with a nonlinearity option that do not set their own  [default: the cell's own]")
@click.option("--train-steps", default=0, show_default=True, type=click.IntRange(min=0),
              help="Adam updates on the task before measuring.")
@click.option("--lr", default=1e-3, show_default=True, type=_Finite(low=0, low_open=True),
              help="Adam's learning rate for --train-steps.")
@click.option("--task", default="adding", show_default=True, help="A task of `bptt tasks`; draws x and y.")
@click.option("--seeds", default=5, show_default=True, type=_POSITIVE, help="Models (and batches) per cell.")
@click.option("--batch-size", default=32, show_default=True, type=_POSITIVE)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", default="gradflow.png", show_default=True, type=click.Path(dir_okay=False),
              help="The figure: .png, .svg or .pdf.")
@click.option("--csv", "csv_path", default=None, type=click.Path(dir_okay=False),
              help="The curves  [default: --out with .csv]")
@_threads_option
def gradflow(threads, **options):
    """Draw how ||dL/dh_t|| decays with the lag behind a loss at the last step, per cell.

    Builds each cell's model for every seed, optionally trains it, measures, writes the figure
    and a CSV of every curve, and prints per cell the fitted decay rate, the factor per step,
    the memory horizon (lag where the norm falls below 1e-3 of its start) and the suggested
    truncation length k2 (the window holding 99% of the gradient).
    """
    from bptt.runs.experiments import gradflow as experiment

    with _limit(threads, options["batch_size"], options["hidden"]):
        experiment.run(echo=click.echo, **options)


@main.command()
def cells():
    """List the registered recurrent cells: gates, state, options, inits and equations."""
    from bptt.nn import registry as cell

    click.echo("\n".join(c.describe() for c in cell.registered()))


@main.command()
@click.argument("spec", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="The sweep directory  [default: sweeps/ and the spec's name without .toml]")
@click.option("--workers", default=None, type=_POSITIVE,
              help="Worker processes of the local Dask cluster  [default: the number of cores]")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Submit the runs to this running Dask scheduler (tcp://HOST:8786) instead of a "
                   "local cluster; its workers must see --out at the same path.")
@click.option("--report", "report_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="Redo results.csv, summary.md and the figures of this sweep directory and print "
                   "the summary.")
@click.option("--best", "best_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="Name the configuration of this sweep directory with the best mean validation "
                   "metric and report its test metric.")
@click.option("--ensemble", is_flag=True, help="With --best: also score the average prediction of "
                                               "that configuration's seeds on the test set.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@click.option("--threads", default=None, type=_POSITIVE, metavar="N",
              help="BLAS threads of each run  [default: one per worker of a local cluster, which "
                   "runs one run per core; a --scheduler's workers choose as bptt train does]")
@click.pass_context
def sweep(ctx, spec, out, workers, scheduler, report_dir, best_dir, ensemble, progress, threads):
    """Run a grid of `bptt train` runs over options and seeds on Dask, from a TOML SPEC.

    The spec's keys are bptt train's option names with underscores: `seeds = [0, 1, 2]`, a
    [fixed] table shared by every run, a [grid] table of lists (every combination is run) and
    [[config]] tables (explicit runs); each option set runs once per seed.  Every run is a run
    directory under OUT/runs/; running the same command again skips finished runs and resumes
    interrupted ones.  At the end OUT gets results.csv, summary.md (mean ± std over seeds, best
    validation metric first) and figures/.  Exit status 1 when a run failed.
    """
    import os

    from bptt.runs import sweep as sweeping
    from bptt.runs import report as sweep_report

    modes = [m for m, given in (("SPEC", spec), ("--report", report_dir), ("--best", best_dir)) if given]
    if len(modes) != 1:
        raise click.UsageError("give a SPEC to run, or --report DIR or --best DIR"
                               + (f", not {' and '.join(modes)}" if modes else ""))
    if ensemble and not best_dir:
        raise click.UsageError("--ensemble goes with --best DIR")
    if spec is None and (out or workers or scheduler or threads):
        raise click.UsageError("--out, --workers, --scheduler and --threads go with a SPEC to run")
    if workers and scheduler:
        raise click.UsageError("--workers sizes the local cluster; a --scheduler has its own workers")
    if best_dir or report_dir:
        try:
            rows = sweep_report.collect(best_dir or report_dir)
        except FileNotFoundError as err:
            raise click.BadParameter(str(err), param_hint="'--best'" if best_dir else "'--report'") from None
    if best_dir:
        groups = sweep_report.summarize(rows)
        if not groups:
            raise click.ClickException(f"{best_dir} has no finished runs yet")
        for task, group in sweep_report.best(groups).items():
            click.echo(f"{task}: best on validation {group.label} (n={group.n}): validation "
                       f"{group.metric} {sweep_report.format_mean_std(group.val)}, test {group.metric} "
                       f"{sweep_report.format_mean_std(group.test)}")
            if ensemble:
                click.echo(f"{task}: ensemble of its {group.n} seeds: test {group.metric} "
                           f"{sweep_report.ensemble(best_dir, group):.4g}")
        return
    if report_dir:
        sweep_report.write_report(report_dir, rows)
        with open(os.path.join(report_dir, sweep_report.SUMMARY)) as f:
            click.echo(f.read(), nl=False)
        return
    out = out or os.path.join("sweeps", os.path.splitext(os.path.basename(spec))[0])
    try:
        parsed = sweeping.load_spec(spec)
        sweeping.run_sweep(parsed, out, workers=workers, scheduler=scheduler, threads=threads,
                           echo=_echo_above_bar if progress else click.echo,
                           progress=_RunsBar if progress else None)
    except sweeping.DaskMissing as err:
        _echo_err(str(err))
        ctx.exit(2)
    except sweeping.SpecError as err:
        raise click.UsageError(str(err)) from None
    except ConfigError as err:
        raise click.BadParameter(err.message, param_hint=f"'{err.option}'") from None
    rows, groups = sweep_report.write_report(out)
    failed = sum(r["status"] == "failed" for r in rows)
    click.echo(f"wrote {out}/{sweep_report.RESULTS}, {out}/{sweep_report.SUMMARY} and "
               f"{out}/{sweep_report.FIGURES}/" + (f"; {failed} runs failed" if failed else ""))
    for task, group in sweep_report.best(groups).items():
        click.echo(f"{task}: best on validation {group.label}: test {group.metric} "
                   f"{sweep_report.format_mean_std(group.test)} (n={group.n})")
    if failed:
        ctx.exit(1)


@main.command()
@click.option("--task", "tasks", multiple=True, type=click.Choice(list(STATIC_TASKS)),
              help=f"A static task (repeatable)  [default: {' and '.join(STATIC_TASKS)}]")
@click.option("--grad", "grads", default=None,
              help="Comma-separated gradient methods: rbp, gmres, bicgstab, neumann:k (k terms), bptt (every "
                   "iteration), bptt:k (the last k iterations)  [default: rbp,gmres,bicgstab,neumann:3,bptt,bptt:3]")
@click.option("--cell", default="rnn", show_default=True, type=_Cell(),
              help="The cell of the fixed-point layer, with its options after a colon, as for bptt train.")
@click.option("--hidden", default=32, show_default=True, type=_POSITIVE, help="Hidden units H.")
@click.option("--steps", default=300, show_default=True, type=_POSITIVE, help="Adam updates per method.")
@click.option("--lr", default=0.01, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--batch", default=64, show_default=True, type=_POSITIVE,
              help="Presentations per update (patterns; spirals trains on its whole set).")
@click.option("--tol", default=1e-5, show_default=True, type=float, help="Forward (and adjoint) tolerance.")
@click.option("--damping", default=1.0, show_default=True, type=float, help="h <- (1-d) h + d f(h).")
@click.option("--contractive", default=0.95, show_default=True, type=click.FloatRange(min=0),
              help="Bound on ||weight_hh||_2, kept by rescaling at every forward (0: none).")
@click.option("--ks", default="1,2,5,10,20,50", show_default=True,
              help="Truncations k of the gradient-agreement figure.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", default="fixedpoint.png", show_default=True, type=click.Path(dir_okay=False),
              help="The loss-curve figure; NAME_agreement.png and NAME.csv are written beside it.")
@_threads_option
def fixedpoint(tasks, grads, ks, contractive, threads, **options):
    """Train a fixed-point network on static tasks with each gradient method (recurrent backprop).

    The same FixedPoint + Linear network, from the same weights and batches, trains with each
    method; one line per method gives the test score, milliseconds and peak memory per update,
    the cosine of its first gradient with converged RBP's and the mean forward iterations.
    Writes the loss curves, the gradient agreement of BPTT-k and Neumann-k against RBP as k
    grows, and a CSV of the lines.
    """
    from bptt.runs.experiments import fixedpoint as experiment
    from bptt.nn import FixedPointError

    try:
        try:
            ks = [int(k) for k in ks.split(",")]
        except ValueError:
            raise ConfigError("--ks", f"need comma-separated integers, got {ks!r}") from None
        with _limit(threads, options["batch"], options["hidden"]):
            experiment.run(tasks=tasks or None, grads=grads, ks=ks, contractive=contractive or None,
                           echo=click.echo, **options)
    except ConfigError as err:
        raise click.BadParameter(err.message, param_hint=f"'{err.option}'") from None
    except FixedPointError as err:      # training pushed the network out of convergence
        raise click.ClickException(f"{err} (or a lower --lr, or --contractive)") from None


@main.command()
@click.option("--task", default="lag", show_default=True, help="A task of `bptt tasks`; draws x and y.")
@click.option("--cells", default=None,
              help="Comma-separated cells with optional settings, as for `bptt gradflow`  "
                   "[default: every registered cell]")
@click.option("--estimators", default=None,
              help="Comma-separated: tbptt:K (numbers after it are more K), tbptt:K1,K2 is not "
                   "accepted here, auto:MAX_BIAS, rtrl, uoro  [default: "
                   "tbptt:1,2,4,8,16,32,auto:0.1,uoro,rtrl]")
@click.option("--seq-len", default=None, type=_POSITIVE, help="Sequence length T  [default: the task's]")
@click.option("--hidden", default=16, show_default=True, type=_POSITIVE, help="Hidden units H.")
@click.option("--batch-size", default=8, show_default=True, type=_POSITIVE)
@click.option("--samples", default=100, show_default=True, type=_POSITIVE, help="UORO draws.")
@click.option("--train-steps", default=0, show_default=True, type=click.IntRange(min=0),
              help="Adam updates (full BPTT) on the task before measuring.")
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Adam's learning rate for --train-steps.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", default="credit.png", show_default=True, type=click.Path(dir_okay=False),
              help="The figure: .png, .svg or .pdf.")
@click.option("--csv", "csv_path", default=None, type=click.Path(dir_okay=False),
              help="The numbers  [default: --out with .csv]")
@_threads_option
def credit(threads, **options):
    """Compare every estimator's gradient with the exact one, per cell, the weights frozen.

    Truncated BPTT at each length, adaptive truncation, RTRL and UORO on one batch of the task:
    cosine similarity and relative error of the whole gradient (mean and spread over UORO's
    draws, and of their mean).  Writes the figure and a CSV and prints one line per estimator
    and cell.
    """
    from bptt.runs.experiments import credit as experiment

    try:
        with _limit(threads, options["batch_size"], options["hidden"]):
            experiment.run(echo=click.echo, **options)
    except ConfigError as err:
        raise click.BadParameter(err.message, param_hint=f"'{err.option}'") from None


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--length", default=500, show_default=True, type=click.IntRange(min=0),
              help="Characters to generate after the prime.")
@click.option("--temperature", default=0.8, show_default=True, type=click.FloatRange(min=0),
              help="Divides the logits before sampling; 0 takes the most likely character.")
@click.option("--prime", default=None,
              help="Text read first; generation continues it  [default: the text's first character]")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the draws: same seed, same text.")
@_threads_option
def sample(run_dir, length, temperature, prime, seed, threads):
    """Print text generated by the checkpoint in RUN_DIR, a run of a text task."""
    from bptt.runs import sample as sampling

    try:
        text = sampling.sample(run_dir, length=length, temperature=temperature, prime=prime, seed=seed,
                               threads=threads)
    except ConfigError as err:
        raise click.BadParameter(err.message, param_hint=f"'{err.option}'") from None
    click.echo(text)
