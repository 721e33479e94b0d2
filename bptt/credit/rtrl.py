"""Real-time recurrent learning (Williams & Zipser 1989): the exact influence ds/dθ, carried.

The influence matrix M_t = ds_t/dθ is pushed forward through the model's step with the batched
jvps of ``bptt.forward``: the tangents of the state are M's columns, those of the parameters
one-hot.  With the weights frozen its gradient over a sequence is full BPTT's.  It costs about S
times a step's forward (S state numbers per example), H^4 a step for one layer of H units.

Shapes: x (T, B, I), y (T, B, ...) as ``loss_fn`` takes it per step, mask (T,).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from bptt.credit.online import OnlineEstimator
from bptt.forward import forward_mode
from bptt.nn.state import detach, flatten, unflatten
from bptt.tape import Tensor, enable_grad, no_grad

__all__ = ["RTRL"]


class RTRL(OnlineEstimator):
    """Real-time recurrent learning: the exact influence of the parameters on the state.

    Every step pushes the influence matrix M = ds/dθ forward through the model's step with
    batched jvps and adds ``dL_t/dθ = <dL_t/dy_t, dy_t/dθ>`` to the window's gradient; every
    ``k1`` steps the optimizer steps with the window's masked mean (as ``TBPTT``).  The
    influence is carried across updates, computed with the weights each step ran with (so with
    changing weights it is RTRL's online approximation; with frozen weights it is exact).

    Parameters
    ----------
    model : object
        Has ``step(x_t, state) -> (y_t, state)`` and ``initial_state(batch_size)``; a Module,
        or an optimizer with a ``params`` list, gives the parameters.
    loss_fn : callable
        ``loss_fn(y_pred_t, y_t)`` -> scalar Tensor, for one step.
    optimizer : object
        Has ``zero_grad()`` and ``step()``.
    k1 : int
        Steps between updates (1: fully online).
    clip_norm : float, optional
        Clip the joint gradient norm before each update.
    chunk : int
        At most this many numbers in the one-hot tangents of one pass: the columns of M are
        pushed forward in groups that fit (memory against passes; the result is the same).

    Attributes
    ----------
    state, history, steps
        As ``TBPTT``'s.
    influence : list of tuple of ndarray
        ds/dθ by groups of columns: for each group, the ``(P, *shape)`` tangents of each state
        component (None while zero).

    Notes
    -----
    Memory is N times the state (N parameters) and a step costs about as many forward passes
    of P columns as there are groups; for one layer of H units that is O(H^4) a step.

    Shapes
    ------
    x (T, B, I), y (T, B, ...), mask (T,); influence of a state component of shape S,
    (N, *S) in all.
    """

    def __init__(self, model: Any, loss_fn: Callable, optimizer: Any, k1: int = 1,
                 clip_norm: float | None = None, chunk: int = 2 ** 22):
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise ValueError(f"RTRL: chunk must be a positive integer, got {chunk!r}")
        self._groups = []
        super().__init__(model, loss_fn, optimizer, k1, clip_norm)
        for k, p in enumerate(self._params):
            width = max(1, min(p.size, int(chunk) // max(1, p.size)))
            self._groups.extend((k, a, min(a + width, p.size)) for a in range(0, p.size, width))

    def _loss(self, y_pred, y_t):
        """The step's loss value and its cotangent dL/dy_pred."""
        leaf = Tensor(y_pred.data, requires_grad=True)
        with enable_grad():
            loss = self.loss_fn(leaf, y_t)
            loss.backward()
        return loss.item(), leaf.grad

    def _start(self):
        # the initial state does not depend on the parameters
        return [None] * len(self._groups)

    def _advance(self, x_t, y_t, m):
        state = flatten(self.state)
        value = gy = None
        grads = [np.zeros(p.shape, np.float64) for p in self._params] if m else None
        influence = []
        for (k, a, b), columns in zip(self._groups, self._influence):
            p = self._params[k]
            onehot = np.zeros((b - a, p.size), p.dtype)
            onehot[np.arange(b - a), np.arange(a, b)] = 1
            seeds = [(p, onehot.reshape(b - a, *p.shape))]
            if columns is not None:
                seeds += [(s, c) for s, c in zip(state, columns) if c is not None]
            with no_grad(), forward_mode(seeds, b - a) as trace:
                y_pred, new = self.model.step(x_t, unflatten(self.state, state))
            new = flatten(new)
            out = tuple(trace.get(n) for n in new)
            influence.append(None if all(o is None for o in out) else out)
            if m:
                if gy is None:
                    value, gy = self._loss(y_pred, y_t)
                ty = trace.get(y_pred)
                if ty is not None:
                    grads[k].reshape(-1)[a:b] = np.tensordot(ty, gy, axes=gy.ndim)
        self._influence = influence
        self.state = unflatten(self.state, detach(new))
        return value, grads
