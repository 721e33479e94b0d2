"""Every primitive and its vector-Jacobian product, declared together.

A primitive is a class decorated with ``@primitive``, its rules static methods::

    @primitive
    class tanh(Spec):                    # Spec: what type checkers see (the call gives a Tensor)
        examples = unary(-3, 3)          # where its gradient check samples inputs

        @staticmethod
        def fwd(x):                      # arrays in -> (output, residuals)
            y = np.tanh(x)
            return y, y                  # reuse the output as the residual

        @staticmethod
        def bwd(y, g, needs):            # residuals, output cotangent -> one cotangent per input
            return (g * (1 - y * y),)

        @staticmethod
        def jvp(y, ts):                  # residuals, input tangents -> output tangent
            return ts[0] * (1 - y * y)

Positional arguments are the inputs (Tensors, arrays or Python scalars); keyword arguments are
static (an axis, a shape, an index).  ``bwd`` returns ``None`` for an input it has no cotangent
for and may skip work for inputs whose ``needs`` flag is False.  Broadcasting is undone by the
tape, not here.  A primitive with ``multiple_outputs = True`` returns a tuple of outputs and gets
a tuple of cotangents.  The class name is the primitive's name in this module; ``name = ...``
gives it another one where the class name would shadow a builtin (``reduce_sum`` is ``sum``
in messages, on the tape and in ``bptt.sum``).  The base ``Spec`` (``MultiSpec`` with several
outputs) is for type checkers, which read a decorated class as the class itself: it tells them
that calling the primitive gives a Tensor (a tuple of them); at run time both are ``object``.

``jvp`` is forward mode (``bptt.forward``): it gets the residuals and one tangent per positional
input, each ``None`` (zero) or an array ``(P, *input shape)`` holding P tangents at once, and
returns the output's ``(P, *output shape)`` tangents (a tuple for several outputs; None for a
zero one).  A rule aligns the tangent of an input of lower rank than the output with ``_lift``
before combining it, as broadcasting aligns the primal; a result that broadcasts to the output's
shape is enough.  A
primitive may instead declare ``reference``, the same function of the same arguments built from
primitives that have a jvp (for a fused kernel, its reference step): forward mode then gets the
tangents by running it.  A primitive with neither raises ``bptt.forward.JVPError`` naming it.

Declaring a primitive registers it; ``registry()`` returns every declared primitive, those of
the package modules that declare their own (the fused recurrent kernels of ``bptt.nn``)
included, whatever was imported before.  The op tests gradient-check every entry on its
``examples``, so a new primitive needs no other edit.  The primitives of the core are all here;
those of a layer live beside it, declared the same way (the fused recurrent kernels with their
cells, ``embedding`` in ``nn.layers``, ``fixed_point`` and ``checkpointed_sequence`` in
``nn.fixedpoint`` and ``nn.recompute``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bptt.tape import Entry, Tensor, TensorLike, is_grad_enabled

if TYPE_CHECKING:
    from typing_extensions import TypeAlias

#: Where a gradient check samples a primitive: ``examples(rng) -> [(inputs, static kwargs), ...]``.
Examples: TypeAlias = Callable[[np.random.Generator], "list[tuple[tuple[Any, ...], dict[str, Any]]]"]

REGISTRY: dict[str, Primitive] = {}
# set by bptt.forward while tangents are pushed forward: called after every primitive call as
# forward_hook(op, args, static, res, outputs)
forward_hook: Callable[[Primitive, tuple[Any, ...], dict[str, Any], Any, tuple[Tensor, ...]], None] | None = None


def registry() -> dict[str, Primitive]:
    """Every primitive declared so far by name, ``{name: Primitive}``: this module's, and those
    of every module imported since (``import bptt.nn`` declares the layers' and the cells'),
    users' own included.  The core imports nothing above it, so it cannot import them itself."""
    return dict(REGISTRY)


class OpError(ValueError):
    """Raised by a primitive's forward with a complete message; the op's name is prefixed."""


class Primitive:
    """A registered primitive: call it on Tensors to compute and record it."""

    __slots__ = ("name", "fwd", "bwd", "jvp", "reference", "examples", "multiple_outputs")

    def __init__(self, spec: Any) -> None:     # a class with the rules as attributes
        self.name: str = getattr(spec, "name", spec.__name__)
        self.fwd: Callable[..., tuple[Any, Any]] = spec.fwd
        self.bwd: Callable[..., Any] = spec.bwd
        self.jvp: Callable[..., Any] | None = getattr(spec, "jvp", None)
        self.reference: Callable[..., Any] | None = getattr(spec, "reference", None)
        self.examples: Examples | None = getattr(spec, "examples", None)
        self.multiple_outputs: bool = getattr(spec, "multiple_outputs", False)

    def __repr__(self) -> str:
        return f"<primitive {self.name}>"

    def __call__(self, *args: TensorLike, **static: Any) -> Tensor | tuple[Tensor, ...]:
        xs: list[Any] = []
        inputs: list[Tensor | None] = []
        record = False
        for a in args:
            if isinstance(a, Tensor):
                xs.append(a.data)
                if a.requires_grad:
                    inputs.append(a)
                    record = True
                    continue
            else:
                xs.append(a)
            inputs.append(None)
        try:
            y, res = self.fwd(*xs, **static)
        except OpError as err:     # its kind kept (a subclass says which error it is)
            raise type(err)(f"{self.name}: {err}") from None
        except (ValueError, IndexError, TypeError) as err:
            kind = next(k for k in (ValueError, IndexError, TypeError) if isinstance(err, k))
            shapes = ", ".join(str(np.shape(x)) for x in xs)
            raise kind(f"{self.name}: {err} (input shapes {shapes})") from None
        record = record and is_grad_enabled()
        if not self.multiple_outputs:
            out = _wrap(y, record)
            if record:
                out._entry = Entry(self, res, inputs, 1, None)
            if forward_hook is not None:
                forward_hook(self, args, static, res, (out,))
            return out
        outs = tuple(_wrap(v, record) for v in y)
        if record:
            entry = Entry(self, res, inputs, len(outs), tuple((v.shape, v.dtype) for v in outs))
            for i, o in enumerate(outs):
                o._entry = entry
                o._index = i
        if forward_hook is not None:
            forward_hook(self, args, static, res, outs)
        return outs


def _wrap(y: Any, requires_grad: bool) -> Tensor:
    t = Tensor.__new__(Tensor)
    # ufuncs on 0-d arrays return numpy scalars; a Tensor always holds an ndarray
    t.data = y if type(y) is np.ndarray else np.asarray(y)
    t.grad = None
    t.requires_grad = requires_grad
    t._entry = None
    t._index = 0
    t.name = None
    return t


def primitive(spec: type) -> Primitive:
    """Turn a class with ``fwd`` and ``bwd`` (and ``examples``) into a registered primitive."""
    for attr in ("fwd", "bwd"):
        if not hasattr(spec, attr):
            raise TypeError(f"primitive {spec.__name__}: missing {attr}")
    op = Primitive(spec)
    if op.name in REGISTRY:
        raise ValueError(f"primitive {op.name} is declared twice")
    REGISTRY[op.name] = op
    return op


if TYPE_CHECKING:
    class Spec:
        """What type checkers see of a class declared with ``@primitive``, which they read as a
        class (they ignore what a class decorator returns): calling it gives a Tensor."""

        name: ClassVar[str]

        def __new__(cls, *args: TensorLike, **static: Any) -> Tensor: ...  # type: ignore[misc]

    class MultiSpec:
        """``Spec`` of a primitive with ``multiple_outputs = True``: calling it gives a tuple."""

        name: ClassVar[str]

        def __new__(cls, *args: TensorLike, **static: Any) -> tuple[Tensor, ...]: ...  # type: ignore[misc]
else:
    Spec = MultiSpec = object   # the base of a primitive's class, for type checkers only


# -- forward mode: the tangent conventions every jvp rule shares ------------------------------

def _lift(t, ndim):
    """A tangent ``(P, *shape)`` with axes inserted after P up to rank ``1 + ndim``.

    Aligns it with an output of ``ndim`` axes the way numpy broadcasting aligns its primal
    (from the right), so that the leading axis of tangents never meets a primal axis.
    """
    if t is None or t.ndim > ndim:
        return t
    return t.reshape(t.shape[:1] + (1,) * (ndim + 1 - t.ndim) + t.shape[1:])


def _plus(*terms):
    """The sum of the terms that are not None (None when all are: a zero tangent)."""
    out = None
    for term in terms:
        if term is not None:
            out = term if out is None else out + term
    return out


def _behind(axis, ndim):
    """A primal's reduction ``axis`` as the axes of its tangents, behind their leading axis."""
    if axis is None:
        return tuple(range(1, ndim + 1))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else axis
    return tuple(int(a) % ndim + 1 for a in axes)


def _consumed(parts):
    """How many axes of the indexed array the index ``parts`` (a tuple) uses."""
    def axes(p):
        if p is None or p is Ellipsis:
            return 0
        return np.ndim(p) if isinstance(p, (np.ndarray, list)) and np.asarray(p).dtype == bool else 1
    return sum(axes(p) for p in parts)


# -- where gradient checks sample each primitive (float64; away from kinks and poles) ----------

_SHAPES = [(), (5,), (3, 4), (2, 3, 4)]
_BROADCAST = [((3, 4), (4,)), ((3, 1), (1, 4)), ((2, 3, 4), (3, 1)), ((), (3, 2)), ((4,), ())]


def _draw(rng: np.random.Generator, shape: tuple[int, ...], low: float, high: float,
          sign: bool = False) -> np.ndarray:
    x = rng.uniform(low, high, size=shape)
    if sign:  # keep |x| in [low, high] with either sign: away from the kink at 0
        x = x * rng.choice([-1.0, 1.0], size=shape)
    return np.asarray(x, dtype=np.float64)


def unary(low: float, high: float, sign: bool = False, static: dict[str, Any] | None = None) -> Examples:
    """Examples of one input of each test shape, uniform in [low, high] (either sign with ``sign``)."""
    def examples(rng: np.random.Generator) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [((_draw(rng, s, low, high, sign),), static or {}) for s in _SHAPES]
    return examples


def binary(low: float = -2.0, high: float = 2.0, low2: float | None = None, high2: float | None = None,
           sign: bool = False) -> Examples:
    """Examples of two inputs, of equal and of broadcasting shapes; the second in [low2, high2]."""
    low2 = low if low2 is None else low2
    high2 = high if high2 is None else high2

    def examples(rng: np.random.Generator) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        pairs = [(s, s) for s in _SHAPES] + _BROADCAST + [(b, a) for a, b in _BROADCAST]
        return [((_draw(rng, a, low, high, sign), _draw(rng, b, low2, high2, sign)), {})
                for a, b in pairs]
    return examples


def custom(*cases: tuple[tuple[tuple[int, ...], ...], dict[str, Any]]) -> Examples:
    """Examples given as ``(input shapes, static kwargs)`` pairs, inputs uniform in [-2, 2]."""
    def examples(rng: np.random.Generator) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(tuple(_draw(rng, s, -2, 2) for s in shapes), static) for shapes, static in cases]
    return examples


# -- elementwise arithmetic ---------------------------------------------------------------------

@primitive
class add(Spec):
    examples = binary()

    @staticmethod
    def fwd(a, b):
        return a + b, max(np.ndim(a), np.ndim(b))

    @staticmethod
    def bwd(res, g, needs):
        return g, g

    @staticmethod
    def jvp(ndim, ts):
        return _plus(*(_lift(t, ndim) for t in ts))


@primitive
class sub(Spec):
    examples = binary()

    @staticmethod
    def fwd(a, b):
        return a - b, max(np.ndim(a), np.ndim(b))

    @staticmethod
    def bwd(res, g, needs):
        return g, (-g if needs[1] else None)

    @staticmethod
    def jvp(ndim, ts):
        ta, tb = (_lift(t, ndim) for t in ts)
        return _plus(ta, None if tb is None else -tb)


@primitive
class mul(Spec):
    examples = binary()

    @staticmethod
    def fwd(a, b):
        return a * b, (a, b)

    @staticmethod
    def bwd(res, g, needs):
        a, b = res
        return (g * b if needs[0] else None), (g * a if needs[1] else None)

    @staticmethod
    def jvp(res, ts):
        a, b = res
        ta, tb = (_lift(t, max(np.ndim(a), np.ndim(b))) for t in ts)
        return _plus(None if ta is None else ta * b, None if tb is None else a * tb)


@primitive
class div(Spec):
    examples = binary(-2, 2, 0.5, 2, sign=True)

    @staticmethod
    def fwd(a, b):
        y = a / b
        return y, (b, y)

    @staticmethod
    def bwd(res, g, needs):
        b, y = res
        ga = g / b
        return ga, (-ga * y if needs[1] else None)

    @staticmethod
    def jvp(res, ts):
        b, y = res
        ta, tb = (_lift(t, y.ndim) for t in ts)
        return _plus(ta, None if tb is None else -tb * y) / b


@primitive
class neg(Spec):
    examples = unary(-2, 2)

    @staticmethod
    def fwd(x):
        return -x, None

    @staticmethod
    def bwd(res, g, needs):
        return (-g,)

    @staticmethod
    def jvp(res, ts):
        return -ts[0]


@primitive
class power(Spec):
    """``x ** p``: the gradient for ``p`` needs ``x > 0``."""
    name = "pow"
    examples = binary(0.5, 2.0, -2.0, 2.0)

    @staticmethod
    def fwd(x, p):
        y = x ** p
        return y, (x, p, y)

    @staticmethod
    def bwd(res, g, needs):
        x, p, y = res
        dx = g * p * x ** (p - 1) if needs[0] else None
        dp = g * y * np.log(x) if needs[1] else None
        return dx, dp

    @staticmethod
    def jvp(res, ts):
        x, p, y = res
        tx, tp = (_lift(t, y.ndim) for t in ts)
        return _plus(None if tx is None else tx * (p * x ** (p - 1)),
                     None if tp is None else tp * (y * np.log(x)))


@primitive
class maximum(Spec):
    examples = binary()

    @staticmethod
    def fwd(a, b):
        return np.maximum(a, b), (a, b)

    @staticmethod
    def bwd(res, g, needs):
        a, b = res
        # ties share the cotangent equally, as the mean of the two one-sided derivatives
        w = (a > b) + 0.5 * (a == b)
        return g * w, g * (1 - w)

    @staticmethod
    def jvp(res, ts):
        a, b = res
        ta, tb = (_lift(t, max(np.ndim(a), np.ndim(b))) for t in ts)
        w = (a > b) + 0.5 * (a == b)
        return _plus(None if ta is None else ta * w, None if tb is None else tb * (1 - w))


@primitive
class minimum(Spec):
    examples = binary()

    @staticmethod
    def fwd(a, b):
        return np.minimum(a, b), (a, b)

    @staticmethod
    def bwd(res, g, needs):
        a, b = res
        w = (a < b) + 0.5 * (a == b)
        return g * w, g * (1 - w)

    @staticmethod
    def jvp(res, ts):
        a, b = res
        ta, tb = (_lift(t, max(np.ndim(a), np.ndim(b))) for t in ts)
        w = (a < b) + 0.5 * (a == b)
        return _plus(None if ta is None else ta * w, None if tb is None else tb * (1 - w))


@primitive
class where(Spec):
    """``where(cond, a, b)``; ``cond`` gets no gradient."""

    @staticmethod
    def examples(rng):
        return [((rng.random(a) > 0.5, _draw(rng, a, -2, 2), _draw(rng, b, -2, 2)), {})
                for a, b in [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 3, 4), ())]]

    @staticmethod
    def fwd(cond, a, b):
        cond = np.asarray(cond, dtype=bool)
        y = np.where(cond, a, b)
        return y, (cond, y.ndim)

    @staticmethod
    def bwd(res, g, needs):
        cond = res[0]
        zero = np.zeros((), g.dtype)
        return (None,
                np.where(cond, g, zero) if needs[1] else None,
                np.where(cond, zero, g) if needs[2] else None)

    @staticmethod
    def jvp(res, ts):
        cond, ndim = res
        _, ta, tb = (_lift(t, ndim) for t in ts)
        return np.where(cond, 0.0 if ta is None else ta, 0.0 if tb is None else tb)


# -- elementwise functions ----------------------------------------------------------------------

@primitive
class exp(Spec):
    examples = unary(-2, 2)

    @staticmethod
    def fwd(x):
        y = np.exp(x)
        return y, y

    @staticmethod
    def bwd(y, g, needs):
        return (g * y,)

    @staticmethod
    def jvp(y, ts):
        return ts[0] * y


@primitive
class log(Spec):
    examples = unary(0.2, 3)

    @staticmethod
    def fwd(x):
        return np.log(x), x

    @staticmethod
    def bwd(x, g, needs):
        return (g / x,)

    @staticmethod
    def jvp(x, ts):
        return ts[0] / x


@primitive
class sqrt(Spec):
    examples = unary(0.2, 3)

    @staticmethod
    def fwd(x):
        y = np.sqrt(x)
        return y, y

    @staticmethod
    def bwd(y, g, needs):
        return (g / (2 * y),)

    @staticmethod
    def jvp(y, ts):
        return ts[0] / (2 * y)


@primitive
class absolute(Spec):
    name = "abs"
    examples = unary(0.1, 2, sign=True)

    @staticmethod
    def fwd(x):
        return np.abs(x), x

    @staticmethod
    def bwd(x, g, needs):
        return (g * np.sign(x),)

    @staticmethod
    def jvp(x, ts):
        return ts[0] * np.sign(x)


@primitive
class tanh(Spec):
    examples = unary(-3, 3)

    @staticmethod
    def fwd(x):
        y = np.tanh(x)
        return y, y

    @staticmethod
    def bwd(y, g, needs):
        # 1 - y^2 from the output: no overflow where 1/cosh(x)^2 would
        return (g * (1 - y * y),)

    @staticmethod
    def jvp(y, ts):
        return ts[0] * (1 - y * y)


def _sigmoid(x):
    # tanh form: stable for any x and several times faster than scipy.special.expit
    return 0.5 * np.tanh(0.5 * x) + 0.5


@primitive
class sigmoid(Spec):
    examples = unary(-6, 6)

    @staticmethod
    def fwd(x):
        y = _sigmoid(x)
        return y, y

    @staticmethod
    def bwd(y, g, needs):
        return (g * y * (1 - y),)

    @staticmethod
    def jvp(y, ts):
        return ts[0] * (y * (1 - y))


@primitive
class softplus(Spec):
    """``log(1 + exp(x))``, finite for any x (the log-sigmoid is ``-softplus(-x)``)."""
    examples = unary(-6, 6)

    @staticmethod
    def fwd(x):
        # logaddexp(0, x) never forms exp(x) for large x, where log1p(exp(x)) overflows
        return np.logaddexp(0, x), x

    @staticmethod
    def bwd(x, g, needs):
        return (g * _sigmoid(x),)

    @staticmethod
    def jvp(x, ts):
        return ts[0] * _sigmoid(x)


@primitive
class relu(Spec):
    examples = unary(0.1, 2, sign=True)

    @staticmethod
    def fwd(x):
        return np.maximum(x, 0), x

    @staticmethod
    def bwd(x, g, needs):
        return (g * (x > 0),)

    @staticmethod
    def jvp(x, ts):
        return ts[0] * (x > 0)


@primitive
class clip(Spec):
    """``clip(x, low=..., high=...)``: the gradient passes strictly inside the bounds."""
    examples = unary(-2, 2, static={"low": -1.0, "high": 1.0})

    @staticmethod
    def fwd(x, low=None, high=None):
        return np.clip(x, low, high), (x, low, high)

    @staticmethod
    def bwd(res, g, needs):
        x, low, high = res
        inside = np.ones(x.shape, dtype=bool)
        if low is not None:
            inside &= x > low
        if high is not None:
            inside &= x < high
        return (g * inside,)

    @staticmethod
    def jvp(res, ts):
        (g,) = clip.bwd(res, ts[0], (True,))    # the same mask: the derivative is diagonal
        return g


# -- linear algebra -----------------------------------------------------------------------------

@primitive
class matmul(Spec):
    """numpy's ``a @ b``: 1-D, 2-D and batched (broadcast) operands."""
    examples = custom((((3, 4), (4, 5)), {}), (((2, 3, 4), (4, 5)), {}), (((2, 3, 4), (2, 4, 5)), {}),
                      (((4,), (4, 5)), {}), (((3, 4), (4,)), {}), (((4,), (4,)), {}),
                      (((2, 1, 3, 4), (5, 4, 2)), {}))

    @staticmethod
    def fwd(a, b):
        a_ndim, b_ndim = np.ndim(a), np.ndim(b)
        if a_ndim == 0 or b_ndim == 0 or np.shape(a)[-1] != np.shape(b)[-2 if b_ndim > 1 else 0]:
            raise OpError(f"shapes {np.shape(a)} and {np.shape(b)} do not align")
        return a @ b, (a, b)

    @staticmethod
    def bwd(res, g, needs):
        a, b = res
        # numpy's 1-D rules: a (k,) acts as (1, k), b (k,) as (k, 1), that axis dropped from y;
        # batch axes that a or b broadcast over are summed back by the tape
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = np.expand_dims(g, -1) if b.ndim == 1 else g
        g2 = np.expand_dims(g2, -2) if a.ndim == 1 else g2
        da = db = None
        if needs[0]:
            da = g2 @ np.swapaxes(b2, -1, -2)
            da = da[..., 0, :] if a.ndim == 1 else da
        if needs[1]:
            db = np.swapaxes(a2, -1, -2) @ g2
            db = db[..., 0] if b.ndim == 1 else db
        return da, db

    @staticmethod
    def jvp(res, ts):
        a, b = res
        ta, tb = ts
        # as in bwd: 1-D operands become matrices, the tangents likewise, and batch axes are
        # aligned behind the leading axis of tangents before numpy broadcasts them
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        n = max(a2.ndim, b2.ndim)
        out: Any = None
        if ta is not None:
            out = _lift(ta[..., None, :] if a.ndim == 1 else ta, n) @ b2
        if tb is not None:
            out = _plus(out, a2 @ _lift(tb[..., None] if b.ndim == 1 else tb, n))
        out = out[..., 0, :] if a.ndim == 1 else out
        return out[..., 0] if b.ndim == 1 else out


@primitive
class linear(Spec):
    """``x @ weight.T + bias`` over the last axis of an ``x`` of any rank: one entry per layer."""
    examples = custom((((3, 4), (5, 4), (5,)), {}), (((2, 3, 4), (5, 4), (5,)), {}),
                      (((4,), (2, 4), (2,)), {}), (((3, 4), (5, 4)), {}))

    @staticmethod
    def fwd(x, weight, bias=None):
        if np.ndim(x) == 0 or np.shape(x)[-1] != np.shape(weight)[-1]:
            raise OpError(f"input of shape {np.shape(x)} has {np.shape(x)[-1] if np.ndim(x) else 0} "
                          f"features in its last axis; the weight {np.shape(weight)} expects {np.shape(weight)[-1]}")
        y = x @ weight.T
        if bias is not None:
            y += bias
        return y, (x, weight)

    @staticmethod
    def bwd(res, g, needs):
        x, weight = res
        dx = None
        if needs[0]:   # one output: an outer product, which a K = 1 GEMM computes several times slower
            dx = g * weight[0] if weight.shape[0] == 1 else g @ weight
        dw = db = None
        if needs[1]:   # one GEMM over every leading axis at once
            dw = g.reshape(-1, g.shape[-1]).T @ x.reshape(-1, x.shape[-1])
        if len(needs) > 2 and needs[2]:
            db = g.reshape(-1, g.shape[-1]).sum(axis=0)
        return (dx, dw, db)[:len(needs)]

    @staticmethod
    def jvp(res, ts):
        x, weight = res
        tx, tw = ts[:2]
        out = None if tx is None else tx @ weight.T
        if tw is not None:
            # x @ tw.T for every tangent as one GEMM over the leading axes of x
            P, O, I = tw.shape
            xw = tw.reshape(P * O, I) @ x.reshape(-1, I).T
            out = _plus(out, np.moveaxis(xw.reshape(P, O, -1), 1, -1).reshape(P, *x.shape[:-1], O))
        if len(ts) > 2 and ts[2] is not None:
            out = _plus(out, _lift(ts[2], x.ndim))
        return out


# -- reductions ---------------------------------------------------------------------------------

def _expand(g, ndim, axis, keepdims):
    """Put the reduced axes back into ``g`` so it broadcasts against the input."""
    if keepdims:
        return g
    if axis is None:
        return np.reshape(g, (1,) * ndim)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else axis
    return np.expand_dims(g, tuple(a % ndim for a in axes))


_REDUCE = custom((((3, 4),), {}), (((3, 4),), {"axis": 0}), (((2, 3, 4),), {"axis": (0, 2)}),
                 (((2, 3, 4),), {"axis": -1, "keepdims": True}), (((5,),), {"axis": 0}), (((),), {}))


@primitive
class reduce_sum(Spec):
    name = "sum"
    examples = _REDUCE

    @staticmethod
    def fwd(x, axis=None, keepdims=False):
        return np.sum(x, axis=axis, keepdims=keepdims), (np.shape(x), axis, keepdims)

    @staticmethod
    def bwd(res, g, needs):
        shape, axis, keepdims = res
        return (np.broadcast_to(_expand(g, len(shape), axis, keepdims), shape),)

    @staticmethod
    def jvp(res, ts):
        shape, axis, keepdims = res
        return np.sum(ts[0], axis=_behind(axis, len(shape)), keepdims=keepdims)


@primitive
class mean(Spec):
    examples = _REDUCE

    @staticmethod
    def fwd(x, axis=None, keepdims=False):
        y = np.mean(x, axis=axis, keepdims=keepdims)
        return y, (np.shape(x), axis, keepdims, np.size(x) // np.size(y) if np.size(y) else 1)

    @staticmethod
    def bwd(res, g, needs):
        shape, axis, keepdims, n = res
        return (np.broadcast_to(_expand(g, len(shape), axis, keepdims) / n, shape),)

    @staticmethod
    def jvp(res, ts):
        shape, axis, keepdims, n = res
        return np.sum(ts[0], axis=_behind(axis, len(shape)), keepdims=keepdims) / n


@primitive
class squared_distance(Spec):
    """The sum of the squared differences, ``sum((a - b) ** 2)``, the squared-error losses' sum:
    one full-size temporary each way (a's cotangent back), where sub, mul and sum make four."""
    examples = binary()

    @staticmethod
    def fwd(a, b):
        d = np.asarray(np.subtract(a, b))
        return np.sum(np.square(d, out=d)), (a, b)

    @staticmethod
    def bwd(res, g, needs):
        a, b = res
        da = np.subtract(a, b)
        da *= 2 * g
        return (da if needs[0] else None), (-da if needs[1] else None)

    @staticmethod
    def jvp(res, ts):
        a, b = res
        d = np.subtract(a, b)
        ta, tb = (_lift(t, d.ndim) for t in ts)
        t = _plus(ta, None if tb is None else -tb)
        return None if t is None else 2 * np.sum(t * d, axis=tuple(range(1, t.ndim)))


@primitive
class reduce_max(Spec):
    """Maximum over axes; tied maxima share the cotangent equally."""
    name = "max"
    examples = _REDUCE

    @staticmethod
    def fwd(x, axis=None, keepdims=False):
        y = np.max(x, axis=axis, keepdims=True)
        return (y if keepdims else np.squeeze(y, axis=axis)), (x, y, axis, keepdims)

    @staticmethod
    def bwd(res, g, needs):
        x, y, axis, keepdims = res
        hit = x == y
        return (_expand(g, x.ndim, axis, keepdims) * hit / hit.sum(axis=axis, keepdims=True),)

    @staticmethod
    def jvp(res, ts):
        x, y, axis, keepdims = res
        hit = x == y
        return np.sum(ts[0] * (hit / hit.sum(axis=axis, keepdims=True)),
                      axis=_behind(axis, x.ndim), keepdims=keepdims)


@primitive
class softmax(Spec):
    examples = custom((((3, 4),), {}), (((2, 3, 4),), {"axis": 1}), (((5,),), {}))

    @staticmethod
    def fwd(x, axis=-1):
        z = np.exp(x - np.max(x, axis=axis, keepdims=True))
        y = z / z.sum(axis=axis, keepdims=True)
        return y, (y, axis)

    @staticmethod
    def bwd(res, g, needs):
        y, axis = res
        gy = g * y
        return (gy - y * gy.sum(axis=axis, keepdims=True),)

    @staticmethod
    def jvp(res, ts):
        y, axis = res
        t = ts[0]
        return y * (t - (y * t).sum(axis=_behind(axis, y.ndim), keepdims=True))


@primitive
class log_softmax(Spec):
    examples = custom((((3, 4),), {}), (((2, 3, 4),), {"axis": 1}), (((5,),), {}))

    @staticmethod
    def fwd(x, axis=-1):
        z = x - np.max(x, axis=axis, keepdims=True)
        y = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
        return y, (y, axis)

    @staticmethod
    def bwd(res, g, needs):
        y, axis = res
        return (g - np.exp(y) * g.sum(axis=axis, keepdims=True),)

    @staticmethod
    def jvp(res, ts):
        y, axis = res
        t = ts[0]
        return t - (np.exp(y) * t).sum(axis=_behind(axis, y.ndim), keepdims=True)


# -- shapes -------------------------------------------------------------------------------------

@primitive
class reshape(Spec):
    examples = custom((((3, 4),), {"shape": (2, 6)}), (((2, 3, 4),), {"shape": (-1,)}),
                      (((6,),), {"shape": (3, 1, 2)}))

    @staticmethod
    def fwd(x, shape):
        y = np.reshape(x, shape)
        return y, (np.shape(x), y.shape)

    @staticmethod
    def bwd(res, g, needs):
        return (np.reshape(g, res[0]),)

    @staticmethod
    def jvp(res, ts):
        t = ts[0]
        return np.reshape(t, (len(t),) + res[1])


@primitive
class transpose(Spec):
    examples = custom((((3, 4),), {}), (((2, 3, 4),), {"axes": (1, 2, 0)}), (((2, 3, 4),), {"axes": (0, 2, 1)}),
                      (((2, 3, 4),), {"axes": (-1, 0, 1)}))

    @staticmethod
    def fwd(x, axes=None):
        y = np.transpose(x, axes)
        # the inverse permutation, from axes made non-negative (argsort of (-1, 0, 1) is not it)
        return y, (None if axes is None else np.argsort([a % y.ndim for a in axes]))

    @staticmethod
    def bwd(inverse, g, needs):
        return (np.transpose(g, inverse),)

    @staticmethod
    def jvp(inverse, ts):
        t = ts[0]
        perm = range(t.ndim - 2, -1, -1) if inverse is None else np.argsort(inverse)
        return np.transpose(t, (0, *(int(p) + 1 for p in perm)))


@primitive
class getitem(Spec):
    """``x[index]``: basic slicing, integer-array and boolean indexing (repeated indices accumulate)."""
    examples = custom((((5, 4),), {"index": (slice(1, 4), 2)}), (((5, 4),), {"index": np.array([0, 2, 2, 4])}),
                      (((2, 3, 4),), {"index": (Ellipsis, slice(None, None, -2))}),
                      (((5, 4),), {"index": (np.array([1, 3, 1]), np.array([0, 2, 0]))}),
                      (((5, 4),), {"index": 3}), (((5, 4),), {"index": (None, slice(2), np.newaxis)}),
                      (((5, 4),), {"index": (np.array([1, 3, 1]), slice(1, 3))}),
                      (((5, 4),), {"index": np.array([True, False, True, True, False])}))

    @staticmethod
    def fwd(x, index):
        parts = index if isinstance(index, tuple) else (index,)
        basic = all(p is None or p is Ellipsis or isinstance(p, (int, np.integer, slice)) for p in parts)
        return x[index], (np.shape(x), index, basic)

    @staticmethod
    def bwd(res, g, needs):
        shape, index, basic = res
        dx = np.zeros(shape, dtype=g.dtype)
        if basic:      # a view: each element at most once
            dx[index] = g
        else:          # integer arrays may repeat an index: accumulate
            np.add.at(dx, index, g)
        return (dx,)

    @staticmethod
    def jvp(res, ts):
        shape, index, basic = res
        # index with the tangents' axis moved last, where numpy's placement of advanced-index
        # axes cannot move it; an Ellipsis is spelled out so that it stops before that axis
        parts = index if isinstance(index, tuple) else (index,)
        fill = (slice(None),) * (len(shape) - _consumed(parts))
        k = next((i for i, p in enumerate(parts) if p is Ellipsis), len(parts))
        parts = parts[:k] + fill + parts[k + 1:] + (slice(None),)
        return np.moveaxis(np.moveaxis(ts[0], 0, -1)[parts], -1, 0)


@primitive
class concat(Spec):
    examples = custom((((3, 4), (2, 4)), {}), (((3, 4), (3, 2), (3, 1)), {"axis": 1}))

    @staticmethod
    def fwd(*xs, axis=0):
        y = np.concatenate(xs, axis=axis)
        return y, (np.cumsum([np.shape(x)[axis] for x in xs])[:-1], axis, [np.shape(x) for x in xs])

    @staticmethod
    def bwd(res, g, needs):
        cuts, axis, _ = res
        return tuple(np.split(g, cuts, axis=axis))

    @staticmethod
    def jvp(res, ts):
        cuts, axis, shapes = res
        P = len(next(t for t in ts if t is not None))
        ts = [np.zeros((P, *s)) if t is None else t for t, s in zip(ts, shapes)]
        return np.concatenate(ts, axis=axis % len(shapes[0]) + 1)


@primitive
class stack(Spec):
    examples = custom((((3, 4), (3, 4)), {}), (((2, 3), (2, 3), (2, 3)), {"axis": -1}))

    @staticmethod
    def fwd(*xs, axis=0):
        return np.stack(xs, axis=axis), (len(xs), axis, np.shape(xs[0]))

    @staticmethod
    def bwd(res, g, needs):
        n, axis, _ = res
        return tuple(np.moveaxis(g, axis, 0))

    @staticmethod
    def jvp(res, ts):
        n, axis, shape = res
        P = len(next(t for t in ts if t is not None))
        ts = [np.zeros((P, *shape)) if t is None else t for t in ts]
        return np.stack(ts, axis=axis % (len(shape) + 1) + 1)


@primitive
class split(MultiSpec):
    """``split(x, sections, axis)`` as numpy's ``np.split``: one entry, several outputs."""
    multiple_outputs = True
    examples = custom((((6, 4),), {"sections": 3}), (((3, 7),), {"sections": [2, 5], "axis": 1}))

    @staticmethod
    def fwd(x, sections, axis=0):
        return tuple(np.split(x, sections, axis=axis)), (axis, sections, np.ndim(x))

    @staticmethod
    def bwd(res, gs, needs):
        return (np.concatenate(gs, axis=res[0]),)

    @staticmethod
    def jvp(res, ts):
        axis, sections, ndim = res
        return tuple(np.split(ts[0], sections, axis=axis % ndim + 1))


@primitive
class astype(Spec):
    """Cast to another dtype; the cotangent is cast back by the tape."""
    examples = unary(-2, 2, static={"dtype": np.float64})

    @staticmethod
    def fwd(x, dtype):
        return np.asarray(x).astype(dtype), None

    @staticmethod
    def bwd(res, g, needs):
        return (g,)

    @staticmethod
    def jvp(res, ts):
        return ts[0]     # cast to the output's dtype by forward mode, as cotangents by the tape
