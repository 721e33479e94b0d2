"""The lag task, gradient_alignment and `bptt credit`."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

import bptt
from bptt import nn
from bptt.runs.experiments import credit
from bptt.data import tasks
from bptt.cli import main
from bptt.credit import RTRL, gradient_alignment, parse_estimator


# -- the lag task -------------------------------------------------------------------------------

def test_lag_levels_are_the_known_ones():
    levels = tasks.get("lag").baselines()
    assert list(levels) == ["no memory", "lag 3 only", "lags 3 and 8"]
    np.testing.assert_allclose(list(levels.values()), [0.662, 0.519, 0.454], atol=5e-4)
    # by hand: P(y=1) = 0.625 with no memory; 0.875 / 0.375 knowing x_{t-3}; 1, .75, .5, .25
    h = lambda p: -(p * np.log(p) + (1 - p) * np.log(1 - p)) if 0 < p < 1 else 0.0
    assert levels["no memory"] == pytest.approx(h(0.625), rel=1e-12)
    assert levels["lag 3 only"] == pytest.approx((h(0.875) + h(0.375)) / 2, rel=1e-12)
    assert levels["lags 3 and 8"] == pytest.approx((h(1.0) + h(0.75) + h(0.5) + h(0.25)) / 4, rel=1e-12)


def test_lag_samples_reach_the_levels_with_the_predictors_that_define_them():
    task = tasks.get("lag", seq_len=40, short_lag=2, long_lag=5)
    x, y, mask = task.batch(4000, np.random.default_rng(0))
    assert x.shape == (40, 4000, 1) and y.shape == (40, 4000)
    assert mask[:5].sum() == 0 and mask[5:].min() == 1
    bits = x[..., 0]
    p_both = np.zeros(bits.shape)
    p_both[5:] = task.probability(bits[3:-2], bits[:-5])
    p_short = np.zeros(bits.shape)
    p_short[5:] = 0.5 + 0.5 * bits[3:-2] - 0.125
    p_none = np.full(bits.shape, 0.625)
    levels = task.baselines()
    for p, level in zip((p_none, p_short, p_both), levels.values()):
        p = np.clip(p, 1e-12, 1 - 1e-12)
        logits = np.stack([np.zeros_like(p), np.log(p / (1 - p))], axis=-1)
        per = -np.log(np.where(y == 1, p, 1 - p))[5:]
        se = per.std() / np.sqrt(per.size)
        assert task.score(logits, y, mask) == pytest.approx(level, abs=3 * se)


def test_lag_options_are_checked():
    with pytest.raises(ValueError, match=r"task 'lag': need short_lag < long_lag < seq_len, got 8, 3, 50"):
        tasks.get("lag", short_lag=8, long_lag=3)
    with pytest.raises(ValueError, match="task 'lag': long_lag must be a positive integer"):
        tasks.get("lag", long_lag=0)


@pytest.mark.parametrize("value, level", [
    (0.40, "lags 3 and 8"), (0.454, "lags 3 and 8"), (0.48, "lags 3 and 8"), (0.49, "lag 3 only"),
    (0.519, "lag 3 only"), (0.58, "lag 3 only"), (0.60, "no memory"), (0.693, "no memory"),
    (0.74, None)])
def test_lag_level_reached_is_the_nearest_level(value, level):
    # midpoints 0.4868 and 0.5904; None above 0.662 + (0.662 - 0.519) / 2 = 0.733
    assert tasks.get("lag").level_reached(value) == level


def test_lag_level_reached_follows_the_lags():
    task = tasks.get("lag", seq_len=20, short_lag=2, long_lag=5)
    assert task.level_reached(0.46) == "lags 2 and 5" and task.level_reached(0.52) == "lag 2 only"


def test_train_on_lag_reports_the_level_reached(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--task", "lag", "--cell", "gru", "--hidden", "16",
                                       "--batch", "32", "--steps", "150", "--val-every", "50",
                                       "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out / "result.json") as f:
        stored = json.load(f)
    # 150 updates of full BPTT learn the lag-3 input (test cross-entropy 0.491 when measured)
    assert stored["test"] < 0.5904 and stored["level"] == tasks.get("lag").level_reached(stored["test"])
    assert stored["level"] in ("lag 3 only", "lags 3 and 8")
    level = stored["baselines"][stored["level"]]
    assert f"reached the {stored['level']} level ({level:.3f})" in result.output.splitlines()[-1]
    evaluated = CliRunner().invoke(main, ["evaluate", str(out)])
    assert f"reached the {stored['level']} level" in evaluated.output


def test_summary_line_says_when_no_level_was_reached():
    from bptt.runs.artifacts import summary_line

    result = {"task": "lag", "seq_len": 50, "cell": "gru", "metric": "cross_entropy", "test": 0.8,
              "baselines": tasks.get("lag").baselines(), "level": None, "steps": 3, "seconds": 0.1}
    assert "(baselines: no memory 0.6616, lag 3 only 0.5192, lags 3 and 8 0.4545); above every level; 3 steps" \
        in summary_line(result)


def test_tasks_without_levels_report_none(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--task", "adding", "--seq-len", "6", "--hidden", "4",
                                       "--batch", "4", "--steps", "3", "--no-progress", "--out", str(out)])
    assert result.exit_code == 0 and "reached" not in result.output
    with open(out / "result.json") as f:
        assert "level" not in json.load(f)


# -- gradient_alignment -------------------------------------------------------------------------

def _setup(cell="gru", T=8, B=2, H=3):
    task = tasks.get("lag", seq_len=T, short_lag=1, long_lag=2)
    x, y, mask = task.batch(B, np.random.default_rng(0))
    model = nn.SequenceModel(cell, 1, H, 2, dtype=np.float64, rng=np.random.default_rng(1))
    return model, x.astype(np.float64), y, mask, tasks.loss_function(task)


def test_alignment_is_exact_for_full_truncation_and_rtrl_and_measures_the_rest():
    model, x, y, mask, loss_fn = _setup()
    before = [p.data.copy() for p in model.parameters()]
    result = gradient_alignment(model, x, y, loss_fn, ["tbptt:1", "tbptt:8", "tbptt:2,8", "tbptt:4,4",
                                                        "rtrl", "uoro", "auto:0.1"],
                                mask=mask, samples=5, rng=np.random.default_rng(0))
    for spec in ("tbptt:8", "tbptt:2,8", "rtrl"):     # every loss backpropagated to the start
        assert result[spec]["cosine"] == pytest.approx(1.0, abs=1e-12)
        assert result[spec]["relative_error"] == pytest.approx(0.0, abs=1e-10)
    assert result["tbptt:1"]["cosine"] < result["tbptt:4,4"]["cosine"] < 1 - 1e-6
    assert result["tbptt:1"]["cosine_std"] == 0 and result["tbptt:1"]["samples"] == 1
    uoro = result["uoro"]
    assert uoro["samples"] == 5 and uoro["cosine_std"] > 0 and -1 <= uoro["cosine"] <= 1
    assert 1 <= result["auto:0.1"]["k2"] <= 8
    names = [n for n, _ in model.named_parameters()]
    assert list(result["rtrl"]["parameters"]) == names
    for name in names:
        assert result["tbptt:8"]["parameters"][name]["cosine"] == pytest.approx(1.0, abs=1e-10)
    for p, w in zip(model.parameters(), before):     # the weights were frozen
        np.testing.assert_array_equal(p.data, w)


def test_alignment_of_truncation_against_a_hand_computed_gradient():
    model, x, y, mask, loss_fn = _setup(T=6)
    result = gradient_alignment(model, x, y, loss_fn, ["tbptt:3"], mask=mask)["tbptt:3"]
    params = model.parameters()

    def grad(start, stop, cut):
        state = model.initial_state(x.shape[1])
        total = None
        for t in range(stop):
            if t == cut:
                state = bptt.Tensor(state.data)
            y_pred, state = model.step(x[t], state)
            if t >= start and mask[t]:
                term = loss_fn(y_pred, y[t]) * float(mask[t])
                total = term if total is None else total + term
        model.zero_grad()
        total.backward()
        return np.concatenate([p.grad.ravel() for p in params])

    est = (grad(0, 3, 0) + grad(3, 6, 3)) / mask.sum()
    exact = grad(0, 6, 0) / mask.sum()
    cos = est @ exact / np.linalg.norm(est) / np.linalg.norm(exact)
    assert result["cosine"] == pytest.approx(cos, rel=1e-10)
    assert result["relative_error"] == pytest.approx(np.linalg.norm(est - exact) / np.linalg.norm(exact), rel=1e-10)


@pytest.mark.parametrize("spec", ["tbptt", "tbptt:0", "tbptt:4,2", "tbptt:1,2,3", "auto:2", "rtrl:3", "bptt"])
def test_bad_estimator_specs_are_named(spec):
    with pytest.raises(ValueError, match=f"estimator '{spec}': not one of tbptt:K, tbptt:K1,K2, rtrl"):
        parse_estimator(spec)


def test_estimator_lists_expand_truncation_lengths():
    assert credit.parse_estimators("tbptt:1,2,4,uoro,rtrl,auto:0.2") == [
        "tbptt:1", "tbptt:2", "tbptt:4", "uoro", "rtrl", "auto:0.2"]
    with pytest.raises(bptt.errors.ConfigError, match="--estimators: 'tbptt:2' is given twice"):
        credit.parse_estimators("tbptt:2,2")


# -- bptt credit --------------------------------------------------------------------------------

def test_credit_command_writes_figure_csv_and_a_line_per_estimator_and_cell(tmp_path):
    out = tmp_path / "credit.png"
    result = CliRunner().invoke(main, ["credit", "--cells", "rnn,lstm", "--estimators",
                                       "tbptt:1,4,uoro,rtrl", "--seq-len", "10", "--hidden", "3",
                                       "--batch-size", "2", "--samples", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 * 4 + 1 and lines[-1].startswith("wrote")
    assert lines[3].split()[:2] == ["rnn", "rtrl"] and "cosine 1.000" in lines[3]
    assert out.stat().st_size > 0
    with open(tmp_path / "credit.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["cell"], r["estimator"]) for r in rows] == [
        (c, e) for c in ("rnn", "lstm") for e in ("tbptt:1", "tbptt:4", "uoro", "rtrl")]
    assert all(float(r["cosine"]) == pytest.approx(1.0, abs=1e-9) for r in rows if r["estimator"] == "rtrl")
    assert [int(r["k2"]) for r in rows[:4]] == [1, 4, 10, 10]


@pytest.mark.parametrize("args, message", [
    (["--estimators", "tbptt:x"], "estimator 'tbptt:x': not one of"),
    (["--cells", "mgu"], "unknown cell 'mgu'"),
    (["--out", "credit.txt"], "must end in .png"),
    (["--task", "lag", "--seq-len", "5"], "need short_lag < long_lag < seq_len"),
])
def test_credit_command_names_bad_options(args, message):
    result = CliRunner().invoke(main, ["credit", *args])
    assert result.exit_code == 2 and message in result.output


# -- which level each estimator reaches on lag (slow: minutes of training) -------------------------

def _trained_score(make, cell, hidden, seq_len, batch, windows, lr):
    """Train a fresh model on ``windows`` fresh windows of the lag stream; its validation
    cross-entropy."""
    task = tasks.get("lag", seq_len=seq_len)
    model = nn.SequenceModel(cell, 1, hidden, 2, rng=np.random.default_rng(0))
    trainer = make(model, tasks.loss_function(task), bptt.optim.Adam(model.parameters(), lr=lr))
    rng = np.random.default_rng(1)
    for _ in range(windows):
        x, y, mask = task.batch(batch, rng)
        trainer.reset_state()
        trainer.run(x, y, mask)
        trainer.finish()
    x, y, mask = task.validation_set()
    with bptt.no_grad():
        pred, _ = model(x)
    return task, task.score(pred.data, y, mask)


@pytest.mark.slow
@pytest.mark.parametrize("k, level", [(2, "no memory"), (4, "lag 3 only"), (100, "lags 3 and 8")])
def test_truncation_decides_which_lag_level_is_reached(k, level):
    """k = 2 cannot carry credit 3 steps back, k = 4 reaches the lag-3 input but not the lag-8
    one, full BPTT (k = T = 100) both: a GRU of 16 units, 300 windows of 32 streams, Adam.
    Measured: 0.659, 0.502 and 0.469 against the levels 0.662, 0.519 and 0.454."""
    task, value = _trained_score(lambda m, f, o: bptt.TBPTT(m, f, o, k1=k, k2=k),
                                 "gru", 16, 100, 32, 300, 0.01)
    levels = task.baselines()
    assert task.level_reached(value) == level, value
    if k == 2:
        assert abs(value - levels["no memory"]) < 0.01, value
    elif k == 4:
        assert levels["lags 3 and 8"] + 0.03 < value < levels["lag 3 only"] + 0.02, value
    else:
        assert value < levels["lags 3 and 8"] + 0.03, value


@pytest.mark.slow
def test_rtrl_reaches_both_lags():
    """RTRL, fully online (an update every step), learns both lags as full BPTT does: a GRU of
    16 units, 50 windows of 16 streams, Adam.  Measured: 0.477 against the level 0.454."""
    task, value = _trained_score(lambda m, f, o: RTRL(m, f, o, k1=1), "gru", 16, 100, 16, 50, 0.003)
    assert task.level_reached(value) == "lags 3 and 8", value
    assert value < task.baselines()["lags 3 and 8"] + 0.03, value
