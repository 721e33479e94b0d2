"""Forecasting tasks: synthetic series (sine mixture, Mackey-Glass, Lorenz, NARMA-10), the real
series shipped in ``bptt/data/series/`` (sunspots, airline passengers, Nile), and any CSV a user brings.

All are one ``SeriesTask``: a series cut in time order into training, validation and test parts,
scaled by statistics of the training part alone, and presented as windows of ``seq_len`` steps.
Training batches are random windows lying wholly in the training part, with every step scored.
The validation and test sets hold one window per target time in their part, ending ``horizon``
steps before it, with only the last step scored, so each forecast sees ``seq_len`` observed values
(earlier parts included, as in one-step-ahead forecasting) and nothing later.  Scores are on the
original scale, beside persistence, seasonal naive (seasonal series) and a least-squares AR(p).
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Iterable, Sequence
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from bptt.errors import integer
from bptt.data.readers import Scaler, chronological_split, read_csv, windows
from bptt.data.tasks import baselines as bl
from bptt.data.tasks.base import Task

__all__ = ["SeriesTask", "from_csv", "sine", "mackey_glass", "lorenz", "narma10", "sunspots",
           "airline", "nile", "DATA_DIR", "mackey_glass_series", "lorenz_series", "narma10_series"]


#: The shipped series and texts: the package data ``bptt.data.series``.
DATA_DIR = importlib.resources.files("bptt.data.series")

_SERIES_METRICS = ("mse", "rmse", "mae")


class SeriesTask(Task):
    """Forecast ``target[tau]`` from the input columns up to ``tau - horizon``.

    Parameters
    ----------
    name : str
    inputs : np.ndarray
        Raw input columns, shape (N, I).
    target : np.ndarray
        Raw target series, shape (N,).
    input_names : sequence of str
        I names; an input named like the target is the target's own past.
    target_name : str
    seq_len : int
        T, window length.
    validation, test : int or float
        Sizes of the last two parts, as counts of time points or shares of N
        (``bptt.data.readers.chronological_split``).
    horizon : int
        Steps ahead (1 = one-step-ahead).
    period : int, optional
        Season length; adds the seasonal naive baseline.
    log : bool
        Model the logarithm (positive series whose swings grow with their level).
    metric : {'mse', 'rmse', 'mae'}
    ar_order : int, optional
        Fixes p of the AR(p) baseline; None chooses it on the validation part, from 1 to
        ``max_ar_order`` (fitted on the training part), then refits on training + validation.
    max_ar_order : int
    labels : sequence, optional
        N time labels (years, months) for ``describe``.
    description : str
    seed : int
        Recorded for the synthetic series; the fixed sets of a series do not depend on it.

    Shapes
    ------
    batch: x (T, B, I) float32, y (T, B, 1) float32 (scaled), mask (T,) all ones.
    validation_set / test_set: x (T, n_part, I), y (T, n_part, 1), mask (T,) one at the last step.
    """

    kind = "series"
    loss = "mse"

    def __init__(self, name: str, inputs: ArrayLike, target: ArrayLike, input_names: Sequence[str],
                 target_name: str, seq_len: int = 20, validation: float = 0.15, test: float = 0.15,
                 horizon: int = 1, period: int | None = None, log: bool = False, metric: str = "mse",
                 ar_order: int | None = None, max_ar_order: int = 12, labels: Iterable[Any] | None = None,
                 description: str = "", seed: int = 0) -> None:
        self.name, self.description = name, description
        inputs = np.asarray(inputs, dtype=np.float64)
        target = np.asarray(target, dtype=np.float64).reshape(-1)
        if inputs.ndim == 1:
            inputs = inputs[:, None]
        if inputs.ndim != 2 or len(inputs) != len(target):
            raise ValueError(f"task {name!r}: inputs must be (N, I) with N = len(target) = "
                             f"{len(target)}, got {inputs.shape}")
        if len(input_names) != inputs.shape[1]:
            raise ValueError(f"task {name!r}: {len(input_names)} input names for "
                             f"{inputs.shape[1]} input columns")
        if metric not in _SERIES_METRICS:
            raise ValueError(f"task {name!r}: metric must be one of {', '.join(_SERIES_METRICS)}, "
                             f"got {metric!r}")
        self.metric = metric
        self.seq_len = _int(name, "seq_len", seq_len, 1)
        self.horizon = _int(name, "horizon", horizon, 1)
        self.period = None if period is None else _int(name, "period", period, 1)
        self.max_ar_order = _int(name, "max_ar_order", max_ar_order, 1)
        self.ar_order = None if ar_order is None else _int(name, "ar_order", ar_order, 1)
        self.input_names, self.target_name = list(input_names), str(target_name)
        self.input_size, self.output_size = inputs.shape[1], 1
        self.labels = None if labels is None else list(labels)
        self.seed = int(seed)

        n = len(target)
        self.parts = dict(zip(("train", "validation", "test"),
                              chronological_split(n, validation, test)))
        n_train = self.parts["train"].stop
        for part in ("validation", "test"):
            if self.parts[part].stop == self.parts[part].start:
                raise ValueError(f"task {name!r}: the {part} part is empty; give it at least one "
                                 f"point")
        if n_train < self.seq_len + self.horizon:
            raise ValueError(f"task {name!r}: the training part has {n_train} points, fewer than "
                             f"seq_len + horizon = {self.seq_len + self.horizon}; shorten seq_len "
                             f"or the validation/test parts")
        train = self.parts["train"]
        self.input_scaler = Scaler(log).fit(inputs[train])
        self.target_scaler = Scaler(log).fit(target[train])
        self.raw_inputs, self.raw_target = inputs, target
        self.scaled_inputs = self.input_scaler.transform(inputs)
        self.scaled_target = self.target_scaler.transform(target)
        self.validation_size = self.parts["validation"].stop - self.parts["validation"].start
        self.test_size = self.parts["test"].stop - self.parts["test"].start
        self._fixed = {}

    # --- data ---------------------------------------------------------------------------------
    def unscale(self, a: ArrayLike) -> np.ndarray:
        """Scaled target values back on the original scale (float64)."""
        return self.target_scaler.inverse(a)

    def _window_pair(self, starts):
        T, h = self.seq_len, self.horizon
        x = windows(self.scaled_inputs, starts, T).astype(np.float32)
        y = windows(self.scaled_target, starts + h, T)[..., None].astype(np.float32)
        return x, y

    def _generate(self, n, rng):
        # every window whose targets all lie in the training part
        last = self.parts["train"].stop - self.seq_len - self.horizon
        x, y = self._window_pair(rng.integers(0, last + 1, size=n))
        return x, y, np.ones(self.seq_len, dtype=np.float32)

    def times(self, part: str) -> np.ndarray:
        """Target times (indices into the series) of a part: 'train', 'validation' or 'test'."""
        if part not in self.parts:
            raise ValueError(f"task {self.name!r}: part must be one of train, validation, test, "
                             f"got {part!r}")
        s = self.parts[part]
        return np.arange(s.start, s.stop)

    def _fixed_set(self, part, stream, size):
        if part not in self._fixed:
            x, y = self._window_pair(self.times(part) - self.horizon - self.seq_len + 1)
            mask = np.zeros(self.seq_len, dtype=np.float32)
            mask[-1] = 1
            self._fixed[part] = (x, y, mask)
        return self._fixed[part]

    def _errors(self, pred, y):
        return self.unscale(pred) - self.unscale(y)

    # --- baselines ----------------------------------------------------------------------------
    def _as_prediction(self, raw):
        """Raw forecasts for a part's target times, laid out as ``pred`` for ``score``."""
        pred = np.zeros((self.seq_len, len(raw), 1))
        pred[-1, :, 0] = self.target_scaler.transform(raw)
        return pred

    def _score_raw(self, raw, part):
        x, y, mask = self._fixed_set(part, None, None)
        return self.score(self._as_prediction(raw), y, mask)

    def _regressors(self):
        """Scaled regressor columns of the AR baseline: the target, then the other inputs."""
        others = [j for j, c in enumerate(self.input_names) if c != self.target_name]
        return np.column_stack([self.scaled_target] + [self.scaled_inputs[:, j] for j in others])

    def _ar_forecast(self, order, fit_parts, part):
        X, h = self._regressors(), self.horizon
        fit_times = np.concatenate([self.times(p) for p in fit_parts])
        fit_times = fit_times[fit_times >= h + order - 1]
        coef = bl.fit_ar(X, self.scaled_target, fit_times, order, h)
        return self.unscale(bl.predict_ar(coef, X, self.times(part), order, h))

    def chosen_ar_order(self) -> int:
        """p of the AR(p) baseline: ``ar_order`` if given, else the best on the validation part."""
        if self.ar_order is not None:
            return self.ar_order
        if "ar_order" not in self._fixed:
            n_train, k = self.parts["train"].stop, self._regressors().shape[1]
            feasible = [p for p in range(1, self.max_ar_order + 1)
                        if n_train - self.horizon - p + 1 >= 2 * (1 + k * p)]
            if not feasible:
                raise ValueError(f"task {self.name!r}: the training part ({n_train} points) is too "
                                 f"short to fit even an AR(1) baseline")
            errors = [self._score_raw(self._ar_forecast(p, ["train"], "validation"), "validation")
                      for p in feasible]
            self._fixed["ar_order"] = feasible[int(np.argmin(errors))]
        return self._fixed["ar_order"]

    def baseline_forecasts(self, part: str = "test") -> dict[str, np.ndarray]:
        """``{name: raw forecasts}`` for a part's target times (original scale)."""
        times, z = self.times(part), self.raw_target
        out = {"persistence": bl.persistence(z, times, self.horizon)}
        if self.period is not None:
            out["seasonal naive"] = bl.seasonal_naive(z, times, self.period, self.horizon)
        p = self.chosen_ar_order()
        fit = ["train"] if part == "validation" else ["train", "validation"]
        out[f"AR({p})"] = self._ar_forecast(p, fit, part)
        return out

    def baselines(self, part: str = "test") -> dict[str, float]:
        """``{name: metric}`` of persistence, seasonal naive (when seasonal) and AR(p) on a part.

        AR(p) is fitted by least squares on the parts before the one scored (training only for
        the validation part; training + validation for the test part).
        """
        return {k: self._score_raw(v, part) for k, v in self.baseline_forecasts(part).items()}

    def sizes(self) -> dict[str, int | None]:
        """Time points in each part (and the training windows a batch draws from)."""
        out: dict[str, int | None] = {k: s.stop - s.start for k, s in self.parts.items()}
        out["train windows"] = self.parts["train"].stop - self.seq_len - self.horizon + 1
        return out

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(horizon=self.horizon, period=self.period, log=self.target_scaler.log,
                 target=self.target_name, inputs=self.input_names)
        if self.labels is not None:
            d["span"] = {k: [str(self.labels[s.start]), str(self.labels[s.stop - 1])]
                         for k, s in self.parts.items()}
        return d


def _int(task, label, value, least):
    return integer(value, label, f"task {task!r}", least)


def _univariate(name, z, column, **options):
    return SeriesTask(name, z[:, None], z, [column], column, **options)


# --- a user's CSV -----------------------------------------------------------------------------
def from_csv(path: str | os.PathLike[str], target: str, columns: Iterable[str] | None = None,
             seq_len: int = 20, validation: float = 0.15, test: float = 0.15, horizon: int = 1,
             period: int | None = None, log: bool = False, metric: str = "mse",
             ar_order: int | None = None, max_ar_order: int = 12, name: str | None = None) -> SeriesTask:
    """A forecasting task from any CSV with a header, by column names.

    Parameters
    ----------
    path : str or os.PathLike
        Rows in time order; checked row by row (``bptt.data.readers.read_csv``).
    target : str
        The column to forecast.
    columns : sequence of str, optional
        Input columns (several for multivariate input); default ``[target]``.  The target's own
        past is an input only when it is listed.
    name : str, optional
        Defaults to the file's stem.
    Other parameters
        As ``SeriesTask``.

    Returns
    -------
    SeriesTask
    """
    columns = [target] if columns is None else list(columns)
    if not columns:
        raise ValueError("from_csv: columns must name at least one input column")
    wanted = list(dict.fromkeys(columns + [target]))
    values = read_csv(path, wanted)
    return SeriesTask(name or Path(path).stem, values[:, [wanted.index(c) for c in columns]],
                      values[:, wanted.index(target)], columns, target, seq_len=seq_len,
                      validation=validation, test=test, horizon=horizon, period=period, log=log,
                      metric=metric, ar_order=ar_order, max_ar_order=max_ar_order,
                      description=f"user series {Path(path).name}: {target} from "
                                  f"{', '.join(columns)}")


# --- shipped real series ----------------------------------------------------------------------
def _shipped(filename, columns):
    with importlib.resources.as_file(DATA_DIR / filename) as path:
        return read_csv(path, columns)


def sunspots(seq_len: int = 20, horizon: int = 1, start: int = 1700, end: int = 1987,
             validation: float = 35, test: float = 67, metric: str = "mse", ar_order: int | None = None,
             max_ar_order: int = 12, seed: int = 0) -> SeriesTask:
    """Annual sunspot numbers, 1700-1987 by default, last 67 years (1921-1987) held out.

    The split of the forecasting literature (ARIMA ~306, neural network ~351 test MSE, one step
    ahead; Zhang 2003); the 35 years before 1921 are the validation part.
    """
    years, counts = _shipped("sunspots.csv", ["year", "sunspots"]).T
    keep = (years >= start) & (years <= end)
    if keep.sum() == 0:
        raise ValueError(f"task 'sunspots': no years in [{start}, {end}]; the file covers "
                         f"{int(years[0])}-{int(years[-1])}")
    return _univariate("sunspots", counts[keep], "sunspots", seq_len=seq_len, horizon=horizon,
                       validation=validation, test=test, metric=metric, ar_order=ar_order,
                       max_ar_order=max_ar_order, labels=years[keep].astype(int), seed=seed,
                       description="annual sunspot numbers, one step ahead")


def airline(seq_len: int = 24, horizon: int = 1, log: bool = True, validation: float = 24,
            test: float = 24, metric: str = "rmse", ar_order: int | None = None, max_ar_order: int = 13,
            seed: int = 0) -> SeriesTask:
    """Monthly international airline passengers (thousands), 1949-1960 (Box & Jenkins, series G).

    Seasonal with period 12 and growing swings, so modelled as logs by default; 1959-1960 is the
    test part, 1957-1958 the validation part.
    """
    (counts,) = _shipped("airline.csv", ["passengers"]).T
    labels = [f"{1949 + i // 12}-{i % 12 + 1:02d}" for i in range(len(counts))]
    return _univariate("airline", counts, "passengers", seq_len=seq_len, horizon=horizon,
                       validation=validation, test=test, period=12, log=log, metric=metric,
                       ar_order=ar_order, max_ar_order=max_ar_order, labels=labels, seed=seed,
                       description="monthly airline passengers, seasonal, one step ahead")


def nile(seq_len: int = 10, horizon: int = 1, validation: float = 15, test: float = 20,
         metric: str = "rmse", ar_order: int | None = None, max_ar_order: int = 5,
         seed: int = 0) -> SeriesTask:
    """Annual flow of the Nile at Aswan (10^8 m^3), 1871-1970; 1951-1970 held out."""
    years, flow = _shipped("nile.csv", ["year", "flow"]).T
    return _univariate("nile", flow, "flow", seq_len=seq_len, horizon=horizon,
                       validation=validation, test=test, metric=metric, ar_order=ar_order,
                       max_ar_order=max_ar_order, labels=years.astype(int), seed=seed,
                       description="annual Nile flow, one step ahead")


# --- synthetic series -------------------------------------------------------------------------
# The chaotic series are integrated with classical RK4 at a fixed step, in plain Python float
# arithmetic (+ - * /, each an IEEE-754 correctly rounded operation, no library calls, no fused
# or vectorised kernels), so a seed gives the same bits on every machine and library version:
# chaos amplifies any last-bit difference into a different series.
_RK4_STEP = 0.1    # Mackey-Glass: time units per step (at most)
_LORENZ_STEP = 0.01


def _substeps(interval, at_most):
    """Steps of at most ``at_most`` that divide ``interval``: (count, step)."""
    n = max(1, int(round(interval / at_most)))
    return n, interval / n


@functools.lru_cache(maxsize=8)
def mackey_glass_series(length: int, step: float = 6.0, tau: float = 17.0, beta: float = 0.2,
                        gamma: float = 0.1, power: int = 10, x0: float = 1.2,
                        washout: float = 1000.0) -> np.ndarray:
    """The Mackey-Glass delay equation ``dx/dt = beta x(t-tau) / (1 + x(t-tau)^power) - gamma x``.

    Integrated by RK4 at a fixed step h dividing both ``step`` and ``tau`` (h = 0.1 for the
    defaults); the delayed term is read from the solution h-grid, its value at a half step as
    the mean of the two grid values around it.  The history before 0 is the constant ``x0``.
    Sampled every ``step`` time units after ``washout``.  Identical on every machine.

    Returns
    -------
    np.ndarray
        float64 (length,), read-only (cached).

    Raises
    ------
    ValueError
        When ``tau`` is not a whole number of steps h.
    """
    per_sample, h = _substeps(float(step), _RK4_STEP)
    lag = int(round(tau / h))
    if lag < 1 or abs(lag * h - tau) > 1e-9 * tau:
        raise ValueError(f"mackey_glass_series: tau = {tau} is not a whole number of RK4 steps "
                         f"h = step / {per_sample} = {h}; choose step and tau with tau/h whole")
    power = int(power)
    start = int(round(washout / h))
    n = start + per_sample * (length - 1)
    def g(d):   # the delayed term's production, beta d / (1 + d^power)
        dp = d
        for _ in range(power - 1):
            dp = dp * d
        return beta * d / (1.0 + dp)

    xs, gs, g_x0 = [float(x0)], [], g(float(x0))
    for i in range(n):
        gs.append(g(xs[i]))
        d0 = xs[i - lag] if i >= lag else x0
        d1 = xs[i + 1 - lag] if i + 1 >= lag else x0
        g0 = gs[i - lag] if i >= lag else g_x0
        g1 = gs[i + 1 - lag] if i + 1 >= lag else g_x0
        gm = g(0.5 * (d0 + d1))
        x = xs[i]
        k1 = g0 - gamma * x
        k2 = gm - gamma * (x + 0.5 * h * k1)
        k3 = gm - gamma * (x + 0.5 * h * k2)
        k4 = g1 - gamma * (x + h * k3)
        xs.append(x + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4))
    out = np.array(xs[start::per_sample], dtype=np.float64)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=8)
def lorenz_series(length: int, dt: float = 0.1, sigma: float = 10.0, rho: float = 28.0,
                  beta: float = 8.0 / 3.0, seed: int = 0, washout: float = 20.0) -> np.ndarray:
    """The Lorenz system from a seeded start, sampled every ``dt`` after ``washout`` time units.

    Integrated by RK4 at a fixed step dividing ``dt`` (0.01 for the default); the start is
    (1, 1, 20) plus a uniform draw from [-1, 1)^3.  Identical on every machine.

    Returns
    -------
    np.ndarray
        float64 (length, 3) holding x, y, z; read-only (cached).
    """
    per_sample, h = _substeps(float(dt), _LORENZ_STEP)

    def f(x, y, z):
        return sigma * (y - x), x * (rho - z) - y, x * y - beta * z

    x, y, z = (float(v) for v in np.random.default_rng(seed).random(3) * 2.0 - 1.0 + [1.0, 1.0, 20.0])
    start = int(round(washout / h))
    out: Any = []      # rows of (x, y, z), then the array of them
    for i in range(start + per_sample * (length - 1) + 1):
        if i >= start and (i - start) % per_sample == 0:
            out.append((x, y, z))
        a1, b1, c1 = f(x, y, z)
        a2, b2, c2 = f(x + 0.5 * h * a1, y + 0.5 * h * b1, z + 0.5 * h * c1)
        a3, b3, c3 = f(x + 0.5 * h * a2, y + 0.5 * h * b2, z + 0.5 * h * c2)
        a4, b4, c4 = f(x + h * a3, y + h * b3, z + h * c3)
        x = x + h / 6.0 * (a1 + 2.0 * a2 + 2.0 * a3 + a4)
        y = y + h / 6.0 * (b1 + 2.0 * b2 + 2.0 * b3 + b4)
        z = z + h / 6.0 * (c1 + 2.0 * c2 + 2.0 * c3 + c4)
    out = np.array(out, dtype=np.float64)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=8)
def narma10_series(length: int, seed: int = 0, washout: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """NARMA-10: ``y[t+1] = 0.3 y[t] + 0.05 y[t] sum_{i<10} y[t-i] + 1.5 u[t-9] u[t] + 0.1``,
    u uniform on [0, 0.5] (Atiya & Parlos 2000).

    Returns
    -------
    (np.ndarray, np.ndarray)
        u and y, float64 (length,) each, after ``washout`` steps; read-only (cached).
    """
    n = length + washout
    u = np.random.default_rng(seed).uniform(0, 0.5, size=n)
    y = np.zeros(n)
    for t in range(9, n - 1):
        y[t + 1] = 0.3 * y[t] + 0.05 * y[t] * y[t - 9:t + 1].sum() + 1.5 * u[t - 9] * u[t] + 0.1
    if not np.all(np.isfinite(y)):
        raise ValueError(f"narma10: the series diverged for seed {seed}; try another seed")
    u, y = u[washout:], y[washout:]
    u.flags.writeable = y.flags.writeable = False
    return u, y


def sine(length: int = 2000, components: int = 3, noise: float = 0.05, seq_len: int = 50,
         horizon: int = 1, validation: float = 0.15, test: float = 0.15, metric: str = "rmse",
         ar_order: int | None = None, max_ar_order: int = 20, seed: int = 0) -> SeriesTask:
    """A mixture of ``components`` sines with seeded periods (8 to 64 steps), amplitudes and
    phases, plus Gaussian noise of standard deviation ``noise``."""
    rng = np.random.default_rng([seed, 0])
    periods = rng.uniform(8, 64, size=components)
    amps = rng.uniform(0.5, 1.5, size=components)
    phases = rng.uniform(0, 2 * np.pi, size=components)
    t = np.arange(length)[:, None]
    z = (amps * np.sin(2 * np.pi * t / periods + phases)).sum(axis=1)
    z = z + noise * rng.standard_normal(length)
    return _univariate("sine", z, "value", seq_len=seq_len, horizon=horizon, validation=validation,
                       test=test, metric=metric, ar_order=ar_order, max_ar_order=max_ar_order,
                       seed=seed, description=f"mixture of {components} sines plus noise")


def mackey_glass(length: int = 2000, step: float = 6.0, tau: float = 17.0, seq_len: int = 50,
                 horizon: int = 1, validation: float = 0.15, test: float = 0.15, metric: str = "rmse",
                 ar_order: int | None = None, max_ar_order: int = 20, seed: int = 0) -> SeriesTask:
    """Mackey-Glass (tau = 17, chaotic), sampled every ``step`` time units; deterministic, so
    ``seed`` changes nothing but the record.

    Sampled every 6 time units by default, so one step ahead is the classic x(t + 6) forecast;
    at a step of 1 the curve is so smooth that a linear AR(p) is all but exact (RMSE ~1e-4).
    """
    z = np.array(mackey_glass_series(int(length), float(step), float(tau)))
    return _univariate("mackey-glass", z, "x", seq_len=seq_len, horizon=horizon,
                       validation=validation, test=test, metric=metric, ar_order=ar_order,
                       max_ar_order=max_ar_order, seed=seed,
                       description=f"Mackey-Glass tau={tau:g}, {horizon * step:g} time units ahead")


def lorenz(length: int = 2000, dt: float = 0.1, seq_len: int = 50, horizon: int = 1,
           validation: float = 0.15, test: float = 0.15, metric: str = "rmse",
           ar_order: int | None = None, max_ar_order: int = 20, seed: int = 0) -> SeriesTask:
    """Lorenz system (sigma 10, rho 28, beta 8/3): x, y, z in, x ``horizon`` samples ahead out.

    Sampled every 0.1 time units by default (about a tenth of a Lyapunov time); at 0.02 a linear
    AR(p) extrapolates the smooth curve almost exactly.
    """
    s = np.array(lorenz_series(int(length), float(dt), seed=int(seed)))
    return SeriesTask("lorenz", s, s[:, 0], ["x", "y", "z"], "x", seq_len=seq_len, horizon=horizon,
                      validation=validation, test=test, metric=metric, ar_order=ar_order,
                      max_ar_order=max_ar_order, seed=seed,
                      description="Lorenz attractor, x from (x, y, z)")


def narma10(length: int = 2000, seq_len: int = 50, validation: float = 0.15, test: float = 0.15,
            metric: str = "rmse", ar_order: int | None = None, max_ar_order: int = 20,
            seed: int = 0) -> SeriesTask:
    """NARMA-10: the input u in, the system's next output y out (a 10-step nonlinear memory)."""
    u, y = (np.array(a) for a in narma10_series(int(length), int(seed)))
    return SeriesTask("narma10", u[:, None], y, ["u"], "y", seq_len=seq_len, horizon=1,
                      validation=validation, test=test, metric=metric, ar_order=ar_order,
                      max_ar_order=max_ar_order, seed=seed,
                      description="NARMA-10 system identification from its input")
