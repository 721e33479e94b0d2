"""Online credit assignment: what RTRL, UORO and KF-RTRL share behind TBPTT's interface.

Truncated BPTT holds the state k2 steps back constant.  The online estimators carry instead,
from step to step, what the state owes to the parameters, the *influence* M_t = ds_t/dθ of
every state component (e.g. an LSTM's h and c) of every layer:

    M_t = (∂F/∂s) M_{t-1} + ∂F/∂θ            s_t = F(x_t, s_{t-1}, θ)
    dL_t/dθ = (∂L_t/∂s_{t-1}) M_{t-1} + ∂L_t/∂θ    (the last term with s_{t-1} held constant)

* ``bptt.credit.rtrl.RTRL`` (Williams & Zipser 1989) carries M_t exactly;
* ``bptt.credit.uoro.UORO`` (Tallec & Ollivier 2017) a rank-one estimate, unbiased;
* ``bptt.credit.kfrtrl.KFRTRL`` (Mujika, Meier & Steger 2018) a Kronecker-factored one, for a
  cell of Elman form.

Each is an ``OnlineEstimator``: this module feeds the stream, accumulates each window's masked
gradient and steps the optimizer every k1 steps; an estimator says only how one step advances
its influence and what gradient the step gives (``_start``, ``_advance``).  They work with any
model with ``step(x_t, state) -> (y_t, state)`` and ``initial_state(B)``, a state being a
Tensor or a tuple of Tensors (a ``SequenceModel``'s are (L, B, H) each).  A model whose fused
kernels declare no jvp runs on its reference path (``model.fused = False``) inside ``run``,
restored afterwards.  The model's step must be deterministic (no dropout).

Shapes: x (T, B, I), y (T, B, ...) as ``loss_fn`` takes it per step, mask (T,).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable

import numpy as np

from bptt import rng as _rng
from bptt.credit.checks import check_stream, check_trainer
from bptt.forward import JVPError, forward_mode
from bptt.nn.module import Module
from bptt.nn.state import detach, flatten, unflatten
from bptt.optim import clip_grad_norm
from bptt.tape import no_grad

__all__ = ["OnlineEstimator", "SampledEstimator"]


class OnlineEstimator:
    """What the online estimators share: the stream, the update windows, the optimizer steps.

    A subclass defines ``_start()``, the influence at the start of a stream, and
    ``_advance(x_t, y_t, m)``, one step: it moves ``state`` and ``_influence`` on and returns
    the step's loss value and gradient (one float64 array per parameter; None when ``m`` is 0).
    Its constructor arguments and attributes are those of ``bptt.credit.RTRL``.
    """

    def __init__(self, model: Any, loss_fn: Callable, optimizer: Any, k1: int = 1,
                 clip_norm: float | None = None):
        who = type(self).__name__
        check_trainer(who, model, optimizer, k1, clip_norm)
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.k1 = int(k1)
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self._params = (model.parameters() if isinstance(model, Module)
                        else list(getattr(optimizer, "params", [])))
        if not self._params:
            raise TypeError(f"{who}: no parameters to credit: give a Module as the model or an "
                            "optimizer with a params list")
        self._reference = None     # whether forward mode needs the model's reference path
        self.history = []
        self.steps = 0
        self.reset_state()

    @property
    def influence(self) -> Any:
        """What the estimator carries from step to step (each class says what it is)."""
        return self._influence

    def reset_state(self) -> None:
        """Start a new stream: forget the state, its influence and an unfinished window."""
        self.state = None
        self._influence = None
        self._window()

    def _window(self):
        self._grad = [np.zeros(p.shape, np.float64) for p in self._params]
        self._value = 0.0
        self._weight = 0.0
        self._pending = 0

    def run(self, x: Any, y: Any, mask: Any = None) -> list[dict]:
        """Feed a (chunk of a) sequence, updating every k1 steps.

        The state, its influence and a window left incomplete carry over: feeding a sequence
        in chunks of any lengths gives the same updates as feeding it at once.

        Parameters
        ----------
        x : array_like or Tensor
        y : array_like or Tensor
            Targets; ``y[t]`` is given to ``loss_fn``.
        mask : array_like, optional
            Weight of each step's loss (0 for steps without one); all ones when None.

        Returns
        -------
        list of dict
            The records of the updates made (also appended to ``history``): ``step``, ``loss``
            (the masked mean of the window's losses), ``grad_norm`` (before clipping),
            ``clipped``.

        Shapes
        ------
        x (T, B, I), y (T, B, ...), mask (T,)
        """
        x, mask = check_stream(x, y, mask, f"{type(self).__name__}.run")
        if self.state is None:
            self.state = detach(self.model.initial_state(x.shape[1]))
            self._influence = self._start()
        if self._reference is None:
            self._reference = self._needs_reference(x[0])
        records = []
        with self._forward_path():
            for t in range(len(x)):
                value, grads = self._advance(x[t], y[t], float(mask[t]))
                if grads is not None:
                    for acc, g in zip(self._grad, grads):
                        acc += mask[t] * g
                    self._value += mask[t] * value
                    self._weight += mask[t]
                self._pending += 1
                self.steps += 1
                if self._pending == self.k1:
                    records.append(self._update())
        return records

    def finish(self) -> list[dict]:
        """Make the update for a final partial window; the state is kept.

        Returns
        -------
        list of dict
            The update's record, or an empty list when no step is pending.
        """
        return [self._update()] if self._pending else []

    # -- forward mode through the model ---------------------------------------------------------
    def _needs_reference(self, x_t):
        """Whether a step with tangents on the state fails in a fused kernel without a jvp."""
        if not getattr(self.model, "fused", False):
            return False
        state = flatten(self.state)
        try:
            with no_grad(), forward_mode([(s, np.zeros((1, *s.shape), s.dtype)) for s in state], 1):
                self.model.step(x_t, unflatten(self.state, state))
        except JVPError:
            return True
        return False

    @contextlib.contextmanager
    def _forward_path(self):
        if not self._reference:
            yield
            return
        self.model.fused = False
        try:
            yield
        finally:
            self.model.fused = True

    # -- updates --------------------------------------------------------------------------------
    def _update(self):
        den = max(1.0, self._weight)
        for p, g in zip(self._params, self._grad):
            p.grad = (g / den).astype(p.dtype)
        norm = clip_grad_norm(self._params, math.inf if self.clip_norm is None else self.clip_norm)
        clipped = self.clip_norm is not None and norm > self.clip_norm
        self.optimizer.step()
        record = {"step": self.steps, "loss": float(self._value / den), "grad_norm": norm,
                  "clipped": clipped}
        self.history.append(record)
        self._window()
        return record


class SampledEstimator(OnlineEstimator):
    """An estimator that draws random signs: its generator (``rng``) and the stabiliser of its
    rescaling (``eps``), as ``bptt.credit.UORO`` takes them."""

    def __init__(self, model: Any, loss_fn: Callable, optimizer: Any, k1: int = 1,
                 clip_norm: float | None = None, rng: Any = None, eps: float = 1e-7):
        if not eps > 0:
            raise ValueError(f"{type(self).__name__}: eps must be positive, got {eps!r}")
        self.rng = _rng.generator(rng)
        self.eps = float(eps)
        super().__init__(model, loss_fn, optimizer, k1, clip_norm)
