"""What every trainer fed a stream checks first: its stream, its model and optimizer, its k1.

``TBPTT`` and the online estimators take the same arguments the same way; their errors name
the trainer (``who``) and the argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bptt.errors import check_finite
from bptt.nn.state import as_array

__all__ = ["check_stream", "check_trainer", "check_integer"]


def check_stream(x: Any, y: Any, mask: Any, who: str) -> tuple[np.ndarray, np.ndarray]:
    """A stream's inputs and mask as arrays, checked against each other and the targets.

    Parameters
    ----------
    x : array_like or Tensor
        Inputs.
    y : array_like or Tensor
        Targets, one per step.
    mask : array_like or Tensor, optional
        Weight of each step's loss; all ones when None.
    who : str
        Named first in every error.

    Returns
    -------
    x : np.ndarray
    mask : np.ndarray, float64

    Raises
    ------
    ValueError
        For x of fewer than two dimensions, y or mask of another length than x, or a NaN,
        infinite or negative-mask value (naming the array and its first bad index).

    Shapes
    ------
    x (T, B, ...), y (T, ...), mask (T,)
    """
    x = as_array(x)
    if x.ndim < 2:
        raise ValueError(f"{who}: x must be (T, B, ...), got shape {x.shape}")
    T = x.shape[0]
    if len(y) != T:
        raise ValueError(f"{who}: x has {T} steps but y has {len(y)}; they must match")
    mask = np.ones(T) if mask is None else np.asarray(as_array(mask), dtype=np.float64)
    if mask.shape != (T,):
        raise ValueError(f"{who}: mask must have shape (T,) = ({T},), one weight per step, got {mask.shape}")
    check_finite(who, x=x, y=as_array(y), mask=mask)
    return x, mask


def check_trainer(who: str, model: Any, optimizer: Any, k1: Any, clip_norm: Any) -> None:
    """What every trainer's constructor checks: the interfaces, the update period, clipping.

    Parameters
    ----------
    who : str
        Named first in every error.
    model : object
        Needs ``step`` and ``initial_state``.
    optimizer : object
        Needs ``zero_grad`` and ``step``.
    k1 : int
        Steps between updates, >= 1.
    clip_norm : float or None
        Positive, or None for no clipping.

    Raises
    ------
    TypeError
        For a missing method or a k1 that is not an integer.
    ValueError
        For k1 < 1 or a clip_norm that is not positive.
    """
    for name in ("step", "initial_state"):
        if not callable(getattr(model, name, None)):
            raise TypeError(f"{who}: the model needs a {name}() method; {type(model).__name__} has none")
    for name in ("zero_grad", "step"):
        if not callable(getattr(optimizer, name, None)):
            raise TypeError(f"{who}: the optimizer needs a {name}() method; "
                            f"{type(optimizer).__name__} has none")
    check_integer(who, "k1", k1)
    if k1 < 1:
        raise ValueError(f"{who}: k1 (steps between updates) must be >= 1, got {k1}")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"{who}: clip_norm must be positive (or None), got {clip_norm!r}")


def check_integer(who: str, name: str, k: Any) -> None:
    """A TypeError naming ``who`` and ``name`` unless ``k`` is an integer (not a bool).

    Parameters
    ----------
    who, name : str
    k : object
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{who}: {name} must be an integer, got {k!r}")
