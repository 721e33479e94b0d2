"""Tensor and the reverse-mode tape.

How an entry is recorded and replayed::

    forward                                   backward (reverse recording order)
    -------                                   ----------------------------------
    y = op(a, b)                              gs = cotangents of y's outputs
      y.data, res = op.fwd(a.data, b.data)    da, db = op.bwd(res, gs, needs)
      y._entry = Entry(op, res, (a, b), seq)  a.grad += unbroadcast(da)  (or pass on to a's entry)
                                              b.grad += unbroadcast(db)

Every primitive call on tensors that require grad adds one ``Entry``, numbered in the order it
ran; the live entries are the tape.  An entry holds the inputs it needs gradients for and the
residuals its VJP reads, never its outputs, so the tape is a DAG without reference cycles and
Python frees an entry as soon as nothing downstream can reach it.  ``backward`` collects the
entries reachable from the root without recursion, replays them from the newest to the oldest and
accumulates cotangents with ``+`` (a hidden state always fans out).  Broadcasting is undone here,
once, not in each rule.  After the replay the entries are freed unless ``retain_graph=True``.

Because an entry keeps the arrays it was recorded with, rebinding ``param.data`` afterwards (as
the optimizers do) never changes what backward computes through that entry.  Entries keep
references, not copies (copying every input would double the cost of a step), so writing into a
recorded array in place (``param.data[...] = ...``) before backward is not supported: rebind.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import weakref

import numpy as np

__all__ = ["Tensor", "no_grad", "enable_grad", "is_grad_enabled", "set_default_dtype",
           "get_default_dtype"]

_default_dtype = np.dtype(np.float32)
_grad_enabled = True
_seq = itertools.count()


def set_default_dtype(dtype):
    """Set the dtype given to tensors built from Python scalars and lists (float32 at start)."""
    global _default_dtype
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"set_default_dtype: need a floating dtype, got {dtype}")
    _default_dtype = dtype


def get_default_dtype():
    """The dtype given to tensors built from Python scalars and lists."""
    return _default_dtype


def is_grad_enabled():
    """Whether operations on tensors that require grad are being recorded."""
    return _grad_enabled


@contextlib.contextmanager
def _grad_mode(enabled):
    global _grad_enabled
    before = _grad_enabled
    _grad_enabled = enabled
    try:
        yield
    finally:
        _grad_enabled = before


def no_grad():
    """Context manager under which nothing is recorded on the tape."""
    return _grad_mode(False)


def enable_grad():
    """Context manager that turns recording back on inside a ``no_grad`` block."""
    return _grad_mode(True)


class Entry:
    """One recorded primitive call: what backward needs to pull cotangents through it."""

    __slots__ = ("op", "res", "inputs", "seq", "n_out", "out_meta", "retained")

    def __init__(self, op, res, inputs, n_out, out_meta):
        self.op = op
        self.res = res
        self.inputs = inputs          # the input Tensors that need a gradient, None elsewhere
        self.seq = next(_seq)         # recording order: backward replays in reverse
        self.n_out = n_out
        self.out_meta = out_meta      # (shape, dtype) per output, to fill absent cotangents
        self.retained = None          # {output index: weakref to Tensor} for retain_grad

    @property
    def freed(self):
        """Whether a backward without ``retain_graph`` has released this entry."""
        return self.inputs is None


class Tensor:
    """An ``np.ndarray`` that records the primitives applied to it on the tape.

    Parameters
    ----------
    data : array_like
        The value.  An ``np.ndarray`` (or numpy scalar) keeps its dtype; Python scalars and lists
        take the default dtype (float32 unless changed with ``bptt.set_default_dtype``).
    requires_grad : bool
        Whether gradients are accumulated into ``.grad`` by ``backward``.  Only floating-point
        tensors can require grad.
    dtype : dtype, optional
        Convert to this dtype (no copy when ``data`` already has it).

    Attributes
    ----------
    data : np.ndarray
    grad : np.ndarray or None
        Accumulated gradient of the last ``backward`` calls (``None`` until one reaches it).
    """

    __slots__ = ("data", "grad", "requires_grad", "_entry", "_index", "name", "__weakref__")
    __array_priority__ = 1000  # so ndarray (op) Tensor defers to Tensor's reflected operators

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        if dtype is None and not isinstance(data, (np.ndarray, np.generic)):
            dtype = _default_dtype
        arr = np.asarray(data, dtype=dtype)
        if requires_grad and arr.dtype.kind != "f":
            raise TypeError(f"Tensor: only floating-point tensors can require grad, got {arr.dtype}")
        self.data = arr
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._entry = None
        self._index = 0
        self.name = None

    # -- plain attributes -------------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    @property
    def is_leaf(self):
        """True for tensors not produced by a recorded primitive."""
        return self._entry is None

    def __len__(self):
        return len(self.data)

    def item(self):
        """The value of a one-element tensor as a Python number."""
        return self.data.item()

    def numpy(self):
        """The underlying array (not a copy)."""
        return self.data

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}, dtype={self.dtype}{grad})"

    # -- the tape ---------------------------------------------------------------------------
    def detach(self):
        """A tensor with the same data that is cut from the tape."""
        return Tensor(self.data)

    def requires_grad_(self, flag=True):
        if flag and self.dtype.kind != "f":
            raise TypeError(f"requires_grad_: only floating-point tensors can require grad, got {self.dtype}")
        if not self.is_leaf and not flag:
            raise RuntimeError("requires_grad_: cannot turn off grad on a recorded result; use .detach()")
        self.requires_grad = bool(flag)
        return self

    def retain_grad(self):
        """Keep ``.grad`` on this intermediate tensor after ``backward`` (leaves always keep it)."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad: tensor does not require grad")
        entry = self._entry
        if entry is not None:
            if entry.retained is None:
                entry.retained = {}
            entry.retained[self._index] = weakref.ref(self)
        return self

    def zero_grad(self):
        self.grad = None

    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into ``.grad`` of every leaf that requires grad.

        Parameters
        ----------
        grad : array_like, optional
            The cotangent of ``self``; required unless ``self`` has one element.
        retain_graph : bool
            Keep the entries used, so that backward can pass through them again.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: tensor does not require grad (no recorded entry leads to it)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward: a non-scalar tensor of shape {self.shape} needs grad= "
                    f"(an array of that shape), e.g. y.backward(np.ones({self.shape}))")
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward: grad has shape {grad.shape}, tensor has shape {self.shape}")
        run_backward(self, grad, retain_graph)


def _accumulate_leaf(t, g):
    if t.grad is None:
        # copy: g may be shared with other inputs (add passes one array to both)
        t.grad = np.array(g, dtype=t.data.dtype, copy=True)
    else:
        t.grad += g


def unbroadcast(g, shape, op="backward"):
    """Sum ``g`` down to ``shape``, undoing numpy broadcasting.

    Raises a ValueError naming ``op`` when ``g`` is not ``shape`` broadcast (a VJP that returned
    a cotangent of the wrong shape).
    """
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    if lead >= 0:
        axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape)
                                          if n == 1 and g.shape[i + lead] != 1)
        if axes:
            g = g.sum(axis=axes, keepdims=True)
        if g.shape[lead:] == shape:
            return g.reshape(shape)
    raise ValueError(f"{op}: cotangent of shape {g.shape} cannot reduce to the input's shape {shape}")


_by_seq = operator.attrgetter("seq")


def _reachable(root):
    """Entries reachable from ``root``, newest first (iterative: a 10^4-step chain is fine).

    Recording order is a topological order (an entry's inputs were all produced earlier), so
    sorting by it is enough; every entry is checked before any gradient is accumulated, so a
    backward through a freed entry fails without touching ``.grad``.
    """
    seen = {root}
    stack = [root]
    while stack:
        e = stack.pop()
        if e.inputs is None:
            raise RuntimeError(
                f"backward: the tape entry for '{e.op.name}' was freed by an earlier backward; "
                "pass retain_graph=True to the first backward to go through it twice")
        for t in e.inputs:
            if t is not None:
                src = t._entry
                if src is not None and src not in seen:
                    seen.add(src)
                    stack.append(src)
    return sorted(seen, key=_by_seq, reverse=True)


def run_backward(root, grad, retain_graph=False):
    """Replay the tape from ``root`` (a Tensor) with cotangent ``grad``."""
    entry = root._entry
    if entry is None:
        _accumulate_leaf(root, grad)
        return
    order = _reachable(entry)
    # cotangents waiting for each entry: the array itself for a single-output entry,
    # {output index: array} for a multiple-output one
    pending = {entry: grad if entry.n_out == 1 else {root._index: grad}}
    for e in order:
        g = pending.pop(e, None)
        if g is not None:
            if e.n_out != 1:
                gs = g
                g = tuple(gs[i] if i in gs else np.zeros(shape, dtype)
                          for i, (shape, dtype) in enumerate(e.out_meta))
            if e.retained:
                for i, ref in e.retained.items():
                    t = ref()
                    gi = g if e.n_out == 1 else gs.get(i)
                    if t is not None and gi is not None:
                        _accumulate_leaf(t, gi)
            inputs = e.inputs
            dxs = e.op.bwd(e.res, g, tuple(t is not None for t in inputs))
            for t, dx in zip(inputs, dxs):
                if t is None or dx is None:
                    continue
                data = t.data
                if dx.dtype != data.dtype:
                    dx = dx.astype(data.dtype)
                if dx.shape != data.shape:
                    dx = unbroadcast(dx, data.shape, e.op.name)
                src = t._entry
                if src is None:
                    _accumulate_leaf(t, dx)
                elif src.n_out == 1:
                    prev = pending.get(src)
                    pending[src] = dx if prev is None else prev + dx   # new array: dx may be shared
                else:
                    slot = pending.setdefault(src, {})
                    k = t._index
                    slot[k] = slot[k] + dx if k in slot else dx
        if not retain_graph:
            e.res = e.inputs = None
