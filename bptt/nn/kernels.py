"""Fused recurrent primitives: what every cell's fast path shares, and the factory that makes them.

A cell module writes one ``forward`` over a whole (T, B, I) sequence and one ``backward`` and
gives them to its record (``bptt.nn.registry.CellType``), which makes them with ``fused_kernels``
into two primitives, a step and a sequence, each one tape entry, checked (shapes, dtypes) here
once for every cell.  The reference steps built from small ops live in the cell modules too;
the op tests gradient-check these primitives on the examples made here, and the cell tests
compare them with the references.

What makes the kernels fast (see ``bptt.nn.cells.lstm`` for the full set):

* the input projections of all T timesteps are computed before the loop, ``(T*B, I) @ (I, G*H)``;
* each step is one product ``(B, H) @ (H, G*H)`` and a handful of in-place ufunc calls on
  preallocated buffers (``out=``); the gated cells (LSTM, GRU) run both products gate by gate,
  numpy batching the small GEMMs (``gate_major``), so that every gate of a step is one
  contiguous block;
* sigmoid is computed as ``0.5 * tanh(a / 2) + 0.5``, the halving folded into the weights once
  per call, so one ``tanh`` covers every gate of a step;
* backward computes the activation derivatives a block of steps at a time, before the steps'
  loop and small enough to stay in cache (``block_steps``), and accumulates the weight gradients
  in one GEMM over the stacked timesteps;
* arrays are reused across calls instead of allocated: a backward's temporaries (``scratch``)
  and a forward's residuals and outputs once their backward has run (``pooled``), which spares
  the page faults of fresh multi-megabyte arrays.

These choices change where numbers are stored, not the formula of any entry (the same dot
products, the same ufuncs in the same order).  They do change the shapes of the GEMMs (a product
per gate, or one over a block of steps, where the plain way is one row-major GEMM per step over
strided gate slices), and a BLAS may add a dot product's terms in another order for another
shape, depending on the kernels it picks for the CPU: the results agree with the plain way's
within float rounding, not bit for bit in general (OpenBLAS's Sandybridge kernels happen to
give the same bits at the sizes tested, its Haswell kernels do not; ``tests/nn/test_kernels.py``
compares within the rounding of the sums).  The backward's recurrent product from
``BACK_BY_GATE`` units on (``recurrent_back``) also sums its gate-by-gate parts after the GEMMs,
not inside one: another order again.

``reverse=True`` runs the recursion from the last timestep to the first (the backward direction
of a bidirectional layer) while inputs and outputs stay in time order.  Every buffer takes the
dtype of the inputs, so float32 stays float32.

Shapes: x (T, B, I), state (B, H) each, weight_ih (G*H, I), weight_hh (G*H, H), biases (G*H,),
y (T, B, H).
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from bptt.ops import OpError, Primitive, custom, stack

__all__ = ["FusedKernels", "fused_kernels", "project", "recurrent_matrix", "gate_major", "in_step_order",
           "weight_grads", "elman_forward", "elman_backward", "block_steps", "scratch", "pooled",
           "release_scratch", "fixed_weights", "SCRATCH_LIMIT"]


# -- shared numerics ----------------------------------------------------------------------------

#: Scratch and pooled buffers at most this large are kept between calls (per thread, per name).
SCRATCH_LIMIT = 64 * 2 ** 20
#: At most this many pooled buffers per name (the layers and directions whose residuals are alive
#: at once), and at most ``POOL_LIMIT`` bytes of them per thread.
POOL_DEPTH = 8
POOL_LIMIT = 256 * 2 ** 20
_scratch = threading.local()
_pool = threading.local()


def scratch(name, shape, dtype):
    """A work array for a backward's temporaries that never leave the call, reused across calls.

    A fresh multi-megabyte array costs a page fault per page on first touch; reusing one makes
    the LSTM backward of the main job about a third faster.  Each thread has its own buffers (a
    concurrent backward in another thread never shares them); arrays over ``SCRATCH_LIMIT``
    bytes are allocated afresh and freed with the call, so a long sequence holds no memory after.
    """
    dtype = np.dtype(dtype)
    n = math.prod(shape)
    if n * dtype.itemsize > SCRATCH_LIMIT:
        return np.empty(shape, dtype)
    cache = _scratch.__dict__
    buf = cache.get(name)
    if buf is None or buf.dtype != dtype or buf.size < n:
        buf = cache[name] = np.empty(n, dtype)
    return buf[:n].reshape(shape)


def pooled(name, shape, dtype):
    """An array that leaves the call (a forward's residual or output), from a per-thread pool.

    A forward's residuals die when its backward has run, and the next forward asks for arrays of
    the same sizes; handing the old buffers out again spares the page faults of fresh ones (on
    the main job's update, about 700 faults and a fifth of its time).  A buffer is handed out
    only when nothing but the pool refers to it: every array made from it (a view, a reshape)
    holds it as its base, so an array still in use is never written.  When all of a name's
    buffers are in use, or the pool is full (``POOL_DEPTH``, ``POOL_LIMIT``), or the array is
    over ``SCRATCH_LIMIT``, it is allocated afresh and freed as usual.
    """
    dtype = np.dtype(dtype)
    n = math.prod(shape)
    nbytes = n * dtype.itemsize
    if nbytes > SCRATCH_LIMIT:
        return np.empty(shape, dtype)
    pool = _pool.__dict__
    bufs = pool.setdefault(name, [])
    for j in range(len(bufs)):
        if sys.getrefcount(bufs[j]) == 2:           # the list's reference and this argument's
            if bufs[j].dtype != dtype or bufs[j].size < n:
                bufs[j] = np.empty(n, dtype)
            return bufs[j][:n].reshape(shape)
    held = sum(b.nbytes for names in pool.values() for b in names)
    if len(bufs) >= POOL_DEPTH or held + nbytes > POOL_LIMIT:
        return np.empty(shape, dtype)
    bufs.append(np.empty(n, dtype))
    return bufs[-1].reshape(shape)


def release_scratch():
    """Free this thread's scratch buffers and pool (the next calls allocate them again)."""
    _scratch.__dict__.clear()
    _pool.__dict__.clear()


def project(x, w_ih, b_ih, b_hh, out=None):
    """All input projections at once, (T, B, G*H): ``x @ w_ih.T + b_ih + b_hh`` in one GEMM and
    one pass for the bias; ``out`` (T*B, G*H), from ``pooled`` or ``scratch``, receives it."""
    T, B, I = x.shape
    xp = np.matmul(x.reshape(T * B, I), w_ih.T, out=out)
    if b_ih is not None:
        xp += b_ih + b_hh
    return xp.reshape(T, B, -1)


def recurrent_matrix(w_hh, x):
    """``w_hh.T``, the (H, G*H) matrix each step multiplies ``h`` by.

    Made C-contiguous when ``x`` (T, B, I) has several steps of several rows: OpenBLAS runs the
    per-step GEMM up to twice as fast on it as on the transposed view (B=32, H=64), which repays
    the transposing copy after a step or two.  A single step, or B = 1 (a GEMV, as fast either
    way), keeps the view.
    """
    T, B = np.shape(x)[:2]
    return np.ascontiguousarray(w_hh.T) if T > 1 and B > 1 else w_hh.T


def gate_major(x, w_ih, w_hh, b_ih, b_hh, scale, order, name, fold=1):
    """The input projections and the recurrent matrix of a gated cell, laid out gate by gate.

    Returns ``(A, w_t, buf, gates)``: ``A`` (T, G, B, H) holds every step's input projection
    ``(x @ w_ih.T + b_ih + fold * b_hh) * scale`` (from the pool under ``name``, a residual); each
    step's ``np.matmul(h, w_t, out=buf)`` leaves ``h @ (w_hh.T * scale)`` as ``gates`` (G, B, H).
    ``order`` permutes the gates (the cell's G gates in PyTorch's order; ``order[j]`` is the one
    stored j-th), so that gates treated alike are adjacent.  ``name`` is the cell's: its ``scale``,
    ``order`` and ``fold`` are the same on every call.

    For B > 1 the recurrent product runs gate by gate (numpy batches the small GEMMs), and every
    step's gates are one contiguous (G, B, H) block: the elementwise work over a step's gates runs
    several times faster on it than on strided slices of a (B, G*H) row.  The input side is one
    (B, I) @ (I, H) product per step and gate, or, for wide inputs (``WIDE_INPUT``), one GEMM over
    a block of steps whose rows are then scattered gate by gate, which is faster there (the
    same formulas; a GEMM of another shape may round differently).  For B = 1 a step is one GEMV
    into a row, whose gate blocks are contiguous already.
    The weights' layout is made once per call, or once per ``fixed_weights`` block.
    """
    T, B, I = x.shape
    GH, H = w_hh.shape
    G = GH // H
    dtype = np.result_type(x, w_ih)
    layout = "row" if B == 1 else "wide" if I >= WIDE_INPUT else "gates"
    w_in, w_t, b = _gate_weights(w_ih, w_hh, b_ih, b_hh, scale, order, name, fold, dtype, layout)
    if layout == "row":
        xp = np.matmul(x.reshape(T, I), w_in, out=pooled(name, (T, GH), dtype))
        if b is not None:
            xp += b
        buf = np.empty((1, GH), dtype)
        return xp.reshape(T, 1, G, H).transpose(0, 2, 1, 3), w_t, buf, buf.reshape(1, G, H).transpose(1, 0, 2)
    A = pooled(name, (T, G, B, H), dtype)
    if layout == "wide":
        S = block_steps(T, 4 * B * GH * dtype.itemsize)     # a quarter block: rows stay in L2
        rows = scratch(name + ".rows", (S * B, GH), dtype)
        for s in range(0, T, S):
            n = min(S, T - s)
            xp = np.matmul(x[s:s + n].reshape(n * B, I), w_in, out=rows[:n * B])
            gates = xp.reshape(n, B, G, H).transpose(0, 2, 1, 3)
            if b is None:
                A[s:s + n] = gates
            else:
                np.add(gates, b.reshape(G, 1, H), out=A[s:s + n])
    else:
        np.matmul(x[:, None], w_in, out=A)
        if b is not None:     # tiled over B first: then one contiguous (G, B, H) block a step
            A += np.ascontiguousarray(np.broadcast_to(b.reshape(G, 1, H), (G, B, H)))
    buf = np.empty((G, B, H), dtype)
    return A, w_t, buf, buf


#: From this input width on, ``gate_major`` projects the inputs of a block of steps in one GEMM
#: (1.2-1.5x faster at I = 256; at I <= 128 the per-gate products are).
WIDE_INPUT = 256
_fixed = threading.local()


@contextlib.contextmanager
def fixed_weights():
    """A block over which the weights stay the same arrays with the same values: the gated cells'
    kernels then lay each weight set out once (``gate_major``) and reuse it on every call.

    A checkpointed layer runs its kernels once per segment, and laying out the weights of an LSTM
    of 256 costs as much as projecting twenty steps of its input.  The layouts are freed when the
    outermost block ends.
    """
    outer = getattr(_fixed, "cache", None)
    if outer is None:
        _fixed.cache = {}
    try:
        yield
    finally:
        if outer is None:
            _fixed.cache = None


def laid_out(key, weights, make):
    """``make(kept)``, the layout of ``weights`` (four arrays or None) that a kernel multiplies
    by; within ``fixed_weights`` made once per ``key`` (the kernel's name and what fixes the
    layout's form) and weight arrays, and reused.  ``kept`` says whether the layout outlives the
    call (then it must own its arrays; otherwise it may use ``scratch``).

    The key is one literal tuple of ``key`` and the arrays' ids (``tuple(map(id, ...))`` leaves
    small tuples on CPython's free lists, which a traced peak counts); the entry holds the
    arrays, so their ids are not reused while it lives.
    """
    cache = getattr(_fixed, "cache", None)
    if cache is None:
        return make(False)
    w0, w1, w2, w3 = weights
    full = (key, id(w0), id(w1), id(w2), id(w3))
    if full not in cache:
        cache[full] = (weights, make(True))
    return cache[full][1]


def _gate_weights(w_ih, w_hh, b_ih, b_hh, scale, order, name, fold, dtype, layout):
    """``(w_in, w_t, b)`` as ``gate_major`` multiplies by them, permuted, scaled and transposed
    for ``layout`` ('row', 'wide' or 'gates'); cached within ``fixed_weights`` (a name's scale,
    order and fold are the same on every call)."""
    def make(kept):
        GH, H = w_hh.shape
        G, I = GH // H, w_ih.shape[1]
        perm = list(order)
        s = scale.reshape(G, H, 1)[perm]
        wi, wh = w_ih.reshape(G, H, I)[perm], w_hh.reshape(G, H, H)[perm]    # permuted copies
        b = None if b_ih is None else ((b_ih + b_hh * fold).reshape(G, H, 1)[perm] * s).reshape(GH)
        if layout == "row":   # transposes of row-major arrays: a GEMV over the other layout sums in another order
            w_t = np.multiply(wh, s, out=wh).reshape(GH, H).T
        else:               # scaled straight into the (G, H, H) layout the batched GEMMs read
            w_t = np.multiply(wh.transpose(0, 2, 1), s.transpose(0, 2, 1), out=np.empty((G, H, H), dtype))
        if layout == "gates":
            w_in = np.multiply(wi.transpose(0, 2, 1), s.transpose(0, 2, 1), out=np.empty((G, I, H), dtype))
        else:
            w_in = np.multiply(wi, s, out=wi).reshape(GH, I).T
        return w_in, w_t, b
    return laid_out((name, dtype, layout), (w_ih, w_hh, b_ih, b_hh), make)


#: The backward loops work through blocks of steps whose temporaries fill about this many bytes.
BLOCK_BYTES = 2 ** 21


#: From this hidden size on, a gated cell's backward multiplies a step's gate cotangents by W_hh
#: gate by gate (``recurrent_back``).
BACK_BY_GATE = 512


def recurrent_back(w_hh, B):
    """``back(d, out)``, writing ``out = d @ w_hh`` for a step's gate cotangents d (B, G*H): the
    cotangent of h_{t-1} through ``h_{t-1} @ w_hh.T``.

    From ``BACK_BY_GATE`` units on (B > 1) the product runs gate by gate, G products (B, H) @
    (H, H) on d's column blocks (strided views, no copies), whose parts are then summed: OpenBLAS
    runs one (B, G*H) @ (G*H, H) slowly at small B there.  A whole LSTM or GRU backward at
    T = 100, one thread, takes 0.50-0.52x the time this way at B = 2, H = 512, 0.94-1.03x at
    B = 4-32 and 0.94-0.98x at H = 1024; at H = 256 0.63-1.08x, depending on B and the cell, and
    at H = 128 0.94-1.13x (``scripts/bench_back.py``).
    """
    GH, H = w_hh.shape
    if B == 1 or H < BACK_BY_GATE:
        return lambda d, out: np.matmul(d, w_hh, out=out)
    G = GH // H
    w_g = np.reshape(w_hh, (G, H, H))
    parts = np.empty((G, B, H), w_hh.dtype)

    def back(d, out):
        np.matmul(d.reshape(B, G, H).transpose(1, 0, 2), w_g, out=parts)
        np.add.reduce(parts, axis=0, out=out)
    return back


def block_steps(T, step_bytes):
    """How many of T steps a backward treats as one block, ``step_bytes`` the temporaries of one:
    computed a block at a time, the per-step factors are still in cache when the loop reads them
    (over the whole sequence at once they stream through memory twice)."""
    return max(1, min(T, BLOCK_BYTES // max(step_bytes, 1)))


def in_step_order(a, reverse):
    """``a`` (T, ...) indexed by step number: time order, or reversed for a backward direction."""
    return a[::-1] if reverse else a


def weight_grads(x, w_ih, dpre_x, dpre_h, ys, h0, reverse, need_x, need_w_ih, need_w_hh):
    """dx, dW_ih, dW_hh from the pre-activation cotangents stacked over time (one GEMM each).

    ``dpre_x`` (T, B, G*H) is the cotangent of the input projection, ``dpre_h`` that of
    ``h_{t-1} @ W_hh.T``; both in time order.  Step k read h_{k-1}: the previous output in
    step order, or h0 at the first step.
    """
    T, B, I = x.shape
    GH = dpre_x.shape[-1]
    dx2 = dpre_x.reshape(T * B, GH)
    dx = dw_ih = dw_hh = None
    if need_x:
        dx = (dx2 @ w_ih).reshape(T, B, I)
    if need_w_ih:
        dw_ih = dx2.T @ x.reshape(T * B, I)
    if need_w_hh:
        first, rest = (T - 1, slice(0, T - 1)) if reverse else (0, slice(1, T))
        prev = slice(1, T) if reverse else slice(0, T - 1)
        # B = 1: an outer product, which a K = 1 GEMM computes several times slower (each entry
        # one rounded product either way: the same bits)
        dw_hh = np.multiply(dpre_h[first].T, h0, order="C") if B == 1 else dpre_h[first].T @ h0
        if T > 1:
            dw_hh += dpre_h[rest].reshape(-1, GH).T @ ys[prev].reshape(-1, ys.shape[-1])
    return dx, dw_ih, dw_hh


def elman_forward(ys, h0, reverse, nonlinearity, recur):
    """The loop of ``h_k = act(a_k + R(h_{k-1}))`` in place: ``ys`` (T, B, H) holds the input
    parts ``a`` and becomes the outputs; ``recur(h, out)`` writes R(h) (``h @ W_hh.T`` for the
    Elman RNN, ``u * h`` for the IndRNN)."""
    Y = in_step_order(ys, reverse)
    buf = np.empty(h0.shape, ys.dtype)
    h = h0
    for k in range(len(Y)):
        recur(h, buf)
        h = Y[k]
        h += buf
        if nonlinearity == "tanh":
            np.tanh(h, out=h)
        else:
            np.maximum(h, 0, out=h)
    return Y[-1]


def elman_backward(ys, h0, gy, gh, reverse, nonlinearity, back):
    """The reverse loop of ``elman_forward``: ``(da, dh0)``, da (T, B, H) the cotangent of the
    pre-activations in time order (a scratch array: use it before the next backward);
    ``back(da_k, out)`` writes the cotangent of h_{k-1} through R."""
    Y = in_step_order(ys, reverse)
    deriv = scratch("elman.deriv", Y.shape, ys.dtype)
    if nonlinearity == "tanh":
        np.multiply(Y, Y, out=deriv)
        np.subtract(1, deriv, out=deriv)
    else:
        np.greater(Y, 0, out=deriv)
    da = scratch("elman.da", ys.shape, ys.dtype)
    D = in_step_order(da, reverse)
    GY = None if gy is None else in_step_order(gy, reverse)
    dh = np.empty(h0.shape, ys.dtype)
    rec = np.array(gh, dtype=ys.dtype, copy=True)
    for k in range(len(Y) - 1, -1, -1):
        if GY is None:
            dh, rec = rec, dh
        else:
            np.add(rec, GY[k], out=dh)
        np.multiply(dh, deriv[k], out=D[k])
        back(D[k], rec)
    return da, rec


# -- the factory --------------------------------------------------------------------------------

@dataclass(frozen=True)
class FusedKernels:
    """A cell's fused primitives: one step, and a whole sequence (one tape entry each).

    ``step(x, *state, *weights, **options)`` returns the new state (one array, or a tuple for a
    state of several components); ``sequence(x, *state, *weights, reverse=False, **options)``
    returns ``(y, *final_state)``.  ``fused_kernels`` makes both from one forward and one backward.
    """

    step: Primitive
    sequence: Primitive


_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _operands(x, state, weights, shapes):
    """The operands in one dtype, or an OpError naming every mismatched shape."""
    if np.ndim(x) != 3 or any(np.ndim(s) != 2 for s in state):
        raise OpError(f"need x (T, B, I) and a state of (B, H) arrays; got x {np.shape(x)}, state "
                      + ", ".join(str(np.shape(s)) for s in state))
    if len(weights) not in (2, 4):
        raise OpError(f"need weight_ih, weight_hh and optionally both biases; got {len(weights)} weights")
    T, B, I = x.shape
    H = np.shape(state[0])[1]
    want = dict(zip(_WEIGHTS, shapes(I, H).values()))
    bad = [f"state[{k}] {np.shape(s)} (expected {(B, H)})" for k, s in enumerate(state)
           if np.shape(s) != (B, H)]
    bad += [f"{n} {np.shape(w)} (expected {want[n]})" for n, w in zip(_WEIGHTS, weights)
            if np.shape(w) != tuple(want[n])]
    if bad:
        raise OpError(f"for x of shape {x.shape} and hidden size {H}: " + ", ".join(bad))
    dtype = np.result_type(x, *state, *weights)
    cast = [np.asarray(a).astype(dtype, copy=False) for a in (x, *state, *weights)]
    x, state, weights = cast[0], tuple(cast[1:1 + len(state)]), tuple(cast[1 + len(state):])
    return x, state, weights + (None,) * (4 - len(weights))


def _trim(grads, needs):
    """The cotangents of the inputs the call had: without biases, the last two slots go."""
    return tuple(g if need else None for g, need in zip(grads, needs))


def _examples(n_state, shapes, step, option_sets, T=3, B=2, I=3, H=4):
    x = (B, I) if step else (T, B, I)
    w = tuple(shapes(I, H).values())
    hs = ((B, H),) * n_state
    cases = []
    for options in option_sets:
        cases += [((x, *hs, *w), options), ((x, *hs, *w[:2]), options)]
        if not step:
            cases.append(((x, *hs, *w), {**options, "reverse": True}))
    return custom(*cases)


def fused_kernels(name: str, forward: Callable, backward: Callable, shapes: Callable, reference: Callable,
                  state: tuple = ("h",), examples: tuple = ({},)) -> FusedKernels:
    """Make a cell's step and sequence primitives from one forward and one backward.

    Called by the cell's record (``bptt.nn.registry.CellType``) with its own fields, so that a
    cell gives each fact once; ``registry.register`` enters the primitives into the op registry.

    Parameters
    ----------
    name : str
        The cell's name; the primitives are named ``{name}_step`` and ``{name}_sequence``.
    forward : callable
        ``forward(x, state, weights, reverse, **options) -> (y, final_state, res)``: x (T, B, I),
        ``state`` a tuple of (B, H) arrays, ``weights`` ``(weight_ih, weight_hh, bias_ih,
        bias_hh)`` with None biases when the call has none, all of one dtype (checked here);
        y (T, B, H) every step's h in time order, ``final_state`` a tuple like ``state``.
    backward : callable
        ``backward(res, gy, gstate, need_x, need_w_ih, need_w_hh) -> (dx, dstate, dweights)``:
        ``gy`` (T, B, H) or None, ``gstate`` the cotangents of the final state (a tuple);
        returns dx, a tuple of cotangents of the initial state, and four weight cotangents
        (None for absent biases or what is not needed).
    shapes : callable
        ``shapes(input_size, hidden_size) -> {name: shape}`` of the four parameters.
    reference : callable
        The cell's reference step ``(x, state, weights, **options) -> state``; forward mode
        (``bptt.jvp``) pushes tangents through the primitives by running it, step by step.
    state : tuple of str
        The state's components.
    examples : sequence of dict
        Option sets the gradient checks run the primitives with.

    Returns
    -------
    FusedKernels
    """
    n = len(state)

    def run(x, args, reverse, options):
        x, s0, weights = _operands(x, args[:n], args[n:], shapes)
        return forward(x, s0, weights, reverse, **options)

    def grads(res, gy, gstate, needs):
        needs = tuple(needs) + (False,) * (n + 5 - len(needs))
        dx, dstate, dweights = backward(res, gy, tuple(gstate), needs[0], needs[n + 1], needs[n + 2])
        return dx, _trim((dx, *dstate, *dweights), needs)

    class sequence:
        multiple_outputs = True

        @staticmethod
        def fwd(x, *args, reverse=False, **options):
            y, final, res = run(x, args, reverse, options)
            return (y, *final), res

        @staticmethod
        def bwd(res, gs, needs):
            return grads(res, gs[0], gs[1:], needs)[1][:len(needs)]

        @staticmethod
        def reference(x, *args, reverse=False, **options):
            s, ys = tuple(args[:n]), [None] * len(x)
            for t in (range(len(x) - 1, -1, -1) if reverse else range(len(x))):
                s = tuple(reference(x[t], s, args[n:], **options))
                ys[t] = s[0]
            return (stack(*ys, axis=0), *s)

    class step:
        multiple_outputs = n > 1

        @staticmethod
        def fwd(x, *args, **options):
            if np.ndim(x) != 2:
                raise OpError(f"need x (B, I), got shape {np.shape(x)}")
            _, final, res = run(np.asarray(x)[None], args, False, options)
            return (final if n > 1 else final[0]), res

        @staticmethod
        def bwd(res, g, needs):
            dx, out = grads(res, None, g if n > 1 else (g,), needs)
            return ((None if dx is None else dx[0]),) + out[1:len(needs)]

        @staticmethod
        def reference(x, *args, **options):
            out = tuple(reference(x, tuple(args[:n]), args[n:], **options))
            return out if n > 1 else out[0]

    sequence.__doc__ = (f"A whole {name} layer over a sequence: ``(x, *state, *weights, reverse=False, "
                        f"**options) -> (y, *final_state)``.")
    step.__doc__ = f"One {name} step: ``(x, *state, *weights, **options) -> state'``, x (B, I)."
    for spec, kind in ((sequence, "sequence"), (step, "step")):
        spec.__name__ = spec.__qualname__ = f"{name}_{kind}"
        spec.examples = _examples(n, shapes, kind == "step", examples)
    return FusedKernels(step=Primitive(step), sequence=Primitive(sequence))
