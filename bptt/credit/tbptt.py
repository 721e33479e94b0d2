"""Truncated backpropagation through time over streams: BPTT(k2; k1).

A stream is fed one step at a time, the recurrent state carried forward.  Every ``k1`` steps, at
step t, one update is made with the gradient of

    (sum over s in (t-k1, t] of m_s * L_s) / max(1, sum of those m_s)

in which the state h_{t-k2} is held constant: the losses of the last k1 steps are backpropagated
through the last k2 steps (Williams and Peng's BPTT(h; h'), written with Sutskever's k1, k2).
k1 = k2 is "detach every k steps"; k1 = k2 = T is full BPTT.

How it is done, exactly and in bounded memory.  The stream is recorded in *pieces*: runs of steps
that cross neither an update point (t = k1, 2 k1, ...) nor a cut point (t - k2 for those t).
Each piece starts from its own detached copy of the state before it::

    piece (a, b]:  leaf = h_a copied, cut from the tape
                   y, h_b = model(x[a:b], leaf)      (or model.step for a one-step piece)
                   L_s = loss_fn(y_s, target_s) for s in (a, b]
    update at t:   for each piece in (t-k2, t], newest first:
                       backward of  sum_s w_s L_s + <h_b, dh_b>
                       dh_a = leaf.grad

so holding h_{t-k2} constant is stopping the loop there, and the cotangent between pieces is
chained here rather than by the tape (each piece is a ``bptt.nn.recompute.Segment``).  Each
piece's entries keep the activations and weight arrays they were recorded with (optimizers
rebind ``p.data``), so a piece that several windows overlap backpropagates as it ran; it is
backpropagated with ``retain_graph`` while a later window still needs it and freed after its
last use.  Pieces go through the model's sequence path (``model(x, state)``) when it has one and
draws no random numbers; otherwise they are single steps.  A cut that falls inside a multi-step
piece (only ``finish``, or updates after it, can ask for one) is served by replaying the piece
from its stored state with the weights it ran with, given to the model as arguments
(``bptt.nn.recompute.bound``).  Where the windows fall, and how k2 is chosen, is the trainer's
``WindowSchedule`` (``bptt.credit.truncation``).
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from typing import Any, Callable

import numpy as np

from bptt import functional as F
from bptt.credit.checks import check_stream, check_trainer
from bptt.credit.truncation import window_schedule
from bptt.nn import recompute as checkpointing
from bptt.nn.module import Module
from bptt.nn.state import as_array, detach, flatten, unflatten
from bptt.optim import clip_grad_norm
from bptt.tape import Tensor, no_grad

__all__ = ["TBPTT"]


class _Piece:
    """Consecutive steps recorded from one detached entering state, never across an update."""

    __slots__ = ("start", "n", "x", "state", "weights", "segment", "out", "losses", "m",
                 "replayable", "standins")

    def __init__(self, start, x, state, weights, segment, out, losses, m, replayable, standins=None):
        self.start = start        # stream position before its first step
        self.n = len(x)
        self.x = x                # inputs, the entering state (detached) and the parameter
        self.state = state        # arrays it ran with: enough to replay it
        self.weights = weights
        self.segment = segment    # the Segment it was recorded as (None once freed)
        self.out = out            # tuple of output-state Tensors
        self.losses = losses      # list of scalar Tensors (None where m is 0), or a (n,) Tensor
        self.m = m                # mask (n,)
        self.replayable = replayable   # recorded with no random draws: a replay reproduces it
        self.standins = standins  # a replay's weight leaves, in the parameters' order, or None

    def free(self):
        self.segment = self.out = self.losses = None


@contextlib.contextmanager
def _into_parameters(params, standins):
    """Gradients reaching a replay's weight leaves, summed into the parameters' ``.grad`` in the
    order a backward into the parameters themselves adds them: each leaf starts from its
    parameter's gradient array (the backward adds to it in place) and hands it back."""
    if standins is None:
        yield
        return
    for p, w in zip(params, standins):
        w.grad = p.grad
    try:
        yield
    finally:
        for p, w in zip(params, standins):
            p.grad, w.grad = w.grad, None


class TBPTT:
    """Train a recurrent model on a stream with truncated BPTT, BPTT(k2; k1).

    Every ``k1`` steps one update is made from the masked mean of the last ``k1`` steps' losses,
    backpropagated through the last ``k2`` steps with the state entering them held constant.

    Parameters
    ----------
    model : object
        Has ``step(x_t, state) -> (y_t, state)`` and ``initial_state(batch_size)``; a state is a
        Tensor or a tuple of Tensors.  ``bptt.nn.SequenceModel`` is one.  A ``Module`` also gives
        its parameters to gradient clipping and norms, and its ``forward(x, state)`` to the
        sequence path.
    loss_fn : callable
        ``loss_fn(y_pred_t, y_t)`` -> scalar Tensor, for one step.
    optimizer : object
        Has ``zero_grad()`` and ``step()``, e.g. ``bptt.optim.SGD(model.parameters(), lr=0.1)``.
    k1 : int
        Steps between updates, >= 1.
    k2 : int or 'auto', optional
        Steps backpropagated through at each update, >= k1 (default k1).  'auto' chooses it
        after every update from the decay of ||dL/dh|| that the update measured (see
        ``bptt.credit.truncation.AdaptiveWindow``); it runs one step at a time.
    clip_norm : float, optional
        Clip the joint gradient norm to this before each update (``bptt.optim.clip_grad_norm``).
    fast_path : bool, optional
        Run pieces of several steps through ``model(x_piece, state)``.  None (the default) does
        so when the model is a Module with a sequence ``forward`` and no active dropout; False
        never (every step through ``step``); True requires a sequence ``forward``.
    window_loss : callable, optional
        ``window_loss(y_pred, y)`` -> the (T,) Tensor of per-step losses of a piece, equal to
        ``loss_fn`` step by step.  The sequence path then records a few entries per piece
        instead of a few per step, e.g. for ``mse_loss`` on (T, B, O) outputs
        ``lambda p, t: nn.mse_loss(p, t, reduction='none').mean(axis=(1, 2))``.  Every step's
        loss is computed; masked steps are weighted 0.
    checkpoint : optional
        Passed to ``model(x, state, checkpoint=...)`` for every piece on the sequence path:
        'sqrt', a number of stored states, or a memory budget ('500MB',
        ``bptt.nn.recompute.memory_budget(slots)``); each piece then keeps only those states and
        recomputes the rest whenever a window backpropagates it, with the same gradient.
    max_bias : float
        With ``k2='auto'``: the largest relative bias allowed to the oldest loss of a window,
        in (0, 1).
    k2_max : int, optional
        With ``k2='auto'``: the longest window, >= k1 + 2 (default 8 k1 + 8); the first.

    Attributes
    ----------
    state : Tensor or tuple of Tensor or None
        The carried state after the last step fed, detached; None at the start of a stream.
    history : list of dict
        One record per update: ``step`` (steps fed so far, counted over every stream), ``loss``
        (the masked mean that was differentiated), ``grad_norm`` (before clipping), ``clipped``;
        with ``k2='auto'`` also ``k2``, the window's length.
    steps : int
        Steps fed so far, over every stream.
    schedule : WindowSchedule
        Where the updates and cuts fall; an ``AdaptiveWindow`` with ``k2='auto'``.
    k1, k2 : int
        The schedule's (k2 as chosen for the next window).

    Notes
    -----
    The gradient of every update is set on every parameter, zeros included (a window whose mask
    is all zero gives a zero gradient, and the optimizer still steps, as the formula says).

    Shapes
    ------
    x (T, B, I), y (T, B, ...) as ``loss_fn`` takes it per step, mask (T,)

    Examples
    --------
    >>> import numpy as np, bptt
    >>> model = bptt.nn.SequenceModel("lstm", 1, 16, 1)
    >>> trainer = bptt.TBPTT(model, bptt.nn.mse_loss, bptt.optim.Adam(model.parameters()),
    ...                      k1=10, k2=30)
    >>> s = np.sin(0.1 * np.arange(1001, dtype=np.float32))[:, None, None]
    >>> for a in range(0, 1000, 250):                  # a stream, fed in chunks
    ...     records = trainer.run(s[a:a + 250], s[a + 1:a + 251])
    >>> len(trainer.history), trainer.history[-1]["step"]
    (100, 1000)
    """

    def __init__(self, model: Any, loss_fn: Callable, optimizer: Any, k1: int, k2: int | str | None = None,
                 clip_norm: float | None = None, fast_path: bool | None = None,
                 window_loss: Callable | None = None, checkpoint: Any = None, max_bias: float = 0.1,
                 k2_max: int | None = None):
        check_trainer("TBPTT", model, optimizer, k1, clip_norm)
        self.schedule = window_schedule(k1, k1 if k2 is None else k2, max_bias, k2_max)
        if fast_path and not self.schedule.multistep:
            raise ValueError("TBPTT: k2='auto' measures ||dL/dh|| at every lag, so it runs one step "
                             "at a time; fast_path=True is not available with it")
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.window_loss = window_loss
        self.k1 = int(k1)
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        if isinstance(model, Module):
            self._params = model.parameters()
        else:
            self._params = list(getattr(optimizer, "params", []))
        if self.clip_norm is not None and not self._params:
            raise TypeError("TBPTT: clip_norm needs the parameters: give a Module as the model "
                            "or an optimizer with a params list")
        has_forward = isinstance(model, Module) and type(model).forward is not Module.forward
        if fast_path and not has_forward:
            raise ValueError(f"TBPTT: fast_path=True needs a Module with a sequence "
                             f"forward(x, state); {type(model).__name__} has none")
        self._fast = has_forward and fast_path is not False and self.schedule.multistep
        self.checkpoint = checkpointing.resolve(checkpoint, "TBPTT")
        if self.checkpoint is not None and not self._fast:
            raise ValueError("TBPTT: checkpoint= applies to the sequence path (model(x, state)); "
                             "this trainer runs every step through step()")
        self._forward_options = {} if self.checkpoint is None else {"checkpoint": self.checkpoint}
        self.history = []
        self.steps = 0
        self.reset_state()

    @property
    def k2(self) -> int:
        """Steps backpropagated at the next update (with ``k2='auto'``, as chosen last)."""
        return self.schedule.k2

    # -- public -----------------------------------------------------------------------------
    def reset_state(self) -> None:
        """Start a new stream: forget the state, the tape and an unfinished window's steps (and,
        with ``k2='auto'``, the decay measured: a new stream starts again from ``k2_max``, so a
        run resumed at a stream boundary continues exactly)."""
        self.schedule.reset()
        self.state = None
        self._pieces = deque()   # pieces covering the last k2 steps (and the rest of the oldest)
        self._piece_steps = 0
        self._pos = 0            # steps fed in this stream
        self._last = 0           # position of the last update

    @property
    def tape_length(self) -> int:
        """How many of the last steps the kept pieces cover: k2, plus the rest of the oldest
        piece (fewer than k1 steps); pieces no later window needs whole hold no entries."""
        return self._piece_steps

    def run(self, x: Any, y: Any, mask: Any = None) -> list[dict]:
        """Feed a (chunk of a) sequence, updating every k1 steps.

        The state, and a window left incomplete by the previous call, carry over: feeding a
        sequence in chunks of any lengths gives the same updates as feeding it at once.

        Parameters
        ----------
        x : array_like or Tensor
            Inputs.
        y : array_like or Tensor
            Targets; ``y[t]`` is given to ``loss_fn``.
        mask : array_like, optional
            Weight of each step's loss (0 for steps without one); all ones when None.

        Raises
        ------
        ValueError
            Naming the array and the first index of a NaN or infinite value in x, y or mask, or
            of a negative mask weight.

        Returns
        -------
        list of dict
            The records of the updates made (also appended to ``history``).

        Shapes
        ------
        x (T, B, I), y (T, B, ...), mask (T,)
        """
        x, mask = check_stream(x, y, mask, "TBPTT.run")
        T = x.shape[0]
        if self.state is None:
            self.state = detach(self.model.initial_state(x.shape[1]))
        records = []
        t = 0
        while t < T:
            # a piece ends at the next update point or cut point (k2 before a later update)
            fused = self._fast and not self._draws_random()
            n = self.schedule.piece_length(self._pos - self._last, T - t) if fused else 1
            weights = [p.data for p in self._params]
            self._keep(self._record(self.model, self._pos, x[t:t + n], y[t:t + n], mask[t:t + n],
                                    self.state, weights, fused))
            self.state = detach(unflatten(self.state, self._pieces[-1].out))
            self._pos += n
            self.steps += n
            t += n
            if self.schedule.is_update(self._pos - self._last):
                records.append(self._update())
        return records

    def finish(self) -> list[dict]:
        """Make the update for a final partial window at the end of a stream.

        Its losses are those fed since the last update, backpropagated to h_{t-k2} for the last
        step t.  The state is kept (call ``reset_state`` to start a new stream).

        Returns
        -------
        list of dict
            The update's record, or an empty list when no step is pending.
        """
        return [self._update()] if self._pos > self._last else []

    def stream_state(self) -> dict:
        """What continuing the current stream exactly needs, as ``{name: array}``, at an update.

        The carried state, the stream position and the pieces a later window may still reach
        (k2 > k1, or a ``finish`` that reaches back k2 steps): each piece's inputs, entering state
        and the parameter arrays it ran with.  ``load_stream_state`` on a trainer over the same
        model continues the stream with the same updates; restored pieces are replayed when a
        window reaches them (exact unless they were recorded with dropout, which draws anew).

        Raises
        ------
        RuntimeError
            When steps were fed since the last update (their losses are not part of the state).
        """
        if self._pos != self._last:
            raise RuntimeError(f"TBPTT.stream_state: {self._pos - self._last} steps were fed since "
                               "the last update; take the state right after an update")
        out = {"position": np.asarray(self._pos, dtype=np.int64)}
        out.update(self.schedule.state())
        if self.state is None:
            return out
        out["state_parts"] = np.asarray(len(self.state) if isinstance(self.state, (tuple, list)) else 0)
        out.update({f"state.{i}": as_array(s) for i, s in enumerate(flatten(self.state))})
        weight_sets = []
        for k, piece in enumerate(self._pieces):
            if not any(piece.weights is w for w in weight_sets):
                weight_sets.append(piece.weights)
            out[f"piece.{k}.start"] = np.asarray(piece.start, dtype=np.int64)
            out[f"piece.{k}.weights"] = np.asarray(next(j for j, w in enumerate(weight_sets)
                                                        if w is piece.weights))
            out[f"piece.{k}.x"], out[f"piece.{k}.m"] = piece.x, np.asarray(piece.m)
            out.update({f"piece.{k}.state.{i}": as_array(s) for i, s in enumerate(flatten(piece.state))})
        for j, weights in enumerate(weight_sets):
            out.update({f"weights.{j}.{i}": w for i, w in enumerate(weights)})
        return out

    def load_stream_state(self, arrays: dict) -> None:
        """Continue the stream ``stream_state`` saved (see there)."""
        self.reset_state()
        self._pos = self._last = int(arrays["position"])
        self.schedule.load(arrays)
        if "state_parts" not in arrays:
            return
        n = int(arrays["state_parts"])

        def state(prefix):
            parts = tuple(Tensor(arrays[f"{prefix}{i}"]) for i in range(max(n, 1)))
            return parts if n else parts[0]

        self.state = state("state.")
        k = 0
        while f"piece.{k}.start" in arrays:
            j = int(arrays[f"piece.{k}.weights"])
            weights = [arrays[f"weights.{j}.{i}"] for i in range(len(self._params))]
            self._keep(_Piece(int(arrays[f"piece.{k}.start"]), arrays[f"piece.{k}.x"],
                              state(f"piece.{k}.state."), weights, None, None, None,
                              arrays[f"piece.{k}.m"], True))
            k += 1

    # -- recording ------------------------------------------------------------------------------
    def _draws_random(self):
        """Whether a forward draws random numbers (a replay would not reproduce it)."""
        return bool(getattr(self.model, "draws_random", False))

    def _record(self, model, start, x, y, m, state, weights, replayable=False):
        """Record the steps ``x`` through ``model`` from a detached copy of ``state`` as one piece
        that starts at position ``start`` and runs with the parameter arrays ``weights``; ``y``
        None records no losses (a replay)."""
        segment = checkpointing.Segment(state)
        n = len(x)
        if n == 1:
            y_pred, out = model.step(x[0], segment.entering)
            losses = [self.loss_fn(y_pred, y[0]) if y is not None and m[0] else None]
        else:
            y_pred, out = model(x, segment.entering, **self._forward_options)
            if y is None:
                losses = None
            elif self.window_loss is not None:
                losses = self.window_loss(y_pred, y)
                if losses.shape != (n,):
                    raise ValueError(f"TBPTT: window_loss must return the ({n},) per-step losses "
                                     f"of a {n}-step piece, got shape {losses.shape}")
            else:
                losses = [self.loss_fn(F.reshape(part, part.shape[1:]), y[j]) if m[j] else None
                          for j, part in enumerate(F.split(y_pred, n, axis=0))]
        return _Piece(start, x, state, weights, segment, flatten(out), losses, m, replayable)

    def _keep(self, piece):
        self._pieces.append(piece)
        self._piece_steps += piece.n
        while not self.schedule.needed(self._piece_steps, self._pieces[0].n):
            self._piece_steps -= self._pieces.popleft().n

    def _replay(self, piece, start):
        """Piece ``piece`` from position ``start`` on, recorded again (without losses) from its
        stored state, the model given the parameter arrays it ran with as weight leaves
        (``standins``) whose gradients go to the parameters."""
        if not isinstance(self.model, Module):
            raise TypeError(f"TBPTT: replaying a piece recorded before the last update (a cut inside "
                            f"it, or a restored stream) runs the model with the weights the piece "
                            f"ran with, which needs a Module; {type(self.model).__name__} is not one")
        standins = tuple(Tensor(w, requires_grad=True) for w in piece.weights)
        model = checkpointing.bound(self.model, standins)
        state, skip = piece.state, start - piece.start
        if skip:
            with no_grad():
                state = detach(model(piece.x[:skip], state)[1])
        replayed = self._record(model, start, piece.x[skip:], None, None, state, piece.weights)
        replayed.standins = standins
        return replayed

    # -- updates --------------------------------------------------------------------------------
    def _update(self):
        """Backpropagate the losses since the last update through the last k2 steps, then step."""
        t = self._pos
        cut = self.schedule.cut(t)
        window = []
        for piece in reversed(self._pieces):
            if piece.start + piece.n <= cut:
                break
            fresh = piece.start >= cut and piece.segment is not None
            window.append(piece if fresh else self._replay(piece, max(cut, piece.start)))
        n, self._last = t - self._last, t
        self.optimizer.zero_grad()
        curve = self.schedule.curve()
        value = self._backward(window, t - n, self.schedule.next_cut(t), curve)
        record = self._step_optimizer(value)
        self.schedule.updated(record, curve)
        return record

    def _backward(self, window, first_loss, next_cut, curve=None):
        """Chain cotangents through ``window`` (pieces, newest first); the pieces from
        ``first_loss`` on carry the losses.  A piece that starts before ``next_cut``, the
        next planned window's start, is used for the last time here: if it can be replayed (for a
        finish), its entries are freed; otherwise it stays until it leaves the last k2 steps.
        ``curve`` (by lag behind the current step), when given, gets the norm of the cotangent
        reaching each piece's entering state."""
        # pieces never straddle an update point, so a piece carries losses whole or not at all
        carrying = [p for p in window if p.start >= first_loss and p.losses is not None]
        den = max(1.0, math.fsum(math.fsum(p.m) for p in carrying))
        values = []
        g = None
        for piece in window:
            terms = []
            if piece.start >= first_loss and piece.losses is not None:
                w = piece.m / den
                if isinstance(piece.losses, Tensor):
                    terms.append(F.sum(piece.losses * w.astype(piece.losses.dtype)))
                    values.append(math.fsum(w * piece.losses.data))
                else:
                    for loss, w_j in zip(piece.losses, w):
                        if loss is not None:
                            w_j = float(w_j)      # a Python float keeps a float32 loss float32
                            terms.append(loss * w_j)
                            values.append(w_j * loss.item())
                piece.losses = None    # no later window uses these losses
            loss = None
            for term in terms:
                loss = term if loss is None else loss + term
            last_use = piece.replayable and piece.start < next_cut
            with _into_parameters(self._params, piece.standins):
                # None when nothing reaches this piece, so nothing reaches the older ones
                g = piece.segment.backprop(piece.out, g, loss=loss, retain_graph=not last_use)
            if g is not None and curve is not None:
                curve[self._pos - piece.start] = math.sqrt(
                    math.fsum(float(np.vdot(gi, gi)) for gi in g if gi is not None))
            if last_use:
                piece.free()
        return math.fsum(values)

    def _step_optimizer(self, value):
        for p in self._params:
            if p.grad is None:     # the formula's gradient is zero there, not absent
                p.grad = np.zeros_like(p.data)
        grads = [p.grad for p in self._params]
        norm = clip_grad_norm(self._params, math.inf if self.clip_norm is None else self.clip_norm) \
            if self._params else float("nan")
        # clip_grad_norm rebinds the gradients it scales
        clipped = any(p.grad is not g for p, g in zip(self._params, grads))
        self.optimizer.step()
        record = {"step": self.steps, "loss": value, "grad_norm": norm, "clipped": clipped}
        self.history.append(record)
        return record
