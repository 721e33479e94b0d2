"""The independently recurrent neural network (IndRNN; Li et al. 2018).

Each hidden unit sees its own past only, through one recurrent weight (``*`` is elementwise).
Because the recurrence is diagonal, dh'/dh = diag(act'(.) u): a unit keeps its gradient over
long spans when its |u| is near 1, which the paper controls by initialising u in [0, 1] and, for
long sequences, bounding |u| by ``recurrent_max`` (applied here as ``clip(u, -recurrent_max,
recurrent_max)`` inside each step, on the tape).  ReLU is the paper's activation and the default.

Use it as any registered cell: ``nn.SequenceModel("indrnn", I, H, O)``,
``nn.Recurrent("indrnn", I, H, num_layers=2, recurrent_max=2.0)``, ``bptt train --cell indrnn``,
``bptt gradflow --cells rnn,lstm,indrnn``.

Shapes: weight_ih (H, I), weight_hh (H,), bias_ih, bias_hh (H,); state h (B, H).
"""

from __future__ import annotations

import math
import sys

import numpy as np

from bptt import ops
from bptt.nn import init as initializers
from bptt.nn import kernels
from bptt.nn.registry import CellType, Option, affine, padded, register

__all__ = ["step_reference"]


def _bounded(u, recurrent_max):
    return u if recurrent_max is None else ops.clip(u, low=-recurrent_max, high=recurrent_max)


def step_reference(x, state, weights, nonlinearity="relu", recurrent_max=None):
    """One IndRNN step from small ops: ``(h,) -> (h',)``."""
    (h,), (w_ih, u, b_ih, b_hh) = state, padded(weights)
    a = affine(x, w_ih, b_ih) + _bounded(u, recurrent_max) * h
    if b_hh is not None:
        a = a + b_hh
    return (ops.relu(a) if nonlinearity == "relu" else ops.tanh(a),)


def _forward(x, state, weights, reverse, nonlinearity="relu", recurrent_max=None):
    (h0,), (w_ih, u, b_ih, b_hh) = state, weights
    u_eff = u if recurrent_max is None else np.clip(u, -recurrent_max, recurrent_max)
    T, B, _ = x.shape
    ys = kernels.project(x, w_ih, b_ih, b_hh,               # becomes the outputs, in place
                         out=kernels.pooled("indrnn.ys", (T * B, w_ih.shape[0]), x.dtype))
    h_last = kernels.elman_forward(ys, h0, reverse, nonlinearity,
                                   lambda h, out: np.multiply(h, u_eff, out=out))
    res = (x, h0, w_ih, u, u_eff, recurrent_max, nonlinearity, reverse, ys, b_ih is not None)
    return ys, (h_last,), res


def _backward(res, gy, gstate, need_x, need_w_ih, need_w_hh):
    x, h0, w_ih, u, u_eff, recurrent_max, nonlinearity, reverse, ys, has_bias = res
    da, dh0 = kernels.elman_backward(ys, h0, gy, gstate[0], reverse, nonlinearity,
                                     lambda d, out: np.multiply(d, u_eff, out=out))
    dx, dw_ih, _ = kernels.weight_grads(x, w_ih, da, da, ys, h0, reverse, need_x, need_w_ih, False)
    du = None
    if need_w_hh:   # the sum over steps and batch of da_k * h_{k-1}, in step order
        D, Y = kernels.in_step_order(da, reverse), kernels.in_step_order(ys, reverse)
        du = np.einsum("bh,bh->h", D[0], h0)
        if len(Y) > 1:
            du += np.einsum("tbh,tbh->h", D[1:], Y[:-1])
        if recurrent_max is not None:    # clip passes the gradient strictly inside its bounds
            du *= (u > -recurrent_max) & (u < recurrent_max)
    db = da.sum(axis=(0, 1)) if has_bias else None
    return dx, (dh0,), (dw_ih, du, db, db)


def _shapes(input_size, hidden_size):
    H = hidden_size
    return {"weight_ih": (H, input_size), "weight_hh": (H,), "bias_ih": (H,), "bias_hh": (H,)}


def _initialize(cell, params, hidden_size, init, rng, **options):
    """W_ih and the biases from U(-1/sqrt(H), 1/sqrt(H)) as PyTorch's RNN; u from U(0, 1) (Li
    et al. 2018); 'identity' sets u = 1 and the biases to 0."""
    k = 1.0 / math.sqrt(hidden_size)
    for name, p in params.items():
        if name == "weight_hh":
            initializers.uniform_(p, 0.0, 1.0, rng)
        else:
            initializers.uniform_(p, -k, k, rng)
    if init == "identity":
        params["weight_hh"].data = np.ones_like(params["weight_hh"].data)
        for name in ("bias_ih", "bias_hh"):
            if name in params:
                initializers.zeros_(params[name])


def _positive(value):
    return None if value > 0 else "must be positive"


CELL = register(CellType(
    name="indrnn",
    gates=("h",),
    equations=("h' = act(W_ih x + b_ih + u * h + b_hh)", "u = weight_hh (H,)", "act = relu or tanh"),
    reference=step_reference,
    options={"nonlinearity": Option("relu", choices=("relu", "tanh"), doc="the activation"),
             "recurrent_max": Option(None, kind=float, check=_positive,
                                     doc="bound on |u| in each step (None: unbounded)")},
    inits=("default", "identity"),
    initialize=_initialize,
    shapes=_shapes,
    forward=_forward,
    backward=_backward,
    kernel_examples=({"nonlinearity": "tanh"}, {"nonlinearity": "tanh", "recurrent_max": 1.0}),
    recurrence="diagonal",
    summary="independently recurrent network (Li et al. 2018)",
))
CELL.document(sys.modules[__name__])     # IndRNN has no module classes: its module docstring shows it
