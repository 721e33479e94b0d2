"""bptt sweep: specs, runs on a Dask LocalCluster of 2 workers, fault tolerance, aggregation."""

import json
import os
import signal
import threading
import time
from dataclasses import asdict

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("distributed")

from bptt.runs import report as sweep_report  # noqa: E402
from bptt.cli import main  # noqa: E402
from bptt.io import load_npz  # noqa: E402
from bptt.errors import ConfigError  # noqa: E402
from bptt.runs.sweep import SpecError, cluster, execute, load_spec, plan, run_sweep  # noqa: E402
from bptt.runs.rundir import read_metrics  # noqa: E402
from bptt.runs.train import TrainConfig, train  # noqa: E402

TINY = """\
seeds = [0, 1]
[fixed]
task = "adding"
seq_len = 10
hidden = 4
steps = 20
val_every = 10
[grid]
cell = ["lstm", "gru"]
"""


@pytest.fixture(scope="module")
def scheduler():
    """One LocalCluster of 2 single-threaded worker processes for the module's sweeps."""
    with cluster(workers=2) as client:
        yield client


def _spec(tmp_path, text, name="spec.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _sweep(scheduler, *args):
    result = CliRunner().invoke(main, ["sweep", *map(str, args), "--scheduler", scheduler.scheduler.address,
                                       "--no-progress"])
    return result


def _same_run(a, b):
    """Two run directories with the same numbers: every metric but the clock, every array of
    the checkpoint, the test score.

    Bit for bit, legitimately: the same run replayed, the same operations in the same order (the
    products of runs this small take one BLAS thread, in a worker and in ``bptt train`` alike)."""
    ma, mb = read_metrics(os.path.join(a, "metrics.csv")), read_metrics(os.path.join(b, "metrics.csv"))
    for column in ("step", "train_loss", "val_metric", "grad_norm", "clipped", "lr"):
        np.testing.assert_array_equal(ma[column], mb[column], err_msg=column)
    ca, cb = load_npz(os.path.join(a, "checkpoint.npz")), load_npz(os.path.join(b, "checkpoint.npz"))
    assert sorted(ca) == sorted(cb)
    for key in ca:
        if key != "seconds":
            np.testing.assert_array_equal(ca[key], cb[key], err_msg=key)
    ra, rb = (json.load(open(os.path.join(d, "result.json"))) for d in (a, b))
    assert ra["test"] == rb["test"] and ra["steps"] == rb["steps"]


# -- specs -------------------------------------------------------------------------------------
def test_spec_runs_names_and_options(tmp_path):
    spec = load_spec(_spec(tmp_path, TINY + "[[config]]\ncell = \"rnn\"\nk1 = 5\n"))
    assert [r.name for r in spec.runs] == ["cell=lstm,seed=0", "cell=lstm,seed=1", "cell=gru,seed=0",
                                           "cell=gru,seed=1", "cell=rnn,k1=5,seed=0", "cell=rnn,k1=5,seed=1"]
    assert spec.swept == ["cell", "k1"]
    run = spec.runs[-1]
    assert run.config == TrainConfig(task="adding", seq_len=10, hidden=4, steps=20, val_every=10,
                                     cell="rnn", k1=5, seed=1)
    assert run.label == "cell=rnn,k1=5"


def test_spec_data_paths_are_relative_to_the_spec(tmp_path):
    (tmp_path / "specs").mkdir()
    spec = load_spec(_spec(tmp_path / "specs", 'seeds = [1]\n[grid]\ndata = ["../load.csv"]\n'))
    (run,) = spec.runs
    assert run.name == "data=.._load.csv,seed=1"
    assert os.path.normpath(run.config.data) == str(tmp_path / "load.csv")


def test_cell_options_in_a_spec_and_the_sweep_run_again(tmp_path):
    # the cell grammar of bptt train, a table, and the deprecated key of 0.1, each recognised
    # in the run it left when the same spec runs again
    spec = load_spec(_spec(tmp_path, 'seeds = [0]\n[fixed]\ntask = "adding"\nseq_len = 4\nhidden = 3\n'
                                     'batch = 2\nsteps = 1\n[grid]\ncell = ["lstm:forget_bias=0", "indrnn"]\n'
                                     '[[config]]\ncell_options = {forget_bias = 2.0}\n'
                                     '[[config]]\nforget_bias = 3.0\n'))
    assert [r.name for r in spec.runs] == ["cell=lstm_forget_bias_0,seed=0", "cell=indrnn,seed=0",
                                           "cell_options=forget_bias_2,seed=0", "forget_bias=3,seed=0"]
    out = tmp_path / "sweep"
    with pytest.warns(DeprecationWarning):
        for run in spec.runs:
            assert execute(asdict(run.config), str(out / "runs" / run.name))["status"] == "done"
    stored = [json.load(open(out / "runs" / r.name / "config.json"))["cell_options"] for r in spec.runs]
    assert stored == [{"forget_bias": 0.0}, {"nonlinearity": "relu", "recurrent_max": None},
                      {"forget_bias": 2.0}, {"forget_bias": 3.0}]
    assert set(plan(spec, str(out)).values()) == {"finished"}
    # a spec whose [fixed] options changed under the same run names
    fixed = 'seeds = [0]\n[fixed]\ntask = "adding"\nseq_len = 4\nhidden = 3\nbatch = 2\nsteps = 1\n'
    before = load_spec(_spec(tmp_path, fixed + "cell_options = {forget_bias = 2.0}\n", "before.toml"))
    execute(asdict(before.runs[0].config), str(tmp_path / "fixed" / "runs" / before.runs[0].name))
    after = load_spec(_spec(tmp_path, fixed + "cell_options = {forget_bias = 1.0}\n", "after.toml"))
    with pytest.raises(ConfigError, match=r"holds a run with cell_options = \{'forget_bias': 2.0\}, but the "
                                          r"spec asks for \{'forget_bias': 1.0\}"):
        plan(after, str(tmp_path / "fixed"))


SPECS = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "scripts", "sweeps")


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(SPECS) if n.endswith(".toml")))
def test_shipped_specs_load_with_three_seeds_or_more(name):
    spec = load_spec(os.path.join(SPECS, name))
    assert len(spec.seeds) >= 3 and len(spec.runs) == len(spec.seeds) * len({r.label for r in spec.runs})


def test_truncation_spec_gives_every_run_1500_sequences():
    for run in load_spec(os.path.join(SPECS, "truncation.toml")).runs:
        assert run.config.steps == 1500 * -(-run.config.seq_len // run.config.k1)


@pytest.mark.parametrize("text, line, message", [
    (TINY.replace("hidden = 4", "hiden = 4"), 5, "key hiden: unknown option; did you mean 'hidden'?"),
    (TINY.replace("hidden = 4", "hidden = \"four\""), 5, "key hidden: must be an integer, got 'four'"),
    (TINY.replace("steps = 20", "steps = 2.5"), 6, "key steps: must be an integer, got 2.5"),
    (TINY.replace('cell = ["lstm", "gru"]', 'cell = ["lstm", 3]'), 9,
     "key cell: each value must be a string, got 3"),
    (TINY.replace('cell = ["lstm", "gru"]', "cell = []"), 9, "key cell: the list is empty, so the grid has no runs"),
    (TINY.replace('cell = ["lstm", "gru"]', ""), 8, "[grid] is empty"),
    (TINY.replace('cell = ["lstm", "gru"]', 'cell = "lstm"'), 9, "a grid option takes a list of values"),
    (TINY + '[[config]]\ncell = "lstm"\n', 10,
     "duplicate run: [[config]] number 1 gives the same options as run cell=lstm,seed=0"),
    (TINY + '[[config]]\nseed = 3\n', 11, "key seed: the seeds of a sweep are the top-level list"),
    (TINY.replace("seeds = [0, 1]", "seeds = [0, 0]"), 1, "key seeds: lists a seed twice"),
    ("steps = 10\n" + TINY, 1, "key steps: unknown key; put bptt train options such as 'steps' under"),
    (TINY.replace("[grid]", "[grid"), 8, "not valid TOML"),
])
def test_bad_specs_name_file_line_and_key(tmp_path, text, line, message):
    path = _spec(tmp_path, text)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert err.value.line == line
    assert str(err.value).startswith(f"{path}, line {line}")
    assert message in str(err.value)
    result = CliRunner().invoke(main, ["sweep", path, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and message in result.output and f"line {line}" in result.output


def test_modes_are_usage_errors(tmp_path):
    runner = CliRunner()
    assert "give a SPEC to run" in runner.invoke(main, ["sweep"]).output
    spec = _spec(tmp_path, TINY)
    result = runner.invoke(main, ["sweep", spec, "--report", str(tmp_path)])
    assert result.exit_code == 2 and "not SPEC and --report" in result.output
    assert "--ensemble goes with --best" in runner.invoke(main, ["sweep", spec, "--ensemble"]).output
    result = runner.invoke(main, ["sweep", "--report", str(tmp_path)])
    assert result.exit_code == 2 and f"{tmp_path}: not a sweep directory (no sweep.json)" in result.output


# -- running -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(scheduler, tmp_path_factory):
    """The tiny grid with two runs that fail (k2 < k1), swept once: (spec, out, CLI result)."""
    folder = tmp_path_factory.mktemp("tiny")
    spec, out = _spec(folder, TINY + '[[config]]\ncell = "rnn"\nk1 = 5\nk2 = 2\n'), folder / "sweep"
    return spec, out, _sweep(scheduler, spec, "--out", out)


def test_sweep_runs_every_run_and_records_failures(tiny):
    spec, out, result = tiny
    assert result.exit_code == 1, result.output       # the rnn runs fail: k2 < k1
    assert "6 runs: 0 finished (skipped), 0 to resume, 6 to start" in result.output
    assert "cell=rnn,k1=5,k2=2,seed=1: failed: --k2: k2 = 2 is shorter than k1 = 5" in result.output
    assert "cell=gru,seed=0: test mse " in result.output and "; 2 runs failed" in result.output
    rows = {r["run"]: r for r in sweep_report.collect(out)}
    failed = rows["cell=rnn,k1=5,k2=2,seed=0"]
    assert failed["status"] == "failed" and failed["error"].startswith("--k2: k2 = 2 is shorter than k1 = 5")
    done = rows["cell=lstm,seed=1"]
    assert done["status"] == "done" and done["hidden"] == 4 and done["k1"] == 10
    stored = json.load(open(out / "runs" / "cell=lstm,seed=1" / "result.json"))
    assert done["test"] == stored["test"]
    assert done["val"] == read_metrics(out / "runs" / "cell=lstm,seed=1" / "metrics.csv")["val_metric"][-1]
    assert "- cell=rnn,k1=5,k2=2,seed=0: --k2: k2 = 2" in (out / "summary.md").read_text()


@pytest.mark.parametrize("cell, seed", [("lstm", 1), ("gru", 0)])
def test_sweep_run_equals_bptt_train_bit_for_bit(tiny, tmp_path, cell, seed):
    spec, out, _ = tiny
    made = CliRunner().invoke(main, ["train", "--task", "adding", "--seq-len", "10", "--hidden", "4",
                                     "--steps", "20", "--val-every", "10", "--cell", cell,
                                     "--seed", str(seed), "--out", str(tmp_path / "alone"), "--no-progress"])
    assert made.exit_code == 0, made.output
    _same_run(out / "runs" / f"cell={cell},seed={seed}", tmp_path / "alone")


def test_sweep_again_skips_finished_runs(tiny, scheduler):
    spec, out, _ = tiny
    again = _sweep(scheduler, spec, "--out", out)
    assert "6 runs: 4 finished (skipped), 0 to resume, 2 to start" in again.output
    assert again.exit_code == 1


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, scheduler):
    spec, out = _spec(tmp_path, TINY.replace('["lstm", "gru"]', '["gru"]')), tmp_path / "sweep"
    # the state a run interrupted after its checkpoint at step 10 leaves behind
    partial = out / "runs" / "cell=gru,seed=0"
    train(TrainConfig(task="adding", seq_len=10, hidden=4, steps=10, val_every=10, cell="gru"), partial)
    config = json.load(open(partial / "config.json"))
    (partial / "config.json").write_text(json.dumps({**config, "steps": 20}))
    os.remove(partial / "result.json")

    result = _sweep(scheduler, spec, "--out", out)
    assert result.exit_code == 0, result.output
    assert "2 runs: 0 finished (skipped), 1 to resume, 1 to start" in result.output
    alone = tmp_path / "alone"
    train(TrainConfig(task="adding", seq_len=10, hidden=4, steps=20, val_every=10, cell="gru"), alone)
    _same_run(partial, alone)


def test_changed_spec_is_refused_not_mixed(tmp_path, scheduler):
    out = tmp_path / "sweep"
    assert _sweep(scheduler, _spec(tmp_path, TINY.replace('["lstm", "gru"]', '["gru"]')), "--out", out).exit_code == 0
    result = _sweep(scheduler, _spec(tmp_path, TINY.replace('["lstm", "gru"]', '["gru"]').replace("hidden = 4", "hidden = 5"),
                                     "changed.toml"), "--out", out)
    assert result.exit_code == 2
    assert "holds a run with hidden = 4, but the spec asks for 5" in result.output


def test_worker_killed_mid_run_is_retried_from_its_checkpoint(tmp_path, scheduler):
    steps = 1500
    spec = _spec(tmp_path, TINY.replace('["lstm", "gru"]', '["lstm"]').replace("seeds = [0, 1]", "seeds = [0]")
                 .replace("steps = 20", f"steps = {steps}").replace("val_every = 10", "val_every = 50"))
    out = tmp_path / "sweep"
    run_dir = out / "runs" / "cell=lstm,seed=0"
    killed = {}

    def kill_when_halfway():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                step = int(load_npz(run_dir / "checkpoint.npz")["step"])
            except (FileNotFoundError, ValueError, KeyError):
                step = 0
            if step >= steps // 3:
                for worker, keys in scheduler.processing().items():
                    if keys:
                        pid = scheduler.run(os.getpid, workers=[worker])[worker]
                        os.kill(pid, signal.SIGKILL)
                        killed.update(pid=pid, step=step)
                        return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_halfway, daemon=True)
    killer.start()
    records = {}
    sweeping = threading.Thread(target=lambda: records.update(run_sweep(
        load_spec(spec), out, scheduler=scheduler.scheduler.address, echo=lambda _: None)),
        daemon=True)
    sweeping.start()
    sweeping.join(timeout=180)
    killer.join(timeout=1)
    assert not sweeping.is_alive(), "the sweep did not finish within 180 s"
    assert killed, "the run finished before the worker could be killed"
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)
    assert records["cell=lstm,seed=0"]["status"] == "done"
    alone = tmp_path / "alone"
    train(TrainConfig(task="adding", seq_len=10, hidden=4, steps=steps, val_every=50, cell="lstm"), alone)
    _same_run(run_dir, alone)


# -- aggregation -------------------------------------------------------------------------------
def test_report_best_and_ensemble(tiny):
    spec, out, _ = tiny
    summary = (out / "summary.md").read_text()
    results = (out / "results.csv").read_text()
    for name in ("summary.md", "results.csv"):
        os.remove(out / name)
    report = CliRunner().invoke(main, ["sweep", "--report", str(out)])
    assert report.exit_code == 0 and report.output == summary
    assert (out / "summary.md").read_text() == summary and (out / "results.csv").read_text() == results
    assert sorted(os.listdir(out / "figures")) == ["adding-test-vs-cell.png", "loss-cell=gru.png",
                                                   "loss-cell=lstm.png"]

    rows = sweep_report.collect(out)
    groups = sweep_report.summarize(rows)
    vals = {g.label: np.mean([r["val"] for r in rows if r["configuration"] == g.label]) for g in groups}
    chosen = min(vals, key=vals.get)
    assert [g.label for g in groups] == sorted(vals, key=vals.get)
    tests = [r["test"] for r in rows if r["configuration"] == chosen]
    line = f"| {chosen} | 2 | "
    assert line in summary and f"{np.mean(tests):.4g} ± {np.std(tests, ddof=1):.2g}" in summary

    best = CliRunner().invoke(main, ["sweep", "--best", str(out), "--ensemble"])
    assert best.exit_code == 0, best.output
    assert f"adding: best on validation {chosen} (n=2)" in best.output
    assert "cell=rnn" not in best.output      # failed runs are no candidates
    ensemble = float(best.output.split("test mse ")[-1])
    group = sweep_report.best(groups)["adding"]
    # the mean prediction's squared error is at most the mean of the seeds' (Jensen)
    assert ensemble == pytest.approx(sweep_report.ensemble(out, group), rel=1e-3)
    assert ensemble <= np.mean(tests)


def test_ensemble_of_one_seed_is_its_run(tmp_path, scheduler):
    out = tmp_path / "sweep"
    spec = _spec(tmp_path, TINY.replace("seeds = [0, 1]", "seeds = [3]").replace('task = "adding"', 'task = "recall"'))
    assert _sweep(scheduler, spec, "--out", out).exit_code == 0
    for group in sweep_report.summarize(sweep_report.collect(out)):
        stored = json.load(open(out / "runs" / group.runs[0] / "result.json"))
        assert sweep_report.ensemble(out, group) == pytest.approx(stored["test"], abs=1e-12)
