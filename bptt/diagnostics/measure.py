"""Gradient-flow measurements: how a loss's gradient decays as it flows back through time.

Everything here returns plain numpy arrays (or small records of them); drawing them is
``bptt.diagnostics.plots``'s job.  The measurements work on any model with the step interface of
``bptt.nn.SequenceModel``: ``model.step(x_t, state) -> (y_t, state)`` and
``model.initial_state(batch_size)``, a state being a Tensor (L, B, H) or, for an LSTM, a tuple
``(h, c)`` of them.

- ``hidden_grad_norms``: ||dL/dh_t|| per layer and step, from one backward pass.
- ``jacobians`` / ``jacobian_norms``: the exact Jacobians dh_T/dh_t of the top layer and their
  singular values.
- ``decay_rate``, ``memory_horizon``, ``suggest_truncation``: numbers read off one such curve.
- ``parameter_grad_norms``: mean and max |grad| per parameter (after any backward).

Shapes use the legend T time, B batch, I input, H hidden, O output, L layers.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass

import numpy as np

from bptt.errors import check_finite
from bptt.nn import recompute as checkpointing
from bptt.nn.state import as_array, flatten, hidden, unflatten
from bptt.tape import Tensor, no_grad

__all__ = ["hidden_grad_norms", "jacobians", "jacobian_norms", "DecayFit", "decay_rate",
           "memory_horizon", "suggest_truncation", "ParameterGradNorms", "parameter_grad_norms"]


# -- helpers ------------------------------------------------------------------------------------

def _sequence(x, who):
    """The (T, B, I) input (or (T, B) integer tokens) as an array, or a ValueError naming ``who``."""
    data = as_array(x)
    tokens = data.ndim == 2 and data.dtype.kind in "iu"
    if data.ndim != 3 and not tokens or data.shape[0] < 1 or data.shape[1] < 1:
        raise ValueError(f"{who}: x must be a sequence shaped (T, B, I), or (T, B) integer tokens, "
                         f"with T, B >= 1, got shape {data.shape}")
    check_finite(who, x=data)
    return data


def _curve(norms, who):
    """One curve indexed by timestep as a float64 array, or a ValueError naming ``who``."""
    a = np.asarray(as_array(norms), dtype=np.float64)
    if a.ndim != 1 or a.size < 1:
        raise ValueError(f"{who}: norms must be one curve indexed by timestep, shape (T,), got shape {a.shape} "
                         "(pass one row of hidden_grad_norms, e.g. norms[-1] for the top layer)")
    if np.any(a < 0) or not np.all(np.isfinite(a)):
        raise ValueError(f"{who}: norms must be finite and non-negative")
    return a


def _step_weights(mask, T, who):
    if mask is None:
        return np.ones(T)
    w = np.asarray(as_array(mask), dtype=np.float64)
    if w.shape != (T,):
        raise ValueError(f"{who}: mask must weight the T={T} steps, shape ({T},), got shape {w.shape}")
    if np.any(w < 0) or not w.sum() > 0:
        raise ValueError(f"{who}: mask must be non-negative with a positive sum, got {w}")
    return w


# -- per-step hidden-state gradients ------------------------------------------------------------

def hidden_grad_norms(model, x, y, loss_fn, mask=None, state=None, per_example=False,
                      checkpoint=None):
    """The norm of dL/dh_t for every layer and step, from a single backward pass.

    The model runs on its step path; every layer's hidden state keeps its gradient
    (``retain_grad`` on the tensors ``model.step(x_t, state, return_layers=True)`` gives, or on
    the returned state's h for a model whose step has no such argument), and one backward of
    the masked mean loss
    ``L = sum_t mask_t * loss_fn(y_t, y[t]) / sum_t mask_t`` fills them.  That gradient is the
    total one: through the output at step t and through every later step.  Parameter gradients
    are reset first, so afterwards they hold dL/dtheta of this loss (``parameter_grad_norms``
    reads them).  Dropout acts as the model's mode says: call ``model.eval()`` to measure
    without it.

    Parameters
    ----------
    model : Module
        With ``step(x_t, state) -> (y_t, state)`` and ``initial_state(batch_size)``, e.g.
        ``bptt.nn.SequenceModel``.
    x : array_like or Tensor, shape (T, B, I)
    y : array_like or Tensor
        Targets, indexed by step: ``y[t]`` is passed to ``loss_fn``.
    loss_fn : callable
        ``loss_fn(y_pred_t, y_t) -> scalar Tensor`` (e.g. ``bptt.data.tasks.loss_function(task)``).
    mask : array_like, shape (T,), optional
        Non-negative weights of the steps' losses; steps weighted 0 are not evaluated.  For a
        loss at the last step only (the adding problem; what ``decay_rate`` expects), a one-hot
        mask at T-1.  All ones when None.
    state : optional
        The initial state; ``model.initial_state(B)`` when None.
    per_example : bool
        Give one norm per example instead of one over the whole batch.
    checkpoint : optional
        Bound the memory: 'sqrt', a number of segments, or ``bptt.nn.recompute.memory_budget(
        slots)``.  A forward pass without recording stores the state at each segment's start;
        then, newest segment first, each segment is recorded again from its stored state and
        backpropagated with the cotangent of its final state from the segment after it.  The
        tape holds one segment at a time, and the numbers are the same as without.  The model
        must draw no random numbers (``model.eval()`` with dropout).

    Returns
    -------
    np.ndarray, float64
        (L, T): the 2-norm of dL/dh_t over batch and hidden units, for layer l and step t;
        (L, T, B) with ``per_example=True``, the norm over hidden units.  A step whose state
        does not reach the loss (after the last weighted step) has norm 0.

    Shapes
    ------
    x (T, B, I), mask (T,) -> (L, T) or (L, T, B)
    """
    who = "hidden_grad_norms"
    xs = _sequence(x, who)
    T, B = xs.shape[:2]
    if len(y) != T:
        raise ValueError(f"{who}: y must have one target per step, T={T}, got length {len(y)}")
    weights = _step_weights(mask, T, who)
    if state is None:
        state = model.initial_state(B)
    policy = checkpointing.resolve(checkpoint, who)
    starts = [0] if policy is None else list(checkpointing.segment_starts(policy, T, who))
    if len(starts) > 1 and getattr(model, "draws_random", False):
        raise ValueError(f"{who}: checkpoint= recomputes the forward pass, which a model that draws "
                         "random numbers (active dropout) would not reproduce; call model.eval()")
    model.zero_grad()
    probe = _takes_probe(model)
    entering = [state]
    with no_grad():
        for a, b in zip(starts, starts[1:]):
            s = entering[-1]
            for t in range(a, b):
                s = model.step(xs[t], s)[1]
            entering.append(s)
    den = float(weights.sum())
    hs = [None] * T      # per step: the hidden-state tensors whose grads are dL/dh_t, one per layer
    g = None             # the cotangent of the state leaving the segment being backpropagated
    for k in range(len(starts) - 1, -1, -1):
        a, b = starts[k], (starts[k + 1] if k + 1 < len(starts) else T)
        # the first segment runs from the state given, as the unchecked pass does
        segment = checkpointing.Segment(entering[k], cut=k > 0)
        s = segment.entering
        total = None
        for t in range(a, b):
            if probe:
                y_t, s, layers = model.step(xs[t], s, return_layers=True)
            else:
                y_t, s = model.step(xs[t], s)
                layers = (hidden(s),)
            if not all(h.requires_grad for h in layers):
                raise ValueError(f"{who}: the hidden state at step {t} does not require grad; the model "
                                 "needs parameters that require grad, and grad recording must be on")
            hs[t] = [h.retain_grad() for h in layers]
            if weights[t]:
                # a Python float: a numpy float64 scalar would promote a float32 loss to float64
                term = loss_fn(y_t, y[t]) * float(weights[t])
                total = term if total is None else total + term
        g = segment.backprop(s, g, loss=None if total is None else total / den)
    # each step's layers as (L, B, H): B x H per layer from the probe, one (L, B, H) state without
    grads = np.stack([np.concatenate([(np.zeros(h.shape) if h.grad is None else h.grad.astype(np.float64))
                                      .reshape(-1, *h.shape[-2:]) for h in step]) for step in hs],
                     axis=1)                                    # (L, T, B, H)
    norms = np.sqrt(np.sum(grads * grads, axis=-1))             # (L, T, B)
    return norms if per_example else np.sqrt(np.sum(norms * norms, axis=-1))


def _takes_probe(model):
    """Whether ``model.step`` can return every layer's hidden state (``return_layers``)."""
    try:
        return "return_layers" in inspect.signature(model.step).parameters
    except (TypeError, ValueError):
        return False


# -- Jacobians of the top layer -----------------------------------------------------------------

@contextlib.contextmanager
def _state_only(model):
    """Eval mode and parameters that need no gradient, restored afterwards.

    Dropout masks would differ between the copies the Jacobian sweep runs, and weight gradients
    would cost time and overwrite the parameters' ``.grad``.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in params:
        p.requires_grad = False
    try:
        yield
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)
        for p, flag in params:
            p.requires_grad = flag


def _jacobian_sweep(model, x, state):
    """Yield ``(t, J)`` for t = T-1 down to 0, J (B, H, H) holding dh_T/dh_t of the top layer.

    Reverse mode with recomputation: the trajectory's states are kept (not the tape), and each
    step is re-run once on the batch repeated H times, example b's copy k carrying row k of
    R_t = d h_T / d S_t (S = h, or (h, c) for an LSTM) as its cotangent; one backward then
    gives R_{t-1} = R_t dS_t/dS_{t-1} for every row and example at once.  Memory is one step's.
    """
    xs = _sequence(x, "jacobians")
    T, B = xs.shape[:2]
    if state is None:
        state = model.initial_state(B)
    with no_grad():
        states = [state]
        for t in range(T - 1):   # states[t] is the state the step at t starts from
            states.append(model.step(xs[t], states[-1])[1])
    h_last = hidden(states[-1]).data
    L, H = h_last.shape[0], h_last.shape[-1]
    K = H * len(flatten(state))           # R's columns: every component's units
    R = np.zeros((B, H, K))
    R[:, :, :H] = np.eye(H)
    yield T - 1, R[:, :, :H].copy()
    for t in range(T - 1, 0, -1):
        parts = flatten(states[t])
        # copy k of example b sits at row b * H + k
        leaves = tuple(Tensor(np.repeat(p.data, H, axis=1), requires_grad=True) for p in parts)
        _, out = model.step(np.repeat(xs[t], H, axis=0), unflatten(states[t], leaves))
        outs = flatten(out)
        cot = R.reshape(B * H, len(parts), H)
        dtype = outs[0].dtype
        obj = sum(((o[L - 1] * cot[:, i, :].astype(dtype)).sum() for i, o in enumerate(outs)))
        obj.backward()
        R = np.concatenate([np.zeros((B, H, H)) if leaf.grad is None else leaf.grad[L - 1].reshape(B, H, H)
                            for leaf in leaves], axis=-1).astype(np.float64)
        yield t - 1, R[:, :, :H].copy()


def jacobians(model, x, state=None):
    """The exact Jacobians dh_T/dh_t of the top layer's hidden state, one per example.

    Built from the per-step Jacobians (``_jacobian_sweep``), so they are exact up to round-off.
    For an LSTM, c_t is held fixed: the derivative is with respect to h_t alone, the same
    quantity ``hidden_grad_norms`` propagates.  Lower layers do not depend on the top layer, so
    the top layer's recurrence alone carries this derivative.  While measuring, the model is in
    eval mode (no dropout) and its parameters need no gradient; both are restored, and the
    parameters' ``.grad`` is left untouched.

    Parameters
    ----------
    model : Module
        With ``step`` and ``initial_state`` as ``bptt.nn.SequenceModel``.
    x : array_like or Tensor, shape (T, B, I)
    state : optional
        The initial state; ``model.initial_state(B)`` when None.

    Returns
    -------
    np.ndarray, float64, shape (T, B, H, H)
        Entry [t, b, i, j] = d h_T[b, i] / d h_t[b, j] with h_T the top layer's last hidden
        state (step T-1); entry [T-1] is the identity.

    Shapes
    ------
    x (T, B, I) -> (T, B, H, H)
    """
    xs = _sequence(x, "jacobians")
    out = None
    with _state_only(model):
        for t, J in _jacobian_sweep(model, xs, state):
            if out is None:
                out = np.empty((xs.shape[0],) + J.shape)
            out[t] = J
    return out


def jacobian_norms(model, x, state=None, singular_values=False, per_example=False):
    """Spectral norms (and optionally all singular values) of dh_T/dh_t, averaged over the batch.

    For each step t and example b the singular values of the exact H x H Jacobian
    d h_T[b] / d h_t[b] of the top layer (see ``jacobians``) are computed with scipy; the batch
    average is the mean over b of each example's k-th largest singular value (so the norm is
    the mean over examples of their spectral norms, not the norm of a mean Jacobian, whose
    signs could cancel).

    Parameters
    ----------
    model : Module
    x : array_like or Tensor, shape (T, B, I)
    state : optional
        The initial state; zeros when None.
    singular_values : bool
        Also return all singular values.
    per_example : bool
        Do not average over the batch.

    Returns
    -------
    norms : np.ndarray, shape (T,), or (T, B) with ``per_example``
        The spectral norm for t = 0 .. T-1 (1 at t = T-1), indexed like ``hidden_grad_norms``
        so ``decay_rate`` reads it directly.
    singular_values : np.ndarray, shape (T, H), or (T, B, H) with ``per_example``
        Only with ``singular_values=True``: descending singular values.

    Notes
    -----
    Costs about one forward and one backward step on a batch of B*H per timestep: keep B small
    (8 examples give a good average).

    Shapes
    ------
    x (T, B, I) -> norms (T,), singular values (T, H)
    """
    import scipy.linalg

    xs = _sequence(x, "jacobian_norms")
    T = xs.shape[0]
    sv = None
    with _state_only(model):
        for t, J in _jacobian_sweep(model, xs, state):
            s = scipy.linalg.svdvals(J)                    # (B, H), batched, descending
            if sv is None:
                sv = np.empty((T,) + s.shape)
            sv[t] = s
    if not per_example:
        sv = sv.mean(axis=1)
    norms = sv[..., 0]
    return (norms, sv) if singular_values else norms


# -- numbers read off a curve -------------------------------------------------------------------

@dataclass(frozen=True)
class DecayFit:
    """A least-squares fit ``log norm = intercept + rate * lag`` (lag = T-1-t).

    Attributes
    ----------
    rate : float
        Per step of lag; negative when the gradient decays going back in time.
    factor : float
        ``exp(rate)``: the gradient's norm is multiplied by this per step back.
    stderr : float
        The standard error of ``rate``.
    intercept : float
        The fitted log norm at lag 0.
    points : int
        How many steps the fit used (positive norms only).
    """

    rate: float
    factor: float
    stderr: float
    intercept: float
    points: int


def decay_rate(norms, min_lag=0, max_lag=None):
    """Fit the exponential decay of one gradient-norm curve against the lag behind its end.

    Parameters
    ----------
    norms : array_like, shape (T,)
        One curve indexed by timestep for a loss at the last step, such as a row of
        ``hidden_grad_norms`` or ``jacobian_norms``.
    min_lag, max_lag : int, optional
        Fit only lags in [min_lag, max_lag] (e.g. to skip a transient near the loss).

    Returns
    -------
    DecayFit
        From ``scipy.stats.linregress`` of log(norm) on lag = T-1-t.  Zero norms (a gradient
        that underflowed or never arrived) have no logarithm and are left out of the fit.

    Raises
    ------
    ValueError
        If fewer than two positive norms lie in the lag range, or all share one lag.
    """
    a = _curve(norms, "decay_rate")
    lag = np.arange(a.size)[::-1]
    hi = a.size - 1 if max_lag is None else max_lag
    keep = (a > 0) & (lag >= min_lag) & (lag <= hi)
    if keep.sum() < 2:
        raise ValueError(f"decay_rate: need at least two positive norms at lags {min_lag}..{hi} to fit a "
                         f"rate, got {int(keep.sum())} of {a.size}")
    import scipy.stats     # 0.5 s to import: only where a decay is fitted

    fit = scipy.stats.linregress(lag[keep], np.log(a[keep]))
    return DecayFit(rate=float(fit.slope), factor=float(np.exp(fit.slope)), stderr=float(fit.stderr),
                    intercept=float(fit.intercept), points=int(keep.sum()))


def memory_horizon(norms, ratio=1e-3):
    """The first lag at which the norm falls below ``ratio`` times its value at lag 0.

    Parameters
    ----------
    norms : array_like, shape (T,)
        One curve indexed by timestep; lag 0 is the last step.
    ratio : float
        In (0, 1).

    Returns
    -------
    int or None
        The lag (T-1-t), or None when the norm stays at or above that level over the whole
        sequence (the horizon is longer than T-1).
    """
    a = _curve(norms, "memory_horizon")
    if not 0 < ratio < 1:
        raise ValueError(f"memory_horizon: ratio must be in (0, 1), got {ratio}")
    by_lag = a[::-1]
    if by_lag[0] <= 0:
        raise ValueError("memory_horizon: the norm at lag 0 (the last step) is 0; nothing to compare with")
    below = np.flatnonzero(by_lag < ratio * by_lag[0])
    return int(below[0]) if below.size else None


def suggest_truncation(norms, mass=0.99):
    """The smallest truncation length k2 whose window holds ``mass`` of the total gradient.

    A window of k2 steps holds lags 0 .. k2-1; its share is the sum of the norms over those
    lags divided by the sum over all of them.  Truncated BPTT with that k2 keeps the gradient
    from at least this share of the steps' contributions, as measured by their norms.

    Parameters
    ----------
    norms : array_like, shape (T,)
        One curve indexed by timestep; lag 0 is the last step.
    mass : float
        In (0, 1].

    Returns
    -------
    int
        k2 in 1 .. T.
    """
    a = _curve(norms, "suggest_truncation")
    if not 0 < mass <= 1:
        raise ValueError(f"suggest_truncation: mass must be in (0, 1], got {mass}")
    cum = np.cumsum(a[::-1])
    if cum[-1] <= 0:
        raise ValueError("suggest_truncation: every norm is 0; there is no gradient to keep")
    # a relative tolerance so that mass=1 is reached despite round-off in the cumulative sum
    return int(np.searchsorted(cum, mass * cum[-1] * (1 - 1e-12)) + 1)


# -- parameters ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParameterGradNorms:
    """Per-parameter gradient statistics, in ``named_parameters`` order.

    Attributes
    ----------
    names : tuple of str
    mean : np.ndarray, shape (P,)
        Mean |grad| over each parameter's elements.
    max : np.ndarray, shape (P,)
        Max |grad|.
    norm : np.ndarray, shape (P,)
        The 2-norm of the gradient.
    """

    names: tuple
    mean: np.ndarray
    max: np.ndarray
    norm: np.ndarray


def parameter_grad_norms(model):
    """Mean and max |grad| of every parameter: the data of the per-layer gradient-flow chart.

    Parameters
    ----------
    model : Module
        After a backward pass.  A parameter no gradient reached counts as 0.

    Returns
    -------
    ParameterGradNorms

    Raises
    ------
    ValueError
        If no parameter has a gradient (no backward ran).
    """
    named = list(model.named_parameters())
    if not any(p.grad is not None for _, p in named):
        raise ValueError(f"parameter_grad_norms: no parameter of {type(model).__name__} has a gradient; "
                         "run a backward pass first")
    grads = [np.zeros(1) if p.grad is None else np.abs(p.grad.astype(np.float64)) for _, p in named]
    return ParameterGradNorms(names=tuple(n for n, _ in named),
                              mean=np.array([g.mean() for g in grads]),
                              max=np.array([g.max() for g in grads]),
                              norm=np.array([np.sqrt(np.sum(g * g)) for g in grads]))


# -- fixed-point layers -------------------------------------------------------------------------

@dataclass(frozen=True)
class FixedPointGradients:
    """How far truncated gradients of fixed-point layers are from the converged RBP gradient.

    Attributes
    ----------
    ks : np.ndarray of int, shape (K,)
    bptt_cosine, bptt_error : np.ndarray, shape (K,)
        For BPTT through the last k forward iterations: the cosine similarity of the parameter
        gradient (all parameters as one vector) with RBP's, and ``||g - g_rbp|| / ||g_rbp||``.
    neumann_cosine, neumann_error : np.ndarray, shape (K,)
        The same for the first k terms of the Neumann series.
    reference_norm : float
        ``||g_rbp||``.
    """

    ks: np.ndarray
    bptt_cosine: np.ndarray
    bptt_error: np.ndarray
    neumann_cosine: np.ndarray
    neumann_error: np.ndarray
    reference_norm: float


def fixed_point_gradients(model, x, y, loss_fn, ks=(1, 2, 5, 10, 20, 50)):
    """Liao et al.'s (2018) comparison: truncated BPTT and Neumann gradients against converged RBP.

    Every ``bptt.nn.FixedPoint`` layer of ``model`` is switched in turn to RBP (the reference),
    to ``grad='bptt', unroll=k`` and to ``grad='neumann', neumann_terms=k``; each time one backward
    of ``loss_fn(model(x), y)`` gives the gradient of every parameter of the model.  The layers'
    options and the parameters' ``.grad`` are restored afterwards.

    Parameters
    ----------
    model : Module
        Containing at least one ``FixedPoint``.
    x, y : array_like
        One batch and its targets.
    loss_fn : callable
        ``loss_fn(model(x), y) -> scalar Tensor``.
    ks : sequence of int
        The truncation lengths.

    Returns
    -------
    FixedPointGradients

    Shapes
    ------
    ks (K,) -> each curve (K,)
    """
    from bptt.nn.fixedpoint import FixedPoint

    layers = [m for m in model.modules() if isinstance(m, FixedPoint)]
    if not layers:
        raise ValueError(f"fixed_point_gradients: {type(model).__name__} has no FixedPoint layer")
    ks = np.asarray(ks, dtype=int)
    if ks.ndim != 1 or ks.size < 1 or np.any(ks < 1):
        raise ValueError(f"fixed_point_gradients: ks must be positive integers, got {ks}")
    params = model.parameters()
    saved = [p.grad for p in params]

    def gradient(**options):
        with contextlib.ExitStack() as stack:
            for layer in layers:
                stack.enter_context(layer.using(**options))
            model.zero_grad()
            loss_fn(model(x), y).backward()
        return np.concatenate([np.zeros(p.size) if p.grad is None else p.grad.reshape(-1).astype(np.float64)
                               for p in params])

    try:
        reference = gradient(grad="rbp")
        norm = float(np.linalg.norm(reference))
        curves = {}
        for name, options in (("bptt", lambda k: {"grad": "bptt", "unroll": k}),
                              ("neumann", lambda k: {"grad": "neumann", "neumann_terms": k})):
            grads = [gradient(**options(int(k))) for k in ks]
            curves[name + "_cosine"] = np.array([g @ reference / max(np.linalg.norm(g) * norm, 1e-300) for g in grads])
            curves[name + "_error"] = np.array([np.linalg.norm(g - reference) / max(norm, 1e-300) for g in grads])
    finally:
        for p, g in zip(params, saved):
            p.grad = g
    return FixedPointGradients(ks=ks, reference_norm=norm, **curves)


__all__ += ["FixedPointGradients", "fixed_point_gradients"]
