import csv

import numpy as np
import pytest
from click.testing import CliRunner

import bptt.data.tasks
from bptt.cli import main
from bptt.runs.experiments.gradflow import CellSpec, measure, parse_cells, run, summarize
from bptt.errors import ConfigError


# -- cell lists ---------------------------------------------------------------------------------

def test_default_cells_are_the_literature_comparison():
    assert parse_cells() == [
        CellSpec("rnn", label="rnn"),
        CellSpec("lstm", label="lstm"),
        CellSpec("lstm", forget_bias=1.0, label="lstm:forget_bias=1"),
        CellSpec("gru", label="gru"),
        CellSpec("rnn", init="identity", nonlinearity="relu", label="irnn"),
        CellSpec("indrnn", label="indrnn"),
    ]


def test_cell_settings_continue_after_commas_and_defaults_apply_where_they_mean_something():
    specs = parse_cells("rnn:init=identity,nonlinearity=relu, lstm ,gru:init=orthogonal,lstm:forget_bias=-2.5",
                        init="orthogonal", forget_bias=1.0, nonlinearity="relu")
    assert specs == [
        CellSpec("rnn", init="identity", nonlinearity="relu", label="rnn:init=identity,nonlinearity=relu"),
        CellSpec("lstm", init="orthogonal", forget_bias=1.0, label="lstm"),
        CellSpec("gru", init="orthogonal", label="gru:init=orthogonal"),
        CellSpec("lstm", init="orthogonal", forget_bias=-2.5, label="lstm:forget_bias=-2.5"),
    ]


@pytest.mark.parametrize("text,message", [
    ("lstm:forget_bia=1",
     r"unknown key 'forget_bia' for lstm in 'lstm:forget_bia=1'; allowed keys: init, forget_bias, label"),
    ("rnn,gru:nonlinearity=relu", r"unknown key 'nonlinearity' for gru .*allowed keys: init, label"),
    ("rnn:init=identity,forget_bias=1", r"unknown key 'forget_bias' for rnn .*allowed keys: init, nonlinearity, label"),
    ("lstm,lsm", r"unknown cell 'lsm' in 'lsm'; cells are rnn, lstm, gru"),
    ("rnn:init=eye", r"init='eye' in 'rnn:init=eye'; choose from default, orthogonal, identity"),
    ("rnn:nonlinearity=sigmoid", r"nonlinearity='sigmoid' .*choose from tanh, relu"),
    ("lstm:forget_bias=big", r"forget_bias='big' in 'lstm:forget_bias=big' is not a number"),
    ("lstm:forget_bias", r"'forget_bias' in 'lstm:forget_bias' is not key=value"),
    ("init=identity,rnn", r"'init=identity' comes before any cell"),
    ("rnn,,lstm", r"empty entry in 'rnn,,lstm'"),
    ("lstm:init=orthogonal,init=default", r"'init' is given twice"),
    ("lstm,gru,lstm", r"'lstm' appears more than once; give each its own settings or a label="),
])
def test_bad_cell_lists_name_the_problem(text, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_cells(text)
    assert info.value.option == "--cells"


# -- what the picture must show -----------------------------------------------------------------

def test_the_comparison_shows_what_the_literature_says():
    # small sizes, same qualitative result as the default command (T=200, H=64)
    task = bptt.data.tasks.get("adding", seq_len=60)
    rate = {s.label: summarize(s, measure(s, task, hidden=16, seeds=2, batch_size=16)).fit.rate
            for s in parse_cells()}
    # default-init LSTM and GRU vanish nearly as fast as the tanh RNN: over half its rate
    assert rate["rnn"] < -0.3
    assert rate["lstm"] < 0.5 * rate["rnn"] and rate["gru"] < 0.5 * rate["rnn"]
    # a forget-gate bias of 1 carries the gradient several times further
    assert 0.5 * rate["lstm"] < rate["lstm:forget_bias=1"] < -0.01
    # the IRNN keeps it at initialisation
    assert abs(rate["irnn"]) < 0.01


def test_measure_is_reproducible_and_training_changes_the_curves():
    task = bptt.data.tasks.get("adding", seq_len=12)
    spec = CellSpec("lstm", label="lstm")
    a = measure(spec, task, hidden=8, seeds=2, batch_size=4, layers=2)
    assert a.shape == (2, 2, 12) and np.all(a > 0)
    np.testing.assert_array_equal(a, measure(spec, task, hidden=8, seeds=2, batch_size=4, layers=2))
    trained = measure(spec, task, hidden=8, seeds=2, batch_size=4, layers=2, train_steps=3, lr=0.05)
    assert not np.allclose(trained, a, rtol=1e-3)


def test_summary_reads_the_median_normalised_top_layer_curve():
    lag = np.arange(30)[::-1]
    norms = np.stack([np.stack([np.ones(30), s * 0.8 ** lag]) for s in (1.0, 3.0, 7.0)])  # (3 seeds, 2 layers, T)
    r = summarize(CellSpec("gru", label="gru"), norms)
    np.testing.assert_allclose(r.curve, 0.8 ** lag)
    assert r.fit.rate == pytest.approx(np.log(0.8))
    np.testing.assert_allclose(r.seed_rates, np.log(0.8))
    assert r.horizon is None                     # 0.8^29 = 1.5e-3 stays above 1e-3
    # lags 0..20 hold (1 - 0.8^21) / (1 - 0.8^30) = 99.2% of the sum, lags 0..19 98.97%
    assert r.k2 == 21
    assert r.line(6) == ("gru     decay rate -0.2231/step (seeds -0.2231..-0.2231)  factor 0.8000/step  "
                         "memory horizon >29 steps  suggested k2 21")


def test_summary_of_gradients_that_stop():
    lag = np.arange(10)[::-1]
    decaying = 0.5 ** lag
    stops = np.where(lag == 0, 0.3, 0.0)        # dead units: nothing beyond lag 0
    r = summarize(CellSpec("rnn", label="rnn"), np.stack([decaying, np.zeros(10)])[:, None])
    np.testing.assert_allclose(r.curve, decaying)    # the seed with no gradient at all is left out
    assert r.fit.rate == pytest.approx(np.log(0.5)) and np.isnan(r.seed_rates[1])
    r = summarize(CellSpec("rnn", label="irnn"), np.stack([stops, 2 * stops])[:, None])
    assert r.fit is None and r.horizon == 1 and r.k2 == 1
    assert r.line() == "irnn  decay rate n/a (no gradient beyond lag 0)  memory horizon 1 steps  suggested k2 1"
    r = summarize(CellSpec("rnn", label="dead"), np.zeros((2, 1, 10)))
    assert (r.fit, r.horizon, r.k2) == (None, 0, 1)
    assert "decay rate n/a (no gradient reaches the state)" in r.line()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_training_that_diverges_names_the_learning_rate():
    task = bptt.data.tasks.get("adding", seq_len=60)
    with pytest.raises(ConfigError, match=r"--lr: rnn:nonlinearity=relu \(seed 0\) gives non-finite gradients "
                                          r"after 1 training steps at lr=1e\+06; lower --lr"):
        measure(parse_cells("rnn:nonlinearity=relu")[0], task, hidden=4, seeds=1, batch_size=4,
                train_steps=1, lr=1e6)


# -- the command --------------------------------------------------------------------------------

def test_command_writes_figure_csv_and_a_line_per_cell(tmp_path):
    out = tmp_path / "flow.svg"
    result = CliRunner().invoke(main, ["gradflow", "--cells", "rnn,lstm:forget_bias=1,label=lstm-fb1",
                                       "--seq-len", "15", "--hidden", "6", "--seeds", "2", "--batch-size", "4",
                                       "--layers", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [l.split()[0] for l in lines[:2]] == ["rnn", "lstm-fb1"]
    assert all("decay rate" in l and "factor" in l and "memory horizon" in l and "suggested k2" in l for l in lines[:2])
    assert lines[2] == f"wrote {out} and {tmp_path / 'flow.csv'}"
    assert out.read_bytes().startswith(b"<?xml")
    with open(tmp_path / "flow.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 2 * 15          # cells x seeds x layers x T
    assert {r["label"] for r in rows} == {"rnn", "lstm-fb1"}
    assert all(int(r["lag"]) == 14 - int(r["t"]) and float(r["norm"]) > 0 for r in rows)


def test_run_returns_results_matching_the_csv(tmp_path):
    results = run("gru", seq_len=8, hidden=4, seeds=1, batch_size=3, out=tmp_path / "g.png",
                  csv_path=tmp_path / "curves.csv")
    with open(tmp_path / "curves.csv", newline="") as f:
        norms = [float(r["norm"]) for r in csv.DictReader(f)]
    np.testing.assert_array_equal(norms, results[0].norms.ravel())
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args,message", [
    (["--cells", "lstm:forget_bia=1"], "Invalid value for '--cells': unknown key 'forget_bia' for lstm"),
    (["--task", "nope"], "Invalid value for '--task': unknown task 'nope'"),
    (["--out", "flow.jpg"], "Invalid value for '--out': 'flow.jpg' must end in .png, .svg, .pdf"),
    (["--init", "eye"], "Invalid value for '--init'"),
])
def test_command_usage_errors(args, message):
    result = CliRunner().invoke(main, ["gradflow", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_an_unwritable_out_is_refused_before_measuring(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(main, ["gradflow", "--out", str(blocker / "figure.png")])
    assert result.exit_code == 2 and "cannot write" in result.output and "--out" in result.output
