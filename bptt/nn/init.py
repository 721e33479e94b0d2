"""Weight initialisers, named and scaled as PyTorch's ``torch.nn.init``.

Each ``name_(param, ..., rng=None)`` draws a new value for ``param`` (a Tensor) in its own shape
and dtype, rebinds ``param.data`` to it and returns ``param``.  ``rng`` is a
``numpy.random.Generator``; without one the package-wide generator (``bptt.seed``) is used.
Fans follow PyTorch: for a weight of shape (out, in, *k), fan_in = in * prod(k), fan_out = out * prod(k).
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
from numpy.typing import ArrayLike

from bptt.rng import generator
from bptt.tape import Tensor

__all__ = ["calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_", "eye_",
           "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
           "orthogonal_"]

P = TypeVar("P", bound=Tensor)     # each initialiser returns the tensor it was given


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The gain PyTorch recommends for ``nonlinearity`` (tanh 5/3, relu sqrt 2, ...)."""
    if nonlinearity in ("linear", "identity", "sigmoid", "conv1d", "conv2d", "conv3d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unknown nonlinearity {nonlinearity!r}; expected one of "
                     "linear, sigmoid, tanh, relu, leaky_relu, selu")


def _fans(shape: tuple[int, ...], who: str) -> tuple[int, int]:
    if len(shape) < 2:
        raise ValueError(f"{who}: fan in and fan out need a weight with at least 2 dimensions, got shape {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _set(param: P, value: ArrayLike) -> P:
    param.data = np.asarray(value, dtype=param.dtype)
    return param


def uniform_(param: P, a: float = 0.0, b: float = 1.0, rng: np.random.Generator | None = None) -> P:
    """Fill from U(a, b)."""
    return _set(param, generator(rng).uniform(a, b, param.shape))


def normal_(param: P, mean: float = 0.0, std: float = 1.0, rng: np.random.Generator | None = None) -> P:
    """Fill from N(mean, std^2)."""
    return _set(param, generator(rng).normal(mean, std, param.shape))


def constant_(param: P, value: float) -> P:
    return _set(param, np.full(param.shape, value))


def zeros_(param: P) -> P:
    return constant_(param, 0.0)


def ones_(param: P) -> P:
    return constant_(param, 1.0)


def eye_(param: P, gain: float = 1.0) -> P:
    """``gain`` times the identity (a 2-D weight; the IRNN's recurrent matrix, Le et al. 2015)."""
    if param.ndim != 2:
        raise ValueError(f"eye_: need a 2-D weight, got shape {param.shape}")
    return _set(param, gain * np.eye(*param.shape))  # type: ignore[call-overload]  # a 2-D shape


def xavier_uniform_(param: P, gain: float = 1.0, rng: np.random.Generator | None = None) -> P:
    """Glorot & Bengio (2010): U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(param.shape, "xavier_uniform_")
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(param, -bound, bound, rng)


def xavier_normal_(param: P, gain: float = 1.0, rng: np.random.Generator | None = None) -> P:
    """Glorot & Bengio (2010): N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(param.shape, "xavier_normal_")
    return normal_(param, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng)


def _kaiming_std(param: Tensor, a: float, mode: str, nonlinearity: str, who: str) -> float:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"{who}: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fans(param.shape, who)
    return calculate_gain(nonlinearity, a) / math.sqrt(fan_in if mode == "fan_in" else fan_out)


def kaiming_uniform_(param: P, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     rng: np.random.Generator | None = None) -> P:
    """He et al. (2015): U(-b, b), b = gain * sqrt(3 / fan).  PyTorch's Linear uses a = sqrt(5)."""
    bound = math.sqrt(3.0) * _kaiming_std(param, a, mode, nonlinearity, "kaiming_uniform_")
    return uniform_(param, -bound, bound, rng)


def kaiming_normal_(param: P, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    rng: np.random.Generator | None = None) -> P:
    """He et al. (2015): N(0, std^2), std = gain / sqrt(fan)."""
    return normal_(param, 0.0, _kaiming_std(param, a, mode, nonlinearity, "kaiming_normal_"), rng)


def orthogonal_(param: P, gain: float = 1.0, rng: np.random.Generator | None = None) -> P:
    """Saxe et al. (2014): a (semi-)orthogonal matrix from the QR decomposition of a Gaussian one.

    The weight is viewed as (shape[0], rest); its rows or columns, whichever are fewer, are
    orthonormal.  Signs are fixed by R's diagonal so the result is uniform over the orthogonal group.
    """
    if param.ndim < 2:
        raise ValueError(f"orthogonal_: need a weight with at least 2 dimensions, got shape {param.shape}")
    rows = param.shape[0]
    cols = param.size // rows
    a = generator(rng).normal(0.0, 1.0, (rows, cols))
    if rows < cols:
        a = a.T
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return _set(param, gain * q.reshape(param.shape))
