"""Start-up and signals: what ``import bptt`` loads, and Ctrl-C, SIGTERM and a memory limit at any
moment of a command, each ending in one line with nothing lost."""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bptt.io import load_npz

HEAVY = ("scipy.stats", "matplotlib", "dask", "distributed", "numba")
TRAIN = ["train", "--seq-len", "20", "--hidden", "16", "--batch", "8", "--no-progress"]


def loaded_after(code):
    """The modules of HEAVY that a fresh interpreter has loaded after running ``code``."""
    probe = (f"import sys\n{code}\n"
             f"print('LOADED', *(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("LOADED")[-1].split()


def test_import_bptt_loads_none_of_the_heavy_modules():
    assert loaded_after("import bptt") == []


def test_using_the_core_loads_none_of_the_heavy_modules():
    code = ("import bptt\n"
            "x = bptt.Tensor([[1.0, 2.0]], requires_grad=True)\n"
            "model = bptt.nn.SequenceModel('lstm', 2, 4, 1)\n"
            "bptt.TBPTT, bptt.data.tasks.get('adding'), bptt.diagnostics.hidden_grad_norms, bptt.optim.Adam")
    assert loaded_after(code) == []


def test_the_command_line_help_loads_none_of_the_heavy_modules():
    code = ("from bptt.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass")
    assert loaded_after(code) == []


def test_every_public_name_resolves():
    import bptt

    assert {"Tensor", "TBPTT", "threads", "nn", "optim", "tasks", "diagnostics"} <= set(bptt.__all__)
    assert set(bptt.__all__) <= set(dir(bptt))
    for name in bptt.__all__:
        assert getattr(bptt, name) is not None, name
    with pytest.raises(AttributeError, match="Tensr"):
        bptt.Tensr


def bptt_command(args, cwd, **kwargs):
    """The ``bptt`` command as installed beside this interpreter, started on ``args``."""
    command = Path(sys.executable).with_name("bptt")
    assert command.exists(), f"no bptt command beside {sys.executable}: pip install -e ."
    return subprocess.Popen([command, *map(str, args)], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def finish(process):
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


@pytest.mark.parametrize("delay", [0.5, 1.5])
def test_ctrl_c_while_a_command_starts_exits_130_with_one_line(tmp_path, delay):
    process = bptt_command([*TRAIN, "--steps", "100000", "--out", tmp_path / "run"], tmp_path)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    code, _, err = finish(process)
    assert code == 130, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("interrupted")


def wait_for_checkpoint(run, process, steps=1):
    """Wait until the run has checkpointed after at least ``steps`` updates."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if int(load_npz(run / "checkpoint.npz")["step"]) >= steps:
                return
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint after {steps} steps: {finish(process)}")


@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_during_training_saves_the_state_and_says_how_to_resume(tmp_path, name, code):
    run = tmp_path / "run"
    process = bptt_command([*TRAIN, "--steps", "100000", "--val-every", "5", "--out", run], tmp_path)
    wait_for_checkpoint(run, process, steps=5)
    process.send_signal(getattr(signal, name))
    returncode, _, err = finish(process)
    assert returncode == code
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("interrupted: saved the state after step ")
    assert err.splitlines()[-1].endswith(f"continue with: bptt train --resume {run}")
    saved = int(load_npz(run / "checkpoint.npz")["step"])
    assert saved >= 5
    resumed = bptt_command(["train", "--resume", run, "--steps", saved + 2, "--no-progress"], tmp_path)
    returncode, out, err = finish(resumed)
    assert returncode == 0, err
    assert f"{saved + 2} steps" in out


def test_a_sweep_without_dask_says_how_to_install_it(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from bptt.cli import main

    spec = tmp_path / "tiny.toml"
    spec.write_text('seeds = [0]\n[fixed]\ntask = "adding"\n')
    for name in ("dask", "distributed"):
        monkeypatch.setitem(sys.modules, name, None)        # what an import then finds: nothing
    result = CliRunner().invoke(main, ["sweep", str(spec), "--out", str(tmp_path / "sweep")])
    assert result.exit_code == 2
    assert result.output.splitlines() == ["bptt sweep runs on Dask distributed, which is not installed: "
                                          "pip install 'bptt[sweep]'"]
    assert not (tmp_path / "sweep").exists()       # refused before anything was written
    assert CliRunner().invoke(main, ["sweep", "--help"]).exit_code == 0


def test_ctrl_c_while_a_sweep_starts_its_cluster_exits_130_with_one_line(tmp_path):
    pytest.importorskip("distributed")
    spec = tmp_path / "tiny.toml"
    spec.write_text('seeds = [0]\n[fixed]\ntask = "adding"\nseq_len = 10\nhidden = 8\nsteps = 100000\n')
    process = bptt_command(["sweep", spec, "--out", tmp_path / "sweep", "--workers", "1", "--no-progress"],
                           tmp_path)
    deadline = time.monotonic() + 60        # the sweep writes sweep.json, then starts the cluster
    while not (tmp_path / "sweep" / "sweep.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    code, _, err = finish(process)
    assert code == 130
    assert "Traceback" not in err and "Error" not in err, err
    assert err.splitlines() == ["interrupted"]


def test_a_run_beyond_the_process_memory_limit_is_refused_before_it_starts(tmp_path):
    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (1_500_000 * 1024, resource.RLIM_INFINITY))

    run = tmp_path / "run"
    process = bptt_command(["train", "--hidden", "64", "--steps", "2", "--seq-len", "20000", "--batch", "64",
                            "--out", run, "--no-progress"], tmp_path, preexec_fn=limit_memory)
    code, out, err = finish(process)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "hidden 64, layers 1, batch 64 and seq_len 20000 ask for about 2.48 GiB of memory" in err
    assert "under its limit (ulimit -v)" in err
    assert not run.exists()                 # refused before anything was written


def test_memory_estimate_counts_the_limit_only_when_one_is_set(monkeypatch):
    from bptt.runs import config

    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY,) * 2)
    assert config._address_space_left() is None
    monkeypatch.setattr(resource, "getrlimit", lambda which: (2 ** 40, resource.RLIM_INFINITY))
    mapped = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    left = config._address_space_left()
    assert abs(2 ** 40 - left - mapped) < 2 ** 26       # the limit less what this process maps
