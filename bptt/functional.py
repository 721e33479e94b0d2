"""The public functions of ``bptt`` and Tensor's methods and operators.

Primitives (``bptt.ops``) take their inputs positionally and static arguments by keyword; this
module gives them numpy-style signatures and binds them to ``Tensor``.  No derivatives here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from bptt import ops
from bptt.tape import Tensor, TensorLike

__all__ = ["add", "sub", "mul", "div", "neg", "pow", "matmul", "exp", "log", "sqrt", "abs",
           "tanh", "sigmoid", "relu", "maximum", "minimum", "where", "clip", "sum", "mean",
           "max", "reshape", "transpose", "concat", "stack", "split", "softmax", "log_softmax",
           "astype", "linear", "softplus"]

add, sub, mul, div, neg, pow, matmul = ops.add, ops.sub, ops.mul, ops.div, ops.neg, ops.power, ops.matmul
exp, log, sqrt, abs, tanh, sigmoid, relu = ops.exp, ops.log, ops.sqrt, ops.absolute, ops.tanh, ops.sigmoid, ops.relu
softplus = ops.softplus
maximum, minimum, where = ops.maximum, ops.minimum, ops.where


def _data(x: TensorLike) -> Any:
    return x.data if isinstance(x, Tensor) else x


def sum(x: TensorLike, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
    """Sum over ``axis`` (all axes when None), as ``np.sum``."""
    return ops.reduce_sum(x, axis=axis, keepdims=keepdims)


def mean(x: TensorLike, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis`` (all axes when None), as ``np.mean``."""
    return ops.mean(x, axis=axis, keepdims=keepdims)


def max(x: TensorLike, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
    """Maximum over ``axis`` (all axes when None); tied maxima share the gradient."""
    return ops.reduce_max(x, axis=axis, keepdims=keepdims)


def clip(x: TensorLike, low: ArrayLike | None = None, high: ArrayLike | None = None) -> Tensor:
    """Limit values to [low, high]; the gradient is zero where a bound is active."""
    return ops.clip(x, low=low, high=high)


def reshape(x: TensorLike, *shape: int | Sequence[int]) -> Tensor:
    """Reshape as ``np.reshape``; ``shape`` as one tuple or as separate integers."""
    if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
        shape = shape[0]  # type: ignore[assignment]  # the one sequence given
    return ops.reshape(x, shape=tuple(shape))


def transpose(x: TensorLike, *axes: int | Sequence[int]) -> Tensor:
    """Permute axes as ``np.transpose``; reverses them when none are given."""
    if len(axes) == 1 and not isinstance(axes[0], (int, np.integer)):
        axes = axes[0]  # type: ignore[assignment]  # the one sequence given
    return ops.transpose(x, axes=tuple(axes) if axes else None)


def concat(tensors: Sequence[TensorLike], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis, as ``np.concatenate``."""
    return ops.concat(*tensors, axis=axis)


def stack(tensors: Sequence[TensorLike], axis: int = 0) -> Tensor:
    """Join tensors along a new axis, as ``np.stack``."""
    return ops.stack(*tensors, axis=axis)


def split(x: TensorLike, sections: int | Sequence[int], axis: int = 0) -> list[Tensor]:
    """Split into ``sections`` equal parts or at the given indices, as ``np.split`` (one entry)."""
    return list(ops.split(x, sections=sections, axis=axis))


def softmax(x: TensorLike, axis: int = -1) -> Tensor:
    """Numerically stable softmax along ``axis``."""
    return ops.softmax(x, axis=axis)


def log_softmax(x: TensorLike, axis: int = -1) -> Tensor:
    """Numerically stable log-softmax along ``axis``."""
    return ops.log_softmax(x, axis=axis)


def astype(x: TensorLike, dtype: DTypeLike) -> Tensor:
    """Cast to ``dtype``; the gradient comes back in the input's dtype."""
    return ops.astype(x, dtype=np.dtype(dtype))


def linear(x: TensorLike, weight: TensorLike, bias: TensorLike | None = None) -> Tensor:
    """``x @ weight.T + bias`` over the last axis of ``x`` (any rank), recorded as one entry."""
    return ops.linear(x, weight) if bias is None else ops.linear(x, weight, bias)


def _comparison(fn: Callable[[Any, Any], Any]) -> Callable[[Tensor, TensorLike], Tensor]:
    # comparisons give constant (boolean) tensors: they have no gradient
    return lambda a, b: Tensor(fn(a.data, _data(b)))


def _method(fn: Callable[..., Any]) -> Callable[..., Any]:
    return lambda self, *args, **kwargs: fn(self, *args, **kwargs)


def _install() -> None:
    T: Any = Tensor     # binds what tape.Tensor declares for type checkers
    T.__add__ = lambda a, b: ops.add(a, b)
    T.__radd__ = lambda a, b: ops.add(b, a)
    T.__sub__ = lambda a, b: ops.sub(a, b)
    T.__rsub__ = lambda a, b: ops.sub(b, a)
    T.__mul__ = lambda a, b: ops.mul(a, b)
    T.__rmul__ = lambda a, b: ops.mul(b, a)
    T.__truediv__ = lambda a, b: ops.div(a, b)
    T.__rtruediv__ = lambda a, b: ops.div(b, a)
    T.__pow__ = lambda a, b: ops.power(a, b)
    T.__rpow__ = lambda a, b: ops.power(b, a)
    T.__matmul__ = lambda a, b: ops.matmul(a, b)
    T.__rmatmul__ = lambda a, b: ops.matmul(b, a)
    T.__neg__ = lambda a: ops.neg(a)
    T.__abs__ = lambda a: ops.absolute(a)
    T.__getitem__ = lambda a, index: ops.getitem(a, index=_data(index))
    T.__lt__ = _comparison(np.less)
    T.__le__ = _comparison(np.less_equal)
    T.__gt__ = _comparison(np.greater)
    T.__ge__ = _comparison(np.greater_equal)
    for fn in (exp, log, sqrt, abs, tanh, sigmoid, relu, sum, mean, max, clip, reshape, transpose, astype):
        setattr(T, fn.__name__ if not isinstance(fn, ops.Primitive) else fn.name, _method(fn))
    T.T = property(lambda a: ops.transpose(a, axes=None))


_install()
