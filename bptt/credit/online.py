"""Online credit assignment: RTRL, UORO and KF-RTRL behind TBPTT's interface, and what truncation costs.

Truncated BPTT holds the state k2 steps back constant.  The estimators here carry instead, from
step to step, what the state owes to the parameters, the *influence* M_t = ds_t/dθ of every state
component (e.g. an LSTM's h and c) of every layer:

    M_t = (∂F/∂s) M_{t-1} + ∂F/∂θ            s_t = F(x_t, s_{t-1}, θ)
    dL_t/dθ = (∂L_t/∂s_{t-1}) M_{t-1} + ∂L_t/∂θ    (the last term with s_{t-1} held constant)

* ``RTRL`` (Williams & Zipser 1989) carries M_t exactly, pushed forward through the model's step
  with the batched jvps of ``bptt.forward``: the tangents of the state are M's columns, those of
  the parameters one-hot.  With the weights frozen its gradient over a sequence is full BPTT's.
  It costs about S times a step's forward (S state numbers per example), H^4 for one layer.
* ``UORO`` (Tallec & Ollivier 2017, Algorithm 1) carries the rank-one estimate M_t ≈ s̃ θ̃ᵀ,
  unbiased over its random signs: one jvp (P = 1) and two backward passes through a step.
* ``KFRTRL`` (Mujika, Meier & Steger 2018), for a one-layer ``rnn`` cell: the influence of
  each example as one Kronecker product A ⊗ u, unbiased over its signs, with far less variance
  than UORO's at O(H^3) a step.

Both work with any model with ``step(x_t, state) -> (y_t, state)`` and ``initial_state(B)``, a
state being a Tensor or a tuple of Tensors (a ``SequenceModel``'s are (L, B, H) each).  A
model whose fused kernels declare no jvp runs on its reference path (``model.fused = False``)
inside ``run``, restored afterwards.  The model's step must be deterministic (no dropout).

``adaptive_k2`` chooses a truncation length from the measured decay of ||dL/dh_t||, and
``gradient_alignment`` compares every estimator's gradient with the exact one.

Shapes: x (T, B, I), y (T, B, ...) as ``loss_fn`` takes it per step, mask (T,).
"""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np

from bptt import rng as _rng
from bptt.forward import JVPError, forward_mode
from bptt.nn.module import Module
from bptt.optim import Recorder, clip_grad_norm
from bptt.tape import Tensor, enable_grad, no_grad
from bptt.credit.tbptt import _data, _flat, _shaped, check_interfaces, check_stream   # shared with TBPTT

__all__ = ["RTRL", "UORO", "KFRTRL", "adaptive_k2", "measured_k2", "gradient_alignment", "parse_estimator"]


def _detached(state):
    return _shaped(state, tuple(Tensor(_data(s)) for s in _flat(state)))


def _dot(a, b):
    return math.fsum(float(np.vdot(u, v)) for u, v in zip(a, b))


def _norm(arrays):
    return math.sqrt(_dot(arrays, arrays))


class _Online:
    """What the online estimators share: the stream, the update windows, the optimizer steps."""

    def __init__(self, model, loss_fn, optimizer, k1=1, clip_norm=None):
        who = type(self).__name__
        check_interfaces(who, model, optimizer)
        if isinstance(k1, bool) or not isinstance(k1, (int, np.integer)):
            raise TypeError(f"{who}: k1 must be an integer, got {k1!r}")
        if k1 < 1:
            raise ValueError(f"{who}: k1 (steps between updates) must be >= 1, got {k1}")
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"{who}: clip_norm must be positive (or None), got {clip_norm!r}")
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
    def influence(self):
        """What the estimator carries from step to step (each class says what it is)."""
        return self._influence

    def reset_state(self):
        """Start a new stream: forget the state, its influence and an unfinished window."""
        self.state = None
        self._influence = None
        self._window()

    def _window(self):
        self._grad = [np.zeros(p.shape, np.float64) for p in self._params]
        self._value = 0.0
        self._weight = 0.0
        self._pending = 0

    def run(self, x, y, mask=None):
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
            self.state = _detached(self.model.initial_state(x.shape[1]))
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

    def finish(self):
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
        state = _flat(self.state)
        try:
            with no_grad(), forward_mode([(s, np.zeros((1, *s.shape), s.dtype)) for s in state], 1):
                self.model.step(x_t, _shaped(self.state, state))
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

    def _loss(self, y_pred, y_t):
        """The step's loss value and its cotangent dL/dy_pred."""
        leaf = Tensor(y_pred.data, requires_grad=True)
        with enable_grad():
            loss = self.loss_fn(leaf, y_t)
            loss.backward()
        return loss.item(), leaf.grad

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


class RTRL(_Online):
    """Real-time recurrent learning: the exact influence of the parameters on the state.

    Every step pushes the influence matrix M = ds/dθ forward through the model's step with
    batched jvps and adds ``dL_t/dθ = <dL_t/dy_t, dy_t/dθ>`` to the window's gradient; every
    ``k1`` steps the optimizer steps with the window's masked mean (as ``TBPTT``).  The
    influence is carried across updates, computed with the weights each step ran with (so with
    changing weights it is RTRL's online approximation; with frozen weights it is exact).

    Parameters
    ----------
    model : object
        Has ``step(x_t, state) -> (y_t, state)`` and ``initial_state(batch_size)``; a Module,
        or an optimizer with a ``params`` list, gives the parameters.
    loss_fn : callable
        ``loss_fn(y_pred_t, y_t)`` -> scalar Tensor, for one step.
    optimizer : object
        Has ``zero_grad()`` and ``step()``.
    k1 : int
        Steps between updates (1: fully online).
    clip_norm : float, optional
        Clip the joint gradient norm before each update.
    chunk : int
        At most this many numbers in the one-hot tangents of one pass: the columns of M are
        pushed forward in groups that fit (memory against passes; the result is the same).

    Attributes
    ----------
    state, history, steps
        As ``TBPTT``'s.
    influence : list of tuple of ndarray
        ds/dθ by groups of columns: for each group, the ``(P, *shape)`` tangents of each state
        component (None while zero).

    Notes
    -----
    Memory is N times the state (N parameters) and a step costs about as many forward passes
    of P columns as there are groups; for one layer of H units that is O(H^4) a step.

    Shapes
    ------
    x (T, B, I), y (T, B, ...), mask (T,); influence of a state component of shape S,
    (N, *S) in all.
    """

    def __init__(self, model, loss_fn, optimizer, k1=1, clip_norm=None, chunk=2 ** 22):
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise ValueError(f"RTRL: chunk must be a positive integer, got {chunk!r}")
        self._groups = []
        super().__init__(model, loss_fn, optimizer, k1, clip_norm)
        for k, p in enumerate(self._params):
            width = max(1, min(p.size, int(chunk) // max(1, p.size)))
            self._groups.extend((k, a, min(a + width, p.size)) for a in range(0, p.size, width))

    def _start(self):
        # the initial state does not depend on the parameters
        return [None] * len(self._groups)

    def _advance(self, x_t, y_t, m):
        state = _flat(self.state)
        value = gy = None
        grads = [np.zeros(p.shape, np.float64) for p in self._params] if m else None
        influence = []
        for (k, a, b), columns in zip(self._groups, self._influence):
            p = self._params[k]
            onehot = np.zeros((b - a, p.size), p.dtype)
            onehot[np.arange(b - a), np.arange(a, b)] = 1
            seeds = [(p, onehot.reshape(b - a, *p.shape))]
            if columns is not None:
                seeds += [(s, c) for s, c in zip(state, columns) if c is not None]
            with no_grad(), forward_mode(seeds, b - a) as trace:
                y_pred, new = self.model.step(x_t, _shaped(self.state, state))
            new = _flat(new)
            out = tuple(trace.get(n) for n in new)
            influence.append(None if all(o is None for o in out) else out)
            if m:
                if gy is None:
                    value, gy = self._loss(y_pred, y_t)
                ty = trace.get(y_pred)
                if ty is not None:
                    grads[k].reshape(-1)[a:b] = np.tensordot(ty, gy, axes=gy.ndim)
        self._influence = influence
        self.state = _shaped(self.state, tuple(Tensor(n.data) for n in new))
        return value, grads


class _Sampled(_Online):
    """An estimator that draws random signs: its generator and the stabiliser of its rescaling."""

    def __init__(self, model, loss_fn, optimizer, k1=1, clip_norm=None, rng=None, eps=1e-7):
        if not eps > 0:
            raise ValueError(f"{type(self).__name__}: eps must be positive, got {eps!r}")
        self.rng = _rng.generator(rng)
        self.eps = float(eps)
        super().__init__(model, loss_fn, optimizer, k1, clip_norm)


class UORO(_Sampled):
    """Unbiased online recurrent optimization (Tallec & Ollivier 2017, Algorithm 1).

    Carries a rank-one estimate ``s̃ θ̃ᵀ`` of the influence ds/dθ, over the whole state (every
    component, layer and example as one vector).  At each step, with random signs ν::

        g̃ = <dL_t/ds_{t-1}, s̃> θ̃ + ∂L_t/∂θ          (the step's gradient estimate)
        s̃ ← ρ0 (∂F/∂s) s̃ + ρ1 ν                     (a jvp through the step)
        θ̃ ← θ̃ / ρ0 + νᵀ(∂F/∂θ) / ρ1                 (a backward pass from ν)

    with ρ0 = sqrt(||θ̃|| / ||(∂F/∂s) s̃||) and ρ1 = sqrt(||νᵀ ∂F/∂θ|| / ||ν||) (each plus
    ``eps`` in numerator and denominator), which keep the two factors of the same size and so
    minimise the variance.  E[s̃ θ̃ᵀ] = ds/dθ, so the gradient is unbiased (with frozen weights).

    Parameters
    ----------
    model, loss_fn, optimizer, k1, clip_norm
        As for ``RTRL``.
    rng : numpy.random.Generator, optional
        For the signs; the package-wide generator when None.
    eps : float
        The stabilisers ε0 = ε1 of the rescaling.

    Attributes
    ----------
    state, history, steps
        As ``TBPTT``'s.
    influence : (tuple of ndarray, list of ndarray)
        ``(s̃, θ̃)``: one array per state component, one per parameter.
    """

    def _start(self):
        return (tuple(np.zeros(s.shape, s.dtype) for s in _flat(self.state)),
                [np.zeros(p.shape, p.dtype) for p in self._params])

    def _grads(self):
        gs = [np.zeros(p.shape, p.dtype) if p.grad is None else p.grad for p in self._params]
        for p in self._params:
            p.grad = None
        return gs

    def _advance(self, x_t, y_t, m):
        s_tilde, theta_tilde = self._influence
        leaf = tuple(Tensor(_data(s), requires_grad=True) for s in _flat(self.state))
        for p in self._params:
            p.grad = None
        with enable_grad(), forward_mode([(s, v[None]) for s, v in zip(leaf, s_tilde)], 1) as trace:
            y_pred, new = self.model.step(x_t, _shaped(self.state, leaf))
        new = _flat(new)
        value = grads = None
        if m:
            with enable_grad():
                loss = self.loss_fn(y_pred, y_t)
                loss.backward(retain_graph=True)
            value = loss.item()
            direct = self._grads()
            ds = [np.zeros(s.shape) if s.grad is None else s.grad for s in leaf]
            along = _dot(ds, s_tilde)
            grads = [along * t + d for t, d in zip(theta_tilde, direct)]
        nu = [self.rng.choice(np.array([-1.0, 1.0], n.dtype), size=n.shape) for n in new]
        with enable_grad():
            root = None
            for n, v in zip(new, nu):
                term = (n * v).sum()
                root = term if root is None else root + term
            root.backward()
        pulled = self._grads()
        pushed = [np.zeros(n.shape, n.dtype) if trace.get(n) is None else trace.get(n)[0]
                  for n in new]
        eps = self.eps
        rho0 = math.sqrt((_norm(theta_tilde) + eps) / (_norm(pushed) + eps))
        rho1 = math.sqrt((_norm(pulled) + eps) / (_norm(nu) + eps))
        self._influence = (tuple(rho0 * a + rho1 * v for a, v in zip(pushed, nu)),
                           [t / rho0 + b / rho1 for t, b in zip(theta_tilde, pulled)])
        self.state = _shaped(self.state, tuple(Tensor(n.data) for n in new))
        return value, grads


class KFRTRL(_Sampled):
    """Kronecker-factored RTRL (Mujika, Meier & Steger 2018) for a one-layer ``rnn`` cell.

    The cell is one affine map of a_t = [h_{t-1}; x_t; 1] under an elementwise nonlinearity,
    h_t = f(W a_t) with W = [weight_hh | weight_ih | bias_ih + bias_hh], so the influence
    dh_t/dW of each example is carried as one Kronecker product, ``dh_i/dW_jk ≈ A_ij u_k``
    (A: H x H, u: H + I + 1).  Each step, with the recurrent Jacobian J_t and D_t = f'(W a_t)
    and independent random signs c1, c2 per example::

        g̃ = Σ_b (A_bᵀ dL_t/dh_{t-1,b}) u_bᵀ + ∂L_t/∂W      (the step's gradient estimate)
        u ← c1 p1 u + c2 p2 a_t
        A ← c1 J_t A / p1 + c2 diag(D_t) / p2

    with p1 = sqrt(||J_t A|| / ||u||) and p2 = sqrt(||D_t|| / ||a_t||) (each plus ``eps`` in
    numerator and denominator), which minimise the variance.  E[c1 c2] = 0, so E[A ⊗ u] is the
    exact influence and the gradient is unbiased (with frozen weights); its variance is far
    below UORO's, at O(H^3) a step (J_t A is a jvp of H tangents) against RTRL's O(H^4).

    Parameters
    ----------
    model : SequenceModel
        Of the ``rnn`` cell (either nonlinearity), one layer, with biases.
    loss_fn, optimizer, k1, clip_norm, rng, eps
        As for ``UORO``.

    Attributes
    ----------
    state, history, steps
        As ``TBPTT``'s.
    influence : (ndarray, ndarray)
        ``(u, A)``: (B, H + I + 1) and (B, H, H).
    """

    def __init__(self, model, loss_fn, optimizer, k1=1, clip_norm=None, rng=None, eps=1e-7):
        if getattr(model, "cell", None) != "rnn" or getattr(model, "num_layers", None) != 1:
            raise ValueError(f"KFRTRL: needs a one-layer SequenceModel of the 'rnn' cell, got "
                             f"{type(model).__name__} {getattr(model, 'cell', '')!r}"
                             f" of {getattr(model, 'num_layers', '?')} layers")
        names = dict(model.named_parameters())
        try:
            self._w = [names[f"rnn.{n}_l0"] for n in ("weight_hh", "weight_ih", "bias_ih", "bias_hh")]
        except KeyError:
            raise ValueError("KFRTRL: needs an rnn cell with biases (bias=True)") from None
        super().__init__(model, loss_fn, optimizer, k1, clip_norm, rng, eps)

    def _start(self):
        B, H = self.state.shape[1:]
        n = H + self.model.input_size + 1
        return np.zeros((B, n), self.state.dtype), np.zeros((B, H, H), self.state.dtype)

    def _advance(self, x_t, y_t, m):
        u, A = self._influence
        B, H = A.shape[:2]
        h_prev = _data(self.state)[0]
        leaf = Tensor(_data(self.state), requires_grad=True)
        bias_hh = self._w[3]
        # tangents 0..H-1 on the state, the columns of each example's A: J_t A;
        # tangents H..2H-1 one-hot on bias_hh: ∂h_t/∂b = diag(D_t)
        ts = np.zeros((2 * H, 1, B, H), A.dtype)
        ts[:H, 0] = np.moveaxis(A, 2, 0)
        tb = np.zeros((2 * H, H), bias_hh.dtype)
        tb[np.arange(H, 2 * H), np.arange(H)] = 1
        for p in self._params:
            p.grad = None
        with enable_grad(), forward_mode([(leaf, ts), (bias_hh, tb)], 2 * H) as trace:
            y_pred, new = self.model.step(x_t, leaf)
        value = grads = None
        if m:
            with enable_grad():
                loss = self.loss_fn(y_pred, y_t)
                loss.backward()
            value = loss.item()
            ds = np.zeros((B, H)) if leaf.grad is None else leaf.grad[0]
            along = np.einsum("bi,bij,bk->jk", ds, A, u)         # (H, H + I + 1)
            extra = {id(self._w[0]): along[:, :H], id(self._w[1]): along[:, H:-1],
                     id(self._w[2]): along[:, -1], id(self._w[3]): along[:, -1]}
            grads = [(np.zeros(p.shape) if p.grad is None else p.grad) + extra.get(id(p), 0)
                     for p in self._params]
            for p in self._params:
                p.grad = None
        out = trace.get(new)
        JA = np.zeros_like(A) if out is None else np.moveaxis(out[:H, 0], 0, 2)
        D = np.zeros((B, H), A.dtype) if out is None else np.diagonal(out[H:, 0], axis1=0, axis2=2)
        a = np.concatenate([h_prev, np.asarray(x_t, A.dtype).reshape(B, -1), np.ones((B, 1), A.dtype)], axis=1)
        eps = self.eps
        norm = lambda v: np.sqrt((v.reshape(B, -1) ** 2).sum(axis=1))
        p1 = np.sqrt((norm(JA) + eps) / (norm(u) + eps))
        p2 = np.sqrt((norm(D) + eps) / (norm(a) + eps))
        c1, c2 = (self.rng.choice(np.array([-1.0, 1.0], A.dtype), size=B) for _ in range(2))
        self._influence = ((c1 * p1)[:, None] * u + (c2 * p2)[:, None] * a,
                           (c1 / p1)[:, None, None] * JA
                           + (c2 / p2)[:, None, None] * (D[:, :, None] * np.eye(H, dtype=A.dtype)))
        self.state = Tensor(new.data)
        return value, grads


# -- adaptive truncation --------------------------------------------------------------------------

def adaptive_k2(norms, max_bias, k2_max=None, min_lag=0):
    """The smallest truncation length whose geometric-tail bound on the gradient bias is small.

    In the spirit of Aicher, Foti & Fox (2019): if the cotangent reaching the state k steps
    behind a loss decays as ||dL/dh_{t-k}|| = C β^k, then backpropagating K steps leaves out
    the tail ``sum_{k>=K} C β^k``, the fraction β^K of the whole ``sum_{k>=0} C β^k``.  β is
    fitted (least squares on log norms, ``bptt.diagnostics.decay_rate``) to the measured
    curve, and K is the smallest integer with β^K <= ``max_bias``.

    Parameters
    ----------
    norms : array_like, shape (K,) or (n, K)
        ||dL/dh|| indexed by lag: ``norms[k]`` k steps behind the loss; several rows (windows)
        are averaged.  Zeros and NaN (lags not measured) are left out of the fit.
    max_bias : float
        In (0, 1): the largest relative bias allowed.
    k2_max : int, optional
        The longest truncation allowed; the answer when the norms do not decay (β >= 1).
    min_lag : int
        Fit the decay over lags >= min_lag only (e.g. beyond the steps that add losses).

    Returns
    -------
    int
        K in 1 .. k2_max.

    Raises
    ------
    ValueError
        For a ``max_bias`` outside (0, 1), fewer than two usable lags, or norms that do not
        decay when no ``k2_max`` is given.

    Notes
    -----
    For BPTT(k2; k1), whose window adds losses at lags 0 .. k1-1 behind its end, the oldest of
    them is backpropagated k2 - k1 + 1 steps: the bound holds for every loss of the window with
    ``k2 = k1 - 1 + adaptive_k2(norms, max_bias, min_lag=k1)``, ``norms`` measured from the
    window's end.
    """
    from bptt.diagnostics import decay_rate     # diagnostics re-exports this module's functions

    if not 0 < max_bias < 1:
        raise ValueError(f"adaptive_k2: max_bias must be in (0, 1), got {max_bias!r}")
    if k2_max is not None and (isinstance(k2_max, bool) or not isinstance(k2_max, (int, np.integer))
                               or k2_max < 1):
        raise ValueError(f"adaptive_k2: k2_max must be a positive integer (or None), got {k2_max!r}")
    a = np.asarray(norms, dtype=np.float64)
    if a.ndim == 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)     # a lag no window measured: NaN
            a = np.nanmean(np.where(a > 0, a, np.nan), axis=0)
    if a.ndim != 1:
        raise ValueError(f"adaptive_k2: norms must be (K,) or (n, K) by lag, got shape {a.shape}")
    a = np.where(np.isfinite(a) & (a > 0), a, 0.0)
    # decay_rate reads a curve by timestep, lag 0 last
    factor = decay_rate(a[::-1], min_lag=min_lag).factor
    if factor >= 1:
        if k2_max is None:
            raise ValueError(f"adaptive_k2: the norms do not decay (factor {factor:.4g} per step), "
                             "so no truncation bounds the bias; give k2_max")
        return int(k2_max)
    k = max(1, math.ceil(math.log(max_bias) / math.log(factor) - 1e-12))
    return k if k2_max is None else min(k, int(k2_max))


def measured_k2(model, x, y, loss_fn, max_bias):
    """``adaptive_k2`` of the decay of ||dL/dh_t|| (all layers) for a loss at the last step of
    the sequence x (``bptt.diagnostics.hidden_grad_norms``), at most T.

    Shapes
    ------
    x (T, B, I), y (T, B, ...)
    """
    from bptt.diagnostics import hidden_grad_norms

    T = len(x)
    last = np.zeros(T)
    last[-1] = 1
    norms = hidden_grad_norms(model, x, y, loss_fn, mask=last)
    model.zero_grad()
    return adaptive_k2(np.sqrt((norms ** 2).sum(axis=0))[::-1], max_bias, k2_max=T)


# -- every estimator's gradient against the exact one ---------------------------------------------

def parse_estimator(spec):
    """``"tbptt:k"``, ``"tbptt:k1,k2"``, ``"rtrl"``, ``"uoro"`` or ``"auto:max_bias"`` as
    ``(kind, options)``; a ValueError names the bad spec and the forms allowed."""
    kind, _, arg = str(spec).strip().partition(":")
    forms = "tbptt:K, tbptt:K1,K2, rtrl, uoro, auto:MAX_BIAS (e.g. auto:0.1)"
    try:
        if kind == "tbptt":
            ks = [int(a) for a in arg.split(",")]
            if len(ks) not in (1, 2) or min(ks) < 1 or ks[-1] < ks[0]:
                raise ValueError
            return kind, {"k1": ks[0], "k2": ks[-1]}
        if kind in ("rtrl", "uoro") and not arg:
            return kind, {}
        if kind == "auto" and 0 < float(arg) < 1:
            return kind, {"max_bias": float(arg)}
    except ValueError:
        pass
    raise ValueError(f"estimator {spec!r}: not one of {forms} (with 1 <= K1 <= K2 and "
                     "0 < MAX_BIAS < 1)")


def _cosine(g, ref):
    ng, nr = np.linalg.norm(g), np.linalg.norm(ref)
    if nr == 0:
        return math.nan
    return 0.0 if ng == 0 else float(np.dot(g, ref) / (ng * nr))


def _relative_error(g, ref):
    nr = np.linalg.norm(ref)
    return math.nan if nr == 0 else float(np.linalg.norm(g - ref) / nr)


def _compare(draws, exact, slices):
    """Alignment of gradient draws (n, N) with ``exact`` (N,): whole and per parameter."""
    def stats(a, e):
        cos = np.array([_cosine(d, e) for d in a])
        err = np.array([_relative_error(d, e) for d in a])
        mean = a.mean(axis=0)
        return {"cosine": float(cos.mean()), "cosine_std": float(cos.std()),
                "relative_error": float(err.mean()), "relative_error_std": float(err.std()),
                "cosine_of_mean": _cosine(mean, e), "relative_error_of_mean": _relative_error(mean, e)}

    record = stats(draws, exact)
    record["samples"] = len(draws)
    record["parameters"] = {name: stats(draws[:, s], exact[s]) for name, s in slices.items()}
    return record


def gradient_alignment(model, x, y, loss_fn, estimators, mask=None, samples=100, rng=None):
    """How well each estimator's gradient aligns with the exact one, the weights frozen.

    The exact gradient is full BPTT's of the sequence's loss
    ``sum_t m_t L_t / max(1, sum_t m_t)``; each estimator runs over the same sequence from
    ``model.initial_state`` with the weights left as they are, and its updates' gradients are
    combined into its estimate of that same gradient.

    Parameters
    ----------
    model : Module
        With ``step(x_t, state) -> (y_t, state)`` and ``initial_state(B)``.
    x, y, mask :
        One sequence, as ``TBPTT.run`` takes it.
    loss_fn : callable
        ``loss_fn(y_pred_t, y_t)`` -> scalar Tensor.
    estimators : iterable of str
        ``"tbptt:k"`` (k1 = k2 = k), ``"tbptt:k1,k2"``, ``"rtrl"``, ``"uoro"`` and
        ``"auto:max_bias"``: truncated BPTT with k1 = 1 and the k2 that ``adaptive_k2`` picks
        from ||dL/dh_t|| of a loss at the last step (``bptt.diagnostics.hidden_grad_norms``).
    samples : int
        Draws of each stochastic estimator (UORO).
    rng : numpy.random.Generator, optional
        For UORO's signs; the package-wide generator when None.

    Returns
    -------
    dict
        ``{spec: record}``.  A record has ``cosine`` and ``relative_error``
        (``||g - g*|| / ||g*||``) of the whole gradient, with ``_std`` over the draws (0 for a
        deterministic estimator), ``cosine_of_mean`` and ``relative_error_of_mean`` of the
        draws' mean (where unbiasedness shows), ``samples``, ``parameters`` (the same per
        parameter name), and for ``auto`` the ``k2`` chosen.

    Shapes
    ------
    x (T, B, I), y (T, B, ...), mask (T,)
    """
    from bptt.credit.tbptt import TBPTT

    specs = [(spec, *parse_estimator(spec)) for spec in estimators]
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ValueError(f"gradient_alignment: samples must be a positive integer, got {samples!r}")
    x, mask = check_stream(x, y, mask, "gradient_alignment")
    T = len(x)
    rng = _rng.generator(rng)
    params = model.parameters()
    names = [name for name, _ in model.named_parameters()]
    sizes = np.cumsum([0] + [p.size for p in params])
    slices = {n: slice(a, b) for n, a, b in zip(names, sizes[:-1], sizes[1:])}
    den = max(1.0, float(mask.sum()))

    def flat(grads):
        return np.concatenate([g.ravel() for g in grads])

    def run(make, windows=None):
        """The estimate of the sequence's gradient from an estimator's updates over x."""
        recorder = Recorder(params, dtype=np.float64)
        estimator = make(recorder)
        estimator.run(x, y, mask)
        estimator.finish()
        weights = [1.0] if windows is None else [max(1.0, float(mask[a:a + windows].sum())) / den
                                                 for a in range(0, T, windows)]
        return sum(w * flat(g) for w, g in zip(weights, recorder.grads))

    exact = run(lambda opt: TBPTT(model, loss_fn, opt, k1=T))
    out = {}
    for spec, kind, opts in specs:
        extra = {}
        if kind == "tbptt":
            draws = [run(lambda opt: TBPTT(model, loss_fn, opt, **opts), windows=opts["k1"])]
        elif kind == "auto":
            k2 = measured_k2(model, x, y, loss_fn, opts["max_bias"])
            draws = [run(lambda opt: TBPTT(model, loss_fn, opt, k1=1, k2=k2), windows=1)]
            extra["k2"] = k2
        elif kind == "rtrl":
            draws = [run(lambda opt: RTRL(model, loss_fn, opt, k1=T))]
        else:
            draws = [run(lambda opt: UORO(model, loss_fn, opt, k1=T, rng=rng))
                     for _ in range(samples)]
        out[spec] = {**_compare(np.array(draws), exact, slices), **extra}
    model.zero_grad()
    return out
