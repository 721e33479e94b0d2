"""Loss functions, as functions and as modules, built from primitives so the tape gives their gradients.

Every loss takes ``reduction``: ``'mean'`` (the default) averages the per-element losses,
``'sum'`` adds them, ``'none'`` returns them unreduced.  Predictions must be floating point; a
floating target of another precision is cast to the prediction's dtype (the prediction sets the
precision a model computes in), while integer or boolean targets of a regression loss, and any
shape mismatch, are errors (numpy would broadcast a (B, 1) prediction against a (B,) target into
a silent (B, B) loss).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from bptt import ops
from bptt.nn.module import Module
from bptt.tape import Tensor, TensorLike

__all__ = ["mse_loss", "l1_loss", "huber_loss", "binary_cross_entropy_with_logits", "cross_entropy",
           "MSELoss", "L1Loss", "HuberLoss", "BCEWithLogitsLoss", "CrossEntropyLoss"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(who: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{who}: reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return ops.mean(loss)
    if reduction == "sum":
        return ops.reduce_sum(loss)
    return loss


def _as_float(who: str, x: TensorLike, role: str) -> Tensor | np.ndarray:
    if not isinstance(x, (Tensor, np.ndarray)):
        x = Tensor(x).data   # Python numbers and lists take the default dtype, as in Tensor(...)
    if x.dtype.kind != "f":
        raise TypeError(f"{who}: {role} has dtype {x.dtype}; need floating point "
                        f"(cast with .astype(np.float32))")
    return x


def _pair(who: str, pred: TensorLike, target: TensorLike, reduction: str
          ) -> tuple[Tensor | np.ndarray, Tensor | np.ndarray]:
    """Validate a (prediction, target) pair of the same shape; returns them, target in pred's dtype."""
    _check_reduction(who, reduction)
    pred = _as_float(who, pred, "input")
    target = _as_float(who, target, "target")
    if np.shape(pred) != np.shape(target):
        raise ValueError(f"{who}: input of shape {np.shape(pred)} and target of shape "
                         f"{np.shape(target)} differ; they must match exactly (no broadcasting)")
    if target.dtype != pred.dtype:
        target = ops.astype(target, dtype=pred.dtype) if isinstance(target, Tensor) \
            else target.astype(pred.dtype)
    return pred, target


def mse_loss(input: TensorLike, target: TensorLike, reduction: str = "mean") -> Tensor:
    """Squared error ``(input - target)^2``.

    Parameters
    ----------
    input : Tensor or array_like
        Predictions, floating point.
    target : Tensor or array_like
        Same shape as ``input``.
    reduction : {'mean', 'sum', 'none'}

    Returns
    -------
    Tensor
        A scalar, or the per-element losses for ``reduction='none'``.

    Shapes
    ------
    input (*), target (*) -> () or (*)
    """
    input, target = _pair("mse_loss", input, target, reduction)
    if reduction == "none":
        d = input - target
        return d * d
    total = ops.squared_distance(input, target)
    return total if reduction == "sum" else total / np.size(input)  # type: ignore[arg-type]  # a Tensor's .size


def l1_loss(input: TensorLike, target: TensorLike, reduction: str = "mean") -> Tensor:
    """Absolute error ``|input - target|`` (gradient 0 where they are equal, as PyTorch's).

    Parameters and shapes as ``mse_loss``.
    """
    input, target = _pair("l1_loss", input, target, reduction)
    return _reduce(ops.absolute(input - target), reduction)


def huber_loss(input: TensorLike, target: TensorLike, reduction: str = "mean", delta: float = 1.0) -> Tensor:
    """Huber loss: ``0.5 d^2`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)``, d = input - target.

    Quadratic near zero, linear (gradient of size ``delta``) in the tails, so outliers pull
    no harder than ``delta``.  Parameters and shapes as ``mse_loss``; ``delta > 0``.
    """
    if not delta > 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta!r}")
    input, target = _pair("huber_loss", input, target, reduction)
    d = input - target
    # q = min(|d|, delta): 0.5 q^2 + delta (|d| - q) is both branches in one expression
    a = ops.absolute(d)
    q = ops.minimum(a, delta)
    return _reduce(0.5 * q * q + delta * (a - q), reduction)


def binary_cross_entropy_with_logits(input: TensorLike, target: TensorLike, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of ``sigmoid(input)`` against probabilities ``target`` in [0, 1].

    Computed as ``softplus(x) - x * y``, which equals ``-[y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))]``
    and stays finite for logits of any size; its gradient is ``sigmoid(x) - y``.

    Parameters
    ----------
    input : Tensor or array_like
        Logits, floating point.
    target : Tensor or array_like
        Same shape as ``input``; floating point (0./1. labels or soft probabilities).
    reduction : {'mean', 'sum', 'none'}

    Returns
    -------
    Tensor

    Shapes
    ------
    input (*), target (*) -> () or (*)
    """
    input, target = _pair("binary_cross_entropy_with_logits", input, target, reduction)
    return _reduce(ops.softplus(input) - input * target, reduction)


def cross_entropy(input: TensorLike, target: TensorLike, reduction: str = "mean") -> Tensor:
    """Cross-entropy of ``softmax(input)`` along the last axis against integer class indices.

    ``-log_softmax(input)[..., target]``, through the stable ``log_softmax`` primitive, so logits
    of any size are fine; its gradient is ``softmax(input) - onehot(target)``.

    Parameters
    ----------
    input : Tensor or array_like
        Logits, floating point, classes along the last axis.
    target : array_like of int
        Class indices in ``[0, C)``, the shape of ``input`` without its last axis.
    reduction : {'mean', 'sum', 'none'}

    Returns
    -------
    Tensor
        A scalar, or the per-example losses of shape (...) for ``reduction='none'``.

    Shapes
    ------
    input (..., C), target (...) -> () or (...); for example (B, C) and (B,), or (T, B, C) and (T, B)
    """
    who = "cross_entropy"
    _check_reduction(who, reduction)
    input = _as_float(who, input, "input (logits)")
    if isinstance(target, Tensor):
        target = target.data
    target = np.asarray(target)
    if target.dtype.kind not in "iu":
        raise TypeError(f"{who}: target has dtype {target.dtype}; need integer class indices "
                        f"(for probabilities use binary_cross_entropy_with_logits)")
    if np.ndim(input) == 0 or np.shape(input)[:-1] != target.shape:  # type: ignore[arg-type]  # a Tensor's .ndim
        raise ValueError(f"{who}: input of shape {np.shape(input)} needs a target of shape "
                         f"{np.shape(input)[:-1]} (the input without its class axis), got {target.shape}")
    n_classes = np.shape(input)[-1]
    if target.size and (target.min() < 0 or target.max() >= n_classes):
        bad = target[(target < 0) | (target >= n_classes)]
        raise ValueError(f"{who}: target holds {bad[0]}, outside the {n_classes} classes [0, {n_classes})")
    logp = ops.log_softmax(input, axis=-1)
    flat = ops.reshape(logp, shape=(-1, n_classes))
    picked = ops.getitem(flat, index=(np.arange(target.size), target.reshape(-1)))
    loss = -ops.reshape(picked, shape=target.shape)
    return _reduce(loss, reduction)


class _Loss(Module):
    """A loss function as a module: ``Loss(reduction=...)(input, target)``."""

    if TYPE_CHECKING:
        fn: ClassVar[Callable[..., Tensor]]     # the loss function; each subclass sets it
    else:
        fn = None

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        _check_reduction(type(self).__name__, reduction)
        self.reduction = reduction

    def forward(self, input: TensorLike, target: TensorLike) -> Tensor:
        return type(self).fn(input, target, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class MSELoss(_Loss):
    """Module form of ``mse_loss``."""
    fn = mse_loss


class L1Loss(_Loss):
    """Module form of ``l1_loss``."""
    fn = l1_loss


class BCEWithLogitsLoss(_Loss):
    """Module form of ``binary_cross_entropy_with_logits``."""
    fn = binary_cross_entropy_with_logits


class CrossEntropyLoss(_Loss):
    """Module form of ``cross_entropy`` (logits (..., C), integer targets (...))."""
    fn = cross_entropy


class HuberLoss(_Loss):
    """Module form of ``huber_loss``."""

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        if not delta > 0:
            raise ValueError(f"HuberLoss: delta must be positive, got {delta!r}")
        self.delta = float(delta)

    def forward(self, input: TensorLike, target: TensorLike) -> Tensor:
        return huber_loss(input, target, reduction=self.reduction, delta=self.delta)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, delta={self.delta}"
