"""The gated recurrent unit (Cho et al. 2014) as PyTorch defines it, gate order r, z, n.

Declares the cell's record (reference step, fused kernels) and PyTorch's ``GRUCell`` and ``GRU``
with their signatures.
"""

from __future__ import annotations

import numpy as np

from bptt import ops
from bptt.nn import kernels
from bptt.nn.registry import CellType, affine, padded, register
from bptt.nn.recurrent import Cell, Recurrent

__all__ = ["GRUCell", "GRU", "step_reference"]


def step_reference(x, state, weights):
    """One GRU step from small ops, gate order r, z, n: ``(h,) -> (h',)``."""
    (h,), (w_ih, w_hh, b_ih, b_hh) = state, padded(weights)
    xr, xz, xn = ops.split(affine(x, w_ih, b_ih), sections=3, axis=-1)
    hr, hz, hn = ops.split(affine(h, w_hh, b_hh), sections=3, axis=-1)
    r = ops.sigmoid(xr + hr)
    z = ops.sigmoid(xz + hz)
    n = ops.tanh(xn + r * hn)
    return ((1 - z) * n + z * h,)


def _forward(x, state, weights, reverse):
    (h0,), (w_ih, w_hh, b_ih, b_hh) = state, weights
    dtype = x.dtype
    H = w_hh.shape[1]
    T, B, _ = x.shape
    half = np.ones(3 * H, dtype)
    half[:2 * H] = 0.5       # r and z are sigmoids: 0.5 * tanh(a / 2) + 0.5
    fold = np.ones(3 * H, dtype)
    fold[2 * H:] = 0         # b_hn sits inside r * (W_hn h + b_hn): not folded into the input side
    xp, w_t, buf, hp = kernels.gate_major(x, w_ih, w_hh, b_ih, b_hh, half, (0, 1, 2), "gru.xp", fold)
    b_hn = None if b_hh is None else b_hh[2 * H:]
    qns = kernels.pooled("gru.qn", (T, B, H), dtype)      # W_hn h_{t-1} + b_hn
    ys = kernels.pooled("gru.ys", (T, B, H), dtype)
    XP, QN, Y = (kernels.in_step_order(a, reverse) for a in (xp, qns, ys))
    tmp = np.empty((B, H), dtype)
    h = h0
    for k in range(T):
        a, qn = XP[k], QN[k]
        np.matmul(h, w_t, out=buf)
        if b_hn is None:
            np.copyto(qn, hp[2])
        else:
            np.add(hp[2], b_hn, out=qn)
        rz = a[:2]
        rz += hp[:2]
        np.tanh(rz, out=rz)
        rz *= 0.5
        rz += 0.5
        r, z, n = a
        np.multiply(r, qn, out=tmp)
        n += tmp
        np.tanh(n, out=n)
        np.subtract(h, n, out=tmp)
        tmp *= z
        h = Y[k]
        np.add(n, tmp, out=h)
    res = (x, h0, w_ih, w_hh, reverse, xp, qns, ys, b_ih is not None)
    return ys, (Y[-1],), res


def _backward(res, gy, gstate, need_x, need_w_ih, need_w_hh):
    x, h0, w_ih, w_hh, reverse, xp, qns, ys, has_bias = res
    T, B, H = ys.shape
    dtype = ys.dtype
    XP, qn, Y = (kernels.in_step_order(a, reverse) for a in (xp, qns, ys))
    r, z, n = XP[:, 0], XP[:, 1], XP[:, 2]                # (T, B, H) each: xp is (T, 3, B, H)
    # per-step factors that do not depend on the recursion, for all steps at once
    def work(name, shape=(T, B, H)):
        return kernels.scratch("gru." + name, shape, dtype)
    hmn = work("hmn")                                    # h_{t-1} - n
    np.subtract(h0, n[0], out=hmn[0])
    np.subtract(Y[:-1], n[1:], out=hmn[1:])
    one_minus = work("one_minus")
    Kz = np.multiply(z, np.subtract(1, z, out=one_minus), out=work("Kz"))
    Kz *= hmn                                            # dz = dh * Kz
    Kn = np.multiply(n, n, out=work("Kn"))
    np.subtract(1, Kn, out=Kn)
    Kn *= one_minus                                      # dn = dh * Kn, one_minus = 1 - z
    R = np.multiply(r, np.subtract(1, r, out=one_minus), out=work("R"))
    R *= qn                                              # dr = dn * R
    dxp = work("dxp", (T, B, 3 * H))                     # cotangent of the input projection
    dhp = work("dhp", (T, B, 3 * H))                     # ... and of h_{t-1} @ W_hh.T + b_hh
    DX, DH = kernels.in_step_order(dxp, reverse), kernels.in_step_order(dhp, reverse)
    GY = None if gy is None else kernels.in_step_order(gy, reverse)
    dh = np.empty((B, H), dtype)
    rec = np.array(gstate[0], dtype=dtype, copy=True)
    back = kernels.recurrent_back(w_hh, B)
    tmp = np.empty((B, H), dtype)
    for k in range(T - 1, -1, -1):
        if GY is None:
            dh, rec = rec, dh
        else:
            np.add(rec, GY[k], out=dh)
        dn = DX[k, :, 2 * H:]
        np.multiply(dh, Kz[k], out=DH[k, :, H:2 * H])
        np.multiply(dh, Kn[k], out=dn)
        np.multiply(dn, R[k], out=DH[k, :, :H])
        np.multiply(dn, r[k], out=DH[k, :, 2 * H:])
        back(DH[k], rec)
        np.multiply(dh, z[k], out=tmp)
        rec += tmp
    dxp[:, :, :2 * H] = dhp[:, :, :2 * H]
    dx, dw_ih, dw_hh = kernels.weight_grads(x, w_ih, dxp, dhp, ys, h0, reverse, need_x, need_w_ih, need_w_hh)
    db_ih = dxp.sum(axis=(0, 1)) if has_bias else None
    db_hh = dhp.sum(axis=(0, 1)) if has_bias else None
    return dx, (rec,), (dw_ih, dw_hh, db_ih, db_hh)


CELL = register(CellType(
    name="gru",
    gates=("r", "z", "n"),
    equations=("r = σ(W_ir x + b_ir + W_hr h + b_hr)",
               "z = σ(W_iz x + b_iz + W_hz h + b_hz)",
               "n = tanh(W_in x + b_in + r (W_hn h + b_hn))",
               "h' = (1 - z) n + z h"),
    reference=step_reference,
    forward=_forward,
    backward=_backward,
    summary="gated recurrent unit (PyTorch's nn.GRU)",
))


@CELL.document
class GRUCell(Cell):
    """A gated recurrent unit (Cho et al. 2014) as PyTorch defines it.

    Parameters
    ----------
    input_size, hidden_size, bias, init, fused, dtype, rng
        As for ``RNNCell``.

    Attributes
    ----------
    weight_ih : Parameter (3H, I)
        Row blocks in gate order r, z, n.
    weight_hh : Parameter (3H, H)
    bias_ih, bias_hh : Parameter (3H,)

    Shapes
    ------
    ``cell(x (B, I), h (B, H) = zeros) -> h' (B, H)``
    """

    def __init__(self, input_size, hidden_size, bias=True, init="default", fused=True, dtype=None,
                 rng=None):
        super().__init__(CELL, input_size, hidden_size, bias=bias, init=init, fused=fused,
                         dtype=dtype, rng=rng)


@CELL.document
class GRU(Recurrent):
    """A gated recurrent unit over a sequence: ``GRUCell``'s step at every timestep.

    Parameters
    ----------
    input_size, hidden_size : int
    num_layers : int
        Stacked layers; layer l > 0 reads layer l-1's output (both directions concatenated).
    bias, batch_first, dropout, bidirectional, init, fused, dtype, rng
        As for ``bptt.nn.Recurrent``.

    Attributes
    ----------
    weight_ih_l{k} : Parameter (3H, I) for k = 0, (3H, D*H) after
        Row blocks in gate order r, z, n.
    weight_hh_l{k} : Parameter (3H, H)
    bias_ih_l{k}, bias_hh_l{k} : Parameter (3H,)
        ``..._reverse`` for the second direction.

    Shapes
    ------
    ``gru(x, h0) -> (y, h_n)``, with x (T, B, I), y (T, B, D*H) and h (L*D, B, H), D = 2 if
    bidirectional else 1; zeros when not given.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, init="default", fused=True, dtype=None,
                 rng=None):
        super().__init__(CELL, input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         init=init, fused=fused, dtype=dtype, rng=rng)
