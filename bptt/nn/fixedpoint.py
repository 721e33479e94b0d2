"""Fixed-point layers trained by recurrent backpropagation (Almeida 1987; Pineda 1987).

A recurrent cell ``f`` runs on a constant input x until its state settles, ``h* = f(h*, x; θ)``.
The forward iterates the damped map ``T(h) = (1 - d) h + d f(h, x; θ)`` (d = ``damping``; T has
the same fixed points as f) without recording anything, then records **one** application of T at
h* with ``bptt.vjp`` and puts one ``fixed_point`` entry on the tape, from (x, θ) to h*.  Its VJP
needs no trajectory: with g = dL/dh* and J = ∂T/∂h at h*, the adjoint μ solves

    μ = Jᵀ μ + g,        dL/dθ = μᵀ ∂T/∂θ,        dL/dx = μᵀ ∂T/∂x,

and every product Jᵀμ is a call of that one recording's ``vjp_fn``.  (Since I - J = d (I - ∂f/∂h),
this is the Almeida-Pineda adjoint of f itself.)  The solvers (``grad=``):

* ``"rbp"``: Almeida-Pineda's fixed-point iteration μ <- Jᵀμ + g;
* ``"neumann"``: the first ``neumann_terms`` terms of Σ (Jᵀ)ᵏ g (Liao et al. 2018);
* ``"gmres"``, ``"bicgstab"``: ``scipy.sparse.linalg`` on (I - Jᵀ) μ = g, with a LinearOperator
  whose matvec is one VJP;
* ``"bptt"``: no adjoint; the forward iterations are recorded on the tape and backpropagated
  (the reference, and what unrolling in PyTorch does).

The state is a tuple of (B, H) tensors (an LSTM's (h, c)); the layer returns its first element.
Nothing here depends on which cell runs: a cell is any module with ``forward(x, hx)`` that takes
and returns the state as a Tensor or a tuple of Tensors, and acts on each example separately.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from dataclasses import dataclass

import numpy as np

from bptt import ops
from bptt.nn.module import Module
from bptt.nn.recompute import bound
from bptt.nn.state import flatten, public
from bptt.ops import primitive
from bptt.tape import Tensor, is_grad_enabled, no_grad, vjp

__all__ = ["FixedPoint", "FixedPointError", "FixedPointReport", "GRADS"]

GRADS = ("rbp", "neumann", "gmres", "bicgstab", "bptt")
_ON_FAIL = ("raise", "warn")


class FixedPointError(RuntimeError):
    """A forward or adjoint solve of a ``FixedPoint`` layer reached its iteration limit."""


def _cell_module(cell, input_size, hidden_size, init, dtype, rng, **options):
    """The registered cell a FixedPoint iterates, one step of it (an unknown name lists the
    registered ones)."""
    from bptt.nn import registry as registry
    from bptt.nn.recurrent import Cell

    return Cell(registry.get(cell, "FixedPoint"), input_size, hidden_size, init=init, dtype=dtype, rng=rng, **options)


def _example_cells():
    """A one-component and a multi-component registered cell: what the registry's gradient
    check of ``fixed_point`` runs."""
    from bptt.nn import registry as cell

    kinds = cell.registered()
    return (next(c.name for c in kinds if len(c.state) == 1),
            next(c.name for c in kinds if len(c.state) > 1))


# -- the problem one forward solves -------------------------------------------------------------

@dataclass(frozen=True)
class _Options:
    tol: float
    max_iter: int
    damping: float
    grad: str
    grad_tol: float
    grad_max_iter: int
    neumann_terms: int
    unroll: int | None
    on_fail: str


def _make_options(tol, max_iter, damping, grad, grad_tol, grad_max_iter, neumann_terms, unroll, on_fail):
    """The solver options, checked; ``grad_tol`` and ``grad_max_iter`` default to ``tol`` and ``max_iter``."""
    who = "FixedPoint"
    grad_tol = tol if grad_tol is None else grad_tol
    grad_max_iter = max_iter if grad_max_iter is None else grad_max_iter
    for name, value in (("max_iter", max_iter), ("neumann_terms", neumann_terms), ("grad_max_iter", grad_max_iter),
                        ("unroll", 1 if unroll is None else unroll)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{who}: {name} must be a positive integer, got {value!r}")
    for name, value in (("tol", tol), ("grad_tol", grad_tol)):
        if not (isinstance(value, (int, float)) and 0 < value < 1):
            raise ValueError(f"{who}: {name} must be a number in (0, 1), got {value!r}")
    if not (isinstance(damping, (int, float)) and 0 < damping <= 1):
        raise ValueError(f"{who}: damping must be in (0, 1], got {damping!r}")
    if grad not in GRADS:
        raise ValueError(f"{who}: unknown grad {grad!r}; choose from {', '.join(GRADS)}")
    if on_fail not in _ON_FAIL:
        raise ValueError(f"{who}: on_fail must be 'raise' or 'warn', got {on_fail!r}")
    return _Options(tol=float(tol), max_iter=int(max_iter), damping=float(damping), grad=grad,
                    grad_tol=float(grad_tol), grad_max_iter=int(grad_max_iter), neumann_terms=int(neumann_terms),
                    unroll=None if unroll is None else int(unroll), on_fail=on_fail)


def _norm(arrays):
    return math.sqrt(sum(float(np.vdot(a, a)) for a in arrays))


class _Problem:
    """The damped map T of one cell at one input, its starting state and the solver options.

    T takes the cell's parameters as an argument (``params``, in ``cell.parameters()`` order):
    the cell computes with whatever values it is given (the leaves of a ``vjp`` recording,
    rescaled weights) through ``bptt.nn.recompute.bound``, never by changing its parameters.
    """

    def __init__(self, who, cell, options, h0):
        self.who, self.cell, self.options, self.h0 = who, cell, options, h0
        self.report = None

    def _T(self, cell, x, state):
        """One damped step of ``cell`` (bound to the parameters) from ``state`` (a tuple, or
        None for zeros)."""
        f = flatten(cell(x, None if state is None else public(state)))
        d = self.options.damping
        if d == 1.0:
            return f
        if state is None:
            return tuple(d * fi for fi in f)
        return tuple((1.0 - d) * s + d * fi for s, fi in zip(state, f))

    def step(self, x, params, state):
        """``T(state)`` with the parameters ``params``: what ``vjp`` records."""
        return self._T(bound(self.cell, params), x, state)

    def vjp(self, state, x, params):
        """``bptt.vjp``'s ``vjp_fn`` of one application of T, over the inputs (*state, x, *params)."""
        n = len(state)
        return vjp(lambda *a: self.step(a[n], a[n + 1:], a[:n]), *state, x, *params)[1]

    def iterate(self, x, params, state, steps=None):
        """Iterate T from ``state`` until the relative change is at most ``tol`` (or exactly ``steps`` times).

        Records on the tape when recording is on and an input requires grad (the "bptt" path).
        Returns ``(state, iterations, residual)``; reaching ``max_iter`` goes to ``fail``.
        """
        opt = self.options
        limit = opt.max_iter if steps is None else steps
        residual = math.inf
        cell = bound(self.cell, params)
        for k in range(1, limit + 1):
            new = self._T(cell, x, state)
            before = [np.zeros_like(n.data) for n in new] if state is None else [s.data for s in state]
            residual = _norm([n.data - b for n, b in zip(new, before)]) / max(1.0, _norm(before))
            state = new
            if steps is None and residual <= opt.tol:
                return state, k, residual
        if steps is None:
            self.fail(f"the forward iteration did not converge in {limit} iterations "
                      f"(relative residual {residual:.3g} > tol {opt.tol:g}); try damping < 1 "
                      f"(e.g. damping=0.5), a smaller weight scale (contractive=True, or a smaller "
                      f"init), or a larger max_iter")
        return state, limit, residual

    def fail(self, message):
        message = f"{self.who}: {message}"
        if self.options.on_fail == "warn":
            warnings.warn(message, RuntimeWarning, stacklevel=4)
        else:
            raise FixedPointError(message)

    def solve(self, x, params):
        """h* from ``h0`` (zeros when None), nothing recorded: ``(state arrays, iterations, residual)``."""
        with no_grad():
            state, k, residual = self.iterate(x, params, self.h0)
        return tuple(s.data for s in state), k, residual

    def adjoint(self, vjp_fn, n, g, measure=False):
        """Solve μ = Jᵀμ + g by ``options.grad``; ``vjp_fn`` is T's at h*, over (*state, x, *params).

        Pure: reads its arguments and the options and writes nothing.  Returns ``(μ, a tuple of
        n arrays; products Jᵀv used; relative residual ||(I - Jᵀ)μ - g|| / ||g||, or None when it
        was not needed and ``measure`` is False; converged)``.  Neumann always "converges": it is
        a truncation by design.
        """
        opt = self.options
        b = (g,) + tuple(np.zeros_like(g) for _ in range(n - 1))
        state_args = tuple(range(n))

        def JT(v):
            return vjp_fn(v, argnums=state_args)[:n]

        def residual_of(mu):
            return _norm([m - jt - bi for m, jt, bi in zip(mu, JT(mu), b)]) / scale

        scale = _norm(b)
        if scale == 0.0:
            return b, 0, 0.0, True
        limit = opt.grad_max_iter
        if opt.grad == "rbp":
            mu, residual = b, math.inf
            for k in range(1, limit + 1):
                new = tuple(jt + bi for jt, bi in zip(JT(mu), b))
                # the change is the residual of the previous iterate: (μ_k - Jᵀμ_k - g)
                residual = _norm([a - m for a, m in zip(new, mu)]) / scale
                mu = new
                if residual <= opt.grad_tol:
                    return mu, k, residual, True
            return mu, limit, residual, False
        if opt.grad == "neumann":
            mu = power = b
            for _ in range(opt.neumann_terms - 1):
                power = JT(power)
                mu = tuple(m + p for m, p in zip(mu, power))
            return mu, opt.neumann_terms - 1, (residual_of(mu) if measure else None), True
        import scipy.sparse.linalg

        shapes = [bi.shape for bi in b]
        cuts = np.cumsum([bi.size for bi in b])[:-1]
        calls = [0]

        def unflatten(v):
            return tuple(p.reshape(shape).astype(g.dtype) for p, shape in zip(np.split(v, cuts), shapes))

        def matvec(v):
            calls[0] += 1
            return v - np.concatenate([jt.reshape(-1) for jt in JT(unflatten(v))]).astype(np.float64)

        rhs = np.concatenate([bi.reshape(-1) for bi in b]).astype(np.float64)
        A = scipy.sparse.linalg.LinearOperator((rhs.size, rhs.size), matvec=matvec, dtype=np.float64)
        if opt.grad == "gmres":
            restart = min(30, limit)
            v, info = scipy.sparse.linalg.gmres(A, rhs, rtol=opt.grad_tol, atol=0.0, restart=restart,
                                                maxiter=max(1, limit // restart))
        else:
            v, info = scipy.sparse.linalg.bicgstab(A, rhs, rtol=opt.grad_tol, atol=0.0, maxiter=limit)
        mu = unflatten(v)
        return mu, calls[0], (residual_of(mu) if measure or info else None), info == 0


@primitive
class fixed_point:
    """The equilibrium of a cell at constant input, with the adjoint solve as its VJP.

    ``fixed_point(x, *params, problem=)`` -> h* (B, H), the first state tensor of T's fixed point;
    ``problem`` (a ``_Problem``) holds the cell, the starting state and the options.  The forward
    solves without recording and keeps ``bptt.vjp`` of one application of T at h* as its residual;
    the backward solves the adjoint with that recording and returns dL/dx and dL/dθ.
    """

    def examples(rng):
        cases = []
        for cell, grad in zip(_example_cells(), ("rbp", "gmres")):
            module = _cell_module(cell, 2, 3, "default", np.float64, rng)
            names = list(module._parameters)
            options = _Options(tol=1e-13, max_iter=500, damping=1.0, grad=grad, grad_tol=1e-12,
                               grad_max_iter=500, neumann_terms=1, unroll=None, on_fail="raise")
            params = [p.data * (0.5 if name == "weight_hh" else 1.0) for name, p in zip(names, module.parameters())]
            problem = _Problem(f"fixed_point({cell})", module, options, None)
            cases.append(((rng.uniform(-2, 2, (2, 2)), *params), {"problem": problem}))
        return cases

    def fwd(x, *params, problem):
        state, k, residual = problem.solve(x, params)
        problem.report = (state, k, residual)     # read by the layer for its FixedPointReport
        return state[0], (problem, problem.vjp(state, x, params), len(state))

    def bwd(res, g, needs):
        problem, vjp_fn, n = res
        mu, k, residual, converged = problem.adjoint(vjp_fn, n, g)
        if not converged:
            opt = problem.options
            problem.fail(f"the {opt.grad!r} adjoint solve did not converge in {k} products Jᵀv (relative "
                         f"residual {residual:.3g} > grad_tol {opt.grad_tol:g}); try grad='gmres', "
                         f"damping < 1, contractive=True, or a larger grad_max_iter")
        wanted = tuple(n + i for i, need in enumerate(needs) if need)
        return vjp_fn(mu, argnums=wanted)[n:]


# -- the layer ----------------------------------------------------------------------------------

class FixedPointReport:
    """What the last forward of a ``FixedPoint`` found, and its adjoint once a backward has run.

    Attributes
    ----------
    iterations : int
        Forward iterations K.
    residual : float
        The last relative change ``||h_K - h_{K-1}|| / max(1, ||h_{K-1}||)`` (over the whole state).
    converged : bool
    grad : str
        The layer's gradient method at that forward.
    """

    def __init__(self, problem, x, params, state, iterations, residual, output):
        self._problem, self._x, self._params, self._state = problem, x, params, state
        self.iterations, self.residual = iterations, residual
        self.converged = residual <= problem.options.tol
        self.grad = problem.options.grad
        self._output = output

    def __repr__(self):
        return (f"FixedPointReport(iterations={self.iterations}, residual={self.residual:.3g}, "
                f"converged={self.converged}, grad={self.grad!r})")

    def _vjp(self):
        return self._problem.vjp(self._state, self._x, self._params)

    def adjoint(self):
        """``(products Jᵀv, relative residual)`` of the adjoint solve for the cotangent dL/dh* that
        backward brought, or None before a backward (and with ``grad='bptt'``, which solves none).

        The backward rule writes nothing anywhere: this re-runs the same deterministic solve from
        the cotangent that backward left on the layer's output (``retain_grad``).
        """
        out = self._output
        if out is None or out.grad is None:
            return None
        _, k, residual, _ = self._problem.adjoint(self._vjp(), len(self._state), out.grad, measure=True)
        return k, residual

    def jacobian_norms(self):
        """The spectral norm and spectral radius of J = ∂f/∂h at h*, averaged over the batch.

        J is the cell's own Jacobian with respect to its whole state (h, or (h, c)), an
        nH x nH matrix per example, built from nH VJPs of one application of the damped map
        T = (1 - d) I + d f at h*.  The forward iteration converges when the radius of T's
        Jacobian is below 1; RBP's adjoint iteration converges at the same rate.

        Returns
        -------
        (float, float)
            Mean over examples of the largest singular value and of the largest |eigenvalue|.
        """
        vjp_fn = self._vjp()
        n = len(self._state)
        B, H = self._state[0].shape
        d = self._problem.options.damping
        rows = []
        for k in range(n * H):
            e = [np.zeros_like(s) for s in self._state]
            e[k // H][:, k % H] = 1.0
            rows.append(np.concatenate(vjp_fn(tuple(e), argnums=range(n))[:n], axis=1))  # (B, nH): row k of J_T
        JT = np.stack(rows, axis=1).astype(np.float64)            # (B, nH, nH)
        J = (JT - (1.0 - d) * np.eye(n * H)) / d
        norms = np.linalg.svd(J, compute_uv=False)[:, 0]
        radii = np.abs(np.linalg.eigvals(J)).max(axis=1)
        return float(norms.mean()), float(radii.mean())


class FixedPoint(Module):
    """A recurrent cell run to its fixed point h* = f(h*, x; θ) at constant input, as one layer.

    The forward iterates ``h <- (1 - damping) h + damping f(h, x)`` from h = 0 (or ``h0``) until
    the relative change ``||h_{k+1} - h_k|| / max(1, ||h_k||)`` (over the whole state) is at most
    ``tol``, and records one tape entry from (x, parameters) to h*.  Its backward solves the
    adjoint μ = Jᵀμ + g of recurrent backpropagation by ``grad`` (see ``bptt.nn.fixedpoint``),
    holding one cell application however many iterations the forward took; ``grad='bptt'``
    instead records every iteration and backpropagates through them.

    Parameters
    ----------
    cell : str or Module
        A registered cell name (e.g. 'lstm'), or a cell module with ``forward(x, hx)`` that takes
        and returns its state as a Tensor or a tuple of Tensors (B, H) and treats examples apart.
    input_size, hidden_size : int
    tol : float
        Forward stopping tolerance.
    max_iter : int
        Forward iteration limit; reaching it is an error (see ``on_fail``).
    damping : float in (0, 1]
        d in ``h <- (1 - d) h + d f(h)``; below 1 it slows the iteration but can make it converge.
    grad : {'rbp', 'neumann', 'gmres', 'bicgstab', 'bptt'}
    grad_tol, grad_max_iter : optional
        The adjoint's relative-residual tolerance and limit (VJPs); ``tol`` and ``max_iter`` when None.
    neumann_terms : int
        Terms of the Neumann series with ``grad='neumann'``.
    unroll : int, optional
        With ``grad='bptt'``: after converging, record this many more iterations from the
        detached h* and backpropagate through those only (BPTT through the last ``unroll``
        iterations).  None: record every iteration from h0.
    contractive : bool or float
        Rescale ``weight_hh`` at every forward to ``weight_hh * min(1, bound / ||weight_hh||_2)``
        with bound 0.95 (True) or the number given, on the tape, so the gradient sees the
        rescaling.  For a tanh or ReLU RNN this makes f a contraction.
    on_fail : {'raise', 'warn'}
        What a solve that reaches its limit does: raise ``FixedPointError``, or warn and go on.
    init : str
        The cell's initialisation ('default', 'orthogonal', 'identity').
    dtype, rng :
        Of the cell's parameters.
    **cell_options :
        Passed to the cell (e.g. ``nonlinearity='relu'``, ``forget_bias=1.0``).

    Attributes
    ----------
    cell : Module
        Its parameters are this layer's (``cell.weight_ih``, ...).
    last : FixedPointReport or None
        Iterations and residual of the last forward; adjoint iterations and residual after a
        backward (``last.adjoint()``); the spectral norm and radius of J at h* on request
        (``last.jacobian_norms()``).  For the adjoint report the output keeps its ``.grad``
        (``retain_grad``), and the report keeps the output until the next forward.

    Shapes
    ------
    ``layer(x (B, I), h0 = zeros) -> h* (B, H)``; ``h0`` has the cell's state structure.
    """

    def __init__(self, cell, input_size, hidden_size, tol=1e-6, max_iter=200, damping=1.0, grad="rbp",
                 grad_tol=None, grad_max_iter=None, neumann_terms=20, unroll=None, contractive=False,
                 on_fail="raise", init="default", dtype=None, rng=None, **cell_options):
        super().__init__()
        who = "FixedPoint"
        self.options = _make_options(tol=tol, max_iter=max_iter, damping=damping, grad=grad, grad_tol=grad_tol,
                                     grad_max_iter=grad_max_iter, neumann_terms=neumann_terms, unroll=unroll,
                                     on_fail=on_fail)
        bound = 0.95 if contractive is True else (float(contractive) if contractive else None)
        if bound is not None and not 0 < bound < 1:
            raise ValueError(f"{who}: contractive must be True, False or a bound in (0, 1), got {contractive!r}")
        if isinstance(cell, Module) and cell_options:
            raise ValueError(f"{who}: options {', '.join(cell_options)} are for a cell built by name; "
                             f"a cell module ({type(cell).__name__}) comes built")
        self.cell = cell if isinstance(cell, Module) else _cell_module(cell, input_size, hidden_size, init,
                                                                        dtype, rng, **cell_options)
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.contractive = bound
        self._names = [name for name, _ in self.cell.named_parameters()]
        if bound is not None and "weight_hh" not in self._names:
            raise ValueError(f"{who}: contractive=True rescales weight_hh, which {type(self.cell).__name__} "
                             f"does not have (its parameters: {', '.join(self._names)})")
        self.last = None

    @contextlib.contextmanager
    def using(self, **options):
        """Change solver options (``grad``, ``neumann_terms``, ``unroll``, ``tol``, ...) inside a ``with``.

        >>> with layer.using(grad="neumann", neumann_terms=5):
        ...     loss_fn(model(x), y).backward()
        """
        saved = self.options
        self.options = _make_options(**{**dataclasses.asdict(saved), **options})
        try:
            yield self
        finally:
            self.options = saved

    def extra_repr(self):
        o = self.options
        return (f"{self.input_size}, {self.hidden_size}, grad={o.grad!r}, tol={o.tol:g}, "
                f"max_iter={o.max_iter}, damping={o.damping:g}")

    def _effective_params(self):
        """The cell's parameters, with ``weight_hh`` rescaled on the tape when contractive."""
        params = [p for _, p in self.cell.named_parameters()]
        if self.contractive is not None:
            i = self._names.index("weight_hh")
            W = params[i]
            u, _, vt = np.linalg.svd(W.data, full_matrices=False)
            # sigma = u1' W v1 with the singular vectors held constant has the exact value and the
            # exact gradient u1 v1' of the spectral norm
            sigma = ops.reduce_sum(ops.matmul(ops.matmul(u[:, 0], W), vt[0]))
            params[i] = W * ops.minimum(self.contractive / sigma, 1.0)
        return params

    def forward(self, x, h0=None):
        who = f"FixedPoint({self.extra_repr()})"
        if not isinstance(x, Tensor):
            x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"{who}: input has shape {tuple(x.shape)}, expected (B, {self.input_size}) "
                             "(a constant input per example)")
        if h0 is not None:
            h0 = tuple(s if isinstance(s, Tensor) else Tensor(s) for s in flatten(h0))
            for s in h0:
                if tuple(s.shape) != (x.shape[0], self.hidden_size):
                    raise ValueError(f"{who}: h0 has shape {tuple(s.shape)}, expected "
                                     f"({x.shape[0]}, {self.hidden_size})")
            h0 = tuple(s.detach() for s in h0)
        params = self._effective_params()
        problem = _Problem(who, self.cell, self.options, h0)
        opt = self.options
        record = is_grad_enabled() and (any(p.requires_grad for p in params)
                                        or (isinstance(x, Tensor) and x.requires_grad))
        xd = x.data if isinstance(x, Tensor) else x
        output = None
        if opt.grad == "bptt" and record:
            if opt.unroll is None:
                state, k, residual = problem.iterate(x, params, h0)
            else:
                start, k, _ = problem.solve(xd, params)
                state, _, residual = problem.iterate(x, params, tuple(Tensor(s) for s in start), steps=opt.unroll)
                k += opt.unroll
            h = state[0]
            state = tuple(s.data for s in state)
        elif record:
            h = fixed_point(x, *params, problem=problem)
            state, k, residual = problem.report
            output = h.retain_grad()
        else:
            state, k, residual = problem.solve(xd, params)
            h = Tensor(state[0])
        self.last = FixedPointReport(problem, xd, tuple(p.data for p in params), state, k, residual, output)
        return h
