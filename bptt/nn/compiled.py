"""An optional compiled path for the LSTM's fused kernels: each step's work in one numba loop.

The numpy kernels (``bptt.nn.cells.lstm``) are the default and the reference.  At a small batch
(B = 1, a stream) a step of theirs is about twenty ufunc and GEMV calls of a microsecond or two
each; here the recurrent product and all the pointwise work of every step run inside one jitted
loop (numba, ``nogil``), the product through numba's ``np.dot``, which calls BLAS.  What numpy does
well stays in numpy: the input projections of all T steps in one GEMM before the loop, and each
weight gradient in one GEMM over all steps after it (``kernels.weight_grads``).  The formulas are
PyTorch's, gate order i, f, g, o; every buffer is in the inputs' dtype; the residuals and
temporaries come from ``kernels.pooled`` and ``kernels.scratch`` (per thread).  Layers of more
than ``MAX_UNITS`` units a step, and dtypes other than float32 and float64, stay on the numpy
kernels, which are faster there.

The path is opt-in: ``BPTT_COMPILED=1`` in the environment (read when ``import bptt`` imports
this module, applied at the first LSTM forward), ``use(True)``, or ``with enabled(): ...``.  It
needs numba (``pip install 'bptt[compiled]'``), which is imported only once the path is enabled.  The first
call in a process compiles the loops for its dtype (seconds) or loads them from numba's on-disk
cache (a fraction of a second).  A forward's residuals say which path made them, so a backward
always runs on its forward's path, whatever the setting is by then.
"""

from __future__ import annotations

import contextlib
import os
import threading

import numpy as np

from bptt.config import ConfigError
from bptt.nn import kernels

__all__ = ["available", "use", "enabled", "is_enabled", "handles", "lstm_forward", "lstm_backward",
           "Residuals", "MAX_UNITS"]

#: The compiled loops run a layer of at most this many units a step (B * H); larger ones stay on
#: the numpy kernels.  Every activation here is a scalar libm call, numpy's are vectorised:
#: ``scripts/bench_compiled.py`` (T=50, float32, one thread) puts forward and backward at
#: 0.2-0.8x the numpy kernels' time up to B * H = 256, 0.9-1.0x at 512, 1.1-2x from 1024 on.
MAX_UNITS = 256

_HINT = "the compiled LSTM kernels need numba: pip install 'bptt[compiled]'"
_on = False
#: BPTT_COMPILED as read at import, applied on first use (``_apply_environment``)
_from_env = os.environ.get("BPTT_COMPILED", "")
_loops = None       # (forward, backward) dispatchers, made when the path is first enabled
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
            # the loops call the activations by their global names, which numba resolves when
            # it compiles them: bind those names to jitted versions first
            inline = numba.njit(inline="always", cache=True)
            globals().update(_sigmoid=inline(_sigmoid), _tanh=inline(_tanh))
            jit = numba.njit(nogil=True, cache=True)
            _loops = (jit(_forward_steps), jit(_backward_steps))
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
    path is on, the dtype float32 or float64, and B * H at most ``MAX_UNITS``."""
    if _from_env:
        _apply_environment()
    return (_on and x.dtype in (np.float32, np.float64)
            and x.shape[1] * w_hh.shape[1] <= MAX_UNITS)


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
    forward, _ = _jit()
    gates = kernels.project(x, w_ih, b_ih, b_hh, out=kernels.pooled("lstm.compiled.gates", (T * B, 4 * H), dtype))
    ys = kernels.pooled("lstm.compiled.ys", (T, B, H), dtype)
    tcs = kernels.pooled("lstm.compiled.tcs", (T, B, H), dtype)
    cs = kernels.pooled("lstm.compiled.cs", (T + 1, B, H), dtype)
    cs[0] = c0
    h0 = np.ascontiguousarray(h0)
    forward(gates, np.ascontiguousarray(w_hh), kernels.scratch("lstm.compiled.w_t", (H, 4 * H), dtype), h0,
            cs, tcs, ys, kernels.scratch("lstm.compiled.step", (B, 4 * H), dtype), reverse, dtype == np.float64)
    res = Residuals((x, h0, w_ih, w_hh, reverse, gates, cs, tcs, ys, b_ih is not None))
    return ys, (kernels.in_step_order(ys, reverse)[-1], cs[T]), res


def lstm_backward(res, gy, gstate, need_x, need_w_ih, need_w_hh):
    """``bptt.nn.cells.lstm._backward`` on the compiled loops: ``(dx, (dh0, dc0), dweights)``,
    dweights ``(dW_ih, dW_hh, db_ih, db_hh)``, None where not needed or without biases."""
    x, h0, w_ih, w_hh, reverse, gates, cs, tcs, ys, has_bias = res
    T, B, H = ys.shape
    dtype = ys.dtype
    _, backward = _jit()
    dgates = kernels.scratch("lstm.compiled.dgates", (T, B, 4 * H), dtype)
    dh = np.array(gstate[0], dtype=dtype, order="C", copy=True)
    dc = np.array(gstate[1], dtype=dtype, order="C", copy=True)
    # without gy the loop never reads it: an empty array keeps one specialisation per dtype
    gy_c = np.empty((0, 0, 0), dtype) if gy is None else np.ascontiguousarray(gy, dtype)
    backward(gates, cs, tcs, gy_c, gy is not None, np.ascontiguousarray(w_hh), dgates, dh, dc,
             reverse, dtype.type(1))
    dx, dw_ih, dw_hh = kernels.weight_grads(x, w_ih, dgates, dgates, ys, h0, reverse,
                                            need_x, need_w_ih, need_w_hh)
    db = dgates.sum(axis=(0, 1)) if has_bias else None
    return dx, (dh, dc), (dw_ih, dw_hh, db, db)


# -- the loops (plain Python here; ``_jit`` compiles them) ---------------------------------------
# libm's tanh costs about 20 ns a call in float32 as in float64, its exp 4-6 ns: the sigmoids
# take one float64 exp each, and so does tanh in float32 (in float64 it stays libm's tanh).  The
# backward's scalars are typed by ``one`` (of the arrays' dtype): a Python literal would promote
# float32 arithmetic to float64; its formulas are the numpy kernels', in the same order.

def _sigmoid(a):
    """The logistic function in float64, whatever ``a``'s type: one ``exp`` (libm's is several times
    faster than its ``tanh``), accurate to a few float64 ulps for every ``a``."""
    return 1.0 / (1.0 + np.exp(-np.float64(a)))


def _tanh(a, exact):
    """``np.tanh(a)`` when ``exact``; else from one float64 ``exp``, for a float32 ``a``: within a few
    float64 ulps of tanh, except below ``|a| = 2**-12``, where ``a`` is within half a float32 ulp."""
    if exact:
        return np.tanh(a)
    x = np.float64(a)
    if abs(x) < 2.0 ** -12:
        return x
    e = np.exp(-2.0 * abs(x))
    return np.copysign((1.0 - e) / (1.0 + e), x)


def _forward_steps(gates, w_hh, w_t, h0, cs, tcs, ys, buf, reverse, exact):
    """The forward recursion in place: ``gates`` (T, B, 4H) holds the input projections on entry
    and the activated gates on return; fills cs[1:], tcs and ys; ``w_t`` (H, 4H) and ``buf``
    (B, 4H) are scratch.  Each activation is rounded to the arrays' dtype where it is stored,
    and read back from there."""
    T, B, GH = gates.shape
    H = GH // 4
    # w_hh.T, C-contiguous (the per-step GEMM runs up to twice as fast on it as on the view),
    # copied in blocks of 16 rows: numpy's transposing copy is 2-5x slower at H = 128-512
    for j0 in range(0, GH, 16):
        for i in range(H):
            for j in range(j0, min(j0 + 16, GH)):
                w_t[i, j] = w_hh[j, i]
    for s in range(T):
        k = T - 1 - s if reverse else s
        if s == 0:
            np.dot(h0, w_t, buf)
        else:
            np.dot(ys[k + 1] if reverse else ys[k - 1], w_t, buf)
        for b in range(B):
            a, r, c_prev, c, tc, h = gates[k, b], buf[b], cs[s, b], cs[s + 1, b], tcs[k, b], ys[k, b]
            for j in range(H):
                a[j] = _sigmoid(a[j] + r[j])
                a[H + j] = _sigmoid(a[H + j] + r[H + j])
                a[2 * H + j] = _tanh(a[2 * H + j] + r[2 * H + j], exact)
                a[3 * H + j] = _sigmoid(a[3 * H + j] + r[3 * H + j])
                c[j] = a[H + j] * c_prev[j] + a[j] * a[2 * H + j]
                tc[j] = _tanh(c[j], exact)
                h[j] = a[3 * H + j] * tc[j]


def _backward_steps(gates, cs, tcs, gy, has_gy, w_hh, dgates, dh, dc, reverse, one):
    """The backward recursion: ``dh``, ``dc`` (B, H) hold the final state's cotangents on entry
    and the initial state's on return; fills ``dgates`` (T, B, 4H), the pre-activations'
    cotangents in time order."""
    T, B, GH = gates.shape
    H = GH // 4
    for s in range(T - 1, -1, -1):
        k = T - 1 - s if reverse else s
        for b in range(B):
            a, d, c_prev, tc, rec, dcb = gates[k, b], dgates[k, b], cs[s, b], tcs[k, b], dh[b], dc[b]
            for j in range(H):
                i, f, g, o = a[j], a[H + j], a[2 * H + j], a[3 * H + j]
                dhj = rec[j] + gy[k, b, j] if has_gy else rec[j]
                dcj = dcb[j] + dhj * ((one - tc[j] * tc[j]) * o)
                d[j] = dcj * (g * (i - i * i))
                d[H + j] = dcj * (c_prev[j] * (f - f * f))
                d[2 * H + j] = dcj * (i * (one - g * g))
                d[3 * H + j] = dhj * (tc[j] * (o - o * o))
                dcb[j] = dcj * f
        np.dot(dgates[k], w_hh, dh)


