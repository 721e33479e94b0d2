"""A run directory's files: what makes a folder a run, its lock, its metrics log and checkpoint.

``bptt.runs.train`` runs the training loop; this module keeps the files it leaves consistent under
faults.  The rules it enforces:

* A folder is a run when it holds ``checkpoint.npz``.  A fresh run goes only into a missing or
  empty folder (leftovers of a run killed before its first checkpoint excepted), so a user's own
  ``metrics.csv`` or ``config.json`` is never overwritten.
* One process at a time: ``lock`` holds an ``fcntl.flock`` on ``.lock``, which the kernel
  releases whenever the holder exits, even by ``kill -9``; the file records the holder (pid,
  host, command, start), so a refusal names it and a holder that died without unlocking is
  reported.
* ``metrics.csv`` is only appended to.  On resume the rows past the checkpoint are dropped by
  writing the kept rows to a temporary file that atomically replaces the log, never by
  truncating it in place: whatever kills the process when, the log holds every row up to the
  step the checkpoint reached.
* Temporary files of interrupted atomic writes (``.tmp-*``) are removed when the lock is taken.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import os
import socket
import sys
import time

import numpy as np

from bptt.errors import ConfigError, RunError
from bptt.io import TEMP_PREFIX, atomic_open, load_npz

__all__ = ["CONFIG", "METRICS", "CHECKPOINT", "RESULT", "LOCK", "METRIC_COLUMNS", "RunLocked",
           "CorruptRun", "RunMismatch", "check_fresh", "lock", "clean_temporaries", "read_config",
           "load_checkpoint", "MetricsLog", "read_metrics", "file_sha256"]

CONFIG, METRICS, CHECKPOINT, RESULT = "config.json", "metrics.csv", "checkpoint.npz", "result.json"
LOCK = ".lock"
METRIC_COLUMNS = ("step", "train_loss", "val_metric", "grad_norm", "clipped", "lr", "seconds")
#: Arrays every checkpoint holds besides the model's and the optimizer's.
_CHECKPOINT_KEYS = ("meta", "step", "seconds", "rng.package", "rng.data")


class RunLocked(RunError):
    """Another live process holds the run directory."""


class CorruptRun(RunError):
    """A file of the run cannot be read as what it should be (truncated, foreign, not JSON)."""


class RunMismatch(RunError):
    """The run's files disagree: a checkpoint of another configuration or task, changed data."""


def check_fresh(out, option="--out"):
    """Refuse ``out`` for a new run unless it is missing or empty; create it.

    Leftovers of a run killed before its first checkpoint (the lock file, temporaries) count as
    empty.  Raises ``ConfigError(option)`` for a run, a folder of other files, or a path that
    cannot be a folder.
    """
    if os.path.exists(os.path.join(out, CHECKPOINT)):
        raise ConfigError(option, f"{out} already holds a run; continue it with --resume {out} "
                                  f"or choose another --out")
    if os.path.isdir(out):
        others = sorted(n for n in os.listdir(out) if n != LOCK and not n.startswith(TEMP_PREFIX))
        if others:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise ConfigError(option, f"{out} is a folder that is not a run and not empty (it holds "
                                      f"{shown}); choose a new or empty folder")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise ConfigError(option, f"cannot create the run directory {out}: "
                                  f"{err.strerror or err}") from None


@contextlib.contextmanager
def lock(out, echo):
    """Hold the run directory ``out`` for this process, then clean up interrupted writes.

    Raises
    ------
    RunLocked
        Naming the holder when another live process has the lock.
    """
    path = os.path.join(out, LOCK)
    try:
        f = open(path, "a+")
    except OSError as err:
        raise RunError(f"cannot lock {out}: {err.strerror or err} ({path})") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"{out} is in use by {_holder(f)}; wait for it to finish, or stop that "
                            f"process and resume") from None
        previous = _read_holder(f)
        if previous and not _alive(previous):
            echo(f"note: {_describe(previous)} stopped without releasing {out} (killed?); "
                 f"taking it over")
        f.seek(0)
        f.truncate()
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "command": _command(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
        f.flush()
        clean_temporaries(out)
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)


def _command():
    """The command line of this process, ``bptt ...`` when it is the bptt command."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    prog = "bptt" if prog in ("bptt", "__main__.py") else prog
    return " ".join([prog] + sys.argv[1:])


def _read_holder(f):
    f.seek(0)
    try:
        holder = json.loads(f.read() or "null")
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


def _holder(f):
    holder = _read_holder(f)
    return _describe(holder) if holder else "another process (it has not written its name yet)"


def _describe(holder):
    return (f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('command')!r}, "
            f"since {holder.get('started')})")


def _alive(holder):
    """False only when the holder ran on this host and its pid is gone."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder.get("pid")), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True


def clean_temporaries(out):
    """Remove the ``.tmp-*`` files interrupted atomic writes left in ``out``."""
    for name in os.listdir(out):
        if name.startswith(TEMP_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(out, name))


def read_config(out, option):
    """``config.json`` of the run in ``out`` as a dict.

    Raises
    ------
    ConfigError
        ``option`` when ``out`` holds no ``config.json``.
    CorruptRun
        When it is not a JSON object.
    """
    path = os.path.join(out, CONFIG)
    try:
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
    except FileNotFoundError:
        raise ConfigError(option, f"{out}: not a run directory (no {CONFIG})") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise CorruptRun(f"{path}: not valid JSON ({err})") from None
    if not isinstance(stored, dict):
        raise CorruptRun(f"{path}: holds a JSON {type(stored).__name__}, not an object of options")
    return stored


def load_checkpoint(out, option):
    """The arrays of ``checkpoint.npz`` in ``out``, checked to be a bptt checkpoint.

    Raises
    ------
    ConfigError
        ``option`` when there is no checkpoint.
    CorruptRun
        When it is truncated, empty, not an npz, or lacks a checkpoint's arrays.
    """
    path = os.path.join(out, CHECKPOINT)
    try:
        arrays = load_npz(path)
    except FileNotFoundError:
        raise ConfigError(option, f"{out} holds no {CHECKPOINT} to start from") from None
    except ValueError as err:
        raise CorruptRun(f"{err}; the run's state is lost, start a new run") from None
    missing = [k for k in _CHECKPOINT_KEYS if k not in arrays]
    if missing:
        raise CorruptRun(f"{path}: not a bptt checkpoint (no {', '.join(missing)})")
    try:
        arrays["meta"] = json.loads(str(arrays["meta"]))
    except ValueError as err:
        raise CorruptRun(f"{path}: unreadable meta record ({err})") from None
    return arrays


class MetricsLog:
    """``metrics.csv``, appended one row per update and flushed per sequence.

    Parameters
    ----------
    path : str
    keep_through_step : int, optional
        Resume: keep the rows up to this step (the checkpoint's), drop later ones.  None starts
        a new log.
    """

    def __init__(self, path, keep_through_step=None):
        rows, on_disk = ([], None) if keep_through_step is None else _kept_rows(path, keep_through_step)
        if len(rows) != on_disk:
            # written beside and renamed over the old log: never a moment with fewer rows
            with atomic_open(path, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(METRIC_COLUMNS)
                writer.writerows(rows)
        self.file = open(path, "a", newline="")
        self.writer = csv.writer(self.file)

    def write_rows(self, rows):
        self.writer.writerows(["" if v is None else v for v in row] for row in rows)
        self.file.flush()

    def close(self):
        self.file.close()


def _read_rows(path):
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise CorruptRun(f"{path}: cannot read the metrics log ({err})") from None
    return rows


def _kept_rows(path, step):
    """Rows 1..step of the log and how many rows it holds; a row an interrupted write left
    incomplete is dropped."""
    rows = _read_rows(path)
    if rows is None and step == 0:     # killed before the log was started
        return [], None
    if rows is None:
        raise CorruptRun(f"{path}: missing; the checkpoint is at step {step} but its history is gone")
    kept = [r for r in rows[1:] if len(r) == len(METRIC_COLUMNS) and r[0].isdigit()
            and int(r[0]) <= step]
    steps = [int(r[0]) for r in kept]
    if steps != list(range(1, step + 1)):
        lacking = sorted(set(range(1, step + 1)) - set(steps))
        raise CorruptRun(f"{path}: the checkpoint is at step {step} but the log "
                         + (f"lacks steps {_ranges(lacking)}" if lacking else "repeats steps"))
    return kept, len(rows) - 1


def _ranges(steps):
    return f"{steps[0]}-{steps[-1]}" if len(steps) > 1 else str(steps[0])


def read_metrics(path):
    """``metrics.csv`` as ``{column: np.ndarray}`` (float; an empty val_metric reads as NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {c: np.array([float(r[c]) if r[c] != "" else np.nan for r in rows]) for c in METRIC_COLUMNS}


def file_sha256(path):
    """The hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
