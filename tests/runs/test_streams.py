"""Stateful training over streams: batchify, the walk through TBPTT, scoring with the state
carried, and checkpoints mid-epoch that resume exactly (resume, Ctrl-C, the NaN guard)."""

import csv
import os

import numpy as np
import pytest
from click.testing import CliRunner

import bptt
from bptt.runs import streams
from bptt.data import tasks
from bptt.runs import train as training
from bptt.cli import main
from bptt.io import load_npz
from bptt.data.tasks.text import TextTask
from bptt.runs.build import build_model, build_optimizer
from bptt.runs.config import prepare
from bptt.runs.rundir import METRIC_COLUMNS
from bptt.runs.train import TrainConfig, TrainingDiverged


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def corpus(tmp_path, words=200):
    rng = np.random.default_rng(0)
    path = tmp_path / "corpus.txt"
    path.write_text(" ".join(rng.choice(["to be", "or not", "that is", "the question"], size=words)))
    return path


def rows(run_dir):
    at = METRIC_COLUMNS.index("seconds")
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        return [r[:at] + r[at + 1:] for r in csv.reader(f)]


def arrays(run_dir):
    return load_npz(os.path.join(run_dir, "checkpoint.npz"))


def assert_same_runs(a, b):
    # a resumed run against an uninterrupted one: the same operations in the same order, the same bits
    assert rows(a) == rows(b)
    x, y = arrays(a), arrays(b)
    keys = [k for k in x if k.startswith(("model.", "optim.", "rng.", "stream.")) or k == "step"]
    assert keys and set(keys) <= set(y)
    for k in keys:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batchify_cuts_contiguous_columns():
    a = np.arange(23)
    b = streams.batchify(a, 4)
    assert b.shape == (5, 4)
    np.testing.assert_array_equal(b[:, 1], [5, 6, 7, 8, 9])
    assert streams.batchify(np.zeros((10, 3)), 3).shape == (3, 3, 3)


def test_series_streams_warm_up_on_the_earlier_parts():
    task = tasks.get("sunspots", horizon=2)
    x, y, mask = streams.part_stream(task, "test")
    s = task.parts["test"]
    assert len(x) == s.stop - 2 and mask.sum() == s.stop - s.start
    np.testing.assert_array_equal(np.flatnonzero(mask) + 2, np.arange(s.start, s.stop))
    np.testing.assert_array_equal(y[:, 0], task.scaled_target[2:s.stop].astype(np.float32))
    x, y, mask = streams.part_stream(task, "train")
    assert len(x) == task.parts["train"].stop - 2 and mask.all()


@pytest.mark.parametrize("name", ["sunspots", "text"])
def test_scoring_carries_the_state_across_chunks(name, monkeypatch, tmp_path):
    task = tasks.get("sunspots") if name == "sunspots" else tasks.text(corpus(tmp_path), seq_len=8)
    bptt.seed(0)
    model = (bptt.nn.SequenceModel("gru", 1, 8, 1, dtype=np.float64) if name == "sunspots" else
             bptt.nn.LanguageModel("gru", task.output_size, 4, 8, dtype=np.float64))
    whole = streams.score(model, task, "test")
    x, y, mask = streams.part_stream(task, "test")
    with bptt.no_grad():
        pred = model(x[:, None])[0].data
    assert whole == pytest.approx(task.score(pred, y[:, None], mask), rel=1e-12)
    monkeypatch.setattr(streams, "SCORE_CHUNK", 7)
    assert streams.score(model, task, "test") == pytest.approx(whole, rel=1e-12)


def test_an_epoch_is_one_tbptt_pass_over_the_columns(tmp_path):
    config, task = prepare(TrainConfig(task="text", data=str(corpus(tmp_path)), seq_len=9,
                                       k1=5, k2=8, hidden=6, batch=3, stateful=True, epochs=1))
    walked = build_model(config, task)
    walk = streams.StreamTraining(task, config)
    trainer = bptt.TBPTT(walked, tasks.loss_function(task), build_optimizer(config, walked), 5, 8,
                         clip_norm=config.clip, window_loss=walk.window_loss)
    records = []
    while walk.epoch == 0:
        records += list(walk.updates(trainer))
    assert len(records) == config.steps == streams.updates_per_epoch(task, config)
    assert walk.position == 0 and trainer.state is None       # reset for the next epoch
    fed = build_model(config, task)
    once = bptt.TBPTT(fed, tasks.loss_function(task), build_optimizer(config, fed), 5, 8,
                      clip_norm=config.clip)
    x, y, _ = streams.part_stream(task, "train")
    once.run(streams.batchify(x, 3), streams.batchify(y, 3))
    once.finish()
    assert [r["loss"] for r in records] == pytest.approx([r["loss"] for r in once.history], rel=1e-5)
    for (name, p), q in zip(walked.named_parameters(), fed.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_stateful_run_walks_its_streams_with_its_own_trainer(tmp_path):
    config, task = prepare(TrainConfig(task="text", data=str(corpus(tmp_path)), seq_len=9, k1=5, hidden=6,
                                       batch=3, stateful=True, epochs=1))
    run = training._Run(config, task, str(tmp_path / "run"))
    assert isinstance(run.walk, streams.StreamTraining)
    assert run.trainer.window_loss is run.walk.window_loss
    assert len(list(run.updates())) == 1
    assert run.walk.position == 5 and run.trainer.state is not None      # carried to the next window


@pytest.mark.parametrize("k1, k2", [(6, 6), (4, 10)])
def test_resume_mid_epoch_equals_an_uninterrupted_run(tmp_path, k1, k2):
    # 179 training characters in 4 streams of 44 steps: epochs of ceil(44 / k1) updates, the
    # last of them partial (through finish); the split falls inside the second epoch
    base = dict(task="text", data=str(corpus(tmp_path, 60)), seq_len=10, k1=k1, k2=k2, hidden=6,
                batch=4, stateful=True, epochs=2)
    cut = prepare(TrainConfig(**base))[0].steps // 2 + 3
    base["val_every"] = cut        # the split run validates at its end: so does the whole one
    whole = training.train(TrainConfig(**base), tmp_path / "whole")
    training.train(TrainConfig(**{**base, "epochs": None, "steps": cut}), tmp_path / "split")
    assert int(arrays(tmp_path / "split")["stream.position"]) == 3 * k1
    resumed = training.resume(tmp_path / "split", steps=whole["steps"])
    assert_same_runs(tmp_path / "split", tmp_path / "whole")
    assert resumed["test"] == whole["test"]


def test_ctrl_c_mid_epoch_keeps_the_stream_and_resumes_exactly(tmp_path):
    config = TrainConfig(task="sunspots", seq_len=10, hidden=6, batch=4, stateful=True, epochs=2,
                         k2=15, val_every=100)

    def interrupt(step, record):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(config, tmp_path / "cut", on_update=interrupt, echo=lambda m: None)
    saved = arrays(tmp_path / "cut")
    assert int(saved["step"]) == 3 and int(saved["stream.position"]) == 30
    assert "stream.tbptt.state.0" in saved and "stream.tbptt.piece.0.x" in saved
    training.resume(tmp_path / "cut")
    training.train(config, tmp_path / "whole")
    assert_same_runs(tmp_path / "cut", tmp_path / "whole")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")   # the divergence it makes
def test_nan_mid_epoch_keeps_the_last_good_window(tmp_path, monkeypatch):
    stream = streams.part_stream

    def poisoned(task, part):
        x, y, mask = stream(task, part)
        if part == "train":
            y = y.copy()
            y[25] = 1e30            # step 25, the third window of 10: its squared error overflows
        return x, y, mask

    monkeypatch.setattr(streams, "part_stream", poisoned)
    config = TrainConfig(task="sunspots", seq_len=10, hidden=6, batch=4, stateful=True, epochs=1)
    with pytest.raises(TrainingDiverged, match="diverged at step 3: loss inf.*after step 2"):
        training.train(config, tmp_path / "run")
    saved = arrays(tmp_path / "run")
    assert int(saved["step"]) == 2 and int(saved["stream.position"]) == 20


def test_stateful_forecasting_counts_epochs(tmp_path):
    # sunspots 1700-1987: 186 training years, 185 pairs in 4 streams of 46 steps: 5 windows of 10
    result = invoke("train", "--task", "sunspots", "--stateful", "--epochs", "2", "--seq-len", "10",
                    "--hidden", "6", "--batch", "4", "--out", tmp_path / "run", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "sunspots T=10 lstm: test mse" in result.output and "; 10 steps" in result.output


@pytest.mark.parametrize("args, message", [
    (["--epochs", "2"], "Invalid value for '--epochs': counts passes over the training streams; it "
                        "needs --stateful"),
    (["--stateful"], "Invalid value for '--stateful': task 'adding' draws independent sequences"),
    (["--stateful", "--epochs", "1", "--steps", "5"], "give --steps or --epochs, not both"),
])
def test_usage_errors(args, message):
    result = invoke("train", *args, "--no-progress")
    assert result.exit_code == 2 and message in result.output


def test_stream_state_needs_an_update_point():
    model = bptt.nn.SequenceModel("rnn", 1, 3, 1)
    trainer = bptt.TBPTT(model, bptt.nn.mse_loss, bptt.optim.SGD(model.parameters()), k1=4)
    trainer.run(np.zeros((6, 2, 1), np.float32), np.zeros((6, 2, 1), np.float32))
    with pytest.raises(RuntimeError, match="2 steps were fed since the last update"):
        trainer.stream_state()


def test_stateful_language_model_matches_torch_chunk_and_detach(tmp_path):
    torch = pytest.importorskip("torch")
    config, task = prepare(TrainConfig(task="text", data=str(corpus(tmp_path)), seq_len=7,
                                       hidden=5, embed=3, batch=3, stateful=True, steps=1,
                                       clip=0.5, lr=0.01))
    bptt.seed(0)
    ours = bptt.nn.LanguageModel("lstm", task.output_size, 3, 5, dtype=np.float64)
    walk = streams.StreamTraining(task, config)
    trainer = bptt.TBPTT(ours, tasks.loss_function(task), bptt.optim.Adam(ours.parameters(), lr=0.01),
                         config.k1, config.k2, clip_norm=config.clip, window_loss=walk.window_loss)
    modules = torch.nn.ModuleDict({"embedding": torch.nn.Embedding(task.output_size, 3),
                                   "rnn": torch.nn.LSTM(3, 5),
                                   "head": torch.nn.Linear(5, task.output_size)})
    modules.double().load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    opt = torch.optim.Adam(modules.parameters(), lr=0.01)
    xs, ys = torch.from_numpy(walk.x), torch.from_numpy(walk.y)
    state = None
    for a in range(0, 7 * 12, 7):            # PyTorch's word_language_model loop: BPTT(7; 7)
        ours_loss = [r["loss"] for r in walk.updates(trainer)][0]
        y, state = modules["rnn"](modules["embedding"](xs[a:a + 7]),
                                  None if state is None else tuple(s.detach() for s in state))
        logits = modules["head"](y)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, task.output_size),
                                                 ys[a:a + 7].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(modules.parameters(), 0.5)
        opt.step()
        assert ours_loss == pytest.approx(loss.item(), rel=1e-10)
    theirs = modules.state_dict()
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.data, theirs[name].numpy(), rtol=1e-9, atol=1e-11, err_msg=name)
