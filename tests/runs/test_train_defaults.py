"""Per-task defaults of bptt train: what a task sets when the user does not, and what wins."""

import pytest
from click.testing import CliRunner

from bptt.runs import streams
from bptt.runs import train as training
from bptt.data import tasks
from bptt.cli import main
from bptt.runs.build import build_model
from bptt.runs.config import TrainConfig, prepare


@pytest.fixture(scope="module")
def shakespeare_stateful():
    return prepare(TrainConfig(task="shakespeare", stateful=True))


def test_shakespeare_stateful_defaults(shakespeare_stateful):
    c, task = shakespeare_stateful
    assert (c.cell, c.layers, c.hidden, c.seq_len, c.k1, c.k2, c.batch) == ("lstm", 1, 256, 100, 100, 100, 32)
    assert (c.optimizer, c.lr, c.clip, c.epochs) == ("adam", 2e-3, 1.0, 8)
    assert c.steps == 8 * streams.updates_per_epoch(task, c) == 2512
    model = build_model(c, task)
    assert model.embedding.weight.shape == (task.output_size, 256)


def test_shakespeare_windowed_defaults_count_steps():
    c, _ = prepare(TrainConfig(task="shakespeare"))
    assert (c.hidden, c.batch, c.lr, c.epochs, c.steps) == (256, 32, 2e-3, None, 2500)


@pytest.mark.parametrize("given, expect", [
    ({"hidden": 64}, {"hidden": 64, "batch": 32, "lr": 2e-3, "epochs": 8}),
    ({"batch": 8, "lr": 0.01}, {"hidden": 256, "batch": 8, "lr": 0.01}),
    ({"steps": 50}, {"steps": 50, "epochs": None}),
    ({"epochs": 1}, {"epochs": 1, "steps": 314}),
    ({"seq_len": 50}, {"seq_len": 50, "k1": 50, "k2": 50}),
    # the task's learning rate is Adam's; another optimizer keeps its own default
    ({"optimizer": "sgd"}, {"optimizer": "sgd", "lr": 0.1, "hidden": 256}),
])
def test_explicit_options_win(given, expect):
    c, _ = prepare(TrainConfig(task="shakespeare", stateful=True, **given))
    assert {k: getattr(c, k) for k in expect} == expect


@pytest.mark.parametrize("name", [n for n in tasks.names() if n != "shakespeare"])
def test_other_tasks_keep_bptt_train_defaults(name):
    assert tasks.train_defaults(name) == {}
    c, task = prepare(TrainConfig(task=name))
    assert (c.hidden, c.batch, c.steps, c.lr, c.clip, c.epochs) == (64, 64, 2000, 0.01, 1.0, None)
    assert c.seq_len == c.k1 == c.k2 == tasks.get(name).seq_len


def test_unknown_task_defaults_name_the_task():
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        tasks.train_defaults("nope")


def test_cli_passes_only_given_options(monkeypatch, tmp_path):
    seen = []

    def fake_train(config, out, **kwargs):
        seen.append(prepare(config)[0])
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", fake_train)
    runner = CliRunner()
    for args in ([], ["--hidden", "64", "--batch", "64", "--steps", "2000"]):
        runner.invoke(main, ["train", "--task", "shakespeare", "--stateful",
                             "--out", str(tmp_path / "run")] + args)
    assert [(c.hidden, c.batch, c.steps, c.epochs) for c in seen] == [(256, 32, 2512, 8), (64, 64, 2000, None)]
    help_text = runner.invoke(main, ["train", "--help"]).output
    assert "shakespeare 256" in help_text and "shakespeare 8" in help_text
