"""Where truncated BPTT cuts: the window schedule of BPTT(k2; k1), and choosing k2.

``WindowSchedule`` is the arithmetic of a fixed k2 on stream positions: where a piece of the
stream may end, when an update is due, where its backward pass stops.  ``AdaptiveWindow`` is the
schedule of ``TBPTT(k2='auto')``: the same arithmetic, with k2 chosen after every update from
the decay of ||dL/dh|| that the update measured (``adaptive_k2``).  ``measured_k2`` chooses one
k2 for a whole sequence from one backward pass.

Shapes: a curve by lag (K,) or (n, K); x (T, B, I).
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from typing import Any, Callable

import numpy as np

from bptt.credit.checks import check_integer
from bptt.diagnostics.measure import decay_rate, hidden_grad_norms

__all__ = ["WindowSchedule", "AdaptiveWindow", "window_schedule", "adaptive_k2", "measured_k2"]


class WindowSchedule:
    """Where BPTT(k2; k1) updates and where it cuts, for a fixed k2: arithmetic on positions.

    Positions count the steps fed in the current stream.  After every k1-th step, at t, an
    update is made from the losses of steps (t - k1, t], backpropagated through (t - k2, t].
    ``TBPTT`` asks its schedule how long a piece may run, when to update, where to stop the
    backward pass and which pieces it may forget, and tells it each update it made; recording
    and backpropagating are its own.  A schedule that chooses k2 (``AdaptiveWindow``) does so
    through the same interface, so TBPTT never asks which kind it has.

    Parameters
    ----------
    k1 : int
        Steps between updates.
    k2 : int
        Steps backpropagated at an update, >= k1.

    Attributes
    ----------
    k1, k2 : int
    keep : int
        The longest window a later update may ask for (k2 here).
    multistep : bool
        Whether pieces of several steps may be recorded at once (the sequence path): True.
    """

    multistep = True

    def __init__(self, k1: int, k2: int):
        self.k1, self.k2 = k1, k2
        self.keep = k2

    def piece_length(self, since_update: int, remaining: int) -> int:
        """Steps the next piece may run: to the next update point or cut point, at most
        ``remaining``.  A cut point lies k2 before a later update (t + j k1 - k2)."""
        return min(remaining, self.k1 - since_update % self.k1,
                   self.k1 - (since_update + self.k2) % self.k1)

    def is_update(self, since_update: int) -> bool:
        """Whether an update is due after ``since_update`` steps since the last one."""
        return since_update == self.k1

    def cut(self, t: int) -> int:
        """The start of the window backpropagated at an update at t: h_cut is held constant."""
        return max(0, t - self.k2)

    def next_cut(self, t: int) -> int:
        """Where the window of the next planned update, k1 after t, will start."""
        return t + self.k1 - self.k2

    def needed(self, covered: int, oldest: int) -> bool:
        """Whether the oldest kept piece (``oldest`` steps) is still inside the last ``keep``
        of the ``covered`` steps that the kept pieces span."""
        return covered - oldest < self.keep

    def curve(self) -> np.ndarray | None:
        """What an update fills with ||dL/dh|| by lag behind it (``curve[lag]``), or None when
        the schedule measures nothing (a fixed k2)."""
        return None

    def updated(self, record: dict, curve: np.ndarray | None) -> None:
        """Take note of an update: its ``record`` (in ``TBPTT.history``) and the ``curve`` it filled."""

    def reset(self) -> None:
        """Start a new stream."""

    def state(self) -> dict:
        """What continuing the stream needs of the schedule, as ``{name: array}``: nothing."""
        return {}

    def load(self, arrays: dict) -> None:
        """Continue from what ``state`` saved."""


class AdaptiveWindow(WindowSchedule):
    """The window of ``TBPTT(k2='auto')``: k2 chosen after every update from the decay it measured.

    Every update measures ||dL/dh|| at each lag behind it, one step at a time (so pieces are
    single steps); the next window's k2 is the smallest whose geometric-tail bound on the bias
    of the oldest loss of a window is at most ``max_bias`` (``adaptive_k2`` over the last eight
    updates' curves), kept in [k1, k2_max]; unchanged while fewer than two lags are measured.
    A stream starts at ``k2_max``.

    Parameters
    ----------
    k1 : int
    max_bias : float
        In (0, 1).
    k2_max : int
        The longest window, >= k1 + 2.

    Attributes
    ----------
    k1, k2, keep, multistep
        As ``WindowSchedule``'s; ``keep`` is ``k2_max``, ``multistep`` False.
    max_bias : float
    k2_max : int
    """

    multistep = False

    def __init__(self, k1: int, max_bias: float, k2_max: int):
        super().__init__(k1, k2_max)
        self.max_bias, self.k2_max = max_bias, k2_max
        self._curves: deque[np.ndarray] = deque(maxlen=8)   # ||dL/dh_{t-lag}|| of the last windows, by lag

    def curve(self) -> np.ndarray:
        return np.full(self.k2_max + 1, np.nan)

    def updated(self, record: dict, curve: np.ndarray | None) -> None:
        record["k2"] = self.k2
        self._curves.append(curve)
        try:
            k = adaptive_k2(np.array(self._curves), self.max_bias, k2_max=self.k2_max, min_lag=self.k1)
        except ValueError:
            return
        self.k2 = min(self.k2_max, max(self.k1, self.k1 - 1 + k))

    def reset(self) -> None:
        """Start a new stream: forget the decay measured and start again from ``k2_max`` (so a
        run resumed at a stream boundary continues exactly)."""
        self._curves.clear()
        self.k2 = self.k2_max

    def state(self) -> dict:
        return {"adaptive.k2": np.asarray(self.k2, dtype=np.int64),
                "adaptive.curves": np.array(self._curves).reshape(-1, self.k2_max + 1)}

    def load(self, arrays: dict) -> None:
        if "adaptive.k2" in arrays:
            self._curves.extend(np.asarray(arrays["adaptive.curves"], dtype=np.float64))
            self.k2 = int(arrays["adaptive.k2"])


def window_schedule(k1: int, k2: Any, max_bias: float = 0.1, k2_max: Any = None,
                    who: str = "TBPTT") -> WindowSchedule:
    """The schedule of BPTT(k2; k1): fixed for an integer k2, adaptive for ``k2='auto'``.

    Parameters
    ----------
    k1 : int
        Steps between updates, checked already (>= 1).
    k2 : int or 'auto'
        Steps backpropagated, >= k1; or chosen from the measured decay.
    max_bias : float
        With 'auto': the bias bound, in (0, 1).
    k2_max : int, optional
        With 'auto': the longest window, >= k1 + 2; 8 k1 + 8 when None.
    who : str
        Named first in every error.

    Returns
    -------
    WindowSchedule or AdaptiveWindow

    Raises
    ------
    TypeError
        For an integer argument that is not one.
    ValueError
        For a k2 below k1, a string other than 'auto', or 'auto''s options out of range.
    """
    if isinstance(k2, str):
        if k2 != "auto":
            raise ValueError(f"{who}: k2 must be an integer >= k1 or 'auto', got {k2!r}")
        if not (isinstance(max_bias, (int, float)) and 0 < max_bias < 1):
            raise ValueError(f"{who}: max_bias must be in (0, 1), got {max_bias!r}")
        k2_max = 8 * k1 + 8 if k2_max is None else k2_max
        if isinstance(k2_max, bool) or not isinstance(k2_max, (int, np.integer)) or k2_max < k1 + 2:
            raise ValueError(f"{who}: k2_max must be an integer >= k1 + 2 = {k1 + 2} (two lags "
                             f"beyond the window's losses to fit a decay), got {k2_max!r}")
        return AdaptiveWindow(int(k1), float(max_bias), int(k2_max))
    check_integer(who, "k2", k2)
    if k2 < k1:
        raise ValueError(f"{who}: k2 (steps backpropagated) must be >= k1; got k1={k1}, k2={k2}")
    return WindowSchedule(int(k1), int(k2))


def adaptive_k2(norms: Any, max_bias: float, k2_max: int | None = None, min_lag: int = 0) -> int:
    """The smallest truncation length whose geometric-tail bound on the gradient bias is small.

    In the spirit of Aicher, Foti & Fox (2019): if the cotangent reaching the state k steps
    behind a loss decays as ||dL/dh_{t-k}|| = C β^k, then backpropagating K steps leaves out
    the tail ``sum_{k>=K} C β^k``, the fraction β^K of the whole ``sum_{k>=0} C β^k``.  β is
    fitted (least squares on log norms, ``bptt.diagnostics.decay_rate``) to the measured
    curve, and K is the smallest integer with β^K <= ``max_bias``.

    Parameters
    ----------
    norms : array_like, shape (K,) or (n, K)
        ||dL/dh|| indexed by lag: ``norms[k]`` k steps behind the loss; several rows (windows)
        are averaged.  Zeros and NaN (lags not measured) are left out of the fit.
    max_bias : float
        In (0, 1): the largest relative bias allowed.
    k2_max : int, optional
        The longest truncation allowed; the answer when the norms do not decay (β >= 1).
    min_lag : int
        Fit the decay over lags >= min_lag only (e.g. beyond the steps that add losses).

    Returns
    -------
    int
        K in 1 .. k2_max.

    Raises
    ------
    ValueError
        For a ``max_bias`` outside (0, 1), fewer than two usable lags, or norms that do not
        decay when no ``k2_max`` is given.

    Notes
    -----
    For BPTT(k2; k1), whose window adds losses at lags 0 .. k1-1 behind its end, the oldest of
    them is backpropagated k2 - k1 + 1 steps: the bound holds for every loss of the window with
    ``k2 = k1 - 1 + adaptive_k2(norms, max_bias, min_lag=k1)``, ``norms`` measured from the
    window's end.
    """
    if not 0 < max_bias < 1:
        raise ValueError(f"adaptive_k2: max_bias must be in (0, 1), got {max_bias!r}")
    if k2_max is not None and (isinstance(k2_max, bool) or not isinstance(k2_max, (int, np.integer))
                               or k2_max < 1):
        raise ValueError(f"adaptive_k2: k2_max must be a positive integer (or None), got {k2_max!r}")
    a = np.asarray(norms, dtype=np.float64)
    if a.ndim == 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)     # a lag no window measured: NaN
            a = np.nanmean(np.where(a > 0, a, np.nan), axis=0)
    if a.ndim != 1:
        raise ValueError(f"adaptive_k2: norms must be (K,) or (n, K) by lag, got shape {a.shape}")
    a = np.where(np.isfinite(a) & (a > 0), a, 0.0)
    # decay_rate reads a curve by timestep, lag 0 last
    factor = decay_rate(a[::-1], min_lag=min_lag).factor
    if factor >= 1:
        if k2_max is None:
            raise ValueError(f"adaptive_k2: the norms do not decay (factor {factor:.4g} per step), "
                             "so no truncation bounds the bias; give k2_max")
        return int(k2_max)
    k = max(1, math.ceil(math.log(max_bias) / math.log(factor) - 1e-12))
    return k if k2_max is None else min(k, int(k2_max))


def measured_k2(model: Any, x: Any, y: Any, loss_fn: Callable, max_bias: float) -> int:
    """``adaptive_k2`` of the decay of ||dL/dh_t|| (all layers) for a loss at the last step of
    the sequence x (``bptt.diagnostics.hidden_grad_norms``), at most T.

    Parameters
    ----------
    model : Module
        With ``step`` and ``initial_state``; its parameters' ``.grad`` are reset afterwards.
    x, y : array_like
        One sequence and its targets.
    loss_fn : callable
        ``loss_fn(y_pred_t, y_t)`` -> scalar Tensor.
    max_bias : float
        In (0, 1), as for ``adaptive_k2``.

    Returns
    -------
    int
        K in 1 .. T.

    Shapes
    ------
    x (T, B, I), y (T, B, ...)
    """
    T = len(x)
    last = np.zeros(T)
    last[-1] = 1
    norms = hidden_grad_norms(model, x, y, loss_fn, mask=last)
    model.zero_grad()
    return adaptive_k2(np.sqrt((norms ** 2).sum(axis=0))[::-1], max_bias, k2_max=T)
