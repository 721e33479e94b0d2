"""Exact BPTT in bounded memory: store some hidden states, recompute the rest on the way back.

A checkpointed layer is one primitive, ``checkpointed_sequence``: one tape entry per layer and
direction, like a fused sequence kernel.  Its forward runs the layer over the whole sequence
keeping only the output y and the states at a few step boundaries; its backward recomputes one
segment at a time from its stored state, with the same kernels and the same weight arrays the
forward ran with, backpropagates it and hands the state's cotangent to the segment before::

    forward   h0 ──► h_a ──► h_b ──► ... ──► h_T      store h_a, h_b, ... (the policy's choice)
    backward  newest segment first: record [b, T) from h_b, backprop it -> dh_b;
              record [a, b) from h_a (or advance from h_a and store more states), ... -> dh0

It works through any registered cell: a cell with fused kernels runs its ``sequence``
primitive's ``fwd``/``bwd`` per segment, a cell without (or ``fused=False``) records its reference
step on a private tape per segment.

Policies (``checkpoint=`` of ``Recurrent``, ``SequenceModel``, ``TBPTT``):

* ``"sqrt"``: ceil(sqrt(T)) segments of equal length, each recomputed once;
* an integer k: k segments of equal length (k stored states, the first being h0);
* a memory budget, ``"500MB"`` or ``memory_budget(n)`` for n slots: the plan of fewest
  recomputed steps that fits, from the dynamic program of Gruslys et al. 2016 (see ``plan_cost``).

Recomputing a segment is one mechanism, ``Segment``, which ``bptt.TBPTT`` (its pieces) and
``bptt.diagnostics.hidden_grad_norms`` (its checkpointed segments) use too: record from new leaves
of the stored state, backpropagate the segment's own loss and the cotangent of the state it
leaves, hand the leaves' gradients to the segment before.  A segment recomputed as it ran uses
the weights it ran with as arguments (``bound``), never by changing the parameters.

On the reference path the outputs, states and gradients equal the unchecked path's bit for bit:
the same steps run, and their cotangents are added in the unchecked tape's order
(``_Run.backprop``).  The fused kernels run a segment at a time, with the same formulas, but
their input projections and weight gradients are GEMMs over a segment's rows instead of all T
steps' (a weight gradient is a sum of one GEMM per segment), which a BLAS may add in another
order: there everything agrees with the unchecked path within float rounding.

Shapes: x (T, B, I), state (B, H) each, y (T, B, H).
"""

from __future__ import annotations

import copy
import functools
import gc
import math
import re
import tracemalloc
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bptt import ops
from bptt.nn.kernels import fixed_weights
from bptt.nn.module import Module
from bptt.nn.state import State, flatten, unflatten
from bptt.nn.state import leaves as leaf_copies
from bptt.tape import Tensor, enable_grad, no_grad

__all__ = ["Policy", "memory_budget", "resolve", "plan", "Plan", "plan_cost", "segment_starts",
           "checkpointed_layer", "Footprint", "footprint", "BudgetError", "Segment", "bound"]

#: Above this many steps the dynamic program runs on blocks of ceil(T / _DP_STEPS) steps.
_DP_STEPS = 1024


class BudgetError(ops.OpError):
    """A memory budget too small for any plan of a layer: the message names the least that fits."""


_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


@dataclass(frozen=True)
class Policy:
    """Where a checkpointed layer stores states; made by ``resolve`` from what users write.

    Attributes
    ----------
    kind : str
        'sqrt', 'segments' (``n`` equal segments), 'slots' (a budget of ``n`` slots) or 'bytes'
        (a budget of ``n`` bytes).
    n : int
    """

    kind: str
    n: int = 0

    def __str__(self):
        return {"sqrt": "'sqrt'", "segments": f"{self.n} segments", "slots": f"{self.n} slots",
                "bytes": f"{self.n} bytes"}[self.kind]


def memory_budget(limit):
    """A budget policy: the plan of fewest recomputed steps that fits ``limit``.

    Parameters
    ----------
    limit : int, str or float
        Slots (an int), or bytes (``"500MB"``, ``"2GiB"``, a float).

    Returns
    -------
    Policy

    Notes
    -----
    A budget in bytes bounds what one layer and direction allocates during its forward and
    backward passes: its output y, its input's gradient (when the input needs one), the weight
    gradients, the states the forward pass stores and, during the backward pass, the segment
    being recomputed with all its backward temporaries (see ``footprint``).  The layer's inputs
    and the incoming cotangent are the caller's and not counted.  A slot holds one step of a
    recomputed segment; a stored state is charged a whole slot, which keeps the bound safe.
    A budget too small for the cheapest plan raises a ValueError naming the minimum that fits.
    """
    who = "memory_budget"
    if isinstance(limit, str):
        return Policy("bytes", _parse_bytes(limit, who))
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer, float, np.floating)):
        raise TypeError(f"{who}: need a number of slots (int) or bytes ('500MB'), got {limit!r}")
    if isinstance(limit, (float, np.floating)):
        if not math.isfinite(limit) or limit < 1:
            raise ValueError(f"{who}: need a positive number of bytes, got {limit!r}")
        return Policy("bytes", int(limit))
    if limit < 1:
        raise ValueError(f"{who}: need a positive number of slots, got {limit!r}")
    return Policy("slots", int(limit))


def _parse_bytes(text, who):
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*", text.lower())
    if m is None or m.group(2) not in _UNITS or float(m.group(1)) * _UNITS[m.group(2)] < 1:
        raise ValueError(f"{who}: {text!r} is not a size in bytes; write e.g. '500MB', '1.5GB' or "
                         "'256MiB' (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def resolve(spec, who="checkpoint"):
    """What users write as ``checkpoint=``, checked, as a ``Policy``.

    Parameters
    ----------
    spec : None, str, int or Policy
        None (no checkpointing); ``"sqrt"``; an integer k, or its digits (k stored states: k
        equal segments); a size such as ``"500MB"`` (a memory budget in bytes); a ``Policy``
        (from ``memory_budget``).
    who : str
        Named first in a ValueError or TypeError that says what was wrong.

    Returns
    -------
    Policy or None
    """
    if spec is None or isinstance(spec, Policy):
        return spec
    if isinstance(spec, str):
        if spec.strip().lower() == "sqrt":
            return Policy("sqrt")
        if spec.strip().isdigit():
            spec = int(spec)
        else:
            try:
                return Policy("bytes", _parse_bytes(spec, who))
            except ValueError:
                raise ValueError(f"{who}: checkpoint must be 'sqrt', a number of stored states or a "
                                 f"memory budget such as '500MB', got {spec!r}") from None
    if isinstance(spec, bool) or not isinstance(spec, (int, np.integer)):
        raise TypeError(f"{who}: checkpoint must be None, 'sqrt', an int, a size such as '500MB' "
                        f"or memory_budget(...), got {spec!r}")
    if spec < 1:
        raise ValueError(f"{who}: checkpoint must store at least 1 state, got {spec}")
    return Policy("segments", int(spec))


# -- the dynamic program ------------------------------------------------------------------------
#
# The model (Gruslys et al. 2016, hidden-state memorisation, with a segment as the leaf).  An
# interval of t steps whose entering state is stored is backpropagated with m slots either
#   * as a leaf, if t <= m: recompute its t steps recording them (t slots), backprop them; or
#   * split at y: advance y steps unrecorded from its entering state (y recomputed steps), store
#     the state there (one slot), backprop the right part [y, t) with m - 1 slots, drop that
#     state, then backprop the left part [0, y) with m slots.
# C(t, m) = t if t <= m, else min over y of y + C(t - y, m - 1) + C(y, m).
# The whole sequence's first pass runs anyway (it makes y), so on the spine, the chain of right
# parts from the top, advancing is free: D(t, m) = t if t <= m, else min_y D(t - y, m - 1) + C(y, m).
# Ties in recomputation go to fewer leaves (fewer, longer kernel calls): costs are stored as
# recomputed * W + leaves with W larger than any number of leaves.

@functools.lru_cache(maxsize=32)
def _tables(T, M, bs=1):
    """Best splits of inner and spine intervals, ``(T+1, M+1)`` each (0 = leaf), and D's costs,
    for T blocks of ``bs`` steps and M slots (a leaf of t blocks takes t * bs slots)."""
    W = float(T + 1)
    C = np.full((T + 1, M + 1), np.inf)
    D = np.full((T + 1, M + 1), np.inf)
    c_split = np.zeros((T + 1, M + 1), np.int32)
    d_split = np.zeros((T + 1, M + 1), np.int32)
    for t in range(1, T + 1):
        if t * bs <= M:
            C[t, t * bs:] = D[t, t * bs:] = t * bs * W + 1
        mm = min(t * bs - 1, M)     # m < t * bs: the interval must be split
        if mm < 1 or t == 1:
            continue
        y = np.arange(1, t)
        left = C[y, 1:mm + 1]       # C(y, m) for m = 1..mm
        tot = C[t - y, :mm] + left + (y * bs * W)[:, None]     # + C(t - y, m - 1) + y
        k = np.argmin(tot, axis=0)
        C[t, 1:mm + 1] = tot[k, np.arange(mm)]
        c_split[t, 1:mm + 1] = y[k]
        tot = D[t - y, :mm] + left
        k = np.argmin(tot, axis=0)
        D[t, 1:mm + 1] = tot[k, np.arange(mm)]
        d_split[t, 1:mm + 1] = y[k]
    for a in (c_split, d_split):
        a.setflags(write=False)
    return c_split, d_split, D


def _leaves(T, M):
    """Starts of the fewest leaves that cover T steps with M slots recomputing each step once
    (None when M (M + 1) / 2 < T): along the spine the i-th leaf from the left has M - i slots,
    the i states stored before it taking the rest."""
    bounds, a = [], 0
    for i in range(M):
        bounds.append(a)
        a += M - i
        if a >= T:
            return tuple(bounds)
    return None


def plan_cost(T, slots):
    """Steps recomputed by the backward pass of the optimal plan for T steps and ``slots`` slots.

    Exact (the dynamic program's minimum) when it is T (slots (slots + 1) / 2 >= T) or when
    T <= 1024; otherwise the program runs on blocks of ceil(T / 1024) steps and this is the
    cost of the best plan that splits at block boundaries (in steps, counting whole blocks).
    ``math.inf`` when no plan fits (fewer than 2 slots for T >= 2).
    """
    if slots < 1 or (T > 1 and slots < 2):
        return math.inf
    if _leaves(T, slots) is not None:
        return T
    bs, Tb, M = _blocks(T, slots)
    cost = _tables(Tb, M, bs)[2][Tb, M]
    return math.inf if cost == math.inf else int(cost // (Tb + 1))


def _blocks(T, slots):
    """The dynamic program's block of steps, the number of blocks, and the slots that matter."""
    bs = -(-T // _DP_STEPS)
    return bs, -(-T // bs), min(slots, T)


@dataclass(frozen=True)
class Plan:
    """A checkpointing plan for T steps: where each interval splits, as the executor asks.

    ``split(a, b, m, spine)`` is the step at which the interval [a, b) (in step order) with m
    free slots stores a state, or None for a leaf; ``spine`` says whether [a, b) is on the chain
    of right parts from the top, whose states the forward pass stores.
    """

    T: int
    kind: str
    bounds: tuple = ()      # equal segments: their starts
    block: int = 1          # budgets: the dynamic program's block of steps (splits fall on them)
    slots: int = 0

    def split(self, a, b, m, spine):
        if self.kind == "segments":
            i = self.bounds.index(a) if spine else -1
            return self.bounds[i + 1] if 0 <= i < len(self.bounds) - 1 else None
        if b - a <= m:
            return None
        bs = self.block
        c_split, d_split, _ = _tables(-(-self.T // bs), self.slots, bs)
        return a + int((d_split if spine else c_split)[-(-(b - a) // bs), m]) * bs

    def spine(self):
        """The positions whose states the forward pass stores, and the slots left at the end."""
        out, a, m = [], 0, self.slots
        while (mid := self.split(a, self.T, m, True)) is not None:
            out.append(mid)
            a, m = mid, m - 1
        return out

    def chunk(self, m):
        """The most steps advanced at once with m free slots: the longest segment, or m (the
        residuals of one fused call then fit the slots left)."""
        if self.kind == "segments":
            return max(b - a for a, b in zip(self.bounds, self.bounds[1:] + (self.T,)))
        return m


def plan(policy, T, cost=None, who="checkpoint"):
    """The ``Plan`` of ``policy`` for T steps; ``cost()`` gives the layer's ``Footprint`` (for
    budgets in bytes).  A ValueError names ``who`` when a budget is too small for any plan."""
    if policy.kind in ("sqrt", "segments"):
        k = min(T, math.ceil(math.sqrt(T)) if policy.kind == "sqrt" else policy.n)
        return Plan(T, "segments", bounds=tuple(i * T // k for i in range(k)))
    fp = cost() if policy.kind == "bytes" else None
    slots = policy.n if fp is None else fp.slots(T, policy.n)
    bounds = _leaves(T, slots)
    if bounds is not None:       # one recomputation of every step fits: no dynamic program
        return Plan(T, "segments", bounds=bounds)
    bs, Tb, M = _blocks(T, slots)
    need = 1 if T == 1 else 2 if bs == 1 else bs + 1
    if slots < need:
        if fp is None:
            raise ValueError(f"{who}: a memory budget of {policy} is too small; {T} steps need at "
                             f"least {need} slots")
        raise ValueError(f"{who}: a memory budget of {policy} is too small for {T} steps; the "
                         f"least that fits is {fp.bytes(T, need)} bytes ({fp.bytes(T, 0)} for the "
                         f"output, the gradients and a segment's fixed cost, and {need} slots of "
                         f"{fp.slot} bytes, one step of this layer's backward each)")
    return Plan(T, "budget", block=bs, slots=M)


def segment_starts(policy, T, who="checkpoint"):
    """The starts of the segments of a two-level plan (each segment recomputed once): for
    'sqrt', a number of segments, or a budget of slots (the fewest segments that fit)."""
    if policy.kind == "bytes":
        raise ValueError(f"{who}: checkpoint must be 'sqrt', a number of segments or "
                         f"memory_budget(slots) here; a budget in bytes needs a layer to measure")
    if policy.kind == "slots":
        bounds = _leaves(T, policy.n)
        if bounds is None:
            need = math.ceil((math.sqrt(8 * T + 1) - 1) / 2)
            raise ValueError(f"{who}: recomputing each of {T} steps once needs at least {need} "
                             f"slots, got memory_budget({policy.n})")
        return bounds
    return plan(policy, T).bounds


# -- bytes a layer allocates --------------------------------------------------------------------

@dataclass(frozen=True)
class Footprint:
    """What a checkpointed layer allocates over T steps with a plan of ``slots`` slots, in bytes:
    ``fixed + per_step * T + slot * slots`` (``bytes``).

    Attributes
    ----------
    fixed : int
        A recomputed segment's cost independent of its length (its weight gradients, the
        recurrent matrix, ...), and the weight gradients summed over segments.
    per_step : int
        The output y per step, and the input's gradient per step when it needs one.
    slot : int
        One step of a recomputed segment at the peak of its backward pass: residuals and
        backward temporaries, and twice the kernels' scratch per step (a longer segment's
        scratch kept from before, and the old buffer while a longer one replaces it).
    """

    fixed: int
    per_step: int
    slot: int

    def bytes(self, T, slots):
        return self.fixed + self.per_step * T + self.slot * slots

    def slots(self, T, budget):
        """The slots a budget of ``budget`` bytes leaves over T steps (negative: none fit)."""
        return (budget - self.bytes(T, 0)) // self.slot


_FOOTPRINTS = {}
#: The segment lengths ``footprint`` measures: the bytes per step from those of 8 steps and more,
#: the fixed cost from all (the tightest plans recompute in pieces of a step or two).
_CALIBRATION = (1, 2, 8, 16, 32, 64)
_SLOPE_FROM = 8


def footprint(cell, fused, x, state, weights, options, reverse=False, need_x=True):
    """The ``Footprint`` of this layer, measured: the peak bytes traced by ``tracemalloc`` while
    one segment of 1, 2, 8, 16, 32 and 64 steps is recorded and backpropagated, as the backward
    pass of ``checkpointed_sequence`` does, on zeros shaped like the layer's inputs.

    The steepest rise between two lengths from 8 steps on gives the bytes per step, and the line
    at that slope through the highest point of all lengths the fixed cost, so the figure follows
    each cell's own residuals and temporaries.  The kernels' scratch buffers are freed before
    each measurement (``bptt.nn.kernels.release_scratch``), so the peak includes them, and the
    bytes still held after a segment (the scratch kept for the next call) are charged twice more
    per step.  Python's free lists are emptied first (``gc.collect``), so the small objects of a
    recorded tape count in full.  Measured once per cell, sizes, dtype and options, and cached.  Under a running
    ``tracemalloc`` the measurement resets its peak (``tracemalloc.reset_peak``).
    """
    from bptt.nn.kernels import release_scratch

    dtype = np.result_type(x, *state, *weights)
    fused = fused and cell.fused is not None
    opts = tuple(sorted(options.items()))
    key = (id(cell), fused, np.shape(x)[1:], tuple(np.shape(s) for s in state),
           tuple(np.shape(w) for w in weights), dtype.str, opts, reverse, need_x)
    if key in _FOOTPRINTS:
        return _FOOTPRINTS[key][1]
    B, I = np.shape(x)[1:]
    zeros = tuple(np.zeros(np.shape(w), dtype) for w in weights)
    # Python's free lists of small objects, emptied: the reference path's tape objects are then
    # all allocated afresh, and counted
    gc.collect()
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        peak, held = [], []
        for n in _CALIBRATION:
            # n steps of n + 1: a segment that is not the last, as most are
            xs = np.zeros((n + 1, B, I), dtype)
            s0 = tuple(np.zeros(np.shape(v), dtype) for v in state)
            gy = np.zeros((n + 1,) + s0[0].shape, dtype)
            run = _Run(cell, fused, xs, zeros, dict(opts), reverse)
            needs = (need_x,) + (True,) * (len(s0) + len(zeros))
            release_scratch()
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            leaves = tuple(Tensor(w, requires_grad=True) for w in zeros)
            out = run.backprop(s0, 0, n, gy, s0, needs, leaves)
            peak.append(tracemalloc.get_traced_memory()[1] - base)
            del out, leaves
            held.append(tracemalloc.get_traced_memory()[0] - base)
    finally:
        if started:
            tracemalloc.stop()
    # the line a + step * n over every measured point: Python's containers grow in jumps, so
    # the steepest rise between two lengths, not the rise between the two ends
    pairs = [(j, a, b) for j, (a, b) in enumerate(zip(_CALIBRATION, _CALIBRATION[1:])) if a >= _SLOPE_FROM]
    step = max(1, *(-(-(peak[j + 1] - peak[j]) // (b - a)) for j, a, b in pairs))
    kept = max(0, *(-(-(held[j + 1] - held[j]) // (b - a)) for j, a, b in pairs))
    size = dtype.itemsize
    weight_grads = sum(w.nbytes for w in zeros)
    fp = Footprint(fixed=max(0, *(p - step * n for p, n in zip(peak, _CALIBRATION))) + 2 * weight_grads,
                   per_step=B * (s0[0].shape[-1] + (I if need_x else 0)) * size,
                   slot=max(step + 2 * kept, sum(v.nbytes for v in s0)))
    if len(_FOOTPRINTS) >= 64:
        _FOOTPRINTS.pop(next(iter(_FOOTPRINTS)))
    _FOOTPRINTS[key] = (cell, fp)        # the cell kept alive, so its id stays its own
    return fp


# -- segments -----------------------------------------------------------------------------------

class Segment:
    """Steps recorded from a stored state, backpropagated to hand that state its cotangent.

    A segment of a recurrence is recorded from ``entering``, the stored state's arrays as new
    leaves (so the tape ends there), by whatever runs the steps (a cell's step, a model's step
    or sequence path).  ``backprop`` then backpropagates the segment's own loss and the
    cotangent of the state it leaves, and returns the leaves' gradients: the cotangent of the
    stored state, which the segment before takes as its own.  Backpropagating segments newest
    first this way is one backward pass through them all, held one segment at a time.

    Parameters
    ----------
    state : Tensor, array or tuple of them
        The stored state (its arrays are shared, not copied).
    cut : bool
        Record from new leaves (True), or from ``state`` itself (False: the first segment of a
        pass, whose state may lead further back on the caller's tape; nothing is handed back).

    Attributes
    ----------
    entering : Tensor or tuple of Tensor
        What to record the segment from, in the structure of ``state``.

    Shapes
    ------
    state: components S_1, ..., S_n (e.g. (L, B, H) each); the cotangents have the same.
    """

    __slots__ = ("leaves", "entering")

    def __init__(self, state: State, cut: bool = True):
        self.leaves = leaf_copies(state) if cut else None
        self.entering = unflatten(state, self.leaves) if cut else state

    def backprop(self, out: State, cotangent: Sequence | None = None, loss: Tensor | None = None,
                 start: Sequence | None = None, retain_graph: bool = False) -> tuple | None:
        """Backpropagate ``loss + sum_i <out_i, cotangent_i>`` and return the stored state's cotangent.

        Parameters
        ----------
        out : Tensor or tuple of Tensor
            The state the recorded segment leaves.
        cotangent : sequence of (array or None), optional
            dL/d``out`` by component (None for a zero one), from the segment after; None when
            no later segment reaches this one.
        loss : Tensor, optional
            A scalar: the segment's own losses, weighted.
        start : sequence of (array or None), optional
            What the stored state's cotangent starts from, by component: the backward adds to
            it in tape order, so a sum that a split would otherwise reorder adds up as in one
            unsplit backward.
        retain_graph : bool
            Keep the segment's entries for another backward (its cotangent then starts from
            zero again).

        Returns
        -------
        tuple of (array or None), or None
            dL/d(stored state) by component, None where nothing reached it; None when nothing
            was backpropagated (no loss and no cotangent that needs a gradient), or for a
            segment recorded with ``cut=False``.

        Shapes
        ------
        out, cotangent, start and the result: components S_1, ..., S_n.
        """
        with enable_grad():      # the cotangent's terms join the recording even under no_grad
            root = loss
            for o, g in zip(flatten(out), cotangent or ()):
                if g is not None:
                    term = ops.reduce_sum(o * g)
                    root = term if root is None else root + term
        if root is None or not root.requires_grad:
            return None
        for leaf, g in zip(self.leaves or (), start or ()):
            leaf.grad = g
        root.backward(retain_graph=retain_graph)
        if self.leaves is None:
            return None
        grads = tuple(leaf.grad for leaf in self.leaves)
        for leaf in self.leaves:
            leaf.grad = None
        return grads


def bound(module: Module, weights: Sequence) -> Module:
    """``module`` computing with ``weights`` in place of its parameters, itself unchanged.

    A functional call: the result is a shallow copy of the module tree whose parameter
    attributes are ``weights``, so calling it records the weights given (leaves of a ``vjp``
    recording, the arrays a segment ran with, rescaled tensors), and their gradients go to
    them, not to the parameters.  Nothing is written to ``module`` or its parameters.

    Parameters
    ----------
    module : Module
    weights : sequence of Tensor or array
        One per parameter, in ``module.parameters()`` order; an array is wrapped in a Tensor
        (a constant).

    Returns
    -------
    Module
        To call, not to train: it shares everything but the parameters and submodules.

    Raises
    ------
    TypeError
        When ``module`` is not a Module.
    ValueError
        When ``weights`` has not one entry per parameter.

    Shapes
    ------
    weights[i] as parameter i.
    """
    if not isinstance(module, Module):
        raise TypeError(f"bound: need a Module to bind weights to, got {type(module).__name__}")
    params = module.parameters()
    if len(weights) != len(params):
        raise ValueError(f"bound: {type(module).__name__} has {len(params)} parameters, "
                         f"got {len(weights)} weights")
    values = {id(p): w if isinstance(w, Tensor) else Tensor(w) for p, w in zip(params, weights)}
    copies = {}

    def rebind(m):
        if id(m) not in copies:     # a submodule shared by two parents stays shared
            c = copies[id(m)] = copy.copy(m)
            object.__setattr__(c, "_parameters", {})
            object.__setattr__(c, "_modules", {name: rebind(sub) for name, sub in m._modules.items()})
            for name, p in m._parameters.items():
                object.__setattr__(c, name, values[id(p)])
            for name, sub in c._modules.items():
                object.__setattr__(c, name, sub)
        return copies[id(m)]

    return rebind(module)


# -- the primitive ------------------------------------------------------------------------------

class _Run:
    """One layer and direction over x, in step order: advancing, recording a segment."""

    def __init__(self, cell, fused, x, weights, options, reverse):
        self.cell, self.x, self.weights, self.options = cell, x, weights, dict(options)
        self.fused = fused and cell.fused is not None
        self.reverse, self.T = reverse, len(x)

    def span(self, a, b):
        """The time slice of the steps [a, b) in step order."""
        return slice(self.T - b, self.T - a) if self.reverse else slice(a, b)

    def advance(self, state, a, b, chunk, y=None):
        """The state after steps [a, b) from ``state``, recording nothing; writes y when given."""
        while a < b:
            c = min(b, a + chunk)
            sl = self.span(a, c)
            if self.fused:
                (ys, *state), _ = self.cell.fused.sequence.fwd(self.x[sl], *state, *self.weights,
                                                              reverse=self.reverse, **self.options)
                if y is not None:
                    y[sl] = ys
            else:
                with no_grad():
                    steps = range(sl.start, sl.stop)
                    for t in (reversed(steps) if self.reverse else steps):
                        state = tuple(s.data for s in self.cell.step(False, self.x[t], state,
                                                                    self.weights, self.options))
                        if y is not None:
                            y[t] = state[0]
            a = c
        # a copy: a kernel's final state is a view into buffers as long as the chunk
        return tuple(np.array(v) for v in state)

    def backprop(self, state, a, b, gy, g, needs, leaves):
        """Record steps [a, b) from ``state`` and backpropagate ``gy`` and the final state's
        cotangent ``g``: ``(dx of the slice or None, cotangents of state, weight cotangents)``.
        The reference path accumulates the weight cotangents into ``leaves``' ``.grad``."""
        sl = self.span(a, b)
        n = len(state)
        need_x, need_w = needs[0], needs[1 + n:]
        if self.fused:
            _, res = self.cell.fused.sequence.fwd(self.x[sl], *state, *self.weights,
                                                  reverse=self.reverse, **self.options)
            grads = self.cell.fused.sequence.bwd(res, (gy[sl], *g), (need_x,) + (True,) * n + need_w)
            return grads[0], grads[1:1 + n], grads[1 + n:]
        # The unchecked tape sums h_t's cotangent as gy_t first, then its uses in step t + 1, in
        # that order.  To add in the same order, the entering h starts from gy of the step
        # before the segment, and the segment before then takes the sum as its final state's
        # cotangent, with its last gy row zeroed so that gy is not counted twice.
        gy_seg = gy[sl]
        if b < self.T:
            gy_seg = gy_seg.copy()
            gy_seg[0 if self.reverse else -1] = 0
        segment = Segment(state)
        with enable_grad():
            xs = Tensor(self.x[sl], requires_grad=need_x)
            s = segment.entering
            ys = [None] * len(xs)
            for j in (range(len(xs) - 1, -1, -1) if self.reverse else range(len(xs))):
                s = self.cell.step(False, xs[j], s, leaves, self.options)
                ys[j] = s[0]
            loss = ops.reduce_sum(ops.stack(*ys, axis=0) * gy_seg)
        start = None if a == 0 else (np.array(gy[self.span(a - 1, a)][0], dtype=state[0].dtype),)
        ds = segment.backprop(s, g, loss=loss, start=start)
        ds = tuple(np.zeros_like(v) if d is None else d for v, d in zip(state, ds))
        return (xs.grad if need_x else None), ds, None


@ops.primitive
class checkpointed_sequence:
    """A whole layer over a sequence, storing only the policy's states: ``(x, *state, *weights,
    cell, fused, options, reverse, policy) -> (y, *final_state)``; ``options`` as (name, value)
    pairs, ``policy`` a ``Policy``."""

    multiple_outputs = True

    def fwd(x, *args, cell, fused=True, options=(), reverse=False, policy=Policy("sqrt"),
            need_x=True):
        n = len(cell.state)
        state, weights = tuple(np.asarray(a) for a in args[:n]), tuple(args[n:])
        if np.ndim(x) != 3 or not len(x):
            raise ops.OpError(f"need x (T, B, I) with T >= 1, got shape {np.shape(x)}")
        dtype = np.result_type(x, *state, *weights)
        x, given = np.asarray(x).astype(dtype, copy=False), np.asarray(x)
        state = tuple(s.astype(dtype, copy=False) for s in state)
        run = _Run(cell, fused, x, weights, options, reverse)

        def cost():
            fp = footprint(cell, fused, x, state, weights, run.options, reverse, need_x)
            cast = 0 if x is given else x[0].nbytes      # x converted to the layer's dtype
            return Footprint(fp.fixed, fp.per_step + cast, fp.slot)
        try:
            p = plan(policy, len(x), cost, who=f"{cell.name} layer")
        except ValueError as err:
            raise BudgetError(str(err)) from None
        y = np.empty((len(x),) + state[0].shape, dtype)
        stored, s, a, m = {}, state, 0, p.slots
        with fixed_weights():
            for mid in p.spine() + [len(x)]:
                s = run.advance(s, a, mid, p.chunk(m), y)
                if mid < len(x):
                    stored[mid] = s
                a, m = mid, m - 1
        return (y, *s), (run, state, stored, p)

    def bwd(res, gs, needs):
        run, state, stored, p = res
        n = len(state)
        gy, g = gs[0], tuple(gs[1:])
        stored = dict(stored)          # popped as used; the residuals stay for a second backward
        need_w = needs[1 + n:]
        leaves = tuple(Tensor(w, requires_grad=need) for w, need in zip(run.weights, need_w))
        dx = np.zeros_like(run.x) if needs[0] else None
        dw = [None] * len(run.weights)
        pending = []
        a, b, m, s, spine = 0, run.T, p.slots, state, True
        with fixed_weights():
            while True:
                while (mid := p.split(a, b, m, spine)) is not None:
                    s_mid = stored.pop(mid) if spine else run.advance(s, a, mid, p.chunk(m))
                    pending.append((a, mid, m, s, False))
                    a, m, s = mid, m - 1, s_mid
                dxs, g, dws = run.backprop(s, a, b, gy, g, needs, leaves)
                if dx is not None:
                    dx[run.span(a, b)] = dxs
                if dws is not None:       # summed in place, into copies: a kernel may hand
                    for j, d in enumerate(dws):         # one array out for two weights (biases)
                        if d is not None:
                            dw[j] = np.array(d) if dw[j] is None else np.add(dw[j], d, out=dw[j])
                del dxs, dws                # before the next segment allocates its own
                if not pending:
                    break
                a, b, m, s, spine = pending.pop()
        if not run.fused:
            dw = [t.grad if t.requires_grad else None for t in leaves]
        return tuple([dx, *g, *dw][:len(needs)])

    def examples(rng):
        from bptt.nn import registry as registry
        cases = []
        for c in registry.registered():
            w = tuple(c.parameter_shapes(3, 4).values())
            for fused, reverse, policy in ((True, False, Policy("sqrt")),
                                           (False, True, Policy("segments", 2)),
                                           (c.fused is not None, False, Policy("slots", 3))):
                static = {"cell": c, "fused": fused, "reverse": reverse, "policy": policy}
                cases.append((((5, 2, 3),) + ((2, 4),) * len(c.state) + w, static))
        return ops.custom(*cases)(rng)


def checkpointed_layer(cell, fused, x, state, weights, options, reverse, policy):
    """One layer in one direction over a sequence, checkpointed, as one tape entry.

    Parameters
    ----------
    cell : CellType
    fused : bool
        Use the cell's fused sequence kernel (when it has one) or its reference step.
    x : Tensor or array (T, B, I)
    state : tuple of Tensor or array (B, H)
    weights : tuple
        ``(weight_ih, weight_hh[, bias_ih, bias_hh])``.
    options : dict
        The step's options.
    reverse : bool
        Run from the last step to the first.
    policy : Policy
        From ``resolve``.

    Returns
    -------
    y : Tensor (T, B, H)
    final : tuple of Tensor (B, H)
    """
    y, *final = checkpointed_sequence(x, *state, *weights, cell=cell, fused=fused,
                                      options=tuple(options.items()), reverse=reverse,
                                      policy=policy,
                                      need_x=isinstance(x, Tensor) and x.requires_grad)
    return y, tuple(final)
