"""Forecasting baselines every series result is reported beside.

All three predict the target at time ``tau`` from what is known ``horizon`` steps earlier:

- persistence (the naive forecast): ``z[tau - horizon]``;
- seasonal naive, period ``m``: the value one whole number of seasons back,
  ``z[tau - m * ceil(horizon / m)]``;
- AR(p) by least squares: ``z[tau] ~ c + sum_k a_k z[tau - horizon - k]`` for k = 0..p-1 (the direct
  strategy for horizons above one), with the lags of any exogenous input columns as further
  regressors, solved with ``scipy.linalg.lstsq``.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["persistence", "seasonal_naive", "ar_design", "fit_ar", "predict_ar"]


def _times(times: ArrayLike, earliest: int, who: str) -> np.ndarray:
    times = np.asarray(times, dtype=np.int64)
    if times.size and times.min() < earliest:
        raise ValueError(f"{who}: target times must be >= {earliest} (earlier ones have no history), "
                         f"got {times.min()}")
    return times


def persistence(z: ArrayLike, times: ArrayLike, horizon: int = 1) -> np.ndarray:
    """The last known value: ``z[times - horizon]``.

    Parameters
    ----------
    z : np.ndarray
        The target series, shape (N,).
    times : array of int
        Times of the values to forecast.
    horizon : int
        How far ahead the forecast is made.
    """
    times = _times(times, horizon, "persistence")
    return np.asarray(z)[times - horizon]


def seasonal_naive(z: ArrayLike, times: ArrayLike, period: int, horizon: int = 1) -> np.ndarray:
    """The value a whole number of seasons earlier, the latest one known at forecast time."""
    if period < 1:
        raise ValueError(f"seasonal_naive: period must be >= 1, got {period}")
    back = period * math.ceil(horizon / period)
    times = _times(times, back, "seasonal_naive")
    return np.asarray(z)[times - back]


def ar_design(series: ArrayLike, times: ArrayLike, order: int, horizon: int = 1) -> np.ndarray:
    """Regressor matrix for AR(p): a constant, then lags 0..p-1 (counted from ``tau - horizon``) of
    each column of ``series``, column by column.

    Parameters
    ----------
    series : np.ndarray
        Regressor series, shape (N, C) (the target and any exogenous inputs).
    times : array of int
        Target times tau, each >= horizon + order - 1.
    order : int
        p, the number of lags per column.

    Returns
    -------
    np.ndarray
        Shape (len(times), 1 + C * order).
    """
    if order < 1:
        raise ValueError(f"ar_design: order must be >= 1, got {order}")
    series = np.asarray(series, dtype=np.float64)
    if series.ndim == 1:
        series = series[:, None]
    times = _times(times, horizon + order - 1, f"ar_design(order={order}, horizon={horizon})")
    lagged = series[(times - horizon)[:, None] - np.arange(order)[None, :]]   # (n, p, C)
    lagged = lagged.transpose(0, 2, 1).reshape(len(times), -1)
    return np.concatenate([np.ones((len(times), 1)), lagged], axis=1)


def fit_ar(series: ArrayLike, z: ArrayLike, times: ArrayLike, order: int, horizon: int = 1) -> np.ndarray:
    """Least-squares AR(p) coefficients ``[c, a_0 .. a_{p-1}, (next column's lags) ...]``.

    ``z[times]`` are the targets, ``series`` the regressor columns (see ``ar_design``).
    """
    X = ar_design(series, times, order, horizon)
    if X.shape[0] < X.shape[1]:
        raise ValueError(f"fit_ar: {X.shape[0]} equations cannot fix {X.shape[1]} coefficients "
                         f"of AR({order}); use a lower order or more data")
    from scipy.linalg import lstsq

    coef, *_ = lstsq(X, np.asarray(z, dtype=np.float64)[np.asarray(times)])
    return coef


def predict_ar(coef: np.ndarray, series: ArrayLike, times: ArrayLike, order: int,
               horizon: int = 1) -> np.ndarray:
    """Forecasts ``X @ coef`` at ``times`` for coefficients from ``fit_ar``."""
    return ar_design(series, times, order, horizon) @ coef
