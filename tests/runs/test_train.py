"""``bptt train`` and ``bptt evaluate``: options, the run directory, checkpoints, resume, divergence."""

import csv
import json
import os
import re

import numpy as np
import pytest
from click.testing import CliRunner

import bptt
from bptt.runs import config as configuration
from bptt.runs import train as training
from bptt.cli import ProgressBar, main
from bptt.errors import ConfigError
from bptt.io import load_npz
from bptt.runs.build import predict
from bptt.runs.rundir import METRIC_COLUMNS, CorruptRun, RunMismatch
from bptt.runs.train import TrainConfig, TrainingDiverged

TINY = dict(task="adding", seq_len=6, hidden=4, batch=4, steps=6, val_every=3)
TINY_ARGS = ["--task", "adding", "--seq-len", "6", "--hidden", "4", "--batch", "4", "--steps", "6",
             "--val-every", "3", "--no-progress"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def metrics_rows(run_dir):
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        return list(csv.reader(f))


def without_seconds(rows):
    at = METRIC_COLUMNS.index("seconds")
    return [r[:at] + r[at + 1:] for r in rows]


def model_arrays(run_dir):
    return {k: v for k, v in load_npz(os.path.join(run_dir, "checkpoint.npz")).items()
            if k.startswith(("model.", "optim.", "rng."))}


def assert_same_arrays(a, b):
    # resumed or replayed runs against an uninterrupted one: the same operations in the same
    # order, so the same bits
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# -- usage errors -----------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--task", "nope"], r"Invalid value for '--task': unknown task 'nope'; choose from .*adding"),
    (["--cell", "nope"], r"Invalid value for '--cell': 'nope' is not one of 'rnn', 'lstm', 'gru'"),
    (["--k1", "5", "--k2", "3"], r"Invalid value for '--k2': k2 = 3 is shorter than k1 = 5; need k2 >= k1"),
    (["--k1", "60"], r"Invalid value for '--k1': k1 = 60 exceeds the sequence length 50; need 1 <= k1 <= T"),
    (["--hidden", "-3"], r"Invalid value for '--hidden': -3 is not in the range x>=1"),
    (["--batch", "0"], r"Invalid value for '--batch': 0 is not in the range x>=1"),
    (["--optimizer", "lbfgs"],
     r"'lbfgs' is not one of 'sgd', 'adam', 'rmsprop', 'adagrad', 'adadelta', 'adamw'"),
    (["--lr", "0"], r"Invalid value for '--lr': 0.0 is not in the range x>0"),
    (["--data", "no/such.csv"], r"Invalid value for '--data': File 'no/such.csv' does not exist"),
    (["--target", "y"], r"Invalid value for '--data': --column and --target select columns of a CSV"),
    (["--data", __file__], r"Invalid value for '--target': name the column of .* to forecast"),
    (["--cell", "lstm", "--nonlinearity", "relu"], r"'relu' applies to --cell rnn"),
    (["--cell", "lstm:forget_bia=1"],
     r"Invalid value for '--cell': unknown key 'forget_bia' for lstm in 'lstm:forget_bia=1'; allowed keys: forget_bias"),
    (["--cell", "gru:forget_bias=1"], r"allowed keys: none \(gru has no options\)"),
    (["--cell", "indrnn:recurrent_max=-1"], r"'--cell': indrnn: recurrent_max .*in 'indrnn:recurrent_max=-1'"),
    (["--cell", "rnn:nonlinearity=sigmoid"], r"nonlinearity='sigmoid' in 'rnn:nonlinearity=sigmoid'; choose from tanh, relu"),
    (["--cell", "rnn,lstm"], r"'rnn,lstm' names 2 cells; give one"),
    (["--cell", "lstm:forget_bias=0", "--forget-bias", "1"], r"'--forget-bias': forget_bias is also given with the cell"),
])
def test_usage_errors_exit_2_and_say_what_is_allowed(args, message, tmp_path):
    result = invoke("train", "--out", tmp_path / "run", *args)
    assert result.exit_code == 2, result.output
    assert re.search(message, " ".join(result.output.split())), result.output
    assert not (tmp_path / "run").exists()


def test_malformed_csv_is_a_usage_error_naming_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("y\n1.0\n2.0\nnot-a-number\n3.0\n")
    result = invoke("train", "--data", bad, "--target", "y", "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--data': " in result.output
    assert "bad.csv:4: column 'y': cannot read 'not-a-number' as a number" in result.output


def test_resume_takes_only_steps(tmp_path):
    result = invoke("train", "--resume", tmp_path, "--hidden", "8")
    assert result.exit_code == 2
    assert "only --steps and --threads may be given with it, not --hidden" in result.output


def test_resume_needs_a_run_directory(tmp_path):
    result = invoke("train", "--resume", tmp_path)
    assert result.exit_code == 2
    assert "Invalid value for '--resume': " in result.output and "not a run directory" in result.output


def test_fresh_run_refuses_an_existing_run(tmp_path):
    assert invoke("train", *TINY_ARGS, "--out", tmp_path / "run").exit_code == 0
    result = invoke("train", *TINY_ARGS, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "already holds a run; continue it with --resume" in result.output


def test_config_resolution():
    c, task = configuration.prepare(TrainConfig(seq_len=20))
    assert (c.seq_len, c.k1, c.k2, c.lr) == (20, 20, 20, configuration.OPTIMIZERS["adam"][1])
    assert task.name == "adding" and task.seq_len == 20
    c, _ = configuration.prepare(TrainConfig(seq_len=20, k1=5, optimizer="sgd"))
    assert (c.k1, c.k2, c.lr) == (5, 5, 0.1)
    c, task = configuration.prepare(TrainConfig(task="copy"))     # the task's own default length
    assert c.seq_len == task.seq_len == 120 == c.k1
    with pytest.raises(ConfigError, match=r"--clip: need a gradient-norm limit >= 0"):
        configuration.prepare(TrainConfig(clip=-1))
    with pytest.raises(ConfigError, match=r"--steps: need a positive integer, got 0"):
        configuration.prepare(TrainConfig(steps=0))
    with pytest.raises(ConfigError, match=r"--seq-len: task 'adding': seq_len must be"):
        configuration.prepare(TrainConfig(seq_len=1))


# -- a tiny run ----------------------------------------------------------------------------------
def test_tiny_run_writes_every_file(tmp_path):
    out = tmp_path / "run"
    result = invoke("train", *TINY_ARGS, "--out", out)
    assert result.exit_code == 0, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("adding T=6 lstm: test mse ") and "(baselines: constant 1.0 0.1" in line
    assert "6 steps" in line and str(out) in line

    for name in ("config.json", "metrics.csv", "checkpoint.npz", "result.json", "loss.png",
                 "gradflow.png", "gradflow.csv"):
        assert (out / name).stat().st_size > 0, name
    for name in ("loss.png", "gradflow.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "predictions.png").exists()      # only for forecasting tasks

    config = json.loads((out / "config.json").read_text())
    assert config["k1"] == config["k2"] == 6 and config["lr"] == 1e-2 and config["cell"] == "lstm"

    rows = metrics_rows(out)
    assert tuple(rows[0]) == METRIC_COLUMNS
    assert [int(r[0]) for r in rows[1:]] == [1, 2, 3, 4, 5, 6]
    assert [r[2] != "" for r in rows[1:]] == [False, False, True, False, False, True]
    for r in rows[1:]:
        assert np.isfinite(float(r[1])) and float(r[3]) > 0 and r[4] in ("0", "1")
        assert float(r[5]) == 1e-2
    seconds = [float(r[6]) for r in rows[1:]]
    assert seconds == sorted(seconds) and seconds[0] > 0

    stored = json.loads((out / "result.json").read_text())
    assert stored["task"] == "adding" and stored["metric"] == "mse" and stored["steps"] == 6
    assert set(stored["baselines"]) == {"constant 1.0"}
    assert abs(stored["baselines"]["constant 1.0"] - 1 / 6) < 0.02
    assert 1 <= stored["suggested_k2"] <= 6
    # the last validation is on the final model: the test metric is of the same order
    assert float(rows[-1][2]) == pytest.approx(stored["test"], rel=0.5)

    with open(out / "gradflow.csv", newline="") as f:
        curves = list(csv.reader(f))
    assert curves[0] == ["stage", "example"] + [f"t{t}" for t in range(6)]
    assert len(curves) == 1 + 2 * 32 and {r[0] for r in curves[1:]} == {"start (step 0)", "end (step 6)"}


def test_forecasting_run_draws_predictions(tmp_path):
    out = tmp_path / "run"
    result = invoke("train", "--task", "sine", "--seq-len", "8", "--hidden", "4", "--batch", "4",
                    "--steps", "3", "--cell", "gru", "--no-progress", "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "predictions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = json.loads((out / "result.json").read_text())
    assert stored["metric"] == "rmse" and "persistence" in stored["baselines"]
    # bptt train's forget-gate bias of 1 is the LSTM's only: a GRU has no options
    assert json.loads((out / "config.json").read_text())["cell_options"] == {}


def test_a_users_csv(tmp_path):
    t = np.arange(200)
    rows = "\n".join(f"{i},{np.sin(i / 5):.5f},{np.cos(i / 5):.5f}" for i in t)
    (tmp_path / "mine.csv").write_text("day,level,other\n" + rows + "\n")
    out = tmp_path / "run"
    result = invoke("train", "--data", tmp_path / "mine.csv", "--column", "level", "--column", "other",
                    "--target", "level", "--seq-len", "5", "--hidden", "4", "--batch", "4",
                    "--steps", "2", "--no-progress", "--out", out)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith("mine T=5 lstm: test mse")
    config = json.loads((out / "config.json").read_text())
    assert config["columns"] == ["level", "other"] and config["target"] == "level"
    assert (out / "predictions.png").exists()
    evaluated = json.loads(invoke("evaluate", out, "--json").output)
    assert evaluated == json.loads((out / "result.json").read_text())


def test_steps_count_updates_in_whole_sequences(tmp_path):
    # T=6, k1=2: three updates per sequence; 4 steps round up to two sequences = 6 updates.
    result = training.train(TrainConfig(**{**TINY, "k1": 2, "steps": 4}), tmp_path / "a")
    assert result["steps"] == 6 and (result["k1"], result["k2"]) == (2, 2)
    assert len(metrics_rows(tmp_path / "a")) == 1 + 6
    # k1=4 does not divide T=6: the remaining 2 steps make a second update (trainer.finish()).
    result = training.train(TrainConfig(**{**TINY, "k1": 4, "k2": 6, "steps": 2}), tmp_path / "b")
    assert result["steps"] == 2


def test_evaluate_json_matches_result_json(tmp_path):
    out = tmp_path / "run"
    assert invoke("train", *TINY_ARGS, "--out", out).exit_code == 0
    result = invoke("evaluate", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads((out / "result.json").read_text())
    line = invoke("evaluate", out).output
    assert line.startswith("adding T=6 lstm: test mse")


def test_evaluate_needs_a_run_directory(tmp_path):
    result = invoke("evaluate", tmp_path)
    assert result.exit_code == 2 and "not a run directory (no config.json)" in result.output


# -- cell options: one grammar ------------------------------------------------------------------
def bias_hh(run_dir):
    return load_npz(os.path.join(run_dir, "checkpoint.npz"))["model.rnn.bias_hh_l0"]


def test_cell_options_are_written_after_the_cell(tmp_path):
    runs = {name: tmp_path / name for name in ("default", "zero", "indrnn")}
    for name, cell in (("default", "lstm"), ("zero", "lstm:forget_bias=0"),
                       ("indrnn", "indrnn:nonlinearity=tanh,recurrent_max=2")):
        result = invoke("train", *TINY_ARGS, "--steps", "1", "--cell", cell, "--out", runs[name])
        assert result.exit_code == 0, result.output
    stored = {name: json.loads((run / "config.json").read_text()) for name, run in runs.items()}
    # bptt train's LSTM starts with forget-gate bias 1 unless the command says otherwise
    assert stored["default"]["cell_options"] == {"forget_bias": 1.0}
    assert stored["zero"]["cell"] == "lstm" and stored["zero"]["cell_options"] == {"forget_bias": 0.0}
    assert stored["indrnn"]["cell"] == "indrnn"
    assert stored["indrnn"]["cell_options"] == {"nonlinearity": "tanh", "recurrent_max": 2.0}
    assert bptt.load_run(runs["indrnn"]).config.cell_options["recurrent_max"] == 2.0


def test_the_old_cell_spellings_still_work_and_say_they_are_deprecated(tmp_path):
    old = invoke("train", *TINY_ARGS, "--forget-bias", "0", "--out", tmp_path / "old")
    new = invoke("train", *TINY_ARGS, "--cell", "lstm:forget_bias=0", "--out", tmp_path / "new")
    assert old.exit_code == new.exit_code == 0, old.output
    assert "The option 'forget_bias' is deprecated. write --cell lstm:forget_bias=VALUE" in old.output
    assert "deprecated" not in new.output
    assert_same_arrays(model_arrays(tmp_path / "old"), model_arrays(tmp_path / "new"))
    relu = invoke("train", *TINY_ARGS, "--steps", "1", "--cell", "rnn", "--nonlinearity", "relu",
                  "--out", tmp_path / "relu")
    assert relu.exit_code == 0 and "The option 'nonlinearity' is deprecated" in relu.output
    assert json.loads((tmp_path / "relu" / "config.json").read_text())["cell_options"] == {"nonlinearity": "relu"}
    with pytest.warns(DeprecationWarning, match=r"forget_bias and .nonlinearity .* are deprecated"):
        c, _ = configuration.prepare(TrainConfig(forget_bias=2.0))
    assert (c.cell_options, c.forget_bias) == ({"forget_bias": 2.0}, None)


def test_a_run_of_bptt_0_1_still_evaluates(tmp_path):
    # 0.1 stored the cell options as the keys forget_bias (for every cell) and nonlinearity
    out = tmp_path / "run"
    training.train(TrainConfig(**{**TINY, "steps": 3}), out, echo=lambda m: None)
    before = json.loads((out / "result.json").read_text())
    config = json.loads((out / "config.json").read_text())
    del config["cell_options"]
    config.update(forget_bias=1.0, nonlinearity=None)
    (out / "config.json").write_text(json.dumps(config))
    arrays = load_npz(out / "checkpoint.npz")
    meta = json.loads(str(arrays["meta"]))
    del meta["config"]["cell_options"]
    meta["config"].update(forget_bias=1.0, nonlinearity=None)
    arrays["meta"] = np.asarray(json.dumps(meta))
    np.savez(out / "checkpoint.npz", **arrays)
    assert training.evaluate(out) == before
    assert training.resume(out, steps=6, echo=lambda m: None)["steps"] == 6


# -- load_run ---------------------------------------------------------------------------------------
def test_load_run_gives_the_model_the_run_scored(tmp_path):
    result = training.train(TrainConfig(**TINY), tmp_path / "run", echo=lambda m: None)
    run = bptt.load_run(tmp_path / "run")
    assert (run.step, run.config.hidden, run.config.cell, run.task.name) == (6, 4, "lstm", "adding")
    x, y, mask = run.task.test_set()
    assert run.task.score(predict(run.model, x), y, mask) == result["test"] == run.score("test")
    rows = metrics_rows(tmp_path / "run")
    assert run.score("validation") == float(rows[-1][2])


@pytest.mark.parametrize("damage, error, fragment", [
    ("not a run", ConfigError, "not a run directory (no config.json)"),
    ("no checkpoint", ConfigError, "holds no checkpoint.npz to start from"),
    ("truncated checkpoint", CorruptRun, "checkpoint.npz"),
    ("another model", RunMismatch, "was written by a run with hidden=4, but config.json says hidden=8"),
])
def test_load_run_refuses_what_evaluate_refuses(tmp_path, damage, error, fragment):
    run = tmp_path / "run"
    training.train(TrainConfig(**{**TINY, "steps": 2}), run, echo=lambda m: None)
    if damage == "not a run":
        run = tmp_path / "empty"
        run.mkdir()
    elif damage == "no checkpoint":
        (run / "checkpoint.npz").unlink()
    elif damage == "truncated checkpoint":
        (run / "checkpoint.npz").write_bytes((run / "checkpoint.npz").read_bytes()[:100])
    else:
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**config, "hidden": 8}))
    with pytest.raises(error, match=re.escape(fragment)) as raised:
        bptt.load_run(run)
    result = invoke("evaluate", run)
    assert result.exit_code == (2 if error is ConfigError else 1), result.output
    said = raised.value.message if error is ConfigError else str(raised.value)
    assert said in " ".join(result.output.split())


# -- resume, interrupt, divergence ---------------------------------------------------------------
def test_resume_equals_an_uninterrupted_run(tmp_path):
    whole = training.train(TrainConfig(**TINY), tmp_path / "whole")
    training.train(TrainConfig(**{**TINY, "steps": 3}), tmp_path / "split")
    resumed = training.resume(tmp_path / "split", steps=6)
    whole_rows = without_seconds(metrics_rows(tmp_path / "whole"))
    assert without_seconds(metrics_rows(tmp_path / "split")) == whole_rows
    assert_same_arrays(model_arrays(tmp_path / "split"), model_arrays(tmp_path / "whole"))
    assert resumed["test"] == whole["test"] and resumed["steps"] == 6


def test_resume_through_the_cli_keeps_the_stored_target(tmp_path):
    out = tmp_path / "run"
    training.train(TrainConfig(**{**TINY, "steps": 3}), out)
    result = invoke("train", "--resume", out, "--steps", "6", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output and "6 steps" in result.output.splitlines()[-1]
    # with no --steps, a finished run has nothing left to do and reports the same test value
    again = invoke("train", "--resume", out, "--no-progress")
    assert again.exit_code == 0
    first, second = (r.output.splitlines()[-1].split("; ")[0] for r in (result, again))
    assert first == second


def test_ctrl_c_saves_the_last_sequence_boundary_and_resumes_exactly(tmp_path):
    def interrupt(step, record):
        if step == 5:
            raise KeyboardInterrupt

    config = TrainConfig(**{**TINY, "val_every": 100})
    messages = []
    with pytest.raises(KeyboardInterrupt):
        training.train(config, tmp_path / "cut", on_update=interrupt, echo=messages.append)
    assert "interrupted: saved the state after step 4" in messages[0]
    assert int(load_npz(tmp_path / "cut" / "checkpoint.npz")["step"]) == 4
    training.resume(tmp_path / "cut")
    training.train(config, tmp_path / "whole")
    whole_rows = without_seconds(metrics_rows(tmp_path / "whole"))
    assert without_seconds(metrics_rows(tmp_path / "cut")) == whole_rows
    assert_same_arrays(model_arrays(tmp_path / "cut"), model_arrays(tmp_path / "whole"))


def test_ctrl_c_in_the_cli_exits_130_with_the_resume_command(tmp_path, monkeypatch):
    def interrupted(self):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(training._Run, "updates", interrupted)
    result = invoke("train", *TINY_ARGS, "--out", tmp_path / "run")
    assert result.exit_code == 130
    assert f"continue with: bptt train --resume {tmp_path / 'run'}" in result.output
    assert int(load_npz(tmp_path / "run" / "checkpoint.npz")["step"]) == 0


def poison_batch(monkeypatch, at_call):
    """Make the task's ``at_call``-th training batch carry a target so large that the loss overflows."""
    build = configuration.build_task

    def build_poisoned(config):
        task = build(config)
        draw, calls = task.batch, []

        def batch(size, rng=None):
            x, y, mask = draw(size, rng)
            calls.append(1)
            if len(calls) == at_call:
                y = y.copy()
                y[-1, 0, 0] = 1e30
            return x, y, mask

        task.batch = batch
        return task

    monkeypatch.setattr(configuration, "build_task", build_poisoned)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_nan_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    good = training.train(TrainConfig(**{**TINY, "steps": 2}), tmp_path / "good")
    poison_batch(monkeypatch, at_call=3)
    result = invoke("train", *TINY_ARGS, "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert "training diverged at step 3: loss inf" in result.output
    assert "keeps the last good state, after step 2" in result.output
    saved = load_npz(tmp_path / "run" / "checkpoint.npz")
    assert int(saved["step"]) == 2
    assert_same_arrays(model_arrays(tmp_path / "run"), model_arrays(tmp_path / "good"))
    assert all(np.isfinite(v).all() for k, v in saved.items() if k.startswith("model."))
    rows = metrics_rows(tmp_path / "run")
    assert rows[-1][0] == "3" and rows[-1][1] == "inf"
    # the kept checkpoint evaluates like the run that stopped there
    monkeypatch.undo()
    assert training.evaluate(tmp_path / "run")["test"] == good["test"]


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_diverged_is_raised_by_the_library(tmp_path, monkeypatch):
    poison_batch(monkeypatch, at_call=1)
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 1: loss inf.*after step 0"):
        training.train(TrainConfig(**TINY), tmp_path / "run")


# -- the main job ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_default_run_solves_the_adding_problem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "--no-progress")
    assert result.exit_code == 0, result.output
    stored = json.loads((tmp_path / "runs" / "adding-lstm" / "result.json").read_text())
    assert stored["test"] < 0.01 < stored["baselines"]["constant 1.0"]


def test_progress_goes_through_the_object_the_caller_passes(tmp_path):
    seen = []

    class Recorder:
        def __init__(self, total):
            seen.append(("total", total))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            seen.append(("closed",))

        def update(self, steps, loss):
            seen.append((steps, round(loss, 6) > 0))

    training.train(TrainConfig(**{**TINY, "k1": 3}), tmp_path / "a", progress=Recorder, echo=lambda m: None)
    assert seen == [("total", 6), (2, True), (2, True), (2, True), ("closed",)]
    # the command line's click bar (hidden when stderr is not a terminal)
    result = training.train(TrainConfig(**{**TINY, "steps": 2}), tmp_path / "b", progress=ProgressBar,
                            echo=lambda m: None)
    assert result["steps"] == 2
    with pytest.raises(TypeError, match=r"progress must be None or a callable progress\(total\), got True"):
        training.train(TrainConfig(**TINY), tmp_path / "c", progress=True, echo=lambda m: None)
    assert not (tmp_path / "c").exists()


def test_train_does_not_import_click():
    import subprocess
    import sys

    code = ("import sys, bptt.runs.train, bptt.runs.sweep, bptt.runs.report, bptt.runs.sample, "
            "bptt.runs.experiments.gradflow, bptt.runs.experiments.credit, "
            "bptt.runs.experiments.fixedpoint; print('click' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(training.__file__))))
    assert out.stdout.strip() == "False", out.stderr


def test_checkpointed_and_adaptive_runs(tmp_path):
    """--checkpoint recomputes instead of storing and gives the same run; --k2 auto trains
    with the window TBPTT picks (stored as 'auto'); bad values are usage errors."""
    base = [*TINY_ARGS, "--k1", "3"]
    plain = invoke("train", *base, "--out", tmp_path / "plain")
    checked = invoke("train", *base, "--checkpoint", "2", "--out", tmp_path / "checked")
    assert plain.exit_code == checked.exit_code == 0, checked.output
    a, b = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("plain", "checked"))
    assert b["test"] == pytest.approx(a["test"], rel=1e-4)
    auto = invoke("train", *base, "--k2", "auto", "--max-bias", "0.2", "--out", tmp_path / "auto")
    assert auto.exit_code == 0, auto.output
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["k2"] == "auto"
    for args, message in ((["--checkpoint", "abc"], "checkpoint must be 'sqrt', a number of stored states"),
                          (["--k2", "auto", "--max-bias", "1.5"], "need a relative bias bound in (0, 1)"),
                          (["--k2", "auto", "--checkpoint", "sqrt"], "--k2 auto runs one step at a time"),
                          (["--k2", "0"], "0 is not a positive integer")):
        result = invoke("train", *base, *args, "--out", tmp_path / "bad")
        assert result.exit_code == 2 and message in result.output, (args, result.output)
