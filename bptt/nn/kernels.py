"""Fused recurrent primitives: a whole cell step, or a whole sequence, as one tape entry.

The readable reference (cells unrolled out of ``linear``, ``sigmoid``, ``tanh``, ``mul``, ...,
about twenty entries a step) lives in ``bptt.nn.recurrent``; tests check these kernels against it
and against finite differences.  What makes them fast:

* the input projections of all T timesteps are one GEMM, ``(T*B, I) @ (I, G*H)``;
* each step is one GEMM ``(B, H) @ (H, G*H)`` and a handful of in-place ufunc calls on
  preallocated buffers (``out=``), about ten a step forward and seven backward for the LSTM;
* sigmoid is computed as ``0.5 * tanh(a / 2) + 0.5``: the halving is folded into the weights
  once per call, so one ``tanh`` covers every gate of a step;
* backward computes all activation derivatives for the whole sequence before its loop, so the
  loop only does what depends on the recursion, and accumulates the weight gradients in one GEMM
  over the stacked timesteps, as cuDNN-style implementations do.

Gate order and formulas are PyTorch's (LSTM i, f, g, o; GRU r, z, n with
``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``).  ``reverse=True`` runs the recursion from the
last timestep to the first (the backward direction of a bidirectional layer) while inputs and
outputs stay in time order.  Every buffer takes the dtype of the inputs, so float32 stays float32.

Shapes: x (T, B, I), h0/c0 (B, H), weight_ih (G*H, I), weight_hh (G*H, H), biases (G*H,),
y (T, B, H); G = 1 (RNN), 3 (GRU), 4 (LSTM).
"""

from __future__ import annotations

import weakref

import numpy as np

from bptt.ops import OpError, custom, primitive

__all__ = ["rnn_cell", "lstm_cell", "gru_cell", "rnn_sequence", "lstm_sequence", "gru_sequence",
           "feed_up", "StateSink"]

_NONLINEARITIES = ("tanh", "relu")


def _check(x, h, w_ih, w_hh, b_ih, b_hh, gates, cs=()):
    """The common dtype of the operands, or an OpError describing the mismatch."""
    if np.ndim(x) != 3 or np.ndim(h) != 2 or np.ndim(w_ih) != 2 or np.ndim(w_hh) != 2:
        raise OpError(f"need x (T, B, I), h (B, H), weight_ih (G*H, I), weight_hh (G*H, H); got "
                      f"{np.shape(x)}, {np.shape(h)}, {np.shape(w_ih)}, {np.shape(w_hh)}")
    T, B, I = x.shape
    H = w_hh.shape[1]
    want = {"weight_ih": (gates * H, I), "weight_hh": (gates * H, H), "h": (B, H)}
    got = {"weight_ih": w_ih.shape, "weight_hh": w_hh.shape, "h": h.shape}
    for i, c in enumerate(cs):
        want[f"c{i}"], got[f"c{i}"] = (B, H), np.shape(c)
    if (b_ih is None) != (b_hh is None):
        raise OpError("give both biases or neither")
    if b_ih is not None:
        want["bias_ih"] = want["bias_hh"] = (gates * H,)
        got["bias_ih"], got["bias_hh"] = np.shape(b_ih), np.shape(b_hh)
    bad = [f"{k} {got[k]} (expected {v})" for k, v in want.items() if got[k] != v]
    if bad:
        raise OpError(f"for x of shape {x.shape} and hidden size {H}: " + ", ".join(bad))
    arrays = [a for a in (x, h, w_ih, w_hh, b_ih, b_hh, *cs) if a is not None]
    return np.result_type(*arrays)


def _project(x, w_ih, b_ih, b_hh, dtype, scale, fold):
    """All input projections at once, (T, B, G*H): ``(x @ w_ih.T + b_ih + fold * b_hh) * scale``.

    ``scale`` (G*H,) is folded into the weight rows and the bias beforehand (small arrays), so the
    large result takes one GEMM and one pass for the bias.
    """
    T, B, I = x.shape
    w = w_ih.astype(dtype, copy=False) * scale[:, None]
    xp = np.matmul(x.reshape(T * B, I).astype(dtype, copy=False), w.T)
    if b_ih is not None:
        xp += (b_ih + b_hh * fold).astype(dtype, copy=False) * scale
    return xp.reshape(T, B, -1)


def _recurrent_matrix(w_hh, scale, dtype, x):
    """``(w_hh * scale[:, None]).T``, the (H, G*H) matrix each step multiplies ``h`` by.

    Made C-contiguous when ``x`` (T, B, I) has several steps of several rows: OpenBLAS runs the
    per-step GEMM up to twice as fast on it as on the transposed view (B=32, H=64), which repays
    the transposing copy after a step or two.  A single step, or B = 1 (a GEMV, as fast either
    way), keeps the view.
    """
    w_t = w_hh.astype(dtype, copy=False).T
    if scale is not None:
        w_t = w_t * scale
    T, B = np.shape(x)[:2]
    return np.ascontiguousarray(w_t) if T > 1 and B > 1 else w_t


def _steps(a, reverse):
    """``a`` (T, ...) indexed by step number: time order, or reversed for a backward direction."""
    return a[::-1] if reverse else a


def _weight_grads(res_x, w_ih, dpre_x, dpre_h, ys, h0, reverse, needs):
    """dx, dW_ih, dW_hh from the pre-activation cotangents stacked over time (one GEMM each).

    ``dpre_x`` (T, B, G*H) is the cotangent of the input projection, ``dpre_h`` that of
    ``h_{t-1} @ W_hh.T``; both in time order.  Step k read h_{k-1}: the previous output in
    step order, or h0 at the first step.
    """
    T, B, I = res_x.shape
    GH = dpre_x.shape[-1]
    dx2 = dpre_x.reshape(T * B, GH)
    dx = dw_ih = dw_hh = None
    if needs[0]:
        dx = (dx2 @ w_ih).reshape(T, B, I)
    if needs[1]:
        dw_ih = dx2.T @ res_x.reshape(T * B, I)
    if needs[2]:
        first, rest = (T - 1, slice(0, T - 1)) if reverse else (0, slice(1, T))
        prev = slice(1, T) if reverse else slice(0, T - 1)
        dw_hh = dpre_h[first].T @ h0
        if T > 1:
            dw_hh += dpre_h[rest].reshape(-1, GH).T @ ys[prev].reshape(-1, ys.shape[-1])
    return dx, dw_ih, dw_hh


# -- Elman RNN ----------------------------------------------------------------------------------

def _rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity, reverse):
    if nonlinearity not in _NONLINEARITIES:
        raise OpError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    dtype = _check(x, h0, w_ih, w_hh, b_ih, b_hh, 1)
    ys = _project(x, w_ih, b_ih, b_hh, dtype, np.ones(w_hh.shape[0], dtype), 1)  # -> outputs, in place
    w_hh = w_hh.astype(dtype, copy=False)
    w_hh_t = _recurrent_matrix(w_hh, None, dtype, x)
    h0 = h0.astype(dtype, copy=False)
    Y = _steps(ys, reverse)
    buf = np.empty(h0.shape, dtype)
    h = h0
    for k in range(len(Y)):
        np.matmul(h, w_hh_t, out=buf)
        h = Y[k]
        h += buf
        if nonlinearity == "tanh":
            np.tanh(h, out=h)
        else:
            np.maximum(h, 0, out=h)
    return ys, (x, h0, w_ih, w_hh, nonlinearity, reverse, ys, b_ih is not None)


def _rnn_backward(res, gy, gh, needs):
    x, h0, w_ih, w_hh, nonlinearity, reverse, ys, has_bias = res
    Y = _steps(ys, reverse)
    if nonlinearity == "tanh":
        deriv = np.multiply(Y, Y)
        np.subtract(1, deriv, out=deriv)
    else:
        deriv = (Y > 0).astype(ys.dtype)
    da = np.empty_like(ys)
    D = _steps(da, reverse)
    GY = None if gy is None else _steps(gy, reverse)
    dh = np.empty(h0.shape, ys.dtype)
    rec = np.array(gh, dtype=ys.dtype, copy=True)
    for k in range(len(Y) - 1, -1, -1):
        if GY is None:
            dh, rec = rec, dh
        else:
            np.add(rec, GY[k], out=dh)
        np.multiply(dh, deriv[k], out=D[k])
        np.matmul(D[k], w_hh, out=rec)
    dx, dw_ih, dw_hh = _weight_grads(x, w_ih, da, da, ys, h0, reverse,
                                     (needs[0], needs[2], needs[3]))
    db = da.sum(axis=(0, 1)) if has_bias else None
    return dx, (rec if needs[1] else None), dw_ih, dw_hh, db, db


# -- LSTM ---------------------------------------------------------------------------------------

def _lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse):
    dtype = _check(x, h0, w_ih, w_hh, b_ih, b_hh, 4, (c0,))
    H = w_hh.shape[1]
    # sigmoid(a) = 0.5 * tanh(a / 2) + 0.5: halve the i, f, o pre-activations once, here, so that
    # each step needs one tanh over all four gates and one affine map back
    half = np.full(4 * H, 0.5, dtype)
    half[2 * H:3 * H] = 1
    shift = np.full(4 * H, 0.5, dtype)
    shift[2 * H:3 * H] = 0
    gates = _project(x, w_ih, b_ih, b_hh, dtype, half, 1)
    w_scaled_t = _recurrent_matrix(w_hh, half, dtype, x)
    T, B = gates.shape[:2]
    ys = np.empty((T, B, H), dtype)
    tcs = np.empty((T, B, H), dtype)
    cs = np.empty((T + 1, B, H), dtype)       # by step: cs[0] = c0, cs[k + 1] after step k
    cs[0] = c0
    A, Y, TC = _steps(gates, reverse), _steps(ys, reverse), _steps(tcs, reverse)
    buf = np.empty((B, 4 * H), dtype)
    tmp = np.empty((B, H), dtype)
    h = h0.astype(dtype, copy=False)
    for k in range(T):
        a = A[k]
        np.matmul(h, w_scaled_t, out=buf)
        a += buf
        np.tanh(a, out=a)
        a *= half
        a += shift
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        c = cs[k + 1]
        np.multiply(f, cs[k], out=c)
        np.multiply(i, g, out=tmp)
        c += tmp
        np.tanh(c, out=TC[k])
        h = Y[k]
        np.multiply(o, TC[k], out=h)
    res = (x, h0.astype(dtype, copy=False), w_ih, w_hh.astype(dtype, copy=False), reverse,
           gates, cs, tcs, ys, b_ih is not None)
    return (ys, cs[T]), res


def _lstm_backward(res, gy, gh, gc, needs):
    x, h0, w_ih, w_hh, reverse, gates, cs, tcs, ys, has_bias = res
    T, B, H = ys.shape
    dtype = ys.dtype
    A = _steps(gates.reshape(T, B, 4, H), reverse)
    TC = _steps(tcs, reverse)
    i, f, g, o = A[:, :, 0], A[:, :, 1], A[:, :, 2], A[:, :, 3]
    # everything that does not depend on the recursion, for all steps at once:
    # M = [g * i', c_prev * f', i * g'] multiplies dc;  N = tanh(c) * o' and P = o * tanh'(c) dh
    sq = np.multiply(A, A)
    deriv = np.subtract(A, sq, out=sq)                   # s (1 - s) for i, f, o
    np.subtract(1, np.multiply(g, g), out=deriv[:, :, 2])  # 1 - g^2 for g
    M = np.empty((T, B, 3, H), dtype)
    np.multiply(g, deriv[:, :, 0], out=M[:, :, 0])
    np.multiply(cs[:T], deriv[:, :, 1], out=M[:, :, 1])
    np.multiply(i, deriv[:, :, 2], out=M[:, :, 2])
    N = np.multiply(TC, deriv[:, :, 3])
    P = np.multiply(TC, TC)
    np.subtract(1, P, out=P)
    P *= o
    dgates = np.empty((T, B, 4 * H), dtype)
    DG = _steps(dgates, reverse)
    DG4 = _steps(dgates.reshape(T, B, 4, H), reverse)   # reshape first: writes must reach dgates
    GY = None if gy is None else _steps(gy, reverse)
    dh = np.empty((B, H), dtype)
    rec = np.array(gh, dtype=dtype, copy=True)
    dc = np.array(gc, dtype=dtype, copy=True)
    tmp = np.empty((B, H), dtype)
    for k in range(T - 1, -1, -1):
        if GY is None:
            dh, rec = rec, dh
        else:
            np.add(rec, GY[k], out=dh)
        np.multiply(dh, P[k], out=tmp)
        dc += tmp
        np.multiply(dc[:, None, :], M[k], out=DG4[k, :, :3])
        np.multiply(dh, N[k], out=DG4[k, :, 3])
        np.matmul(DG[k], w_hh, out=rec)
        dc *= f[k]
    dx, dw_ih, dw_hh = _weight_grads(x, w_ih, dgates, dgates, ys, h0, reverse,
                                     (needs[0], needs[3], needs[4]))
    db = dgates.sum(axis=(0, 1)) if has_bias else None
    return dx, (rec if needs[1] else None), (dc if needs[2] else None), dw_ih, dw_hh, db, db


# -- GRU ----------------------------------------------------------------------------------------

def _gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, reverse):
    dtype = _check(x, h0, w_ih, w_hh, b_ih, b_hh, 3)
    H = w_hh.shape[1]
    half = np.ones(3 * H, dtype)
    half[:2 * H] = 0.5       # r and z are sigmoids: 0.5 * tanh(a / 2) + 0.5
    fold = np.ones(3 * H, dtype)
    fold[2 * H:] = 0         # b_hn sits inside r * (W_hn h + b_hn): not folded into the input side
    xp = _project(x, w_ih, b_ih, b_hh, dtype, half, fold)
    w_scaled_t = _recurrent_matrix(w_hh, half, dtype, x)
    b_hn = None if b_hh is None else b_hh[2 * H:].astype(dtype, copy=False)
    T, B = xp.shape[:2]
    hp = np.empty((T, B, 3 * H), dtype)      # h_{t-1} @ W_hh.T (r, z halved), + b_hn on n
    ys = np.empty((T, B, H), dtype)
    XP, HP, Y = _steps(xp, reverse), _steps(hp, reverse), _steps(ys, reverse)
    tmp = np.empty((B, H), dtype)
    h = h0.astype(dtype, copy=False)
    for k in range(T):
        a, q = XP[k], HP[k]
        np.matmul(h, w_scaled_t, out=q)
        rz, n, qn = a[:, :2 * H], a[:, 2 * H:], q[:, 2 * H:]
        if b_hn is not None:
            qn += b_hn
        rz += q[:, :2 * H]
        np.tanh(rz, out=rz)
        rz *= 0.5
        rz += 0.5
        np.multiply(rz[:, :H], qn, out=tmp)
        n += tmp
        np.tanh(n, out=n)
        np.subtract(h, n, out=tmp)
        tmp *= rz[:, H:]
        h = Y[k]
        np.add(n, tmp, out=h)
    res = (x, h0.astype(dtype, copy=False), w_ih, w_hh.astype(dtype, copy=False), reverse,
           xp, hp, ys, b_ih is not None)
    return ys, res


def _gru_backward(res, gy, gh, needs):
    x, h0, w_ih, w_hh, reverse, xp, hp, ys, has_bias = res
    T, B, H = ys.shape
    dtype = ys.dtype
    XP, HP, Y = _steps(xp, reverse), _steps(hp, reverse), _steps(ys, reverse)
    r, z, n, qn = XP[:, :, :H], XP[:, :, H:2 * H], XP[:, :, 2 * H:], HP[:, :, 2 * H:]
    # per-step factors that do not depend on the recursion, for all steps at once
    hmn = np.empty((T, B, H), dtype)                     # h_{t-1} - n
    np.subtract(h0, n[0], out=hmn[0])
    np.subtract(Y[:-1], n[1:], out=hmn[1:])
    Kz = np.multiply(z, np.subtract(1, z))
    Kz *= hmn                                            # dz = dh * Kz
    Kn = np.subtract(1, np.multiply(n, n))
    Kn *= np.subtract(1, z)                              # dn = dh * Kn
    R = np.multiply(r, np.subtract(1, r))
    R *= qn                                              # dr = dn * R
    dxp = np.empty((T, B, 3 * H), dtype)                 # cotangent of the input projection
    dhp = np.empty((T, B, 3 * H), dtype)                 # ... and of h_{t-1} @ W_hh.T + b_hh
    DX, DH = _steps(dxp, reverse), _steps(dhp, reverse)
    GY = None if gy is None else _steps(gy, reverse)
    dh = np.empty((B, H), dtype)
    rec = np.array(gh, dtype=dtype, copy=True)
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
        np.matmul(DH[k], w_hh, out=rec)
        np.multiply(dh, z[k], out=tmp)
        rec += tmp
    dxp[:, :, :2 * H] = dhp[:, :, :2 * H]
    dx, dw_ih, dw_hh = _weight_grads(x, w_ih, dxp, dhp, ys, h0, reverse,
                                     (needs[0], needs[2], needs[3]))
    db_ih = dxp.sum(axis=(0, 1)) if has_bias else None
    db_hh = dhp.sum(axis=(0, 1)) if has_bias else None
    return dx, (rec if needs[1] else None), dw_ih, dw_hh, db_ih, db_hh


# -- the primitives -----------------------------------------------------------------------------

def _pad(grads, needs):
    """Drop the bias slots when the call had no biases (the tape zips cotangents with inputs)."""
    return tuple(grads[:len(needs)])


def _cases(gates, state, T=3, B=2, I=3, H=4, step=False, **static):
    x = (B, I) if step else (T, B, I)
    w = ((gates * H, I), (gates * H, H), (gates * H,), (gates * H,))
    hs = ((B, H),) * state
    cases = [((x, *hs, *w), static), ((x, *hs, *w[:2]), static)]
    if not step:
        cases.append(((x, *hs, *w), {**static, "reverse": True}))
    return custom(*cases)


@primitive
class rnn_sequence:
    """An Elman RNN layer over a sequence: ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``.

    ``rnn_sequence(x, h0, weight_ih, weight_hh, [bias_ih, bias_hh], nonlinearity=, reverse=)``
    -> ``(y, h_last)``, y (T, B, H) every step's state in time order.
    """
    multiple_outputs = True
    examples = _cases(1, 1, nonlinearity="tanh")

    def fwd(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh", reverse=False):
        ys, res = _rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity, reverse)
        return (ys, ys[0 if reverse else -1]), res

    def bwd(res, gs, needs):
        gy, gh = gs
        return _pad(_rnn_backward(res, gy, gh, needs + (False,) * 2), needs)


@primitive
class rnn_cell:
    """One Elman RNN step: ``rnn_cell(x, h, weight_ih, weight_hh, [bias_ih, bias_hh],
    nonlinearity=)`` -> h', x (B, I), h (B, H)."""
    examples = _cases(1, 1, step=True, nonlinearity="relu")

    def fwd(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
        if np.ndim(x) != 2:
            raise OpError(f"need x (B, I), got shape {np.shape(x)}")
        ys, res = _rnn_forward(x[None], h, w_ih, w_hh, b_ih, b_hh, nonlinearity, False)
        return ys[0], res

    def bwd(res, g, needs):
        dx, *rest = _rnn_backward(res, None, g, needs + (False,) * 2)
        return _pad((None if dx is None else dx[0], *rest), needs)


@primitive
class lstm_sequence:
    """An LSTM layer over a sequence, PyTorch's gate order (i, f, g, o) and formulas.

    ``lstm_sequence(x, h0, c0, weight_ih, weight_hh, [bias_ih, bias_hh], reverse=)``
    -> ``(y, h_last, c_last)``.
    """
    multiple_outputs = True
    examples = _cases(4, 2)

    def fwd(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False):
        (ys, c_last), res = _lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse)
        return (ys, ys[0 if reverse else -1], c_last), res

    def bwd(res, gs, needs):
        gy, gh, gc = gs
        return _pad(_lstm_backward(res, gy, gh, gc, needs + (False,) * 2), needs)


@primitive
class lstm_cell:
    """One LSTM step: ``lstm_cell(x, h, c, weight_ih, weight_hh, [bias_ih, bias_hh])`` -> (h', c')."""
    multiple_outputs = True
    examples = _cases(4, 2, step=True)

    def fwd(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
        if np.ndim(x) != 2:
            raise OpError(f"need x (B, I), got shape {np.shape(x)}")
        (ys, c_last), res = _lstm_forward(x[None], h, c, w_ih, w_hh, b_ih, b_hh, False)
        return (ys[0], c_last), res

    def bwd(res, gs, needs):
        gh, gc = gs
        dx, *rest = _lstm_backward(res, None, gh, gc, needs + (False,) * 2)
        return _pad((None if dx is None else dx[0], *rest), needs)


@primitive
class gru_sequence:
    """A GRU layer over a sequence, PyTorch's gate order (r, z, n) and formulas.

    ``gru_sequence(x, h0, weight_ih, weight_hh, [bias_ih, bias_hh], reverse=)`` -> ``(y, h_last)``.
    """
    multiple_outputs = True
    examples = _cases(3, 1)

    def fwd(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False):
        ys, res = _gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, reverse)
        return (ys, ys[0 if reverse else -1]), res

    def bwd(res, gs, needs):
        gy, gh = gs
        return _pad(_gru_backward(res, gy, gh, needs + (False,) * 2), needs)


@primitive
class gru_cell:
    """One GRU step: ``gru_cell(x, h, weight_ih, weight_hh, [bias_ih, bias_hh])`` -> h'."""
    examples = _cases(3, 1, step=True)

    def fwd(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
        if np.ndim(x) != 2:
            raise OpError(f"need x (B, I), got shape {np.shape(x)}")
        ys, res = _gru_forward(x[None], h, w_ih, w_hh, b_ih, b_hh, False)
        return ys[0], res

    def bwd(res, g, needs):
        dx, *rest = _gru_backward(res, None, g, needs + (False,) * 2)
        return _pad((None if dx is None else dx[0], *rest), needs)


# -- the state a multi-layer step returns -------------------------------------------------------

class StateSink:
    """Where ``feed_up`` finds the state tensor it reports to (set once that tensor exists)."""

    __slots__ = ("ref",)

    def __init__(self):
        self.ref = None

    def point_to(self, tensor):
        self.ref = weakref.ref(tensor)


@primitive
class feed_up:
    """The identity on a lower layer's new hidden state, as the layer above reads it.

    A multi-layer step returns its state as one (L, B, H) tensor that the head and the next step
    read, but the layer above had to read h^l_t before that tensor could exist.  That path's
    cotangent is added here to the returned tensor's retained ``.grad[index]``, so ``.grad`` is
    the total dL/dh^l_t for every layer, not only what came back through the next step.
    ``feed_up(h, sink=StateSink(), index=l)``; without a sink it is the plain identity.
    """
    examples = custom((((2, 3),), {}))

    def fwd(h, sink=None, index=0):
        return h, (sink, index)

    def bwd(res, g, needs):
        sink, index = res
        state = None if sink is None or sink.ref is None else sink.ref()
        # .grad is set only when the state was retained and got a cotangent; then it is our copy
        if state is not None and state.grad is not None:
            state.grad[index] += g
        return (g,)
