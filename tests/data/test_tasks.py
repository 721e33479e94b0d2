import hashlib
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import bptt
import bptt.data.tasks as tasks
from bptt.data.readers import CSVError
from bptt.data.tasks import baselines as bl
from bptt.data.tasks.forecasting import lorenz_series, mackey_glass_series, narma10_series

TOY = ["adding", "copy", "parity", "recall"]


# --- registry -------------------------------------------------------------------------------------
def test_every_task_says_what_kind_it_is():
    # callers (bptt train, streams, sampling) ask the task, never its class
    built = {name: tasks.get(name) for name in tasks.names()}
    kinds = {name: task.kind for name, task in built.items()}
    assert {kinds[n] for n in TOY} == {"sequences"} and kinds["lag"] == "sequences"
    assert kinds["shakespeare"] == "text" and kinds["sunspots"] == kinds["sine"] == "series"
    assert set(kinds.values()) == {"sequences", "series", "text"}
    for task in built.values():
        assert task.forecasting == (task.kind == "series") == task.describe()["forecasting"]
        assert task.streamable == (task.kind != "sequences")
    assert [name for name, task in built.items() if task.has_levels] == ["lag"]


def test_registry_names_and_errors():
    assert tasks.names()[:4] == TOY
    assert {"sine", "mackey-glass", "lorenz", "narma10", "sunspots", "airline", "nile"} <= set(
        tasks.names())
    assert tasks.get("mackey_glass", length=400).name == "mackey-glass"
    with pytest.raises(ValueError, match="unknown task 'adder'; tasks are: adding, copy"):
        tasks.get("adder")
    with pytest.raises(ValueError, match=r"task 'adding': unknown option\(s\) delay; options are: "
                                         r"seq_len, seed"):
        tasks.get("adding", delay=3)
    with pytest.raises(ValueError, match="seq_len must be an integer >= 2, got 1"):
        tasks.get("adding", seq_len=1)
    assert tasks.get("adding", seq_len=None).seq_len == 50     # None means "use the default"


# --- toy tasks: shapes, dtypes, masks ---------------------------------------------------------------
@settings(max_examples=8, deadline=None)
@given(name=st.sampled_from(TOY), T=st.integers(22, 40), B=st.integers(1, 5))
def test_toy_batch_shapes_and_dtypes(name, T, B):
    task = tasks.get(name, seq_len=T)
    x, y, mask = task.batch(B, np.random.default_rng(0))
    assert task.seq_len == T
    assert x.shape == (T, B, task.input_size) and x.dtype == np.float32
    assert mask.shape == (T,) and mask.dtype == np.float32
    if task.loss == "mse":
        assert y.shape == (T, B, task.output_size) and y.dtype == np.float32
    else:
        assert y.shape == (T, B) and y.dtype == np.int64
        assert 0 <= y.min() and y.max() < task.output_size


def test_adding_structure_and_constant_predictor_mse_is_one_sixth():
    task = tasks.get("adding", seq_len=30, test_size=20000)
    x, y, mask = task.test_set()
    assert np.array_equal(mask, np.eye(30)[-1])
    marks = x[:, :, 1]
    assert np.all(marks.sum(axis=0) == 2)
    assert np.all(marks[:15].sum(axis=0) == 1) and np.all(marks[15:].sum(axis=0) == 1)
    assert np.allclose(y[-1, :, 0], (x[:, :, 0] * marks).sum(axis=0), atol=1e-6)
    # (u1 + u2 - 1) is triangular on [-1, 1]: mean square 1/6, fourth moment 1/15
    se = math.sqrt((1 / 15 - 1 / 36) / 20000)
    assert abs(task.baselines()["constant 1.0"] - 1 / 6) < 4 * se
    assert task.score(y.astype(np.float64), y, mask) == 0


@pytest.mark.parametrize("delay", [1, 30])
def test_copy_layout_and_memoryless_baseline(delay):
    task = tasks.get("copy", delay=delay, test_size=64)
    T = delay + 20
    x, y, mask = task.test_set()
    assert task.seq_len == T and x.shape == (T, 64, 10) and np.all(mask == 1)
    sym = x.argmax(axis=-1)
    assert np.all((sym[:10] >= 1) & (sym[:10] <= 8))
    assert np.all(sym[delay + 9] == 9)
    assert np.all(np.delete(sym[10:], delay - 1, axis=0) == 0)
    assert np.all(y[:T - 10] == 0) and np.array_equal(y[T - 10:], sym[:10])
    assert task.baselines()["memoryless"] == pytest.approx(10 * math.log(8) / (delay + 20),
                                                            rel=1e-12)
    perfect = np.eye(10)[y] * 50.0
    assert task.score(perfect, y, mask) < 1e-18


def test_copy_seq_len_is_delay_plus_twenty():
    assert tasks.get("copy", seq_len=120).delay == 100
    with pytest.raises(ValueError, match="seq_len=50 and delay=10 disagree"):
        tasks.get("copy", seq_len=50, delay=10)


@pytest.mark.parametrize("order, delay", [(2, 0), (2, 5), (3, 4), (12, 0)])
def test_parity_targets_by_brute_force(order, delay):
    task = tasks.get("parity", seq_len=12, order=order, delay=delay)
    x, y, mask = task.batch(16, np.random.default_rng(3))
    bits = x[..., 0].astype(int)
    first = delay + order - 1
    assert np.array_equal(mask, (np.arange(12) >= first).astype(np.float32))
    for t in range(first, 12):
        want = np.bitwise_xor.reduce(bits[t - delay - order + 1:t - delay + 1], axis=0)
        assert np.array_equal(y[t], want)
    assert np.all(y[:first] == 0)


def test_parity_baseline_is_chance_and_rejects_a_window_longer_than_the_sequence():
    acc = tasks.get("parity").baselines()["majority class"]
    assert 0.5 <= acc < 0.5 + 4 * math.sqrt(0.25 / (1000 * 39))
    with pytest.raises(ValueError, match="delay \\+ order = 13 must not exceed seq_len = 12"):
        tasks.get("parity", seq_len=12, order=3, delay=10)


def test_recall_structure():
    task = tasks.get("recall", seq_len=9, n_symbols=5)
    x, y, mask = task.batch(32, np.random.default_rng(1))
    assert x.shape == (9, 32, 6) and task.output_size == 5
    assert np.array_equal(y[-1], x[0, :, :5].argmax(axis=-1))
    assert np.all(x[1:-1] == 0) and np.all(x[-1, :, 5] == 1)
    assert np.array_equal(mask, np.eye(9)[-1])
    assert abs(task.baselines()["majority class"] - 0.2) < 0.05


# --- fixed sets and scoring --------------------------------------------------------------------------
@pytest.mark.parametrize("name", TOY)
def test_fixed_sets_reproducible_from_the_seed(name):
    a, b = tasks.get(name, seed=7), tasks.get(name, seed=7, validation_size=3)
    for u, v in zip(a.test_set(), b.test_set()):
        assert np.array_equal(u, v)
    c = tasks.get(name, seed=8)
    assert not np.array_equal(a.test_set()[0], c.test_set()[0])
    assert not np.array_equal(a.test_set()[0][:, :3], b.validation_set()[0])


def test_batches_follow_the_generator():
    task = tasks.get("adding")
    a = task.batch(4, np.random.default_rng(9))[0]
    assert np.array_equal(a, task.batch(4, np.random.default_rng(9))[0])
    bptt.seed(1)
    b = task.batch(4)[0]
    bptt.seed(1)
    assert np.array_equal(b, task.batch(4)[0])


def test_score_checks_shapes_and_counts_only_masked_steps():
    task = tasks.get("adding", seq_len=4)
    x, y, mask = task.batch(3, np.random.default_rng(0))
    pred = np.zeros((4, 3, 1))
    pred[:-1] = 100.0                   # unscored steps do not count
    assert task.score(pred, y, mask) == pytest.approx(float(np.mean(y[-1] ** 2)), rel=1e-6)
    with pytest.raises(ValueError, match=r"score needs pred of shape \(T, B, O\) = \(4, 3, 1\), "
                                         r"got \(4, 3\)"):
        task.score(pred[..., 0], y, mask)
    with pytest.raises(ValueError, match="mask selects no step"):
        task.score(pred, y, np.zeros(4))


def test_loss_function_matches_hand_computed_values():
    pytest.importorskip("bptt.nn.losses")
    mse = tasks.loss_function(tasks.get("adding"))
    p, t = np.array([[1.0], [2.0]]), np.array([[0.0], [4.0]])
    assert float(mse(p, t).data) == pytest.approx(2.5)
    ce = tasks.loss_function(tasks.get("copy"))
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    assert float(ce(logits, np.array([1, 2])).data) == pytest.approx(
        -(math.log(0.25) + math.log(0.8)) / 2)


# --- synthetic series ------------------------------------------------------------------------------
def test_mackey_glass_stays_on_the_known_attractor():
    x = np.asarray(mackey_glass_series(400, 6.0, 17.0))       # the series the tasks test uses
    # tau = 17: chaotic, oscillating between about 0.4 and 1.3 (never outside 0.2..1.4)
    assert 0.2 < x.min() < 0.5 and 1.2 < x.max() < 1.4
    # not periodic: no lag up to 100 samples repeats the series
    assert min(np.abs(x[k:] - x[:-k]).max() for k in range(1, 100)) > 0.1


def test_lorenz_and_narma10_series():
    s = np.asarray(lorenz_series(400, 0.1, seed=0))
    assert s.shape == (400, 3)
    assert np.abs(s[:, 0]).max() < 25 and 0 < s[:, 2].min() and s[:, 2].max() < 55
    u, y = narma10_series(300, seed=2)
    t = np.arange(9, 299)
    want = (0.3 * y[t] + 0.05 * y[t] * np.array([y[k - 9:k + 1].sum() for k in t])
            + 1.5 * u[t - 9] * u[t] + 0.1)
    assert np.allclose(y[t + 1], want)
    assert 0 <= u.min() and u.max() <= 0.5


@pytest.mark.parametrize("name", ["sine", "mackey-glass", "lorenz", "narma10"])
def test_synthetic_series_tasks_shapes_and_baselines(name):
    task = tasks.get(name, length=400, seq_len=20, max_ar_order=5)
    x, y, mask = task.batch(8, np.random.default_rng(0))
    assert x.shape == (20, 8, task.input_size) and y.shape == (20, 8, 1) and np.all(mask == 1)
    xt, yt, mt = task.test_set()
    assert xt.shape == (20, 60, task.input_size) and np.array_equal(mt, np.eye(20)[-1])
    b = task.baselines()
    assert set(b) == {"persistence", f"AR({task.chosen_ar_order()})"}
    assert all(v >= 0 and np.isfinite(v) for v in b.values())


# --- baselines on series with known answers -----------------------------------------------------------
def test_ar2_least_squares_recovers_exact_coefficients():
    # z_t = 2 cos(w) z_{t-1} - z_{t-2} (+ 0) holds exactly for a sinusoid
    w = 0.3
    z = np.sin(w * np.arange(200) + 0.4)
    coef = bl.fit_ar(z, z, np.arange(2, 200), 2)
    assert np.allclose(coef, [0, 2 * math.cos(w), -1], atol=1e-9)


def test_ar2_with_noise_recovers_coefficients_within_sampling_error():
    rng = np.random.default_rng(0)
    n, a1, a2, c = 20000, 0.6, -0.3, 0.5
    z = np.zeros(n)
    for t in range(2, n):
        z[t] = c + a1 * z[t - 1] + a2 * z[t - 2] + rng.standard_normal()
    coef = bl.fit_ar(z, z, np.arange(2, n), 2)
    assert np.allclose(coef[1:], [a1, a2], atol=0.02)       # se ~ 1/sqrt(n) ~ 0.007
    assert coef[0] == pytest.approx(c, abs=0.05)


def test_persistence_and_seasonal_naive_pick_the_right_values():
    z = np.arange(30) ** 2
    assert np.array_equal(bl.persistence(z, [5, 9], horizon=1), [16, 64])
    assert np.array_equal(bl.persistence(z, [5, 9], horizon=3), [4, 36])
    assert np.array_equal(bl.seasonal_naive(z, [20], period=12), [64])
    assert np.array_equal(bl.seasonal_naive(z, [28], period=12, horizon=13), [16])
    with pytest.raises(ValueError, match="target times must be >= 12"):
        bl.seasonal_naive(z, [11], period=12)


def _csv(tmp_path, columns, name="series.csv"):
    p = tmp_path / name
    names = list(columns)
    rows = zip(*columns.values())
    cell = lambda v: v if isinstance(v, str) else repr(float(v))   # noqa: E731
    p.write_text(",".join(names) + "\n" + "".join(",".join(map(cell, r)) + "\n" for r in rows))
    return p


def test_series_task_scores_on_the_original_scale(tmp_path):
    # a linear trend: persistence is off by exactly the slope (times the horizon); AR(1) with a
    # constant is exact
    z = [5.0 + 3.0 * t for t in range(60)]
    task = tasks.from_csv(_csv(tmp_path, {"z": z}), "z", seq_len=5, validation=10, test=10,
                          metric="rmse", ar_order=1)
    b = task.baselines()
    assert b["persistence"] == pytest.approx(3.0)
    # exact up to the float32 rounding of the test targets (values ~200, eps 6e-8)
    assert b["AR(1)"] == pytest.approx(0.0, abs=1e-4)
    two = tasks.from_csv(_csv(tmp_path, {"z": z}), "z", seq_len=5, validation=10, test=10,
                         metric="mse", horizon=2, ar_order=1)
    assert two.baselines()["persistence"] == pytest.approx(36.0)
    x, y, mask = task.test_set()
    assert np.allclose(task.unscale(y[-1, :, 0]), z[50:], atol=1e-4)
    assert np.allclose(task.unscale(x[-1, :, 0]), z[49:59], atol=1e-4)   # the step before
    shifted = y.astype(np.float64) + 0.5                     # half a training std off
    assert task.score(shifted, y, mask) == pytest.approx(0.5 * np.std(z[:40]), rel=1e-5)


def test_from_csv_multivariate_windows_and_training_part_scaling(tmp_path):
    t = np.arange(80.0)
    cols = {"time": [f"t{k}" for k in range(80)], "a": list(np.sin(t)), "b": list(np.cos(t)),
            "y": list(np.sin(t) + 10)}
    task = tasks.from_csv(_csv(tmp_path, cols), "y", columns=["a", "b"], seq_len=8,
                          validation=0.25, test=0.25)
    assert task.name == "series" and task.input_size == 2 and task.output_size == 1
    assert task.sizes() == {"train": 40, "validation": 20, "test": 20, "train windows": 32}
    x, y, mask = task.batch(5, np.random.default_rng(0))
    assert x.shape == (8, 5, 2) and y.shape == (8, 5, 1)
    assert np.allclose(task.scaled_target[:40].mean(), 0) and np.allclose(
        task.scaled_target[:40].std(), 1)
    # y[t] is the target one step after x[t]: y = sin + 10 at the time input 'a' = sin shows next
    a_next = task.input_scaler.inverse(x[1:])[..., 0]
    assert np.allclose(task.unscale(y[:-1, :, 0]) - 10, a_next, atol=1e-5)
    # changing the test part leaves training data and scaling untouched
    cols["y"][70] = 1e6
    other = tasks.from_csv(_csv(tmp_path, cols, "other.csv"), "y", columns=["a", "b"], seq_len=8,
                           validation=0.25, test=0.25)
    assert np.array_equal(other.batch(5, np.random.default_rng(0))[1], y)


def test_from_csv_reports_the_file_and_line(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("a,y\n1,2\n3,four\n")
    with pytest.raises(CSVError, match=r"bad\.csv:3: column 'y': cannot read 'four'"):
        tasks.from_csv(p, "y", columns=["a"])
    with pytest.raises(CSVError, match=r"bad\.csv: no column 'z'; the header has a, y"):
        tasks.from_csv(p, "z")


def test_series_task_rejects_a_training_part_shorter_than_a_window(tmp_path):
    p = _csv(tmp_path, {"z": [float(k % 7) for k in range(30)]})
    with pytest.raises(ValueError, match="training part has 20 points, fewer than seq_len \\+ "
                                         "horizon = 26"):
        tasks.from_csv(p, "z", seq_len=25, validation=5, test=5)
    with pytest.raises(ValueError, match="metric must be one of mse, rmse, mae"):
        tasks.from_csv(p, "z", metric="accuracy")


# --- shipped data ------------------------------------------------------------------------------------
def test_sunspots_literature_split_and_values():
    task = tasks.get("sunspots")
    z = task.raw_target
    assert len(z) == 288 and z[0] == 5.0 and z[-1] == 29.4
    d = task.describe()
    assert d["span"]["test"] == ["1921", "1987"] and d["sizes"]["test"] == 67
    assert d["span"]["train"] == ["1700", "1885"]
    b = task.baselines()
    # a least-squares AR on 1700-1920 lands near the published ARIMA's ~306 MSE
    assert 250 < b[f"AR({task.chosen_ar_order()})"] < 350 < b["persistence"]


def test_airline_and_nile_values():
    air = tasks.get("airline")
    assert air.raw_target[0] == 112 and air.raw_target[-1] == 432
    assert air.raw_target.sum() == 40363 and air.period == 12 and air.target_scaler.log
    b = air.baselines()
    assert set(b) >= {"persistence", "seasonal naive"}
    assert air.describe()["span"]["test"] == ["1959-01", "1960-12"]
    nile = tasks.get("nile")
    assert len(nile.raw_target) == 100 and nile.raw_target[0] == 1120
    assert nile.raw_target.mean() == pytest.approx(919.35)


def test_tasks_command_lists_everything_as_json(monkeypatch):
    from click.testing import CliRunner

    from bptt.cli import main

    # the synthetic series at full length are slow to list; their describe() is tested above
    monkeypatch.setattr(tasks, "_REGISTRY", {k: v for k, v in tasks._REGISTRY.items()
                                             if k not in ("sine", "mackey-glass", "lorenz",
                                                          "narma10")})
    result = CliRunner().invoke(main, ["tasks", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == tasks.names()
    copy = rows[1]
    assert copy["baselines"]["memoryless"] == pytest.approx(10 * math.log(8) / 120)
    text = tasks.format_catalogue(rows)          # what `bptt tasks` prints, without recomputing
    assert text.splitlines()[2].split()[:5] == ["copy", "120", "10->10", "fresh/512/1000",
                                                "cross_entropy"]
    assert "memoryless 0.1733" in text and "sunspots" in text


def test_chaotic_series_are_the_same_bits_everywhere():
    # fixed-step RK4 in plain float arithmetic: these digests hold on any machine and library
    # version (a change to the integrator must change them on purpose)
    x = np.asarray(mackey_glass_series(2000, 6.0, 17.0))     # the mackey-glass task's default
    s = np.asarray(lorenz_series(2000, 0.1, seed=0))          # the lorenz task's default
    assert hashlib.sha256(x.tobytes()).hexdigest() == \
        "761e76bf92bdbda95d0c903731bc8965a02a787802ccaeeec79aa924b8bd9f0b"
    assert hashlib.sha256(s.tobytes()).hexdigest() == \
        "a5a8a46387d3647ba239861455e7eb016fe44fb3a51babcbc33f0f9ffdc76558"


def test_fixed_step_integrators_converge(monkeypatch):
    from bptt.data.tasks import forecasting as fc

    def mackey_glass(h):
        monkeypatch.setattr(fc, "_RK4_STEP", h)
        fc.mackey_glass_series.cache_clear()
        return np.asarray(fc.mackey_glass_series(50, 1.0, 17.0, washout=50.0))

    def lorenz(h):
        monkeypatch.setattr(fc, "_LORENZ_STEP", h)
        fc.lorenz_series.cache_clear()
        return np.asarray(fc.lorenz_series(10, 0.1, washout=0.0))

    # the delayed term's half-step mean makes Mackey-Glass second order: the error quarters
    a, b, c = mackey_glass(0.1), mackey_glass(0.05), mackey_glass(0.025)
    assert np.abs(a - b).max() < 1e-4 and 3 < np.abs(a - b).max() / np.abs(b - c).max() < 5
    # RK4 on the Lorenz system is fourth order: halving the step divides the change by ~16,
    # not the 4 of a second-order scheme
    a, b, c = lorenz(0.01), lorenz(0.005), lorenz(0.0025)
    assert np.abs(a - b).max() < 1e-3 and 10 < np.abs(a - b).max() / np.abs(b - c).max() < 40
    monkeypatch.undo()
    fc.mackey_glass_series.cache_clear()
    fc.lorenz_series.cache_clear()
    with pytest.raises(ValueError, match="tau = 17.05 is not a whole number of RK4 steps"):
        fc.mackey_glass_series(10, 6.0, 17.05)
