"""Sweeps: grids of ``bptt train`` runs over options and seeds, run on Dask distributed.

A sweep is a TOML spec (read with the standard library's ``tomllib``) whose keys are ``bptt
train``'s option names with underscores::

    seeds = [0, 1, 2]
    [fixed]              # shared by every run
    task = "adding"
    steps = 3000
    [grid]               # every combination of these
    cell = ["lstm", "gru"]
    k1 = [10, 50]
    [[config]]           # optional explicit runs, each crossed with the seeds
    cell = "lstm"
    forget_bias = 0.0

and its output a directory::

    sweeps/NAME/
      sweep.json       the runs: name, the options the spec sets, seed, every option
      runs/NAME/       one ordinary run directory per run (``bptt train --resume``, ``bptt
                       evaluate`` work on it), plus failed.json when the run failed
      results.csv      one row per run; summary.md, per configuration over seeds
      figures/         test metric against each swept option; loss curves per configuration

Each run is one Dask task carrying its options (``execute``), submitted to a ``LocalCluster``
of single-threaded worker processes, or to a running scheduler.  A task trains the run, or
continues it through ``bptt.runs.train.resume`` when the directory holds a checkpoint, so a task
that Dask reschedules after its worker died, and a sweep started again after an interruption,
go on from the last checkpoint with exactly the numbers of an uninterrupted run.  Finished runs
are skipped.  A run that fails on its own (invalid options, divergence) is recorded in its
directory and the others go on.

Dask is an optional dependency (``pip install 'bptt[sweep]'``); without it ``run_sweep`` and
``cluster`` raise ``DaskMissing`` saying so, and the rest of this module still works.  Cell options
take the cell grammar of ``bptt train --cell`` (``cell = ["lstm", "lstm:forget_bias=0"]``) or a
table (``cell_options = {forget_bias = 0.0}``).
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import json
import logging
import os
import re
import signal
import time
import types
import typing
from dataclasses import asdict, dataclass, fields
from typing import Callable

try:
    import tomllib
except ModuleNotFoundError:   # Python 3.10: the same parser, as a package
    import tomli as tomllib

from bptt.errors import ConfigError
from bptt.io import save_json
from bptt.runs.config import DEPRECATED_FIELDS, TrainConfig, cell_request, upgrade
from bptt.runs.rundir import CHECKPOINT, CONFIG, RESULT
from bptt.runs.train import echo_stderr, progress_display

__all__ = ["SpecError", "DaskMissing", "Run", "Spec", "load_spec", "execute", "run_sweep", "plan",
           "cluster", "SWEEP", "FAILED"]

SWEEP, FAILED = "sweep.json", "failed.json"
#: Keys of a spec outside its tables.
_TOP = ("seeds", "fixed", "grid", "config")
#: Times Dask re-runs a task that raised an unexpected error (a run's own failures are
#: recorded, not raised); a task whose worker died is rescheduled by the scheduler itself
#: (``distributed.scheduler.allowed-failures`` times).
RETRIES = 2
#: BLAS and OpenMP pools of one thread per worker process, set before the worker starts (and
#: so before numpy loads): N single-threaded runs then share N cores without oversubscribing.
_ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class DaskMissing(ImportError):
    """Dask distributed, which runs sweeps, is not installed."""


def _distributed():
    """The ``distributed`` package, or ``DaskMissing`` saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise DaskMissing("bptt sweep runs on Dask distributed, which is not installed: "
                          "pip install 'bptt[sweep]'") from None
    return distributed


class SpecError(ValueError):
    """A bad sweep spec: ``str(err)`` names the file, the line and the key."""

    def __init__(self, path, line, key, message):
        where = f"{path}, line {line}" if line else str(path)
        super().__init__(f"{where}, key {key}: {message}" if key else f"{where}: {message}")
        self.path, self.line, self.key, self.message = path, line, key, message


@dataclass
class Run:
    """One run of a sweep: its directory name, the options the spec set for it, its seed and
    its whole configuration."""

    name: str
    options: dict
    seed: int
    config: TrainConfig

    @property
    def label(self):
        """The configuration it belongs to: its options without the seed."""
        return configuration_label(self.options)


@dataclass
class Spec:
    """A parsed spec: its file, the seeds, the keys it sweeps and every run."""

    path: str
    seeds: list
    swept: list
    runs: list


def configuration_label(options):
    """``key=value,...`` of a configuration's options (``fixed`` when it sets none)."""
    return ",".join(f"{k}={_format(v)}" for k, v in options.items()) or "fixed"


def _format(value):
    if isinstance(value, list):
        return "+".join(map(_format, value))
    if isinstance(value, dict):         # cell_options
        value = ",".join(f"{k}={_format(v)}" for k, v in value.items())
    if isinstance(value, float):
        return format(value, "g")
    # a value becomes part of a directory name: keep it one path component
    return re.sub(r"[^\w.+-]", "_", str(value))


# -- the spec ----------------------------------------------------------------------------------
class _Lines:
    """Where each key of a TOML file sits: ``(table, index, key) -> line`` by a scan of its lines.

    ``tomllib`` gives values without positions; this scan only locates keys for messages (the
    values always come from ``tomllib``).  ``index`` counts ``[[config]]`` entries from 0.
    """

    _HEADER = re.compile(r"\s*(\[\[?)\s*([\w.-]+)\s*\]")
    _KEY = re.compile(r"""\s*["']?([\w-]+)["']?\s*=""")

    def __init__(self, text):
        self.where = {}
        table, index, counts = None, None, {}
        for number, line in enumerate(text.splitlines(), 1):
            header = self._HEADER.match(line)
            if header:
                table = header.group(2)
                index = counts.get(table, -1) + 1 if header.group(1) == "[[" else None
                if index is not None:
                    counts[table] = index
                self.where.setdefault((table, index, None), number)
                continue
            key = self._KEY.match(line)
            if key:
                self.where.setdefault((table, index, key.group(1)), number)

    def __call__(self, table, key=None, index=None):
        return self.where.get((table, index, key)) or self.where.get((table, index, None))


def _option_types():
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}


def _check_type(value, hint):
    """Whether a TOML value fits a TrainConfig annotation (an int is a float; a bool is not an int)."""
    if hint is typing.Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, h) for h in typing.get_args(hint) if h is not type(None))
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_check_type(v, item) for v in value)
    if origin is dict:      # cell_options: its keys and values are the cell's to check
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint):
    args = [h for h in typing.get_args(hint) if h is not type(None)]
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(args[0])}s"
    if typing.get_origin(hint) is dict:
        return "a table"
    hint = args[0] if args else hint
    return {int: "an integer", float: "a number", str: "a string"}.get(hint, getattr(hint, "__name__", str(hint)))


def load_spec(path):
    """Read and check a sweep spec; return its ``Spec`` with one ``Run`` per option set and seed.

    Raises
    ------
    SpecError
        A file that is not TOML; an unknown key or option, a value of the wrong type, an empty
        grid or seed list, two runs with the same options.  The message names the file, the
        line and the key.  Values that have the right type but that ``bptt train`` rejects
        (``k2`` < ``k1``, an unknown cell) are not spec errors: the run fails with ``bptt
        train``'s message and the others go on.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise SpecError(path, None, None, f"cannot read the spec ({err.strerror})") from None
    text = raw.decode("utf-8", errors="replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        line = re.search(r"line (\d+)", str(err))
        raise SpecError(path, line and int(line.group(1)), None, f"not valid TOML ({err})") from None
    lines = _Lines(text)
    types = _option_types()

    def fail(table, key, message, index=None):
        raise SpecError(path, lines(table, key, index), key, message)

    for key in data:
        if key not in _TOP:
            hint = (f"; put bptt train options such as {key!r} under [fixed], [grid] or [[config]]"
                    if key in types else f"; a spec has {', '.join(_TOP)}")
            fail(None, key, f"unknown key{hint}")

    def check_option(table, key, value, index=None, listed=False):
        if key == "seed":
            fail(table, key, "the seeds of a sweep are the top-level list `seeds = [...]`", index)
        if key not in types:
            close = difflib.get_close_matches(key, list(types), n=1)
            fail(table, key, f"unknown option{f'; did you mean {close[0]!r}?' if close else ''} "
                             f"(bptt train's options: {', '.join(k for k in types if k != 'seed')})", index)
        if not _check_type(value, types[key]):
            fail(table, key, f"{'each value ' if listed else ''}must be {_type_name(types[key])}, "
                             f"got {value!r}", index)

    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not all(_check_type(s, int) for s in seeds):
        fail(None, "seeds", f"must be a list of integers, got {seeds!r}")
    if not seeds:
        fail(None, "seeds", "is empty: give at least one seed")
    if len(set(seeds)) < len(seeds):
        fail(None, "seeds", f"lists a seed twice: {seeds}")

    tables = {}
    for table in ("fixed", "grid"):
        value = data.get(table, {})
        if not isinstance(value, dict):
            fail(None, table, f"must be a table [{table}], got {value!r}")
        tables[table] = value
    fixed, grid = tables["fixed"], tables["grid"]
    for key, value in fixed.items():
        check_option("fixed", key, value)
    if "grid" in data and not grid:
        fail("grid", None, "[grid] is empty: list at least one option with its values")
    for key, values in grid.items():
        if not isinstance(values, list):
            fail("grid", key, f"a grid option takes a list of values, e.g. {key} = [{values!r}]; "
                              f"put a single value under [fixed]")
        if not values:
            fail("grid", key, "the list is empty, so the grid has no runs")
        for v in values:
            check_option("grid", key, v, listed=True)
        if len({json.dumps(v) for v in values}) < len(values):
            fail("grid", key, f"lists a value twice: {values}")
        if key in fixed:
            fail("grid", key, "is set in [fixed] too; give it in one place")
    entries = data.get("config", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        fail(None, "config", "must be an array of tables [[config]]")
    for i, entry in enumerate(entries):
        if not entry:
            fail("config", None, f"[[config]] number {i + 1} is empty", index=i)
        for key, value in entry.items():
            check_option("config", key, value, index=i)

    option_sets = [(dict(zip(grid, combo)), ("grid", None, None))
                   for combo in itertools.product(*grid.values())] if grid else []
    option_sets += [(dict(entry), ("config", None, i)) for i, entry in enumerate(entries)]
    if not option_sets:
        option_sets = [({}, (None, "seeds", None))]
    swept = list(grid) + [k for e in entries for k in e if k not in grid]
    swept = list(dict.fromkeys(swept))

    runs, seen = [], {}
    for options, (table, key, index) in option_sets:
        options = {k: options[k] for k in swept if k in options}
        for seed in seeds:
            config = TrainConfig(**{**fixed, **options, "seed": seed})
            if config.data is not None:
                # relative to the spec, like a path in any config file, and absolute for the workers
                config.data = os.path.join(os.path.dirname(os.path.abspath(path)), config.data)
            identity = json.dumps(asdict(config), sort_keys=True)
            name = ",".join(filter(None, [configuration_label(options) if options else "",
                                          f"seed={seed}"]))
            if identity in seen or name in {r.name for r in runs}:
                other = seen.get(identity, name)
                where = f"[[config]] number {index + 1}" if table == "config" else "the grid"
                fail(table, key, f"duplicate run: {where} gives the same options as run {other}", index)
            seen[identity] = name
            runs.append(Run(name, options, seed, config))
    return Spec(path, list(seeds), swept, runs)


# -- one run, on a worker ----------------------------------------------------------------------
def execute(config, out, threads=None):
    """Train the run ``config`` describes into ``out``, or continue it from its checkpoint.

    The function Dask runs on a worker for each run of a sweep.  It is deterministic: the run
    directory ends as ``bptt train`` (and ``bptt train --resume`` after an interruption) would
    leave it, with the same numbers bit for bit.

    Parameters
    ----------
    config : dict
        ``TrainConfig`` fields.
    out : str
        The run directory (an absolute path on a file system the workers share).
    threads : int, optional
        BLAS threads of the run, as for ``bptt.runs.train.train``.

    Returns
    -------
    dict
        ``{"status": "done", "result": result.json object}``, or ``{"status": "failed",
        "error": message}`` for a run that fails on its own (invalid options, divergence); the
        message is also written to ``out/failed.json``.
    """
    from bptt.runs import train as training

    try:
        if os.path.exists(os.path.join(out, CHECKPOINT)):
            result = training.resume(out, threads=threads)
        else:
            result = training.train(TrainConfig(**config), out, threads=threads)
    except (ConfigError, training.TrainingDiverged) as err:
        record_failure(out, str(err))
        return {"status": "failed", "error": str(err)}
    if os.path.exists(os.path.join(out, FAILED)):
        os.remove(os.path.join(out, FAILED))
    return {"status": "done", "result": result}


def record_failure(out, message):
    """Write ``out/failed.json`` with the failure's message."""
    save_json(os.path.join(out, FAILED), {"error": message})


# -- the sweep ---------------------------------------------------------------------------------
def _stored_config(run_dir):
    try:
        with open(os.path.join(run_dir, CONFIG)) as f:
            return upgrade(json.load(f))
    except FileNotFoundError:
        return None


def _requested(config):
    """What a run of the spec asks for, spelled as a resolved ``config.json`` spells it: the
    cell's name in ``cell`` and the options it sets in ``cell_options``."""
    wanted = asdict(config)
    try:
        wanted["cell"], options = cell_request(config)
    except ConfigError:
        return wanted       # the run will fail with bptt train's message
    wanted.update(dict.fromkeys(DEPRECATED_FIELDS), cell_options=options or None)
    return wanted


def plan(spec: Spec, out: str) -> dict[str, str]:
    """``{run name: "finished" | "resume" | "new"}`` for each run of ``spec`` under ``out``.

    Raises
    ------
    ConfigError
        ``--out`` holds a run of the same name with other options (the spec changed): its
        numbers would not be those of the spec, so it is neither skipped nor continued.
    """
    states = {}
    for run in spec.runs:
        run_dir = os.path.join(out, "runs", run.name)
        stored = _stored_config(run_dir)
        if stored is not None:
            # options left to their defaults (None) are resolved by bptt train; compare the rest,
            # the cell options given among all the stored ones
            for key, value in _requested(run.config).items():
                have = stored.get(key)
                if key == "cell_options" and isinstance(value, dict) and isinstance(have, dict):
                    have = {k: have.get(k) for k in value}
                if value is not None and have != value:
                    raise ConfigError("--out", f"{run_dir} holds a run with {key} = {have!r}, "
                                               f"but the spec asks for {value!r}; remove that directory "
                                               f"or give another --out")
        if os.path.exists(os.path.join(run_dir, RESULT)):
            states[run.name] = "finished"
        elif os.path.exists(os.path.join(run_dir, CHECKPOINT)):
            states[run.name] = "resume"
        else:
            states[run.name] = "new"
    return states


@contextlib.contextmanager
def cluster(workers=None, scheduler=None):
    """A Dask client on a new ``LocalCluster`` of ``workers`` single-threaded processes (default:
    one per core), or on the running scheduler at ``scheduler``; closes what it started.

    Raises
    ------
    ConfigError
        No scheduler answers at ``scheduler`` within 10 s.
    DaskMissing
        Dask distributed is not installed.
    """
    distributed = _distributed()
    import dask

    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout=10)
        except (OSError, ValueError) as err:
            raise ConfigError("--scheduler", f"cannot reach a Dask scheduler at {scheduler} ({err})") from None
        with client:
            yield client
        return
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **_ONE_THREAD,
               # a run's own failure is recorded by execute; a worker's warnings as it is cut
               # off (Ctrl-C) would only bury the command's one line
               "DASK_LOGGING__DISTRIBUTED": "error"}
    with _interrupts_held() as held:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            local = distributed.LocalCluster(
                n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                dashboard_address=None,
                # no dashboard; its HTTP server on a free port, not 8787
                scheduler_kwargs={"dashboard_address": ":0"})
        client = distributed.Client(local)
    with local, client:
        try:
            for signum in held:     # what came while the cluster started, now that it can close
                signal.raise_signal(signum)
            yield client
        except KeyboardInterrupt:
            # workers cut off mid-run log warnings as the cluster closes; the command says it all
            logging.getLogger("distributed").setLevel(logging.ERROR)
            raise


@contextlib.contextmanager
def _interrupts_held():
    """Hold back Ctrl-C and SIGTERM for the block, yielding the list of the signals that came.

    A KeyboardInterrupt inside ``LocalCluster()`` leaves the cluster half started, and closing
    it then fails on Dask's own state checks; held back, the interrupt comes once the cluster
    can be closed.  Python handlers, unlike blocked or ignored signals, are not inherited by
    the worker processes started meanwhile.  Outside the main thread nothing is held.
    """
    held = []

    def hold(signum, frame):
        held.append(signum)

    try:
        before = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:          # signal handlers can only be set in the main thread
        yield held
        return
    try:
        yield held
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def _describe(name, record):
    if record["status"] != "done":
        return f"{name}: failed: {record['error']}"
    r = record["result"]
    return f"{name}: test {r['metric']} {r['test']:.4g}, {r['steps']} steps, {r['seconds']:.1f} s"


def _running(client):
    """Runs a worker is executing now: at most one per thread (a worker may hold queued ones)."""
    nthreads = client.nthreads()
    return sum(min(len(keys), nthreads.get(w, 1)) for w, keys in client.processing().items())


def run_sweep(spec: Spec, out, workers: int | None = None, scheduler: str | None = None,
              echo: Callable[[str], None] = echo_stderr, progress: Callable | None = None,
              threads: int | None = None) -> dict:
    """Run every unfinished run of ``spec`` into ``out/runs/`` on Dask; return ``{name: record}``.

    Parameters
    ----------
    spec : Spec
        From ``load_spec``.
    out : str or path
        The sweep directory; ``out/sweep.json`` lists the runs.
    workers : int, optional
        Worker processes of the ``LocalCluster`` (default: the number of cores).
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://HOST:8786``) to submit to instead; its
        workers must see ``out`` at the same path.
    echo : callable
        Gets the plan's line and one line per finished run; standard error by default.
    progress : callable, optional
        ``progress(total)`` returning a context manager with ``update(runs, status)``, called
        as runs finish (``runs`` of them, maybe 0) with a line of how many are done, running
        and failed; the command line passes its bar.  None shows nothing.
    threads : int, optional
        BLAS threads of each run (``execute``).

    Returns
    -------
    dict
        Run name -> ``execute``'s record, for the runs this call submitted.

    Raises
    ------
    DaskMissing
        Dask distributed is not installed (before anything is written).
    ConfigError
        As ``plan`` and ``cluster``.
    """
    as_completed, progress = _distributed().as_completed, progress_display(progress)
    out = os.path.abspath(os.fspath(out))
    states = plan(spec, out)
    save_json(os.path.join(out, SWEEP), {
        "spec": os.path.abspath(spec.path), "seeds": spec.seeds, "swept": spec.swept,
        "runs": [{"name": r.name, "options": r.options, "seed": r.seed, "config": asdict(r.config)}
                 for r in spec.runs]})
    todo = [r for r in spec.runs if states[r.name] != "finished"]
    skipped = len(spec.runs) - len(todo)
    resumed = sum(states[r.name] == "resume" for r in todo)
    echo(f"{len(spec.runs)} runs: {skipped} finished (skipped), {resumed} to resume, "
         f"{len(todo) - resumed} to start")
    records = {}
    if not todo:
        return records
    tag = os.path.basename(out)
    with cluster(workers, scheduler) as client:
        futures = {client.submit(execute, asdict(r.config), os.path.join(out, "runs", r.name), threads,
                                 key=f"bptt-run-{tag}/{r.name}", retries=RETRIES, pure=False): r
                   for r in todo}
        started, failed = time.perf_counter(), 0
        pending = as_completed(futures)
        with progress(len(todo)) as bar:
            while not pending.is_empty():
                batch = pending.next_batch(block=False) if pending.has_ready() else []
                for future in batch:
                    run = futures[future]
                    if future.status == "finished":
                        record = future.result()
                    else:   # an unexpected error after Dask's retries, or a worker lost too often
                        error = future.exception()
                        record = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
                        record_failure(os.path.join(out, "runs", run.name), record["error"])
                    records[run.name] = record
                    failed += record["status"] != "done"
                    echo(_describe(run.name, record))
                bar.update(len(batch), f"{len(records) - failed} done, {_running(client)} running, "
                                       f"{failed} failed, {time.perf_counter() - started:.0f} s elapsed")
                if not batch:
                    time.sleep(0.2)
    return records
