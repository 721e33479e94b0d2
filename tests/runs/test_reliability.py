"""Nothing lost, nothing silent: run directories and the CLI under faults and bad input.

Fault injection kills real subprocesses (SIGKILL, as ``kill -9``) at write points of a run: the
metrics log's rows, the fsync and the rename of every atomic write.  Which point is drawn from a
seeded generator, so a failure reproduces; the default run kills a few, ``-m slow`` many more.
"""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

import bptt
from bptt.runs import load, rundir
from bptt.runs import train as training
from bptt.cli import main
from bptt.errors import ConfigError
from bptt.io import load_npz, save_json
from bptt.runs.build import predict
from bptt.runs.config import memory_estimate, prepare
from bptt.runs.rundir import METRIC_COLUMNS
from bptt.runs.train import TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(bptt.__file__)))
TINY = dict(task="adding", seq_len=6, hidden=4, batch=4, steps=6, val_every=3)
TINY_ARGS = ["--task", "adding", "--seq-len", "6", "--hidden", "4", "--batch", "4", "--val-every", "3",
             "--no-progress"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean(result, code, *fragments):
    """Exit ``code`` with one message holding every fragment, and no traceback."""
    text = " ".join(result.output.split())
    assert result.exit_code == code, result.output
    assert result.exception is None if code == 0 else isinstance(result.exception, SystemExit), \
        result.exception
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert re.search(fragment, text), (fragment, result.output)


def steps_logged(run_dir):
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == METRIC_COLUMNS
    return [int(r[0]) for r in rows[1:] if len(r) == len(METRIC_COLUMNS)]


def rows_without_seconds(run_dir):
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        return [r[:-1] for r in csv.reader(f)]


def model_arrays(run_dir):
    return {k: v for k, v in load_npz(os.path.join(run_dir, "checkpoint.npz")).items()
            if k.startswith(("model.", "optim.", "rng."))}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("template") / "run"
    training.train(TrainConfig(**TINY), out, echo=lambda m: None)
    return out


@pytest.fixture
def run(finished, tmp_path):
    """A copy of a finished tiny run (6 steps, checkpoints at 3 and 6)."""
    return shutil.copytree(finished, tmp_path / "run")


# -- fault injection: kill -9 at write points ---------------------------------------------------
# The child counts write events (a batch of metrics rows, an fsync, a rename) and SIGKILLs itself
# at event KILL_AT: before the event, or (for the rows) after writing half of them.
_CHILD = r"""
import os, signal, sys
import bptt.io, bptt.runs.rundir
kill_at, count = int(sys.argv[1]), [0]

def event():
    count[0] += 1
    return count[0] == kill_at

def die():
    os.kill(os.getpid(), signal.SIGKILL)

replace, fsync, write_rows = os.replace, os.fsync, bptt.runs.rundir.MetricsLog.write_rows

def replace_or_die(*a, **k):
    if event(): die()
    return replace(*a, **k)

def fsync_or_die(*a, **k):
    if event(): die()
    return fsync(*a, **k)

def write_rows_or_die(self, rows):
    if event():
        write_rows(self, rows[: len(rows) // 2])
        self.file.write("7,0.1")          # and a row cut short
        self.file.flush()
        die()
    return write_rows(self, rows)

os.replace, os.fsync, bptt.runs.rundir.MetricsLog.write_rows = replace_or_die, fsync_or_die, write_rows_or_die
from bptt.cli import main
main(sys.argv[2:])
"""


def _child(kill_at, args):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", _CHILD, str(kill_at), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


def _check_history(out):
    """The invariant: the log holds every step up to the checkpoint's."""
    if not os.path.exists(os.path.join(out, "checkpoint.npz")):
        return 0
    step = int(load_npz(os.path.join(out, "checkpoint.npz"))["step"])
    logged = steps_logged(out)
    assert logged[:step] == list(range(1, step + 1)), (step, logged)
    return step


def _kill_and_resume(tmp_path, seed, kills, steps):
    reference = tmp_path / "whole"
    training.train(TrainConfig(**{**TINY, "steps": steps, "val_every": 2}), reference, echo=lambda m: None)
    out = tmp_path / "killed"
    rng = np.random.default_rng(seed)
    fresh = ["train", *TINY_ARGS, "--val-every", "2", "--steps", steps, "--out", out]
    killed = 0
    for _ in range(kills):
        started = os.path.exists(out / "checkpoint.npz")
        args = ["train", "--resume", out] if started else fresh
        # about two write events a step: each child gets a few steps further before its kill
        done = _child(int(rng.integers(1, 16)), args)
        assert "Traceback" not in done.stderr, done.stderr
        if done.returncode == -signal.SIGKILL:
            killed += 1
        else:
            assert done.returncode == 0, done.stderr
        _check_history(out)
    # whatever was killed when, finishing the run gives the uninterrupted run's history and state
    if os.path.exists(out / "checkpoint.npz"):
        training.resume(out, echo=lambda m: None)
    else:
        training.train(TrainConfig(**{**TINY, "steps": steps, "val_every": 2}), out, echo=lambda m: None)
    # resumed, whatever the kill: the uninterrupted run's operations in its order, the same bits
    assert rows_without_seconds(out) == rows_without_seconds(reference)
    a, b = model_arrays(out), model_arrays(reference)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]
    return killed


def test_kill_9_at_write_points_never_shortens_the_history(tmp_path):
    assert _kill_and_resume(tmp_path, seed=0, kills=3, steps=12) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_kill_9_at_write_points_many(tmp_path, seed):
    assert _kill_and_resume(tmp_path, seed=seed, kills=10, steps=60) >= 8


def test_the_resume_rewrite_is_atomic(run, monkeypatch):
    # rows past the checkpoint (an interrupted run's) go through a temporary file and a rename;
    # a failure in between leaves the old, longer log, never a truncated one
    with open(run / "metrics.csv", "a") as f:
        f.write("7,0.1,,0.5,0,0.01,1.0\n8,0.1")
    before = (run / "metrics.csv").read_text()

    def broken(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        rundir.MetricsLog(str(run / "metrics.csv"), keep_through_step=6)
    assert (run / "metrics.csv").read_text() == before
    monkeypatch.undo()
    rundir.MetricsLog(str(run / "metrics.csv"), keep_through_step=6).close()
    assert steps_logged(run) == [1, 2, 3, 4, 5, 6]


# -- the lock ------------------------------------------------------------------------------------
def _holder(out, steps=100000):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "bptt", "train", *TINY_ARGS, "--steps", str(steps),
                             "--val-every", "1", "--out", out], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (os.path.exists(out / "checkpoint.npz") and os.path.getsize(out / ".lock")):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    return proc


def test_a_second_process_is_refused_naming_the_holder_and_kill_9_frees_it(tmp_path):
    out = tmp_path / "run"
    proc = _holder(out)
    try:
        result = invoke("train", "--resume", out, "--no-progress")
        assert_clean(result, 1, f"{re.escape(str(out))} is in use by pid {proc.pid} on ",
                     r"'bptt train --task adding", "wait for it to finish")
        assert_clean(invoke("train", *TINY_ARGS, "--out", out), 2, "already holds a run")
        assert_clean(invoke("evaluate", out), 0)           # reading needs no lock
    finally:
        proc.kill()
        proc.wait()
    # right after kill -9 (a sweep retrying elsewhere), resume works and reports the dead holder
    messages = []
    result = training.resume(out, steps=_check_history(out) + 2, echo=messages.append)
    assert f"note: pid {proc.pid} on " in messages[0] and "stopped without releasing" in messages[0]
    assert result["steps"] >= 2 and _check_history(out) == result["steps"]
    assert (out / ".lock").read_text() == ""                # released, and says so


def test_lock_is_released_on_errors(run):
    with pytest.raises(ConfigError):
        training.resume(run, steps=3)
    training.resume(run, steps=9, echo=lambda m: None)      # not locked out by the failure


# -- run directories: what is a run, and what may be overwritten -----------------------------------
@pytest.mark.parametrize("name", ["metrics.csv", "config.json", "notes.txt"])
def test_out_with_other_files_is_refused_and_left_alone(tmp_path, name):
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_text("my own data\n")
    result = invoke("train", *TINY_ARGS, "--steps", 2, "--out", out)
    assert_clean(result, 2, "Invalid value for '--out'", "is a folder that is not a run and not empty",
                 name)
    assert os.listdir(out) == [name] and (out / name).read_text() == "my own data\n"


def test_leftovers_of_a_run_killed_before_its_checkpoint_are_not_in_the_way(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("")
    (out / ".tmp-abc123").write_bytes(b"half a checkpoint")
    training.train(TrainConfig(**{**TINY, "steps": 2}), out, echo=lambda m: None)
    assert not (out / ".tmp-abc123").exists()


def test_a_run_killed_right_after_its_first_checkpoint_resumes(tmp_path):
    # the first checkpoint is written before config.json and metrics.csv, and records the
    # configuration: a kill in between leaves a run that resumes as if nothing had happened
    out = tmp_path / "cut"
    out.mkdir()
    first = training._Run(*prepare(TrainConfig(**TINY)), str(out))   # as train() builds it
    first.gradflow_start = first.gradient_curves()
    np.savez(out / "checkpoint.npz", **first.snapshot())
    messages = []
    training.resume(out, echo=messages.append)
    assert "lacked config.json (a run killed as it started); restored it" in messages[0]
    training.train(TrainConfig(**TINY), tmp_path / "whole", echo=lambda m: None)
    assert rows_without_seconds(out) == rows_without_seconds(tmp_path / "whole")
    a, b = model_arrays(out), model_arrays(tmp_path / "whole")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in b)


def test_temporaries_of_interrupted_writes_are_removed_on_resume(run):
    (run / ".tmp-x1").write_bytes(b"")
    (run / ".tmp-x2").write_bytes(b"partial")
    training.resume(run, steps=9, echo=lambda m: None)
    assert not [n for n in os.listdir(run) if n.startswith(".tmp-")]


def test_impossible_out_is_a_usage_error(tmp_path):
    (tmp_path / "file").write_text("x")
    assert_clean(invoke("train", *TINY_ARGS, "--out", tmp_path / "file" / "run"), 2,
                 "Invalid value for '--out'", "cannot create the run directory")
    assert_clean(invoke("train", *TINY_ARGS, "--out", tmp_path / "file"), 2, "is a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_out_is_a_usage_error(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    assert_clean(invoke("train", *TINY_ARGS, "--out", locked / "run"), 2, "Permission denied")


def test_files_get_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        training.train(TrainConfig(**{**TINY, "steps": 2}), tmp_path / "run", echo=lambda m: None)
    finally:
        os.umask(old)
    for name in ("checkpoint.npz", "config.json", "metrics.csv", "result.json"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o644, name


# -- corrupt files of every kind -----------------------------------------------------------------
def _corrupt_checkpoint(path, kind):
    data = path.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"\x00\x01 not a zip at all" * 50)
    elif kind == "flipped":
        path.write_bytes(data[:200] + bytes(b ^ 0xFF for b in data[200:400]) + data[400:])
    elif kind == "foreign zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", "hello")
    elif kind == "foreign npz":
        np.savez(path, weights=np.ones(3))
    elif kind == "pickled":
        np.savez(path, step=np.array([{"a": 1}], dtype=object), meta=np.asarray("{}"))
    elif kind == "other model":
        arrays = load_npz(path)
        arrays["model.head.weight"] = np.zeros((7, 7), dtype=np.float32)
        np.savez(path, **arrays)
    elif kind == "bad meta":
        arrays = load_npz(path)
        arrays["meta"] = np.asarray("{not json")
        np.savez(path, **arrays)


CHECKPOINT_DAMAGE = ["empty", "truncated", "garbage", "flipped", "foreign zip", "foreign npz", "pickled",
                     "other model", "bad meta"]


@pytest.mark.parametrize("kind", CHECKPOINT_DAMAGE)
@pytest.mark.parametrize("command", ["evaluate", "resume"])
def test_a_damaged_checkpoint_is_a_stated_error(run, kind, command):
    _corrupt_checkpoint(run / "checkpoint.npz", kind)
    args = ["evaluate", run] if command == "evaluate" else ["train", "--resume", run, "--steps", 9]
    before = (run / "metrics.csv").read_text()
    assert_clean(invoke(*args), 1, "checkpoint.npz")
    assert (run / "metrics.csv").read_text() == before


@pytest.mark.parametrize("text, code, fragment", [
    ("", 1, r"config.json: not valid JSON"),
    ("{\"hidden\": 4,", 1, r"config.json: not valid JSON"),
    ("[1, 2]", 1, r"config.json: holds a JSON list, not an object"),
    ("\xff\xfe", 1, r"config.json: not valid JSON"),
])
def test_an_unreadable_config_is_a_stated_error(run, text, code, fragment):
    (run / "config.json").write_text(text, encoding="latin-1")
    for args in (["evaluate", run], ["train", "--resume", run]):
        assert_clean(invoke(*args), code, fragment)


@pytest.mark.parametrize("key, value, fragment", [
    ("hidden", 0, r"config.json, key 'hidden'': need a positive integer, got 0"),
    ("hidden", "many", r"key 'hidden'': need a positive integer, got 'many'"),
    ("lr", "NaN", r"key 'lr'': need a learning rate > 0, got 'NaN' \(NaN and infinity are refused\)"),
    ("seed", -1, r"key 'seed'': need an integer >= 0, got -1"),
    ("cell", "mgu", r"key 'cell'': unknown value 'mgu'; choose from rnn, lstm, gru"),
    ("k2", 2, r"key 'k2'': k2 = 2 is shorter than k1 = 6"),
    ("task", "nope", r"key 'task'': unknown task 'nope'"),
    ("colour", "red", r"config.json'?: unknown key\(s\) 'colour'"),
    ("columns", "abc", r"key 'columns'': need a list of column names"),
])
def test_a_bad_value_in_config_json_names_the_file_and_key(run, key, value, fragment):
    config = json.loads((run / "config.json").read_text())
    config[key] = value
    save_json(run / "config.json", config)
    for args in (["evaluate", run], ["train", "--resume", run]):
        assert_clean(invoke(*args), 2, "Invalid value for '" + re.escape(str(run)), fragment)


def test_a_config_edited_to_another_model_is_refused(run):
    config = json.loads((run / "config.json").read_text())
    config["hidden"] = 8
    save_json(run / "config.json", config)
    for args in (["evaluate", run], ["train", "--resume", run]):
        assert_clean(invoke(*args), 1, r"checkpoint.npz was written by a run with hidden=4, but "
                                       r"config.json says hidden=8")


@pytest.mark.parametrize("damage, fragment", [
    ("delete", "metrics.csv: missing; the checkpoint is at step 6"),
    ("drop rows", "metrics.csv: the checkpoint is at step 6 but the log lacks steps 4-6"),
])
def test_a_history_shorter_than_the_checkpoint_is_reported(run, damage, fragment):
    path = run / "metrics.csv"
    if damage == "delete":
        path.unlink()
    else:
        path.write_text("\n".join(path.read_text().splitlines()[:4]) + "\n")
    assert_clean(invoke("train", "--resume", run, "--steps", 9), 1, fragment)


def test_resume_with_steps_already_made_exits_2_and_changes_nothing(run):
    before = {n: (run / n).read_bytes() for n in ("config.json", "metrics.csv", "checkpoint.npz")}
    for steps in (6, 3):
        assert_clean(invoke("train", "--resume", run, "--steps", steps), 2,
                     f"has made 6 updates already, so --steps {steps} leaves nothing to do")
    assert {n: (run / n).read_bytes() for n in before} == before


def test_not_a_run_is_a_usage_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden": 4}))
    assert_clean(invoke("evaluate", tmp_path), 2, "holds no checkpoint.npz")


# -- a run ties its files together ---------------------------------------------------------------
def _csv_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t = np.arange(120)
    (tmp_path / "mine.csv").write_text("y\n" + "\n".join(f"{np.sin(i / 4):.6f}" for i in t) + "\n")
    result = invoke("train", "--data", "mine.csv", "--target", "y", "--seq-len", 5, "--hidden", 3,
                    "--batch", 4, "--steps", 2, "--no-progress", "--out", "run")
    assert result.exit_code == 0, result.output
    return tmp_path / "run"


def test_data_is_stored_absolute_and_evaluates_from_anywhere(tmp_path, monkeypatch):
    out = _csv_run(tmp_path, monkeypatch)
    assert json.loads((out / "config.json").read_text())["data"] == str(tmp_path / "mine.csv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = invoke("evaluate", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads((out / "result.json").read_text())


def test_a_csv_changed_since_training_is_reported(tmp_path, monkeypatch):
    out = _csv_run(tmp_path, monkeypatch)
    with open(tmp_path / "mine.csv", "a") as f:
        f.write("0.5\n")
    for args in (["evaluate", out], ["train", "--resume", out, "--steps", 4]):
        assert_clean(invoke(*args), 1, "mine.csv changed since the run was trained on it",
                     r"sha256 [0-9a-f]{12}\.\.\. then")
    (tmp_path / "mine.csv").unlink()
    assert_clean(invoke("evaluate", out), 2, "key 'data'", "cannot read the file")


def test_a_task_whose_data_changed_is_reported(run, monkeypatch):
    monkeypatch.setattr(load, "task_fingerprint", lambda task: "0" * 64)
    assert_clean(invoke("evaluate", run), 1, "validation and test data differ from those")


def test_resume_restores_the_package_generator(tmp_path):
    # a model that draws from the package generator while training (dropout would): resuming
    # must continue its stream, not restart it; compare the stored states after equal work
    training.train(TrainConfig(**{**TINY, "steps": 3}), tmp_path / "split", echo=lambda m: None)
    bptt.seed(12345)                                          # the caller's own draws in between
    np.asarray(bptt.rng.generator().random(7))
    training.resume(tmp_path / "split", steps=6, echo=lambda m: None)
    training.train(TrainConfig(**TINY), tmp_path / "whole", echo=lambda m: None)
    split, whole = (load_npz(tmp_path / d / "checkpoint.npz") for d in ("split", "whole"))
    assert str(split["rng.package"]) == str(whole["rng.package"])
    assert str(split["rng.data"]) == str(whole["rng.data"])
    # and the restored state is the one the generator continues from
    arrays = load_npz(tmp_path / "split" / "checkpoint.npz")
    run = training._Run(*prepare(TrainConfig(**TINY)), str(tmp_path / "split"))
    arrays["meta"] = json.loads(str(arrays["meta"]))
    run.restore(arrays)
    assert bptt.rng.get_state() == json.loads(str(whole["rng.package"]))


# -- bad values: options, sizes, non-finite inputs ------------------------------------------------
@pytest.mark.parametrize("args, code, fragment", [
    (["--lr", "nan"], 2, r"Invalid value for '--lr': 'nan' is not a finite number"),
    (["--lr", "inf"], 2, r"Invalid value for '--lr': 'inf' is not a finite number"),
    (["--lr", "-1"], 2, r"Invalid value for '--lr': -1.0 is not in the range x>0"),
    (["--clip", "nan"], 2, r"Invalid value for '--clip': 'nan' is not a finite number"),
    (["--forget-bias", "nan"], 2, r"Invalid value for '--forget-bias': 'nan' is not a finite"),
    (["--forget-bias", "-inf"], 2, r"Invalid value for '--forget-bias': '-inf' is not a finite"),
    (["--forget-bias", "x"], 2, r"'x' is not a number"),
    (["--seed", "-1"], 2, r"Invalid value for '--seed': need an integer >= 0, got -1"),
    (["--hidden", "100000000"], 2, r"ask for about [0-9.e+]+ GiB of memory, more than this machine's"),
    (["--seq-len", "1000000000"], 2, r"ask for about [0-9.e+]+ GiB of memory"),
    (["--batch", "1000000000"], 2, r"ask for about [0-9.e+]+ GiB of memory"),
    (["--steps", "0"], 2, r"Invalid value for '--steps'"),
    (["--data", "."], 2, r"Invalid value for '--data'"),
])
def test_bad_train_options_are_usage_errors(tmp_path, args, code, fragment):
    assert_clean(invoke("train", *TINY_ARGS, "--out", tmp_path / "run", *args), code, fragment)
    assert not (tmp_path / "run").exists()


def test_a_binary_csv_is_a_usage_error(tmp_path):
    (tmp_path / "x.csv").write_bytes(b"y\n\xff\xfe\x00\n")
    assert_clean(invoke("train", "--data", tmp_path / "x.csv", "--target", "y", "--out", tmp_path / "r"),
                 2, r"x.csv: not UTF-8 text")


@pytest.mark.parametrize("args, code, fragment", [
    (["--lr", "nan"], 2, r"Invalid value for '--lr': 'nan' is not a finite number"),
    (["--forget-bias", "inf"], 2, r"Invalid value for '--forget-bias'"),
    (["--out", "/dev/null/fig.png"], 2, r"--out.*cannot write '/dev/null/fig.png': /dev/null is not a folder"),
])
def test_bad_gradflow_options_are_clean(tmp_path, args, code, fragment):
    result = invoke("gradflow", "--cells", "rnn", "--seq-len", 5, "--hidden", 3, "--seeds", 1,
                    "--batch-size", 2, *args)
    assert_clean(result, code, fragment)


def test_api_options_refuse_non_finite_values(tmp_path):
    for option, value in (("lr", float("nan")), ("clip", float("inf")), ("forget_bias", float("nan"))):
        with pytest.raises(ConfigError, match=f"--{option.replace('_', '-')}: need .*"
                                                       r"\(NaN and infinity are refused\)"):
            training.train(TrainConfig(**{**TINY, option: value}), tmp_path / "run")


@pytest.mark.parametrize("array, index, value, fragment", [
    ("x", (2, 1, 0), np.nan, r"x holds a non-finite value \(nan\) at index \(2, 1, 0\)"),
    ("x", (0, 0, 1), np.inf, r"x holds a non-finite value \(inf\) at index \(0, 0, 1\)"),
    ("y", (5, 3, 0), -np.inf, r"y holds a non-finite value \(-inf\) at index \(5, 3, 0\)"),
    ("mask", (4,), np.nan, r"mask holds a non-finite value \(nan\) at index \(4,\)"),
    ("mask", (1,), -0.5, r"mask weights must be >= 0, got -0.5 at index \(1,\)"),
])
def test_tbptt_refuses_non_finite_inputs_naming_the_array_and_index(array, index, value, fragment):
    task = bptt.data.tasks.get("adding", seq_len=6)
    model = bptt.nn.SequenceModel("rnn", 2, 3, 1)
    trainer = bptt.TBPTT(model, bptt.data.tasks.loss_function(task),
                         bptt.optim.SGD(model.parameters(), lr=0.1), 3)
    x, y, mask = task.batch(4, np.random.default_rng(0))
    arrays = {"x": x.copy(), "y": y.copy(), "mask": np.ones(6, dtype=np.float32)}
    arrays[array][index] = value
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match="TBPTT.run: " + fragment):
        trainer.run(arrays["x"], arrays["y"], arrays["mask"])
    assert all(np.array_equal(b, p.data) for b, p in zip(before, model.parameters()))


# -- memory ---------------------------------------------------------------------------------------
def test_scoring_in_batches_gives_the_same_predictions():
    task = bptt.data.tasks.get("adding", seq_len=12, test_size=70)
    model = bptt.nn.SequenceModel("lstm", 2, 5, 1)
    x, y, mask = task.test_set()
    whole = predict(model, x, batch_size=70)
    for size in (1, 16, 64):
        np.testing.assert_allclose(predict(model, x, batch_size=size), whole, rtol=1e-6, atol=1e-7)


def test_too_large_sizes_are_refused_before_allocating():
    config, task = prepare(TrainConfig(seq_len=50))
    assert 1e5 < memory_estimate(config, task) < 1e9
    with pytest.raises(ConfigError, match=r"hidden 2000000, .* ask for about .* GiB"):
        prepare(TrainConfig(hidden=2_000_000))
