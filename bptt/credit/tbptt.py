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
chained here rather than by the tape.  Each piece's entries keep the activations and weight
arrays they were recorded with (optimizers rebind ``p.data``), so a piece that several windows
overlap backpropagates as it ran; it is backpropagated with ``retain_graph`` while a later
window still needs it and freed after its last use.  Pieces go through the model's sequence path
(``model(x, state)``) when it has one and draws no random numbers; otherwise they are single
steps.  A cut that falls inside a multi-step piece (only ``finish``, or updates after it, can
ask for one) is served by replaying the piece from its stored state with the weights it ran with.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from bptt.nn import recompute as checkpointing
from bptt import functional as F
from bptt.errors import check_finite
from bptt.nn.module import Module
from bptt.optim import clip_grad_norm
from bptt.tape import Tensor, no_grad

__all__ = ["TBPTT", "WindowSchedule"]


def _flat(state):
    """A state (a Tensor, or a tuple of Tensors such as an LSTM's (h, c)) as a tuple of Tensors."""
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def _shaped(like, tensors):
    """``tensors`` in the structure of the state ``like``."""
    return tuple(tensors) if isinstance(like, (tuple, list)) else tensors[0]


def _data(t):
    return t.data if isinstance(t, Tensor) else np.asarray(t)


def check_stream(x, y, mask, who):
    """``x`` and ``mask`` (T,) as arrays, checked against each other and ``y`` and for
    non-finite values; all ones when ``mask`` is None.  Errors name ``who``."""
    x = _data(x)
    if x.ndim < 2:
        raise ValueError(f"{who}: x must be (T, B, ...), got shape {x.shape}")
    T = x.shape[0]
    if len(y) != T:
        raise ValueError(f"{who}: x has {T} steps but y has {len(y)}; they must match")
    mask = np.ones(T) if mask is None else np.asarray(_data(mask), dtype=np.float64)
    if mask.shape != (T,):
        raise ValueError(f"{who}: mask must have shape (T,) = ({T},), one weight per step, got {mask.shape}")
    check_finite(who, x=x, y=_data(y), mask=mask)
    return x, mask


def check_interfaces(who, model, optimizer):
    """A TypeError naming ``who`` unless the model can step a stream and the optimizer step."""
    for name in ("step", "initial_state"):
        if not callable(getattr(model, name, None)):
            raise TypeError(f"{who}: the model needs a {name}() method; {type(model).__name__} has none")
    for name in ("zero_grad", "step"):
        if not callable(getattr(optimizer, name, None)):
            raise TypeError(f"{who}: the optimizer needs a {name}() method; "
                            f"{type(optimizer).__name__} has none")


class WindowSchedule:
    """Where BPTT(k2; k1) updates and where it cuts: arithmetic on stream positions, no tensors.

    Positions count the steps fed in the current stream.  After every k1-th step, at t, an
    update is made from the losses of steps (t - k1, t], backpropagated through (t - k2, t].
    ``TBPTT`` asks this schedule how long a piece may run, when to update, where to stop the
    backward pass and which pieces it may forget; recording and backpropagating are its own.
    """

    def __init__(self, k1, k2, keep=None):
        self.k1, self.k2 = k1, k2
        self.keep = k2 if keep is None else keep    # the longest window a later update may ask for

    def piece_length(self, since_update, remaining):
        """Steps the next piece may run: to the next update point or cut point, at most
        ``remaining``.  A cut point lies k2 before a later update (t + j k1 - k2)."""
        return min(remaining, self.k1 - since_update % self.k1,
                   self.k1 - (since_update + self.k2) % self.k1)

    def is_update(self, since_update):
        return since_update == self.k1

    def cut(self, t):
        """The start of the window backpropagated at an update at t: h_cut is held constant."""
        return max(0, t - self.k2)

    def next_cut(self, t):
        """Where the window of the next planned update, k1 after t, will start."""
        return t + self.k1 - self.k2

    def needed(self, covered, oldest):
        """Whether the oldest kept piece (``oldest`` steps) is still inside the last ``keep``
        (k2, or the longest adaptive k2) of the ``covered`` steps that the kept pieces span."""
        return covered - oldest < self.keep


class _Piece:
    """Consecutive steps recorded from one detached entering state, never across an update."""

    __slots__ = ("start", "n", "x", "state", "weights", "leaf", "out", "losses", "m", "replayable")

    def __init__(self, start, x, state, weights, leaf, out, losses, m, replayable):
        self.start = start        # stream position before its first step
        self.n = len(x)
        self.x = x                # inputs, the entering state (detached) and the parameter
        self.state = state        # arrays it ran with: enough to replay it
        self.weights = weights
        self.leaf = leaf          # tuple of leaf Tensors it was recorded from (None once freed)
        self.out = out            # tuple of output-state Tensors
        self.losses = losses      # list of scalar Tensors (None where m is 0), or a (n,) Tensor
        self.m = m                # mask (n,)
        self.replayable = replayable   # recorded with no random draws: a replay reproduces it

    def free(self):
        self.leaf = self.out = self.losses = None


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
    k2 : int, optional
        Steps backpropagated through at each update, >= k1 (default k1).
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

    Attributes
    ----------
    state : Tensor or tuple of Tensor or None
        The carried state after the last step fed, detached; None at the start of a stream.
    history : list of dict
        One record per update: ``step`` (steps fed so far, counted over every stream), ``loss``
        (the masked mean that was differentiated), ``grad_norm`` (before clipping), ``clipped``.
    steps : int
        Steps fed so far, over every stream.

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

    def __init__(self, model, loss_fn, optimizer, k1, k2=None, clip_norm=None, fast_path=None,
                 window_loss=None, checkpoint=None, max_bias=0.1, k2_max=None):
        check_interfaces("TBPTT", model, optimizer)
        k2 = k1 if k2 is None else k2
        self.adaptive = isinstance(k2, str)
        if self.adaptive:
            k2 = self._adaptive_setup(k1, k2, max_bias, k2_max, fast_path)
            fast_path = False
        for name, k in (("k1", k1), ("k2", k2)):
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
                raise TypeError(f"TBPTT: {name} must be an integer, got {k!r}")
        if k1 < 1:
            raise ValueError(f"TBPTT: k1 (steps between updates) must be >= 1, got {k1}")
        if k2 < k1:
            raise ValueError(f"TBPTT: k2 (steps backpropagated) must be >= k1; got k1={k1}, k2={k2}")
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"TBPTT: clip_norm must be positive (or None), got {clip_norm!r}")
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.window_loss = window_loss
        self.k1, self.k2 = int(k1), int(k2)
        self.schedule = WindowSchedule(self.k1, self.k2)
        if self.adaptive:
            self.schedule.keep = self.k2_max
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
        self._fast = has_forward and fast_path is not False
        self.checkpoint = checkpointing.resolve(checkpoint, "TBPTT")
        if self.checkpoint is not None and not self._fast:
            raise ValueError("TBPTT: checkpoint= applies to the sequence path (model(x, state)); "
                             "this trainer runs every step through step()")
        self._forward_options = {} if self.checkpoint is None else {"checkpoint": self.checkpoint}
        self.history = []
        self.steps = 0
        self.reset_state()

    def _adaptive_setup(self, k1, k2, max_bias, k2_max, fast_path):
        """Check ``k2='auto'``'s options; the first window is the longest, ``k2_max``."""
        if k2 != "auto":
            raise ValueError(f"TBPTT: k2 must be an integer >= k1 or 'auto', got {k2!r}")
        if fast_path:
            raise ValueError("TBPTT: k2='auto' measures ||dL/dh|| at every lag, so it runs one step "
                             "at a time; fast_path=True is not available with it")
        if not (isinstance(max_bias, (int, float)) and 0 < max_bias < 1):
            raise ValueError(f"TBPTT: max_bias must be in (0, 1), got {max_bias!r}")
        k2_max = 8 * k1 + 8 if k2_max is None else k2_max
        if isinstance(k2_max, bool) or not isinstance(k2_max, (int, np.integer)) or k2_max < k1 + 2:
            raise ValueError(f"TBPTT: k2_max must be an integer >= k1 + 2 = {k1 + 2} (two lags "
                             f"beyond the window's losses to fit a decay), got {k2_max!r}")
        self.max_bias, self.k2_max = float(max_bias), int(k2_max)
        self._curves = deque(maxlen=8)     # ||dL/dh_{t-lag}|| of the last windows, by lag
        return self.k2_max

    def _choose_k2(self, curve):
        """The next window's k2 from the decay measured in the last windows (``bptt.credit.online.
        adaptive_k2``): the smallest whose geometric-tail bound on the bias of the oldest loss
        of a window is at most ``max_bias``; unchanged while fewer than two lags are measured."""
        from bptt.credit.online import adaptive_k2

        self._curves.append(curve)
        try:
            k = adaptive_k2(np.array(self._curves), self.max_bias, k2_max=self.k2_max, min_lag=self.k1)
        except ValueError:
            return
        self.k2 = self.schedule.k2 = min(self.k2_max, max(self.k1, self.k1 - 1 + k))

    # -- public -----------------------------------------------------------------------------
    def reset_state(self):
        """Start a new stream: forget the state, the tape and an unfinished window's steps (and,
        with ``k2='auto'``, the decay measured: a new stream starts again from ``k2_max``, so a
        run resumed at a stream boundary continues exactly)."""
        if self.adaptive:
            self._curves.clear()
            self.k2 = self.schedule.k2 = self.k2_max
        self.state = None
        self._pieces = deque()   # pieces covering the last k2 steps (and the rest of the oldest)
        self._piece_steps = 0
        self._pos = 0            # steps fed in this stream
        self._last = 0           # position of the last update

    @property
    def tape_length(self):
        """How many of the last steps the kept pieces cover: k2, plus the rest of the oldest
        piece (fewer than k1 steps); pieces no later window needs whole hold no entries."""
        return self._piece_steps

    def run(self, x, y, mask=None):
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
            self.state = self._detached(self.model.initial_state(x.shape[1]))
        records = []
        t = 0
        while t < T:
            # a piece ends at the next update point or cut point (k2 before a later update)
            fused = self._fast and not self._draws_random()
            n = self.schedule.piece_length(self._pos - self._last, T - t) if fused else 1
            self._keep(self._record(x[t:t + n], y[t:t + n], mask[t:t + n], self.state, fused))
            self.state = self._detached(_shaped(self.state, self._pieces[-1].out))
            self._pos += n
            self.steps += n
            t += n
            if self.schedule.is_update(self._pos - self._last):
                records.append(self._update())
        return records

    def finish(self):
        """Make the update for a final partial window at the end of a stream.

        Its losses are those fed since the last update, backpropagated to h_{t-k2} for the last
        step t.  The state is kept (call ``reset_state`` to start a new stream).

        Returns
        -------
        list of dict
            The update's record, or an empty list when no step is pending.
        """
        return [self._update()] if self._pos > self._last else []

    def stream_state(self):
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
        if self.adaptive:
            out["adaptive.k2"] = np.asarray(self.schedule.k2, dtype=np.int64)
            out["adaptive.curves"] = np.array(self._curves).reshape(-1, self.k2_max + 1)
        if self.state is None:
            return out
        out["state_parts"] = np.asarray(len(self.state) if isinstance(self.state, (tuple, list)) else 0)
        out.update({f"state.{i}": _data(s) for i, s in enumerate(_flat(self.state))})
        weight_sets = []
        for k, piece in enumerate(self._pieces):
            if not any(piece.weights is w for w in weight_sets):
                weight_sets.append(piece.weights)
            out[f"piece.{k}.start"] = np.asarray(piece.start, dtype=np.int64)
            out[f"piece.{k}.weights"] = np.asarray(next(j for j, w in enumerate(weight_sets)
                                                        if w is piece.weights))
            out[f"piece.{k}.x"], out[f"piece.{k}.m"] = piece.x, np.asarray(piece.m)
            out.update({f"piece.{k}.state.{i}": _data(s) for i, s in enumerate(_flat(piece.state))})
        for j, weights in enumerate(weight_sets):
            out.update({f"weights.{j}.{i}": w for i, w in enumerate(weights)})
        return out

    def load_stream_state(self, arrays):
        """Continue the stream ``stream_state`` saved (see there)."""
        self.reset_state()
        self._pos = self._last = int(arrays["position"])
        if self.adaptive and "adaptive.k2" in arrays:
            self._curves.extend(np.asarray(arrays["adaptive.curves"], dtype=np.float64))
            self.k2 = self.schedule.k2 = int(arrays["adaptive.k2"])
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
    @staticmethod
    def _detached(state):
        return _shaped(state, tuple(Tensor(_data(s)) for s in _flat(state)))

    def _draws_random(self):
        """Whether a forward draws random numbers (a replay would not reproduce it)."""
        return bool(getattr(self.model, "draws_random", False))

    def _record(self, x, y, m, state, replayable=False):
        """Record the steps ``x`` from a detached copy of ``state`` as one piece; ``y`` None
        records no losses (a replay)."""
        weights = [p.data for p in self._params]
        leaf = tuple(Tensor(_data(s), requires_grad=True) for s in _flat(state))
        entering = _shaped(state, leaf)
        n = len(x)
        if n == 1:
            y_pred, out = self.model.step(x[0], entering)
            losses = [self.loss_fn(y_pred, y[0]) if y is not None and m[0] else None]
        else:
            y_pred, out = self.model(x, entering, **self._forward_options)
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
        return _Piece(self._pos, x, state, weights, leaf, _flat(out), losses, m, replayable)

    def _keep(self, piece):
        self._pieces.append(piece)
        self._piece_steps += piece.n
        while not self.schedule.needed(self._piece_steps, self._pieces[0].n):
            self._piece_steps -= self._pieces.popleft().n

    def _replay(self, piece, start):
        """Piece ``piece`` from position ``start`` on, recorded again (without losses) from its
        stored state with the parameter arrays it ran with."""
        saved = [p.data for p in self._params]
        pos = self._pos
        try:
            for p, w in zip(self._params, piece.weights):
                p.data = w
            state, skip = piece.state, start - piece.start
            if skip:
                with no_grad():
                    state = self._detached(self.model(piece.x[:skip], state)[1])
            self._pos = start
            return self._record(piece.x[skip:], None, None, state)
        finally:
            self._pos = pos
            for p, w in zip(self._params, saved):
                p.data = w

    # -- updates --------------------------------------------------------------------------------
    def _update(self):
        """Backpropagate the losses since the last update through the last k2 steps, then step."""
        t = self._pos
        cut = self.schedule.cut(t)
        window = []
        for piece in reversed(self._pieces):
            if piece.start + piece.n <= cut:
                break
            fresh = piece.start >= cut and piece.leaf is not None
            window.append(piece if fresh else self._replay(piece, max(cut, piece.start)))
        n, self._last = t - self._last, t
        self.optimizer.zero_grad()
        curve = np.full(self.k2_max + 1, np.nan) if self.adaptive else None
        value = self._backward(window, t - n, self.schedule.next_cut(t), curve)
        record = self._step_optimizer(value)
        if self.adaptive:
            record["k2"] = self.schedule.k2
            self._choose_k2(curve)
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
            if g is not None:
                terms.extend(F.sum(o * gi) for o, gi in zip(piece.out, g) if gi is not None)
            root = terms[0] if terms else None
            for term in terms[1:]:
                root = root + term
            last_use = piece.replayable and piece.start < next_cut
            if root is None or not root.requires_grad:
                g = None     # nothing reaches this piece, so nothing reaches the older ones
            else:
                root.backward(retain_graph=not last_use)
                g = tuple(leaf.grad for leaf in piece.leaf)
                for leaf in piece.leaf:
                    leaf.grad = None
                if curve is not None:
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
