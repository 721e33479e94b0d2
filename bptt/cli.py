"""The ``bptt`` command: a thin click group; each subcommand calls into the package."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bptt")
def main():
    """bptt: train recurrent networks with backpropagation through time and see how their
    gradients flow."""


@main.command()
@click.option("--steps", default=300, show_default=True, type=click.IntRange(min=1), help="Gradient steps.")
@click.option("--lr", default=0.1, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Learning rate.")
@click.option("--seed", default=0, show_default=True, help="Random seed.")
def demo(steps, lr, seed):
    """Fit a tiny tanh recurrence on the tape and print its loss falling."""
    from bptt.demo import run_demo

    for step, loss in run_demo(steps=steps, lr=lr, seed=seed):
        click.echo(f"step {step:5d}  loss {loss:.6f}")
