"""The LSTM cell (Hochreiter & Schmidhuber 1997, with a forget gate), PyTorch's gate order.

Declares the cell's record (reference step, fused kernels, the ``forget_bias`` option) and
PyTorch's ``LSTMCell`` and ``LSTM`` with their signatures.
"""

from __future__ import annotations

import numpy as np

from bptt import ops
from bptt.nn import compiled, kernels
from bptt.nn.registry import CellType, Option, affine, padded, register, standard_init
from bptt.nn.recurrent import Cell, Recurrent

__all__ = ["LSTMCell", "LSTM", "step_reference"]


def step_reference(x, state, weights):
    """One LSTM step from small ops; gate order i, f, g, o: ``(h, c) -> (h', c')``."""
    (h, c), (w_ih, w_hh, b_ih, b_hh) = state, padded(weights)
    i, f, g, o = ops.split(affine(x, w_ih, b_ih) + affine(h, w_hh, b_hh), sections=4, axis=-1)
    c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
    return ops.sigmoid(o) * ops.tanh(c), c


#: The gates as stored, i, f, o, g: the three sigmoids are one block (``kernels.gate_major``).
ORDER = (0, 1, 3, 2)


def _forward(x, state, weights, reverse):
    if compiled.handles(x, weights[1]):
        return compiled.lstm_forward(x, state, weights, reverse)
    (h0, c0), (w_ih, w_hh, b_ih, b_hh) = state, weights
    T, B, _ = x.shape
    H = w_hh.shape[1]
    dtype = x.dtype
    # sigmoid(a) = 0.5 * tanh(a / 2) + 0.5: halve the i, f, o pre-activations once, here, so that
    # each step needs one tanh over all four gates and one affine map back
    half = np.full(4 * H, 0.5, dtype)
    half[2 * H:3 * H] = 1
    gates, w_t, buf, step_gates = kernels.gate_major(x, w_ih, w_hh, b_ih, b_hh, half, ORDER, "lstm.gates")
    ys = kernels.pooled("lstm.ys", (T, B, H), dtype)
    tcs = kernels.pooled("lstm.tcs", (T, B, H), dtype)
    cs = kernels.pooled("lstm.cs", (T + 1, B, H), dtype)   # by step: cs[0] = c0, cs[k + 1] after step k
    cs[0] = c0
    A, Y, TC = (kernels.in_step_order(a, reverse) for a in (gates, ys, tcs))
    tmp = np.empty((B, H), dtype)
    h = h0
    for k in range(T):
        a = A[k]
        np.matmul(h, w_t, out=buf)
        a += step_gates
        np.tanh(a, out=a)
        sig = a[:3]
        sig *= 0.5
        sig += 0.5
        i, f, o, g = a
        c = cs[k + 1]
        np.multiply(f, cs[k], out=c)
        np.multiply(i, g, out=tmp)
        c += tmp
        np.tanh(c, out=TC[k])
        h = Y[k]
        np.multiply(o, TC[k], out=h)
    res = (x, h0, w_ih, w_hh, reverse, gates, cs, tcs, ys, b_ih is not None)
    return ys, (Y[-1], cs[T]), res


def _backward(res, gy, gstate, need_x, need_w_ih, need_w_hh):
    if isinstance(res, compiled.Residuals):       # made by the compiled forward
        return compiled.lstm_backward(res, gy, gstate, need_x, need_w_ih, need_w_hh)
    x, h0, w_ih, w_hh, reverse, gates, cs, tcs, ys, has_bias = res
    T, B, H = ys.shape
    dtype = ys.dtype
    A = kernels.in_step_order(gates, reverse)         # (T, 4, B, H), gates i, f, o, g
    TC = kernels.in_step_order(tcs, reverse)
    dgates = kernels.scratch("lstm.dgates", (T, B, 4 * H), dtype)
    DG = kernels.in_step_order(dgates, reverse)
    DG4 = kernels.in_step_order(dgates.reshape(T, B, 4, H), reverse)   # reshape first: writes reach dgates
    GY = None if gy is None else kernels.in_step_order(gy, reverse)
    dh = np.empty((B, H), dtype)
    rec = np.array(gstate[0], dtype=dtype, copy=True)
    back = kernels.recurrent_back(w_hh, B)
    dc = np.array(gstate[1], dtype=dtype, copy=True)
    tmp = np.empty((B, H), dtype)
    # a step's factors (deriv 4, M 3, N and P: 9 blocks of B x H) and what they are made from
    # (the 4 gates, c and tanh c): 15
    S = kernels.block_steps(T, 15 * B * H * dtype.itemsize)
    for start in range(((T - 1) // S) * S, -1, -S):
        steps = slice(start, min(start + S, T))
        M, N, P = _factors(A[steps], cs[steps], TC[steps], dtype)
        for k in range(steps.stop - 1, start - 1, -1):
            j = k - start
            if GY is None:
                dh, rec = rec, dh
            else:
                np.add(rec, GY[k], out=dh)
            np.multiply(dh, P[j], out=tmp)
            dc += tmp
            np.multiply(dc[:, None, :], M[j], out=DG4[k, :, :3])
            np.multiply(dh, N[j], out=DG4[k, :, 3])
            back(DG[k], rec)
            dc *= A[k, 1]
    dx, dw_ih, dw_hh = kernels.weight_grads(x, w_ih, dgates, dgates, ys, h0, reverse,
                                            need_x, need_w_ih, need_w_hh)
    db = dgates.sum(axis=(0, 1)) if has_bias else None
    return dx, (rec, dc), (dw_ih, dw_hh, db, db)


def _factors(A, c_prev, TC, dtype):
    """What the backward's steps multiply dc and dh by, for a block of steps at once: from the
    gates A (S, 4, B, H) as stored (i, f, o, g), M = [g i', c_prev f', i g'] (S, B, 3, H) times
    dc, and N = tanh(c) o' and P = o tanh'(c) (S, B, H) times dh."""
    S, _, B, H = A.shape
    i, o, g = A[:, 0], A[:, 2], A[:, 3]
    deriv = kernels.scratch("lstm.deriv", A.shape, dtype)
    np.multiply(A, A, out=deriv)
    np.subtract(A, deriv, out=deriv)                     # s (1 - s) for i, f, o
    np.multiply(g, g, out=deriv[:, 3])
    np.subtract(1, deriv[:, 3], out=deriv[:, 3])         # 1 - g^2 for g
    M = kernels.scratch("lstm.M", (S, B, 3, H), dtype)
    np.multiply(g, deriv[:, 0], out=M[:, :, 0])
    np.multiply(c_prev, deriv[:, 1], out=M[:, :, 1])
    np.multiply(i, deriv[:, 3], out=M[:, :, 2])
    N = np.multiply(TC, deriv[:, 2], out=kernels.scratch("lstm.N", (S, B, H), dtype))
    P = np.multiply(TC, TC, out=kernels.scratch("lstm.P", (S, B, H), dtype))
    np.subtract(1, P, out=P)
    P *= o
    return M, N, P


def _initialize(cell, params, hidden_size, init, rng, forget_bias=0.0):
    """``standard_init``, then ``forget_bias`` added to the f block of bias_hh (Gers et al. 2000;
    Jozefowicz et al. 2015)."""
    standard_init(cell, params, hidden_size, init, rng)
    if forget_bias:
        if "bias_hh" not in params:
            raise ValueError("forget_bias needs bias=True")
        params["bias_hh"].data[hidden_size:2 * hidden_size] += forget_bias


CELL = register(CellType(
    name="lstm",
    gates=("i", "f", "g", "o"),
    state=("h", "c"),
    equations=("i = σ(W_ii x + b_ii + W_hi h + b_hi)",
               "f = σ(W_if x + b_if + W_hf h + b_hf)",
               "g = tanh(W_ig x + b_ig + W_hg h + b_hg)",
               "o = σ(W_io x + b_io + W_ho h + b_ho)",
               "c' = f c + i g",
               "h' = o tanh(c')"),
    reference=step_reference,
    options={"forget_bias": Option(0.0, kind=float, init=True,
                                   doc="added to the forget-gate bias at initialisation (1.0 is usual)")},
    initialize=_initialize,
    forward=_forward,
    backward=_backward,
    summary="long short-term memory (PyTorch's nn.LSTM)",
))


@CELL.document
class LSTMCell(Cell):
    """A long short-term memory cell (Hochreiter & Schmidhuber 1997, with a forget gate).

    Parameters
    ----------
    input_size, hidden_size, bias, init, fused, dtype, rng
        As for ``RNNCell``.
    forget_bias : float
        Added to the f block of ``bias_hh`` after initialisation (1.0 is the usual choice).

    Attributes
    ----------
    weight_ih : Parameter (4H, I)
        Row blocks in gate order i, f, g, o.
    weight_hh : Parameter (4H, H)
    bias_ih, bias_hh : Parameter (4H,)

    Shapes
    ------
    ``cell(x (B, I), (h, c) (B, H) each = zeros) -> (h', c')``
    """

    def __init__(self, input_size, hidden_size, bias=True, init="default", forget_bias=0.0,
                 fused=True, dtype=None, rng=None):
        super().__init__(CELL, input_size, hidden_size, bias=bias, init=init, fused=fused,
                         dtype=dtype, rng=rng, forget_bias=forget_bias)


@CELL.document
class LSTM(Recurrent):
    """A long short-term memory network over a sequence: ``LSTMCell``'s step at every timestep.

    Parameters
    ----------
    input_size, hidden_size : int
    num_layers : int
        Stacked layers; layer l > 0 reads layer l-1's output (both directions concatenated).
    bias, batch_first, dropout, bidirectional, init, fused, dtype, rng
        As for ``bptt.nn.Recurrent``.
    forget_bias : float
        Added to the f block of every ``bias_hh`` after initialisation.

    Attributes
    ----------
    weight_ih_l{k} : Parameter (4H, I) for k = 0, (4H, D*H) after
        Row blocks in gate order i, f, g, o.
    weight_hh_l{k} : Parameter (4H, H)
    bias_ih_l{k}, bias_hh_l{k} : Parameter (4H,)
        ``..._reverse`` for the second direction.

    Shapes
    ------
    ``lstm(x, (h0, c0)) -> (y, (h_n, c_n))``, with x (T, B, I), y (T, B, D*H) and h, c
    (L*D, B, H) each, D = 2 if bidirectional else 1; zeros when not given.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, init="default", forget_bias=0.0, fused=True,
                 dtype=None, rng=None):
        super().__init__(CELL, input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         init=init, fused=fused, dtype=dtype, rng=rng, forget_bias=forget_bias)
