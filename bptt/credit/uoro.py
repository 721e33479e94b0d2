"""Unbiased online recurrent optimization (Tallec & Ollivier 2017): a rank-one influence.

UORO carries the rank-one estimate M_t ≈ s̃ θ̃ᵀ of the influence ds_t/dθ, unbiased over its
random signs: one jvp (P = 1) and two backward passes through a step, whatever the model.

Shapes: x (T, B, I), y (T, B, ...) as ``loss_fn`` takes it per step, mask (T,).
"""

from __future__ import annotations

import math

import numpy as np

from bptt.credit.online import SampledEstimator
from bptt.forward import forward_mode
from bptt.nn.state import detach, flatten, leaves, unflatten
from bptt.tape import enable_grad

__all__ = ["UORO"]


def _dot(a, b):
    return math.fsum(float(np.vdot(u, v)) for u, v in zip(a, b))


def _norm(arrays):
    return math.sqrt(_dot(arrays, arrays))


class UORO(SampledEstimator):
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
        return (tuple(np.zeros(s.shape, s.dtype) for s in flatten(self.state)),
                [np.zeros(p.shape, p.dtype) for p in self._params])

    def _grads(self):
        gs = [np.zeros(p.shape, p.dtype) if p.grad is None else p.grad for p in self._params]
        for p in self._params:
            p.grad = None
        return gs

    def _advance(self, x_t, y_t, m):
        s_tilde, theta_tilde = self._influence
        leaf = leaves(self.state)
        for p in self._params:
            p.grad = None
        with enable_grad(), forward_mode([(s, v[None]) for s, v in zip(leaf, s_tilde)], 1) as trace:
            y_pred, new = self.model.step(x_t, unflatten(self.state, leaf))
        new = flatten(new)
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
        self.state = unflatten(self.state, detach(new))
        return value, grads
