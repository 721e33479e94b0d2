"""The Elman RNN cell.

Declares the cell's record (reference step, fused kernels, options) and PyTorch's ``RNNCell``
and ``RNN`` with their signatures.
"""

from __future__ import annotations

import numpy as np

from bptt import ops
from bptt.nn import kernels
from bptt.nn.registry import CellType, Option, affine, padded, register
from bptt.nn.recurrent import Cell, Recurrent

__all__ = ["RNNCell", "RNN", "step_reference"]


def step_reference(x, state, weights, nonlinearity="tanh"):
    """One step from small ops (the definition the kernels match): ``(h,) -> (h',)``."""
    (h,), (w_ih, w_hh, b_ih, b_hh) = state, padded(weights)
    a = affine(x, w_ih, b_ih) + affine(h, w_hh, b_hh)
    return (ops.tanh(a) if nonlinearity == "tanh" else ops.relu(a),)


def _forward(x, state, weights, reverse, nonlinearity="tanh"):
    (h0,), (w_ih, w_hh, b_ih, b_hh) = state, weights
    T, B, _ = x.shape
    ys = kernels.project(x, w_ih, b_ih, b_hh,               # becomes the outputs, in place
                         out=kernels.pooled("rnn.ys", (T * B, w_ih.shape[0]), x.dtype))
    w_hh_t = kernels.recurrent_matrix(w_hh, x)
    h_last = kernels.elman_forward(ys, h0, reverse, nonlinearity,
                                   lambda h, out: np.matmul(h, w_hh_t, out=out))
    return ys, (h_last,), (x, h0, w_ih, w_hh, nonlinearity, reverse, ys, b_ih is not None)


def _backward(res, gy, gstate, need_x, need_w_ih, need_w_hh):
    x, h0, w_ih, w_hh, nonlinearity, reverse, ys, has_bias = res
    da, dh0 = kernels.elman_backward(ys, h0, gy, gstate[0], reverse, nonlinearity,
                                     lambda d, out: np.matmul(d, w_hh, out=out))
    dx, dw_ih, dw_hh = kernels.weight_grads(x, w_ih, da, da, ys, h0, reverse, need_x, need_w_ih, need_w_hh)
    db = da.sum(axis=(0, 1)) if has_bias else None
    return dx, (dh0,), (dw_ih, dw_hh, db, db)


CELL = register(CellType(
    name="rnn",
    gates=("h",),
    equations=("h' = act(W_ih x + b_ih + W_hh h + b_hh)", "act = tanh or relu"),
    reference=step_reference,
    options={"nonlinearity": Option("tanh", choices=("tanh", "relu"),
                                    doc="the activation: tanh, or relu (with init='identity': the IRNN)")},
    forward=_forward,
    backward=_backward,
    kernel_examples=({"nonlinearity": "tanh"}, {"nonlinearity": "relu"}),
    recurrence="elman",
    summary="Elman RNN (PyTorch's nn.RNN)",
))


@CELL.document
class RNNCell(Cell):
    """An Elman RNN cell.

    Parameters
    ----------
    input_size, hidden_size : int
    nonlinearity : {'tanh', 'relu'}
    init : {'default', 'orthogonal', 'identity'}
        Of ``weight_hh``: PyTorch's uniform, orthogonal, or the identity with zero biases (IRNN).
    bias, fused, dtype, rng
        As for ``bptt.nn.Cell``.

    Attributes
    ----------
    weight_ih : Parameter (H, I)
    weight_hh : Parameter (H, H)
    bias_ih, bias_hh : Parameter (H,)
        All drawn from U(-1/sqrt(H), 1/sqrt(H)) by default.

    Shapes
    ------
    ``cell(x (B, I), h (B, H) = zeros) -> h' (B, H)``
    """

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", init="default",
                 fused=True, dtype=None, rng=None):
        super().__init__(CELL, input_size, hidden_size, bias=bias, init=init, fused=fused,
                         dtype=dtype, rng=rng, nonlinearity=nonlinearity)


@CELL.document
class RNN(Recurrent):
    """An Elman RNN over a sequence: ``RNNCell``'s step at every timestep.

    Parameters
    ----------
    input_size, hidden_size : int
    num_layers : int
        Stacked layers; layer l > 0 reads layer l-1's output (both directions concatenated).
    nonlinearity : {'tanh', 'relu'}
    bias, batch_first, dropout, bidirectional, init, fused, dtype, rng
        As for ``bptt.nn.Recurrent``.

    Attributes
    ----------
    weight_ih_l{k} : Parameter (H, I) for k = 0, (H, D*H) after
    weight_hh_l{k} : Parameter (H, H)
    bias_ih_l{k}, bias_hh_l{k} : Parameter (H,)
        ``..._reverse`` for the second direction.

    Shapes
    ------
    ``rnn(x, h0) -> (y, h_n)``, with x (T, B, I), y (T, B, D*H) and h (L*D, B, H), D = 2 if
    bidirectional else 1; zeros when not given.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, init="default", fused=True,
                 dtype=None, rng=None):
        super().__init__(CELL, input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         init=init, fused=fused, dtype=dtype, rng=rng, nonlinearity=nonlinearity)
