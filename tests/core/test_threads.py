"""The BLAS thread policy: ``bptt.threads``, the default by work size, the user's count kept."""

import pytest
from click.testing import CliRunner
from threadpoolctl import threadpool_info

import bptt
from bptt import blas
from bptt.runs import train as training
from bptt.cli import main
from bptt.runs.train import TrainConfig

TINY = dict(task="adding", seq_len=10, hidden=8, batch=4, steps=3, val_every=100)


def blas_threads():
    counts = {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
    assert len(counts) == 1, threadpool_info()
    return counts.pop()


@pytest.fixture
def no_user_count(monkeypatch):
    for name in blas.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


def test_threads_sets_the_count_inside_and_restores_it_after():
    before = blas_threads()
    with bptt.threads(1):
        assert blas_threads() == 1
        with bptt.threads(2):
            assert blas_threads() == 2
        assert blas_threads() == 1
    assert blas_threads() == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_threads_refuses_what_is_not_a_positive_integer(bad):
    with pytest.raises(ValueError, match=r"threads: need a positive integer number of threads, got"):
        with bptt.threads(bad):
            pass


def test_the_default_is_one_thread_below_the_crossover_and_every_core_above(no_user_count):
    assert blas.default_threads(blas.PARALLEL_MACS - 1) == 1
    assert blas.default_threads(blas.PARALLEL_MACS) == blas.cores()
    with blas.limit(None, 0):
        assert blas_threads() == 1
    with blas.limit(None, blas.PARALLEL_MACS):
        assert blas_threads() == blas.cores()
    with blas.limit(2, 0):                  # asked for, whatever the size
        assert blas_threads() == 2


def test_a_count_the_user_fixed_is_left_alone(no_user_count, monkeypatch):
    with bptt.threads(2):
        with blas.limit(None, 0):           # an enclosing bptt.threads wins over the default
            assert blas_threads() == 2
    with bptt.threads(2):
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
        assert blas.user_fixed()
        with blas.limit(None, 0):           # so does the environment variable
            assert blas_threads() == 2


def test_a_training_run_applies_the_policy_and_threads(tmp_path, no_user_count):
    seen = []
    record = lambda step, _: seen.append(blas_threads())    # noqa: E731
    before = blas_threads()
    training.train(TrainConfig(**TINY), tmp_path / "default", on_update=record)
    assert seen == [1] * 3                      # an 8-unit LSTM: one thread
    training.train(TrainConfig(**TINY), tmp_path / "two", on_update=record, threads=2)
    assert seen[3:] == [2] * 3
    assert blas_threads() == before             # put back after each run
    with bptt.threads(2):
        training.train(TrainConfig(**TINY), tmp_path / "yours", on_update=record)
    assert seen[6:] == [2] * 3                  # the caller's own count is kept


def test_every_command_with_matrix_work_takes_threads():
    runner = CliRunner()
    for command in ("train", "evaluate", "sample", "gradflow", "credit", "fixedpoint", "sweep", "tasks"):
        assert "--threads N" in runner.invoke(main, [command, "--help"]).output, command
    bad = runner.invoke(main, ["train", "--threads", "0"])
    assert bad.exit_code == 2
    assert "Invalid value for '--threads': 0 is not in the range x>=1" in bad.output


def test_train_cli_with_threads_trains(tmp_path):
    args = ["train", "--seq-len", "10", "--hidden", "8", "--batch", "4", "--steps", "3", "--no-progress"]
    result = CliRunner().invoke(main, [*args, "--threads", "1", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "adding T=10 lstm: test mse" in result.output
    resumed = CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "run"), "--steps", "6",
                                        "--threads", "2", "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    assert "6 steps" in resumed.output
