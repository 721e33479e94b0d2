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

``vjp`` records a function once on fresh leaves and replays the same entries, through the same
loop as ``backward``, for as many cotangents as it is given.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

if TYPE_CHECKING:
    from typing_extensions import Self, TypeAlias

__all__ = ["Tensor", "TensorLike", "no_grad", "enable_grad", "is_grad_enabled", "set_default_dtype",
           "get_default_dtype", "vjp"]

_default_dtype: np.dtype = np.dtype(np.float32)
_grad_enabled = True
_seq = itertools.count()


def set_default_dtype(dtype: DTypeLike) -> None:
    """Set the dtype given to tensors built from Python scalars and lists (float32 at start)."""
    global _default_dtype
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"set_default_dtype: need a floating dtype, got {dtype}")
    _default_dtype = dtype


def get_default_dtype() -> np.dtype:
    """The dtype given to tensors built from Python scalars and lists."""
    return _default_dtype


def is_grad_enabled() -> bool:
    """Whether operations on tensors that require grad are being recorded."""
    return _grad_enabled


@contextlib.contextmanager
def _grad_mode(enabled: bool) -> Iterator[None]:
    global _grad_enabled
    before = _grad_enabled
    _grad_enabled = enabled
    try:
        yield
    finally:
        _grad_enabled = before


def no_grad() -> contextlib.AbstractContextManager[None]:
    """Context manager under which nothing is recorded on the tape."""
    return _grad_mode(False)


def enable_grad() -> contextlib.AbstractContextManager[None]:
    """Context manager that turns recording back on inside a ``no_grad`` block."""
    return _grad_mode(True)


class Recorded(Protocol):
    """What the tape reads of a recorded primitive (a ``bptt.ops.Primitive``)."""

    name: str
    bwd: Callable[..., Any]


class Entry:
    """One recorded primitive call: what backward needs to pull cotangents through it."""

    __slots__ = ("op", "res", "inputs", "seq", "n_out", "out_meta", "retained")

    def __init__(self, op: Recorded, res: Any, inputs: Sequence[Tensor | None], n_out: int,
                 out_meta: tuple[tuple[tuple[int, ...], np.dtype], ...] | None) -> None:
        self.op = op
        self.res = res
        # the input Tensors that need a gradient, None elsewhere
        self.inputs: Sequence[Tensor | None] | None = inputs
        self.seq = next(_seq)         # recording order: backward replays in reverse
        self.n_out = n_out
        self.out_meta = out_meta      # (shape, dtype) per output, to fill absent cotangents
        # {output index: weakref to Tensor} for retain_grad
        self.retained: dict[int, weakref.ref[Tensor]] | None = None

    @property
    def freed(self) -> bool:
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

    def __init__(self, data: TensorLike, requires_grad: bool = False, dtype: DTypeLike | None = None) -> None:
        if isinstance(data, Tensor):
            data = data.data
        if dtype is None and not isinstance(data, (np.ndarray, np.generic)):
            dtype = _default_dtype
        arr = np.asarray(data, dtype=dtype)
        if requires_grad and arr.dtype.kind != "f":
            raise TypeError(f"Tensor: only floating-point tensors can require grad, got {arr.dtype}")
        self.data: np.ndarray = arr
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self._entry: Entry | None = None
        self._index = 0
        self.name: str | None = None

    # -- plain attributes -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def is_leaf(self) -> bool:
        """True for tensors not produced by a recorded primitive."""
        return self._entry is None

    def __len__(self) -> int:
        return len(self.data)

    def item(self) -> Any:
        """The value of a one-element tensor as a Python number."""
        return self.data.item()

    def numpy(self) -> np.ndarray:
        """The underlying array (not a copy)."""
        return self.data

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}, dtype={self.dtype}{grad})"

    # -- the tape ---------------------------------------------------------------------------
    def detach(self) -> Tensor:
        """A tensor with the same data that is cut from the tape."""
        return Tensor(self.data)

    def requires_grad_(self, flag: bool = True) -> Self:
        if flag and self.dtype.kind != "f":
            raise TypeError(f"requires_grad_: only floating-point tensors can require grad, got {self.dtype}")
        if not self.is_leaf and not flag:
            raise RuntimeError("requires_grad_: cannot turn off grad on a recorded result; use .detach()")
        self.requires_grad = bool(flag)
        return self

    def retain_grad(self) -> Self:
        """Keep ``.grad`` on this intermediate tensor after ``backward`` (leaves always keep it)."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad: tensor does not require grad")
        entry = self._entry
        if entry is not None:
            if entry.retained is None:
                entry.retained = {}
            entry.retained[self._index] = weakref.ref(self)
        return self

    def zero_grad(self) -> None:
        self.grad = None

    def backward(self, grad: TensorLike | None = None, retain_graph: bool = False) -> None:
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

    if TYPE_CHECKING:
        # bound by bptt.functional when it is imported (with bptt.nn, or a first bptt.<function>);
        # every binary operator takes a Tensor or array_like and gives a Tensor
        def __add__(self, other: TensorLike) -> Tensor: ...
        __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = __add__
        __pow__ = __rpow__ = __matmul__ = __rmatmul__ = __add__
        # comparisons give constant boolean tensors
        def __lt__(self, other: TensorLike) -> Tensor: ...
        __le__ = __gt__ = __ge__ = __lt__
        def __getitem__(self, index: Any) -> Tensor: ...
        def exp(self) -> Tensor: ...
        __neg__ = __abs__ = log = sqrt = abs = tanh = sigmoid = relu = exp
        def sum(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor: ...
        mean = max = sum
        def clip(self, low: ArrayLike | None = None, high: ArrayLike | None = None) -> Tensor: ...
        def reshape(self, *shape: int | Sequence[int]) -> Tensor: ...
        def transpose(self, *axes: int | Sequence[int]) -> Tensor: ...
        def astype(self, dtype: DTypeLike) -> Tensor: ...
        @property
        def T(self) -> Tensor: ...


#: What the functions of tensors take: a Tensor, or anything ``np.asarray`` takes (an array, a
#: number, a nested list).
TensorLike: TypeAlias = Union[Tensor, ArrayLike]


def _accumulate_leaf(t: Tensor, g: np.ndarray) -> None:
    if t.grad is None:
        # copy: g may be shared with other inputs (add passes one array to both)
        t.grad = np.array(g, dtype=t.data.dtype, copy=True)
    else:
        t.grad += g


def unbroadcast(g: np.ndarray, shape: tuple[int, ...], op: str = "backward") -> np.ndarray:
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


def _reachable(*roots: Entry) -> list[Entry]:
    """Entries reachable from ``roots``, newest first (iterative: a 10^4-step chain is fine).

    Recording order is a topological order (an entry's inputs were all produced earlier), so
    sorting by it is enough; every entry is checked before any gradient is accumulated, so a
    backward through a freed entry fails without touching ``.grad``.
    """
    seen = set(roots)
    stack = list(seen)
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


def _send(pending: dict[Entry, Any], t: Tensor, g: np.ndarray) -> None:
    """Add the cotangent ``g`` of the recorded Tensor ``t`` to what waits for its entry."""
    src: Entry = t._entry  # type: ignore[assignment]  # t is a recorded result
    if src.n_out == 1:
        prev = pending.get(src)
        pending[src] = g if prev is None else prev + g   # a new array: g may be shared
    else:
        slot = pending.setdefault(src, {})
        k = t._index
        slot[k] = slot[k] + g if k in slot else g


def _replay(order: list[Entry], pending: dict[Entry, Any], on_leaf: Callable[[Tensor, np.ndarray], None],
            free: bool = False, masks: dict[Entry, tuple[bool, ...]] | None = None) -> None:
    """Pull the cotangents in ``pending`` back through ``order`` (entries, newest first).

    ``on_leaf(t, g)`` receives each cotangent that reaches a leaf.  ``masks`` (entry -> one
    flag per input) restricts the replay to the inputs that lead somewhere wanted (``vjp``);
    without it every recorded input is followed and retained tensors get their ``.grad``.
    ``free`` drops each entry's residuals and inputs once it has been replayed.
    """
    for e in order:
        g = pending.pop(e, None)
        if g is not None:
            inputs: Sequence[Any] = e.inputs  # type: ignore[assignment]  # live: _reachable checked it
            if masks is None:
                needs = tuple(t is not None for t in inputs)
            else:
                needs = masks[e]
                if not any(needs):
                    continue
            if e.n_out != 1:
                gs = g
                g = tuple(gs[i] if i in gs else np.zeros(shape, dtype)
                          for i, (shape, dtype) in enumerate(e.out_meta))  # type: ignore[arg-type]
            if e.retained and masks is None:
                for i, ref in e.retained.items():
                    t = ref()
                    gi = g if e.n_out == 1 else gs.get(i)
                    if t is not None and gi is not None:
                        _accumulate_leaf(t, gi)
            dxs = e.op.bwd(e.res, g, needs)
            for t, need, dx in zip(inputs, needs, dxs):
                if not need or dx is None:
                    continue
                data = t.data
                if dx.dtype != data.dtype:
                    dx = dx.astype(data.dtype)
                if dx.shape != data.shape:
                    dx = unbroadcast(dx, data.shape, e.op.name)
                if t._entry is None:
                    on_leaf(t, dx)
                else:
                    _send(pending, t, dx)
        if free:
            e.res = e.inputs = None


def run_backward(root: Tensor, grad: np.ndarray, retain_graph: bool = False) -> None:
    """Replay the tape from ``root`` (a Tensor) with cotangent ``grad``."""
    entry = root._entry
    if entry is None:
        _accumulate_leaf(root, grad)
        return
    order = _reachable(entry)
    # cotangents waiting for each entry: the array itself for a single-output entry,
    # {output index: array} for a multiple-output one
    pending = {entry: grad if entry.n_out == 1 else {root._index: grad}}
    _replay(order, pending, _accumulate_leaf, free=not retain_graph)


def vjp(fn: Callable[..., Tensor | tuple[Tensor, ...]], *inputs: TensorLike
        ) -> tuple[Tensor | tuple[Tensor, ...], Callable[..., tuple[np.ndarray | None, ...]]]:
    """Record ``fn(*inputs)`` once and return its value and a reusable vector-Jacobian product.

    Each input becomes a fresh leaf of a private recording, so nothing reaches the ``.grad`` of
    any tensor, and ``vjp_fn`` can be called any number of times on the same recording (the
    adjoint solvers of ``bptt.nn.FixedPoint`` call it once per iteration).  Tensors that ``fn``
    reads from elsewhere (a module's parameters, say) are constants of the product: pass them as
    inputs to get their cotangents.

    Parameters
    ----------
    fn : callable
        Takes one Tensor per input and returns a Tensor or a tuple of Tensors.
    *inputs : Tensor or array_like
        Floating-point values; a Tensor's data is used, cut from its tape.

    Returns
    -------
    output : Tensor or tuple of Tensor
        ``fn``'s value, detached.
    vjp_fn : callable
        ``vjp_fn(cotangent, argnums=None)``: ``cotangent`` has the structure of ``output`` (an
        array, or a tuple of arrays with None for a zero one); returns a tuple with one cotangent
        per input, of the input's shape and dtype (zeros where the output does not depend on it).
        ``argnums`` (a sequence of input positions) computes only those, None elsewhere: only the
        tape entries that lead to them are replayed and each VJP skips the rest.

    Examples
    --------
    >>> y, vjp_fn = bptt.vjp(lambda a, b: a * b, np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    >>> vjp_fn(np.ones(2))
    (array([3., 4.]), array([1., 2.]))
    """
    leaves: list[Tensor] = []
    for i, a in enumerate(inputs):
        data = a.data if isinstance(a, Tensor) else np.asarray(a)
        if data.dtype.kind != "f":
            raise TypeError(f"vjp: input {i} has dtype {data.dtype}; only floating-point inputs have "
                            "cotangents (cast with .astype(np.float64))")
        leaves.append(Tensor(data, requires_grad=True))
    with enable_grad():
        out: Any = fn(*leaves)   # checked below
    single = not isinstance(out, tuple)
    outs = (out,) if single else out
    for k, o in enumerate(outs):
        if not isinstance(o, Tensor):
            raise TypeError(f"vjp: fn must return a Tensor or a tuple of Tensors; output {k} is "
                            f"{type(o).__name__}")
    order = _reachable(*{o._entry for o in outs if o._entry is not None})
    position = {id(leaf): i for i, leaf in enumerate(leaves)}
    masks: dict[tuple[int, ...], dict[Entry, tuple[bool, ...]]] = {}

    def masks_for(wanted: tuple[int, ...]) -> dict[Entry, tuple[bool, ...]]:
        # oldest first: an input is followed when it is a wanted leaf or comes from an entry that
        # leads to one (entries of another tape that fn closed over lead to none)
        if wanted not in masks:
            ids = {id(leaves[i]) for i in wanted}
            leading: set[Entry] = set()
            mask: dict[Entry, tuple[bool, ...]] = {}
            for e in reversed(order):
                m = tuple(t is not None and (id(t) in ids if t._entry is None else t._entry in leading)
                          for t in (e.inputs or ()))
                mask[e] = m
                if any(m):
                    leading.add(e)
            masks[wanted] = mask
        return masks[wanted]

    def vjp_fn(cotangent: Any,
               argnums: Iterable[int] | None = None) -> tuple[np.ndarray | None, ...]:
        gs = (cotangent,) if single else tuple(cotangent)
        if len(gs) != len(outs):
            raise ValueError(f"vjp_fn: got {len(gs)} cotangents for {len(outs)} outputs")
        wanted = tuple(range(len(leaves))) if argnums is None else tuple(sorted(set(argnums)))
        if any(not 0 <= i < len(leaves) for i in wanted):
            raise ValueError(f"vjp_fn: argnums {argnums} outside the {len(leaves)} inputs")
        result: list[np.ndarray | None] = [None] * len(leaves)

        def on_leaf(t: Tensor, g: np.ndarray) -> None:
            i = position.get(id(t))
            if i is not None:
                result[i] = np.array(g, copy=True) if result[i] is None else result[i] + g

        pending: dict[Entry, Any] = {}
        for k, (o, g) in enumerate(zip(outs, gs)):
            if g is None:
                continue
            g = np.asarray(g.data if isinstance(g, Tensor) else g, dtype=o.dtype)
            if g.shape != o.shape:
                raise ValueError(f"vjp_fn: cotangent {k} has shape {g.shape}, output {k} has shape {o.shape}")
            if o._entry is None:
                on_leaf(o, g)        # an input returned as it is
            else:
                _send(pending, o, g)
        _replay(order, pending, on_leaf, masks=masks_for(wanted))
        return tuple((np.zeros_like(leaves[i].data) if result[i] is None else result[i])
                     if i in wanted else None for i in range(len(leaves)))

    values = tuple(o.detach() for o in outs)
    return (values[0] if single else values), vjp_fn
