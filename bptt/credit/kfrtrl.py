"""Kronecker-factored RTRL (Mujika, Meier & Steger 2018), for a cell of Elman form.

The influence dh_t/dW of each example is carried as one Kronecker product A ⊗ u, unbiased over
its random signs, with far less variance than UORO's at O(H^3) a step.  It needs the step to be
h' = act(W [h; x; 1]) (``CellType.elman_form``; the ``rnn`` cell), one layer.

Shapes: x (T, B, I), y (T, B, ...) as ``loss_fn`` takes it per step, mask (T,).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from bptt.credit.online import SampledEstimator
from bptt.forward import forward_mode
from bptt.nn import registry
from bptt.nn.state import as_array, detach, leaves
from bptt.tape import enable_grad

__all__ = ["KFRTRL"]


class KFRTRL(SampledEstimator):
    """Kronecker-factored RTRL (Mujika, Meier & Steger 2018) for one layer of Elman form.

    The cell (``rnn``, or any whose record says ``elman_form``) is one affine map of
    a_t = [h_{t-1}; x_t; 1] under an elementwise nonlinearity,
    h_t = f(W a_t) with W = [weight_hh | weight_ih | bias_ih + bias_hh], so the influence
    dh_t/dW of each example is carried as one Kronecker product, ``dh_i/dW_jk ≈ A_ij u_k``
    (A: H x H, u: H + I + 1).  Each step, with the recurrent Jacobian J_t and D_t = f'(W a_t)
    and independent random signs c1, c2 per example::

        g̃ = Σ_b (A_bᵀ dL_t/dh_{t-1,b}) u_bᵀ + ∂L_t/∂W      (the step's gradient estimate)
        u ← c1 p1 u + c2 p2 a_t
        A ← c1 J_t A / p1 + c2 diag(D_t) / p2

    with p1 = sqrt(||J_t A|| / ||u||) and p2 = sqrt(||D_t|| / ||a_t||) (each plus ``eps`` in
    numerator and denominator), which minimise the variance.  E[c1 c2] = 0, so E[A ⊗ u] is the
    exact influence and the gradient is unbiased (with frozen weights); its variance is far
    below UORO's, at O(H^3) a step (J_t A is a jvp of H tangents) against RTRL's O(H^4).

    Parameters
    ----------
    model : SequenceModel
        Of a cell of Elman form (``CellType.elman_form``: the ``rnn`` cell, either
        nonlinearity), one layer, with biases.
    loss_fn, optimizer, k1, clip_norm, rng, eps
        As for ``UORO``.

    Attributes
    ----------
    state, history, steps
        As ``TBPTT``'s.
    influence : (ndarray, ndarray)
        ``(u, A)``: (B, H + I + 1) and (B, H, H).
    """

    def __init__(self, model: Any, loss_fn: Callable, optimizer: Any, k1: int = 1,
                 clip_norm: float | None = None, rng: Any = None, eps: float = 1e-7):
        cell = getattr(model, "cell_type", None)
        if cell is None or not cell.elman_form or getattr(model, "num_layers", None) != 1:
            elman = " or ".join(repr(c.name) for c in registry.registered() if c.elman_form)
            raise ValueError(f"KFRTRL: needs a one-layer SequenceModel of the {elman} cell (Elman "
                             f"form), got {type(model).__name__} {getattr(model, 'cell', '')!r}"
                             f" of {getattr(model, 'num_layers', '?')} layers")
        names = dict(model.named_parameters())
        try:
            self._w = [names[f"rnn.{n}_l0"] for n in ("weight_hh", "weight_ih", "bias_ih", "bias_hh")]
        except KeyError:
            raise ValueError(f"KFRTRL: needs a {cell.name} cell with biases (bias=True)") from None
        super().__init__(model, loss_fn, optimizer, k1, clip_norm, rng, eps)

    def _start(self):
        B, H = self.state.shape[1:]
        n = H + self.model.input_size + 1
        return np.zeros((B, n), self.state.dtype), np.zeros((B, H, H), self.state.dtype)

    def _advance(self, x_t, y_t, m):
        u, A = self._influence
        B, H = A.shape[:2]
        h_prev = as_array(self.state)[0]
        (leaf,) = leaves(self.state)
        bias_hh = self._w[3]
        # tangents 0..H-1 on the state, the columns of each example's A: J_t A;
        # tangents H..2H-1 one-hot on bias_hh: ∂h_t/∂b = diag(D_t)
        ts = np.zeros((2 * H, 1, B, H), A.dtype)
        ts[:H, 0] = np.moveaxis(A, 2, 0)
        tb = np.zeros((2 * H, H), bias_hh.dtype)
        tb[np.arange(H, 2 * H), np.arange(H)] = 1
        for p in self._params:
            p.grad = None
        with enable_grad(), forward_mode([(leaf, ts), (bias_hh, tb)], 2 * H) as trace:
            y_pred, new = self.model.step(x_t, leaf)
        value = grads = None
        if m:
            with enable_grad():
                loss = self.loss_fn(y_pred, y_t)
                loss.backward()
            value = loss.item()
            ds = np.zeros((B, H)) if leaf.grad is None else leaf.grad[0]
            along = np.einsum("bi,bij,bk->jk", ds, A, u)         # (H, H + I + 1)
            extra = {id(self._w[0]): along[:, :H], id(self._w[1]): along[:, H:-1],
                     id(self._w[2]): along[:, -1], id(self._w[3]): along[:, -1]}
            grads = [(np.zeros(p.shape) if p.grad is None else p.grad) + extra.get(id(p), 0)
                     for p in self._params]
            for p in self._params:
                p.grad = None
        out = trace.get(new)
        JA = np.zeros_like(A) if out is None else np.moveaxis(out[:H, 0], 0, 2)
        D = np.zeros((B, H), A.dtype) if out is None else np.diagonal(out[H:, 0], axis1=0, axis2=2)
        a = np.concatenate([h_prev, np.asarray(x_t, A.dtype).reshape(B, -1), np.ones((B, 1), A.dtype)], axis=1)
        eps = self.eps
        norm = lambda v: np.sqrt((v.reshape(B, -1) ** 2).sum(axis=1))
        p1 = np.sqrt((norm(JA) + eps) / (norm(u) + eps))
        p2 = np.sqrt((norm(D) + eps) / (norm(a) + eps))
        c1, c2 = (self.rng.choice(np.array([-1.0, 1.0], A.dtype), size=B) for _ in range(2))
        self._influence = ((c1 * p1)[:, None] * u + (c2 * p2)[:, None] * a,
                           (c1 / p1)[:, None, None] * JA
                           + (c2 / p2)[:, None, None] * (D[:, :, None] * np.eye(H, dtype=A.dtype)))
        self.state = detach(new)
        return value, grads
