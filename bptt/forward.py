"""Forward mode: Jacobian-vector products through the primitives' ``jvp`` rules.

The tape runs derivatives backwards; forward mode pushes *tangents* along with the values, one
primitive call at a time, and needs no tape.  Tangents are batched: every tensor that carries
them holds an array ``(P, *shape)`` of P tangents, so P directions (e.g. every column of an
influence matrix dh_t/dθ) travel in one pass::

    with forward_mode([(x, v)], P) as trace:   # v (P, *x.shape)
        y = f(x)                            # each primitive: y.data, res = fwd(...)
    trace.get(y)                            #                  ty = jvp(res, (tx, ...))

How each primitive declares its rule, and the fallback through a ``reference`` built from other
primitives (for fused kernels), is described in ``bptt.ops``.  Forward mode and the tape are
independent: inside ``tangents`` the tape records as usual, so a step can be pushed forward and
backpropagated through at once.

Shapes: P tangents of a tensor of shape S are an array (P, *S).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from bptt import ops
from bptt.tape import Tensor, TensorLike, no_grad

__all__ = ["jvp", "forward_mode", "JVPError"]


class JVPError(NotImplementedError):
    """A tangent reached a primitive that declares neither a jvp nor a reference."""


class Trace:
    """The tangents of the tensors seen while forward mode is on (see ``forward_mode``)."""

    __slots__ = ("P", "_tangents")

    def __init__(self, P: int) -> None:
        self.P = int(P)
        # id(tensor) -> (tensor, tangents); the tensor keeps its id valid
        self._tangents: dict[int, tuple[Tensor, np.ndarray]] = {}

    def get(self, t: Tensor) -> np.ndarray | None:
        """The ``(P, *t.shape)`` tangents of ``t``, or None when none reached it (zero)."""
        found = self._tangents.get(id(t))
        return None if found is None else found[1]

    def seed(self, t: Tensor, tangent: ArrayLike) -> None:
        """Give the tensor ``t`` the tangents ``tangent (P, *t.shape)``."""
        if not isinstance(t, Tensor):
            raise TypeError(f"forward_mode: a tangent needs a Tensor to ride on, got {type(t).__name__}")
        tangent = np.asarray(tangent)
        if tangent.shape != (self.P, *t.shape):
            raise ValueError(f"forward_mode: a tensor of shape {t.shape} needs tangents of shape "
                             f"{(self.P, *t.shape)} (P = {self.P} first), got {tangent.shape}")
        self._tangents[id(t)] = (t, tangent)

    def __call__(self, op: ops.Primitive, args: tuple[Any, ...], static: dict[str, Any], res: Any,
                 outs: tuple[Tensor, ...]) -> None:
        ts = tuple(self.get(a) if isinstance(a, Tensor) else None for a in args)
        if all(t is None for t in ts):
            return
        if op.jvp is not None:
            out_ts = op.jvp(res, ts)
            out_ts = out_ts if op.multiple_outputs else (out_ts,)
        elif op.reference is not None:
            with no_grad():       # the primitive's own entry is on the tape already
                ref = op.reference(*args, **static)
            out_ts = tuple(self.get(r) for r in (ref if op.multiple_outputs else (ref,)))
        else:
            raise JVPError(
                f"{op.name}: no jvp declared, so forward mode cannot pass tangents through it; "
                "declare jvp (or a reference built from primitives that have one) beside its fwd "
                "and bwd.  A model with fused kernels can run its reference path instead "
                "(model.fused = False)")
        for o, t in zip(outs, out_ts):
            if t is not None:
                self._tangents[id(o)] = (o, self._fit(op, o, t))

    def _fit(self, op: ops.Primitive, o: Tensor, t: np.ndarray) -> np.ndarray:
        want = (self.P, *o.shape)
        if t.shape != want:
            try:
                if t.ndim != len(want):
                    raise ValueError
                t = np.broadcast_to(t, want)
            except ValueError:
                raise ValueError(f"{op.name}: jvp returned tangents of shape {t.shape} for an "
                                 f"output of shape {o.shape}; expected {want}") from None
        if o.dtype.kind == "f" and t.dtype != o.dtype:
            t = t.astype(o.dtype)
        return t


@contextlib.contextmanager
def forward_mode(seeds: Iterable[tuple[Tensor, ArrayLike]], P: int) -> Iterator[Trace]:
    """Push P tangents forward through every primitive called inside the block.

    Parameters
    ----------
    seeds : iterable of (Tensor, array)
        Each tensor with its ``(P, *shape)`` tangents: the directions to push forward.
        Parameters can be seeded as well as inputs.
    P : int
        The number of tangents per tensor.

    Yields
    ------
    Trace
        ``trace.get(t)`` is the tangents of any tensor computed inside (None: zero).

    Raises
    ------
    JVPError
        When a tangent reaches a primitive without a jvp or a reference, naming it.
    """
    if ops.forward_hook is not None:
        raise RuntimeError("forward_mode: forward mode is already on; nested forward mode is not supported")
    trace = Trace(P)
    for t, v in seeds:
        trace.seed(t, v)
    ops.forward_hook = trace
    try:
        yield trace
    finally:
        ops.forward_hook = None


def jvp(fn: Callable[..., Tensor | Sequence[Tensor]], primals: Sequence[TensorLike],
        tangents: Sequence[ArrayLike | None], batched: bool = False
        ) -> tuple[Tensor | Sequence[Tensor], np.ndarray | tuple[np.ndarray, ...]]:
    """The output of ``fn(*primals)`` and its Jacobian-vector products with ``tangents``.

    Parameters
    ----------
    fn : callable
        Takes the primals and returns a Tensor or a tuple (or list) of Tensors, built from
        primitives.
    primals : sequence
        Tensors or arrays (arrays with a tangent become Tensors; others are passed as given).
    tangents : sequence
        One per primal: an array of the primal's shape, or with ``batched=True`` of shape
        ``(P, *shape)`` (the same P for all), or None for a primal held constant.
    batched : bool
        Whether the tangents carry a leading axis of P directions.

    Returns
    -------
    output : Tensor or tuple of Tensor
        What ``fn`` returned.
    output_tangents : ndarray or tuple of ndarray
        In the structure of ``output``: ``J v`` of each output (zeros where no tangent reached
        it), with the leading P axis when ``batched``.

    Shapes
    ------
    primal S, tangent S (or (P, *S)); output S', output tangent S' (or (P, *S')).

    Examples
    --------
    >>> import numpy as np, bptt
    >>> y, ty = bptt.jvp(bptt.tanh, [np.array([0.0, 1.0])], [np.array([1.0, 1.0])])
    >>> np.round(ty, 2)
    array([1.  , 0.42])
    """
    primals, tangents = list(primals), list(tangents)
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents; give one "
                         "tangent (or None) per primal")
    given = [np.asarray(t) for t in tangents if t is not None]
    if not given:
        raise ValueError("jvp: every tangent is None; give at least one")
    P = given[0].shape[0] if batched else 1
    seeds = []
    for i, (p, t) in enumerate(zip(primals, tangents)):
        if t is None:
            continue
        if not isinstance(p, Tensor):
            primals[i] = p = Tensor(p)
        t = np.asarray(t)
        if not batched:
            if t.shape != p.shape:
                raise ValueError(f"jvp: primal {i} has shape {p.shape} but its tangent "
                                 f"{t.shape}; with batched=True the tangent is (P, *shape)")
            t = t[None]
        seeds.append((p, t))
    with forward_mode(seeds, P) as trace:
        out = fn(*primals)
    outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    for o in outs:
        if not isinstance(o, Tensor):
            raise TypeError(f"jvp: fn must return a Tensor or a tuple of Tensors, got "
                            f"{type(o).__name__}")
    tout = []
    for o in outs:
        t = trace.get(o)
        t = np.zeros((P, *o.shape), o.dtype) if t is None else t
        tout.append(t if batched else t[0])
    return out, (tuple(tout) if isinstance(out, (tuple, list)) else tout[0])
