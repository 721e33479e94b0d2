"""An optional compiled path for the LSTM's fused kernels: each step's pointwise work in one
vectorised numba loop.

The numpy kernels (``bptt.nn.cells.lstm``) are the default and the reference.  A step of theirs
is a GEMM and about a dozen ufunc calls, each a pass over the step's gates; here the pointwise
work of a step (the gates' activations, c, tanh(c) and h; back, the gates' cotangents and dc) is
one jitted loop per batch entry, which LLVM vectorises: in float32 the sigmoid and tanh are
computed inline from one exp each (``_sigmoid32``, ``_tanh32``, within 2.5 ulps) instead of by
libm, whose calls take one element at a time.  Small layers (``LOOP_MACS``) run all their steps
in one jitted loop (``nogil``), the recurrent product through numba's ``np.dot``; larger ones run
their steps from Python, each step numpy's GEMMs and one jitted call.  What numpy does well stays in
numpy: the input projections of all T steps in one GEMM first, and each weight gradient in one
GEMM over all steps after (``kernels.weight_grads``).  The formulas are PyTorch's, gate order
i, f, g, o; every buffer is in the inputs' dtype; the residuals and temporaries come from
``kernels.pooled`` and ``kernels.scratch`` (per thread).  float64 layers of more than
``FLOAT64_UNITS`` units a step, and dtypes other than float32 and float64, stay on the numpy
kernels.

The path is opt-in: ``BPTT_COMPILED=1`` in the environment (read when this module is first
imported, with the LSTM cell, and applied at the first LSTM forward), ``use(True)``, or ``with enabled(): ...``.  It
needs numba (``pip install 'bptt[compiled]'``), which is imported only once the path is enabled.
The first call in a process compiles the loops for its dtype (seconds) or loads them from
numba's on-disk cache (a fraction of a second).  A forward's residuals say which path made them,
so a backward always runs on its forward's path, whatever the setting is by then.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
import os
import threading

import numpy as np

from bptt.errors import ConfigError
from bptt.nn import kernels

__all__ = ["available", "use", "enabled", "is_enabled", "handles", "lstm_forward", "lstm_backward",
           "Residuals", "LOOP_MACS", "FLOAT64_UNITS"]

#: A pass runs all its steps in one compiled loop when a step's recurrent product is small, the
#: product then through numba's BLAS; otherwise its steps run from Python, each step numpy's GEMMs
#: and one compiled call.  The forward loops up to ``LOOP_MACS`` multiply-adds a step (4 B H^2),
#: the backward up to a quarter of that: from Python it runs the product gate by gate, four
#: (B, H) @ (H, H) on strided views of the gates' cotangents, which numba's ``np.dot`` would copy;
#: OpenBLAS runs those 1.1-1.7x faster than one (B, 4H) @ (4H, H) at B = 32, H = 128, up to 2.3x
#: at small batches (B = 2-8, H = 256-512), about as fast at B = 32, H = 512.  At B = 1 (one GEMV
#: either way) the backward always loops.  ``scripts/bench_compiled.py`` (T = 50, float32, one
#: thread, two runs) gives loop / steps per pass: forward 0.32-0.95 up to 2^21 (B = 32, H = 128),
#: 1.02-1.65 beyond; backward 0.32-0.96 up to 2^19, 0.98-1.51 beyond; at B = 1 the backward's
#: loop took 0.62-0.95x the time of one GEMV a step from Python at every H up to 2048 (T = 100).
LOOP_MACS = 2 ** 21
#: float64 layers of more than this many units a step stay on the numpy kernels: in float64 the
#: activations are libm's, one element at a time, and numpy's vectorised ones win beyond
#: (``bench_compiled.py --dtype float64``: 0.2-0.9x up to 256 units, 0.9-1.0x at 512, 1.0-1.3x
#: from 1024 on).
FLOAT64_UNITS = 256

_HINT = "the compiled LSTM kernels need numba: pip install 'bptt[compiled]'"
_on = False
#: BPTT_COMPILED as read at import, applied on first use (``_apply_environment``)
_from_env = os.environ.get("BPTT_COMPILED", "")
_loops = None       # a _Jitted, made when the path is first enabled
_Jitted = collections.namedtuple("_Jitted", "transpose forward_steps forward_rows backward_steps backward_rows")
_making = threading.Lock()


def available():
    """Whether numba imports, so that the compiled path can be enabled."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _jit():
    """The jitted loops, made once (compiled on first call per dtype, or loaded from the cache)."""
    global _loops
    if _loops is not None:
        return _loops
    with _making:       # one thread binds the names below, once
        if _loops is None:
            try:
                import numba
            except ImportError as err:
                raise ImportError(f"{_HINT} ({err})") from None
            # the loops call the helpers below by their global names, which numba resolves when
            # it compiles them: bind those names to jitted versions first.  error_model="numpy":
            # a division is IEEE's, without Python's check for zero, whose branch keeps LLVM from
            # vectorising a loop; "contract": multiply-adds fused
            jit = functools.partial(numba.njit, cache=True, error_model="numpy", fastmath={"contract"})
            _overloads(numba)
            loops = [jit(nogil=True)(f) for f in (_transpose, _forward_steps, _forward_rows,
                                                  _backward_steps, _backward_rows)]
            globals().update(_pow2=_pow2_intrinsic(numba), _exp_neg32=jit(_exp_neg32),
                             _forward_row=jit(_forward_row), _backward_row=jit(_backward_row),
                             _forward_rows=loops[2], _backward_rows=loops[4])
            _loops = _Jitted(*loops)
    return _loops


def _apply_environment():
    """Apply BPTT_COMPILED at the first LSTM forward or query, not at import: a wrong value or a
    missing numba is then a ``ConfigError`` that names the variable (the CLI reports it as a
    usage error), not a traceback from ``import bptt``."""
    global _from_env
    value, _from_env = _from_env, ""
    if value not in ("0", "1"):
        raise ConfigError("BPTT_COMPILED", f"must be 0 or 1, got {value!r}")
    if value == "1":
        try:
            use(True)
        except ImportError as err:
            raise ConfigError("BPTT_COMPILED", str(err)) from None


def use(flag=True):
    """Turn the compiled LSTM kernels on or off for the whole process.

    Parameters
    ----------
    flag : bool
        True: the LSTM's fused forward runs the compiled loops from now on.

    Returns
    -------
    bool
        The previous setting.

    Raises
    ------
    ImportError
        When ``flag`` is true and numba does not import (the message names the fix).
    """
    global _on, _from_env
    _from_env = ""                      # an explicit setting overrides the environment's
    if flag:
        _jit()
    before, _on = _on, bool(flag)
    return before


def is_enabled():
    """Whether the compiled path is on (``use``, ``enabled``, ``BPTT_COMPILED``)."""
    if _from_env:
        _apply_environment()
    return _on


def handles(x, w_hh):
    """Whether the LSTM's fused forward of ``x`` (T, B, I) with ``w_hh`` (4H, H) runs here: the
    path is on and the dtype float32, or float64 with B * H at most ``FLOAT64_UNITS``."""
    if _from_env:
        _apply_environment()
    return _on and (x.dtype == np.float32
                    or x.dtype == np.float64 and x.shape[1] * w_hh.shape[1] <= FLOAT64_UNITS)


@contextlib.contextmanager
def enabled(flag=True):
    """Context manager: the compiled path on (or off, ``flag=False``) inside the block."""
    before = use(flag)
    try:
        yield
    finally:
        use(before)


class Residuals(tuple):
    """What ``lstm_backward`` reads, tagged by its type as made by the compiled forward:
    ``(x, h0, w_ih, w_hh, reverse, gates, cs, tcs, ys, has_bias)``, the activated gates (T, B, 4H)
    in time order, cs (T + 1, B, H) the cell states by step (cs[0] = c0), tanh(c) and h (T, B, H)
    in time order."""

    __slots__ = ()


def lstm_forward(x, state, weights, reverse):
    """``bptt.nn.cells.lstm._forward`` on the compiled loops: ``(y, (h, c), res)``.

    The contract is ``kernels.fused_kernels``' forward: x (T, B, I), state (h0, c0) (B, H) each,
    weights ``(weight_ih, weight_hh, bias_ih, bias_hh)`` (biases None or both given), all of one
    dtype; y (T, B, H) in time order; res a ``Residuals``.
    """
    (h0, c0), (w_ih, w_hh, b_ih, b_hh) = state, weights
    T, B, _ = x.shape
    H = w_hh.shape[1]
    dtype = x.dtype
    jitted = _jit()
    # the biases are added in the loops, not in a pass of their own over all T steps' gates
    gates = kernels.project(x, w_ih, None, None, out=kernels.pooled("lstm.compiled.gates", (T * B, 4 * H), dtype))
    ys = kernels.pooled("lstm.compiled.ys", (T, B, H), dtype)
    tcs = kernels.pooled("lstm.compiled.tcs", (T, B, H), dtype)
    cs = kernels.pooled("lstm.compiled.cs", (T + 1, B, H), dtype)
    cs[0] = c0
    h0 = np.ascontiguousarray(h0)
    # the recurrent product gate by gate, G = 4 products (B, H) @ (H, H) into (4, B, H): OpenBLAS
    # runs them up to 1.5x faster than one (B, H) @ (H, 4H) at B = 32, H = 128 (``bench_blas.py``;
    # as fast in some runs), 2-20% slower at 512; at B = 1 one GEMV, G = 1, whose (1, 1, 4H)
    # result is the same memory as (4, 1, H)
    G = 1 if B == 1 else 4
    w_r, bias = kernels.laid_out(("lstm.compiled", dtype, G), weights,
                                 lambda kept: _layout(jitted, w_hh, b_ih, b_hh, G, kept))
    prod = kernels.scratch("lstm.compiled.step", (G, B, 4 * H // G), dtype)
    r = prod.reshape(4, B, H)
    if 4 * B * H * H <= LOOP_MACS:
        jitted.forward_steps(gates, bias, w_r, h0, cs, tcs, ys, prod, r, reverse)
    else:
        A, Y, TC = (kernels.in_step_order(a, reverse) for a in (gates, ys, tcs))
        h = h0
        for s in range(T):
            np.matmul(h, w_r, out=prod)
            jitted.forward_rows(A[s], bias, r, cs[s], cs[s + 1], TC[s], Y[s])
            h = Y[s]
    res = Residuals((x, h0, w_ih, w_hh, reverse, gates, cs, tcs, ys, b_ih is not None))
    return ys, (kernels.in_step_order(ys, reverse)[-1], cs[T]), res


def _layout(jitted, w_hh, b_ih, b_hh, G, kept):
    """``(w_r, bias)`` the compiled forward multiplies by and adds: w_r (G, H, 4H / G) the
    transposes of w_hh's G row blocks (in a scratch buffer unless ``kept``), bias b_ih + b_hh
    (zeros without biases)."""
    H = w_hh.shape[1]
    n = 4 * H // G
    w_hh = np.ascontiguousarray(w_hh)
    shape = (G, H, n)
    w_r = np.empty(shape, w_hh.dtype) if kept else kernels.scratch("lstm.compiled.w_r", shape, w_hh.dtype)
    for g in range(G):
        jitted.transpose(w_hh[g * n:(g + 1) * n], w_r[g])
    return w_r, np.zeros(4 * H, w_hh.dtype) if b_ih is None else b_ih + b_hh


def lstm_backward(res, gy, gstate, need_x, need_w_ih, need_w_hh):
    """``bptt.nn.cells.lstm._backward`` on the compiled loops: ``(dx, (dh0, dc0), dweights)``,
    dweights ``(dW_ih, dW_hh, db_ih, db_hh)``, None where not needed or without biases."""
    x, h0, w_ih, w_hh, reverse, gates, cs, tcs, ys, has_bias = res
    T, B, H = ys.shape
    dtype = ys.dtype
    jitted = _jit()
    dgates = kernels.scratch("lstm.compiled.dgates", (T, B, 4 * H), dtype)
    dc = np.array(gstate[1], dtype=dtype, order="C", copy=True)
    w_hh = np.ascontiguousarray(w_hh)
    db = np.zeros(4 * H)            # summed in float64 as the loops go, rounded once
    if B == 1 or 16 * B * H * H <= LOOP_MACS:
        dh = np.array(gstate[0], dtype=dtype, order="C", copy=True)
        # without gy the loop never reads it: an empty array keeps one specialisation per dtype
        gy_c = np.empty((0, 0, 0), dtype) if gy is None else np.ascontiguousarray(gy, dtype)
        jitted.backward_steps(gates, cs, tcs, gy_c, gy is not None, w_hh, dgates, dh, dc, db, reverse,
                              dtype.type(1))
    else:
        # the recurrent product gate by gate (``LOOP_MACS``): r (4, B, H) holds the products of
        # the gates' cotangents (B, H) by w_hh's blocks (H, H), whose sum, the cotangent of the
        # step's h, the rows add up as they read it
        r = kernels.scratch("lstm.compiled.back", (4, B, H), dtype)
        r[0] = gstate[0]
        r[1:] = 0
        A, TC, DG = (kernels.in_step_order(a, reverse) for a in (gates, tcs, dgates))
        GY = None if gy is None else kernels.in_step_order(gy, reverse)
        # step s's gate cotangents gate by gate, (4, B, H) views of DG[s], and w_hh's blocks
        DG4 = kernels.in_step_order(dgates.reshape(T, B, 4, H).transpose(0, 2, 1, 3), reverse)
        w4 = w_hh.reshape(4, H, H)
        for s in range(T - 1, -1, -1):
            if GY is not None:
                r[0] += GY[s]
            jitted.backward_rows(A[s], DG[s], cs[s], TC[s], r, dc, db, dtype.type(1))
            np.matmul(DG4[s], w4, out=r)
        dh = np.add.reduce(r, axis=0)        # in the rows' order
    dx, dw_ih, dw_hh = kernels.weight_grads(x, w_ih, dgates, dgates, ys, h0, reverse,
                                            need_x, need_w_ih, need_w_hh)
    db = db.astype(dtype) if has_bias else None
    return dx, (dh, dc), (dw_ih, dw_hh, db, db)


# -- the loops (plain Python here; ``_jit`` compiles them) ---------------------------------------
# Each step's pointwise work runs row by row (one batch entry's 4H gates) in a function of its
# own, which indexes the step's (B, ...) arrays at its row: inlined into the loop over the batch,
# LLVM leaves the row's loop unvectorised, and a view per row costs reference counting about as
# long as a row of 64 units takes.  In float32 the activations are computed here from one exp
# each, without calls, so that the row's loop vectorises (libm's exp and tanh take one element
# at a time); in float64 they are libm's.  The backward's scalars are typed by ``one`` (of the
# arrays' dtype): a Python literal would promote float32 arithmetic to float64; its formulas are
# the numpy kernels', in the same order (with multiply-adds fused).

def _pow2(k):
    """``2**k`` as a float32 for an int32 k in [-126, 127]; compiled, ``_pow2_intrinsic``'s."""
    return np.float32(2.0 ** k)


def _pow2_intrinsic(numba):
    """``_pow2`` as an intrinsic: the float32 whose bits are (k + 127) << 23, no call."""
    from llvmlite import ir
    from numba.extending import intrinsic

    @intrinsic
    def _pow2(typingctx, k):
        def codegen(context, builder, signature, args):
            int32 = ir.IntType(32)
            bits = builder.shl(builder.add(args[0], ir.Constant(int32, 127)), ir.Constant(int32, 23))
            return builder.bitcast(bits, ir.FloatType())
        return numba.types.float32(numba.types.int32), codegen
    return _pow2


def _overloads(numba):
    """Type ``_sigmoid`` and ``_tanh`` by their argument: ``_sigmoid32`` and ``_tanh32`` for a
    float32, the plain functions (libm's exp and tanh) for every other type; and ``_dh`` by its
    array's rank, so that each rank's row loop has no branch in it."""
    from numba.extending import overload

    def dh_by_rank(dh, b, j):
        if dh.ndim == 2:
            return lambda dh, b, j: dh[b, j]
        return lambda dh, b, j: dh[0, b, j] + dh[1, b, j] + dh[2, b, j] + dh[3, b, j]
    overload(_dh)(dh_by_rank)

    def typed(f32, other):
        def implementation(a):
            return f32 if a == numba.types.float32 else other
        return implementation
    for f, f32 in ((_sigmoid, _sigmoid32), (_tanh, _tanh32)):
        overload(f)(typed(f32, f))


def _dh(dh, b, j):
    """The cotangent of a step's h[b, j]: dh[b, j] of a (B, H) dh, or the sum of dh[:, b, j] of a
    (4, B, H) one, the parts of a product gate by gate (compiled, by rank: ``_overloads``)."""
    return dh[b, j] if dh.ndim == 2 else dh[0, b, j] + dh[1, b, j] + dh[2, b, j] + dh[3, b, j]


_LOG2E = np.float32(1 / np.log(2))
_LN2_HI = np.float32(0.693359375)                  # 9 significant bits: k * _LN2_HI is exact
_LN2_LO = np.float32(np.log(2) - 0.693359375)
_ARG_MAX = np.float32(87)                          # exp(-87): near float32's smallest normal
_TAYLOR = tuple(np.float32(1 / math.factorial(n)) for n in range(2, 8))


def _exp_neg32(t):
    """``(s, p)`` with exp(-t) = s (1 + p) and expm1(-t) = s p + (s - 1), for a float32 t >= 0
    (clipped to 87): s = 2**-k and p = expm1(r), r = k ln 2 - t, |r| <= ln(2) / 2, from its
    Taylor polynomial to r**7 (1.5e-8 relative left out); k ln 2 is split in two (Cody and
    Waite), the first part exact in float32, so that t - k ln 2 loses no bits to cancellation.
    Both results are within 2 float32 ulps."""
    y = -min(t, _ARG_MAX)
    k = np.floor(y * _LOG2E + np.float32(0.5))
    r = (y - k * _LN2_HI) - k * _LN2_LO
    c2, c3, c4, c5, c6, c7 = _TAYLOR
    q = (((((c7 * r + c6) * r + c5) * r + c4) * r + c3) * r + c2) * r + np.float32(1)
    return _pow2(np.int32(k)), q * r


def _sigmoid(a):
    """The logistic function from libm's exp (float64)."""
    return 1.0 / (1.0 + np.exp(-a))


def _sigmoid32(a):
    """The logistic function of a float32 (within 2.5 ulps for a > -87, within 2e-38 below;
    tested): 1 / (1 + e) or e / (1 + e), e = exp(-|a|)."""
    s, p = _exp_neg32(abs(a))
    e = s * p + s
    d = np.float32(1) / (np.float32(1) + e)
    return d if a >= 0 else e * d


def _tanh(a):
    """libm's tanh (float64)."""
    return np.tanh(a)


def _tanh32(a):
    """tanh of a float32 (within 2.5 ulps, tested): -u / (2 + u), u = expm1(-2 |a|), signed as a."""
    s, p = _exp_neg32(np.float32(2) * abs(a))
    u = s * p + (s - np.float32(1))
    return np.copysign(-u / (np.float32(2) + u), a)


def _transpose(w, out):
    """out = w.T, C-contiguous (the per-step GEMM runs up to twice as fast on it as on the view),
    copied in blocks of 16 rows: numpy's transposing copy is 2-5x slower at H = 128-512."""
    n, m = w.shape
    for j0 in range(0, n, 16):
        for i in range(m):
            for j in range(j0, min(j0 + 16, n)):
                out[i, j] = w[j, i]


def _forward_steps(gates, bias, w_r, h0, cs, tcs, ys, prod, r, reverse):
    """The forward recursion in place: ``gates`` (T, B, 4H) holds the input projections on entry
    and the activated gates on return; fills cs[1:], tcs and ys; ``bias`` (4H) is b_ih + b_hh,
    ``w_r`` (G, H, 4H / G) w_hh.T by groups of gates, ``prod`` (G, B, 4H / G) scratch for each
    step's h @ w_r[g], and ``r`` (4, B, H) the same memory gate by gate."""
    T = gates.shape[0]
    for s in range(T):
        k = T - 1 - s if reverse else s
        h = h0 if s == 0 else ys[k + 1] if reverse else ys[k - 1]
        for g in range(w_r.shape[0]):
            np.dot(h, w_r[g], prod[g])
        _forward_rows(gates[k], bias, r, cs[s], cs[s + 1], tcs[k], ys[k])


def _forward_rows(a, bias, r, c_prev, c, tc, h):
    """One step's pointwise work, batch entry by batch entry: the gates a (B, 4H) + bias + the
    recurrent product r (4, B, H), activated, then c, tanh(c) and h (B, H)."""
    for b in range(a.shape[0]):
        _forward_row(a, bias, r, c_prev, c, tc, h, b)


def _forward_row(a, bias, r, c_prev, c, tc, h, b):
    """``_forward_rows`` for batch entry b.  Each activation is rounded to the arrays' dtype
    where it is stored, and read back from there."""
    H = c.shape[1]
    for j in range(H):
        a[b, j] = _sigmoid(a[b, j] + bias[j] + r[0, b, j])
        a[b, H + j] = _sigmoid(a[b, H + j] + bias[H + j] + r[1, b, j])
        a[b, 2 * H + j] = _tanh(a[b, 2 * H + j] + bias[2 * H + j] + r[2, b, j])
        a[b, 3 * H + j] = _sigmoid(a[b, 3 * H + j] + bias[3 * H + j] + r[3, b, j])
        c[b, j] = a[b, H + j] * c_prev[b, j] + a[b, j] * a[b, 2 * H + j]
        tc[b, j] = _tanh(c[b, j])
        h[b, j] = a[b, 3 * H + j] * tc[b, j]


def _backward_steps(gates, cs, tcs, gy, has_gy, w_hh, dgates, dh, dc, db, reverse, one):
    """The backward recursion: ``dh``, ``dc`` (B, H) hold the final state's cotangents on entry
    and the initial state's on return; fills ``dgates`` (T, B, 4H), the pre-activations'
    cotangents in time order, and adds their sum over steps and batch to ``db`` (4H, float64)."""
    T = gates.shape[0]
    for s in range(T - 1, -1, -1):
        k = T - 1 - s if reverse else s
        if has_gy:
            dh += gy[k]
        _backward_rows(gates[k], dgates[k], cs[s], tcs[k], dh, dc, db, one)
        np.dot(dgates[k], w_hh, dh)


def _backward_rows(a, d, c_prev, tc, dh, dc, db, one):
    """One step back, batch entry by batch entry: from the gates a (B, 4H), c_prev and tanh(c),
    and the cotangents dh of the step's h (B, H, or (4, B, H) parts to be summed, ``_dh``) and
    dc of its c (B, H), the gates' d (B, 4H), added to db (4H); dc becomes c_prev's."""
    for b in range(a.shape[0]):
        _backward_row(a, d, c_prev, tc, dh, dc, db, one, b)


def _backward_row(a, d, c_prev, tc, dh, dc, db, one, b):
    """``_backward_rows`` for batch entry b."""
    H = dc.shape[1]
    for j in range(H):
        i, f, g, o = a[b, j], a[b, H + j], a[b, 2 * H + j], a[b, 3 * H + j]
        dhj = _dh(dh, b, j)
        dcj = dc[b, j] + dhj * ((one - tc[b, j] * tc[b, j]) * o)
        di = dcj * (g * (i - i * i))
        df = dcj * (c_prev[b, j] * (f - f * f))
        dg = dcj * (i * (one - g * g))
        do = dhj * (tc[b, j] * (o - o * o))
        d[b, j], d[b, H + j], d[b, 2 * H + j], d[b, 3 * H + j] = di, df, dg, do
        db[j] += di
        db[H + j] += df
        db[2 * H + j] += dg
        db[3 * H + j] += do
        dc[b, j] = dcj * f
