"""Finite-difference checks of the tape's gradients, in float64."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from bptt.tape import Tensor, no_grad

__all__ = ["gradcheck", "GradcheckError", "numerical_grad"]


class GradcheckError(AssertionError):
    """The tape's gradient and central differences disagree."""


def numerical_grad(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar function ``f()`` with respect to the array ``x``.

    ``x`` is perturbed in place, one element at a time, and restored (indexing element by
    element, so that a non-contiguous ``x``, e.g. a transposed view, is perturbed too).
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f()
        x[i] = old - eps
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


def gradcheck(fn: Callable[..., Tensor], inputs: Sequence[Tensor], eps: float = 1e-6, atol: float = 1e-7,
              rtol: float = 1e-5, seed: int = 0) -> bool:
    """Check the tape's gradient of ``fn(*inputs)`` against central differences.

    Parameters
    ----------
    fn : callable
        Takes ``inputs`` and returns a Tensor.  A non-scalar output is checked through a random
        projection ``sum(fn(*inputs) * v)`` (v fixed by ``seed``), i.e. its vector-Jacobian product.
    inputs : sequence of Tensor
        Every Tensor that requires grad is checked; it must be float64.
    eps : float
        The central-difference step.
    atol, rtol : float
        An element passes when ``|backward - fd| <= atol + rtol * |fd|``.  In float64 central
        differences at eps = 1e-6 are off by about 1e-10 |f| (rounding) plus eps^2 times the
        third derivative, so the defaults leave a wide margin and still reject a VJP that is
        wrong by 1e-4 relative (the tests inject one into a copy of every primitive).

    Returns
    -------
    True

    Raises
    ------
    GradcheckError
        Naming the input, the worst element and both values.
    TypeError
        When an input that requires grad, or the output, is not float64.
    """
    inputs = list(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; central differences need "
                            "float64 (float32 ones at eps=1e-6 are about 1% off)")
    saved = [inputs[i].grad for i in checked]
    for i in checked:
        inputs[i].grad = None
    try:
        out = fn(*inputs)
        if not isinstance(out, Tensor):
            raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
        if out.dtype != np.float64:
            raise TypeError(f"gradcheck: fn returned {out.dtype}; finite differences need float64 "
                            "throughout (make every parameter and input float64)")
        v = None if out.size == 1 else np.random.default_rng(seed).standard_normal(out.shape)
        if not out.requires_grad:
            analytic = [np.zeros_like(inputs[i].data) for i in checked]
        else:
            out.backward(None if v is None else v)
            # (mypy does not narrow inputs[i].grad)
            analytic = [np.zeros_like(inputs[i].data) if inputs[i].grad is None  # type: ignore[misc]
                        else inputs[i].grad for i in checked]
    finally:
        for i, g in zip(checked, saved):
            inputs[i].grad = g

    def f() -> float:
        with no_grad():
            y = fn(*inputs).data
        return float(y.sum() if v is None else (y * v).sum())

    for i, a in zip(checked, analytic):
        x = inputs[i]
        n = numerical_grad(f, x.data, eps)
        excess = np.abs(a - n) - (atol + rtol * np.abs(n))
        if excess.size and excess.max() > 0:
            worst = np.unravel_index(np.argmax(excess), excess.shape)
            label = f" ({x.name})" if x.name else ""
            raise GradcheckError(
                f"gradcheck: input {i}{label} of shape {x.shape}: worst element {tuple(map(int, worst))}: "
                f"backward {a[worst]:.8g}, finite differences {n[worst]:.8g} "
                f"(allowed |diff| <= {atol:g} + {rtol:g} * |fd|)")
    return True
