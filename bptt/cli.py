"""The ``bptt`` command: a thin click group; each subcommand calls into the package."""

from __future__ import annotations

import click

from bptt.gradflow import DEFAULT_CELLS
from bptt.train import CELLS, INITS, NONLINEARITIES, OPTIMIZERS, TrainConfig


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bptt")
def main():
    """bptt: train recurrent networks with backpropagation through time and see how their
    gradients flow."""


_TRAIN_DEFAULTS = TrainConfig()


def _takes(option):
    """The registered cells that have ``option``, for help texts."""
    from bptt.nn import cell

    return ", ".join(c.name for c in cell.registered() if option in c.options)
_POSITIVE = click.IntRange(min=1)


@main.command()
@click.option("--task", default=_TRAIN_DEFAULTS.task, show_default=True,
              help="A task of `bptt tasks` (ignored with --data).")
@click.option("--seq-len", default=None, type=_POSITIVE,
              help="Sequence length T; the window length for series  [default: the task's own, "
                   "e.g. adding 50, copy 120, sunspots 20]")
@click.option("--cell", default=_TRAIN_DEFAULTS.cell, show_default=True, type=click.Choice(CELLS),
              help="The recurrent cell (see `bptt cells`).")
@click.option("--hidden", default=_TRAIN_DEFAULTS.hidden, show_default=True, type=_POSITIVE, help="Hidden units H.")
@click.option("--layers", default=_TRAIN_DEFAULTS.layers, show_default=True, type=_POSITIVE)
@click.option("--k1", default=None, type=_POSITIVE, help="Update every k1 steps  [default: T]")
@click.option("--k2", default=None, type=_POSITIVE, help="Backpropagate k2 steps, k2 >= k1  [default: k1]")
@click.option("--optimizer", default=_TRAIN_DEFAULTS.optimizer, show_default=True,
              type=click.Choice(list(OPTIMIZERS)))
@click.option("--lr", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Learning rate  [default: " + ", ".join(f"{k} {v[1]:g}" for k, v in OPTIMIZERS.items()) + "]")
@click.option("--clip", default=_TRAIN_DEFAULTS.clip, show_default=True, type=click.FloatRange(min=0),
              help="Clip the gradient norm to this (0: no clipping).")
@click.option("--batch", default=_TRAIN_DEFAULTS.batch, show_default=True, type=_POSITIVE)
@click.option("--steps", default=None, type=_POSITIVE,
              help=f"Optimizer updates in total, rounded up to whole sequences (a sequence makes "
                   f"ceil(T/k1) updates)  [default: {_TRAIN_DEFAULTS.steps}; with --resume, the run's own]")
@click.option("--seed", default=_TRAIN_DEFAULTS.seed, show_default=True, type=int)
@click.option("--val-every", default=_TRAIN_DEFAULTS.val_every, show_default=True, type=_POSITIVE,
              help="Validate and checkpoint every this many steps.")
@click.option("--forget-bias", default=_TRAIN_DEFAULTS.forget_bias, show_default=True, type=float,
              help="Added to the LSTM forget-gate bias at initialisation.")
@click.option("--init", default=_TRAIN_DEFAULTS.init, show_default=True, type=click.Choice(INITS),
              help="Recurrent weight initialisation.")
@click.option("--nonlinearity", default=_TRAIN_DEFAULTS.nonlinearity,
              type=click.Choice(NONLINEARITIES),
              help=f"For cells with a nonlinearity option ({_takes('nonlinearity')})  [default: the cell's own]")
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
              help="With --stateful: passes over the training streams, instead of --steps.")
@click.option("--embed", default=None, type=_POSITIVE,
              help="Embedding width of a text task's model  [default: --hidden]")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Run directory  [default: runs/TASK-CELL, or runs/TASK-CELL-TLEN with --seq-len; "
                   "numbered if taken]")
@click.option("--resume", default=None, type=click.Path(exists=True, file_okay=False),
              help="Continue the run in this directory (only --steps may be given with it).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@click.pass_context
def train(ctx, resume, out, progress, steps, **options):
    """Train a recurrent network on a task with truncated BPTT, writing a run directory.

    A step is one optimizer update.  Each training sequence (a batch from the task) starts from a
    zero state and makes ceil(T/k1) updates; k1 = k2 = T (the default) is full BPTT.  With no
    options: the adding problem at T=50 with an LSTM, in about a minute.  The run directory gets
    config.json, metrics.csv, checkpoint.npz, result.json, loss.png, gradflow.png (and
    predictions.png for forecasting); the last line printed is the test metric beside the
    task's baselines.
    """
    from bptt import train as training

    try:
        if resume is not None:
            given = [p.opts[0] for p in ctx.command.params if p.name not in ("resume", "steps", "progress")
                     and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]
            if given:
                raise click.UsageError(f"--resume continues a run with its saved configuration; "
                                       f"only --steps may be given with it, not {', '.join(given)}")
            result = training.resume(resume, steps=steps, progress=progress)
            out = resume
        else:
            options["columns"] = list(options["columns"])
            if steps is not None and options["epochs"] is not None:
                raise click.UsageError("give --steps or --epochs, not both")
            config = TrainConfig(steps=steps or _TRAIN_DEFAULTS.steps, **options)
            out = out or training.default_out(config)
            result = training.train(config, out, progress=progress)
    except training.ConfigError as err:
        raise click.BadParameter(err.message, param_hint=f"'{err.option}'") from None
    except training.TrainingDiverged as err:
        raise click.ClickException(str(err)) from None
    except KeyboardInterrupt:
        ctx.exit(130)
    click.echo(training.summary_line(result, out))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print result.json's object instead of a line.")
def evaluate(run_dir, as_json):
    """Re-score the checkpoint in RUN_DIR on its task's test set, beside the baselines."""
    import json

    from bptt import train as training

    try:
        result = training.evaluate(run_dir)
    except (FileNotFoundError, training.ConfigError) as err:
        raise click.BadParameter(str(err), param_hint="'RUN_DIR'") from None
    click.echo(json.dumps(result, indent=2) if as_json else training.summary_line(result, run_dir))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def tasks(as_json):
    """List the tasks and data sets with their sizes, metrics and baselines."""
    import json

    import bptt.tasks

    rows = bptt.tasks.catalogue()
    click.echo(json.dumps(rows, indent=2) if as_json else bptt.tasks.format_catalogue(rows))


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
@click.option("--forget-bias", default=0.0, show_default=True, type=float,
              help="LSTM forget-gate bias of LSTMs that do not set their own.")
@click.option("--nonlinearity", default=None, type=click.Choice(NONLINEARITIES),
              help="Of cells with a nonlinearity option that do not set their own  [default: the cell's own]")
@click.option("--train-steps", default=0, show_default=True, type=click.IntRange(min=0),
              help="Adam updates on the task before measuring.")
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Adam's learning rate for --train-steps.")
@click.option("--task", default="adding", show_default=True, help="A task of `bptt tasks`; draws x and y.")
@click.option("--seeds", default=5, show_default=True, type=_POSITIVE, help="Models (and batches) per cell.")
@click.option("--batch-size", default=32, show_default=True, type=_POSITIVE)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", default="gradflow.png", show_default=True, type=click.Path(dir_okay=False),
              help="The figure: .png, .svg or .pdf.")
@click.option("--csv", "csv_path", default=None, type=click.Path(dir_okay=False),
              help="The curves  [default: --out with .csv]")
def gradflow(**options):
    """Draw how ||dL/dh_t|| decays with the lag behind a loss at the last step, per cell.

    Builds each cell's model for every seed, optionally trains it, measures, writes the figure
    and a CSV of every curve, and prints per cell the fitted decay rate, the factor per step,
    the memory horizon (lag where the norm falls below 1e-3 of its start) and the suggested
    truncation length k2 (the window holding 99% of the gradient).
    """
    from bptt import gradflow as experiment
    from bptt.train import ConfigError

    try:
        experiment.run(echo=click.echo, **options)
    except ConfigError as err:
        raise click.BadParameter(err.message, param_hint=f"'{err.option}'") from None


@main.command()
def cells():
    """List the registered recurrent cells: gates, state, options, inits and equations."""
    from bptt.nn import cell

    click.echo("\n".join(c.describe() for c in cell.registered()))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--length", default=500, show_default=True, type=click.IntRange(min=0),
              help="Characters to generate after the prime.")
@click.option("--temperature", default=0.8, show_default=True, type=click.FloatRange(min=0),
              help="Divides the logits before sampling; 0 takes the most likely character.")
@click.option("--prime", default=None,
              help="Text read first; generation continues it  [default: the text's first character]")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the draws: same seed, same text.")
def sample(run_dir, length, temperature, prime, seed):
    """Print text generated by the checkpoint in RUN_DIR, a run of a text task."""
    from bptt import sample as sampling
    from bptt.config import ConfigError

    try:
        text = sampling.sample(run_dir, length=length, temperature=temperature, prime=prime, seed=seed)
    except ConfigError as err:
        raise click.BadParameter(err.message, param_hint=f"'{err.option}'") from None
    click.echo(text)
