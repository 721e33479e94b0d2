"""gradcheck itself: it passes right gradients and names what is wrong in wrong ones."""

import re

import numpy as np
import pytest

import bptt
from bptt import GradcheckError, Tensor, ops
from bptt.gradcheck import numerical_grad
from bptt.ops import Primitive, primitive
from test_ops import _as_inputs, _cases, _sum_all


class square_missing_two:
    """x ** 2 with the factor 2 of its derivative forgotten."""

    def fwd(x):
        return x * x, x

    def bwd(x, g, needs):
        return (g * x,)


class swapped_mul:
    """a * b whose VJP swaps the cotangents: right where a == b only."""

    def fwd(a, b):
        return a * b, (a, b)

    def bwd(res, g, needs):
        a, b = res
        return g * a, g * b


@pytest.fixture
def registry_restored():
    """Lets a test declare primitives with ``@primitive`` and removes them afterwards."""
    before = dict(ops.REGISTRY)
    yield
    ops.REGISTRY.clear()
    ops.REGISTRY.update(before)


def _param(a, name=None):
    t = Tensor(np.asarray(a, dtype=np.float64), requires_grad=True)
    t.name = name
    return t


def test_passes_on_correct_gradients(rng):
    a, b = _param(rng.standard_normal((3, 4))), _param(rng.standard_normal((4, 2)))
    assert bptt.gradcheck(lambda a, b: ((a @ b).tanh() * 3.0).sum(), [a, b]) is True
    # a non-scalar output is checked through a random projection
    assert bptt.gradcheck(lambda a, b: (a @ b).sigmoid(), [a, b]) is True


def test_names_input_worst_element_and_both_values():
    x = _param([[0.5, -1.0, 0.25], [2.0, -0.75, 1.5]], name="W")
    with pytest.raises(GradcheckError) as info:
        bptt.gradcheck(lambda c, x: Primitive(square_missing_two)(x).sum() + c.sum(), [Tensor(np.ones(1)), x])
    message = str(info.value)
    # backward gives x, finite differences 2x: the largest |x| (2.0 at (1, 0)) is the worst
    match = re.search(r"input 1 \(W\) of shape \(2, 3\): worst element \(1, 0\): "
                      r"backward (\S+), finite differences (\S+) ", message)
    assert match, message
    assert float(match.group(1)) == 2.0
    assert float(match.group(2)) == pytest.approx(4.0, rel=1e-8)


def test_catches_a_wrong_vjp_declared_with_primitive(registry_restored):
    wrong = primitive(swapped_mul)
    assert ops.REGISTRY["swapped_mul"] is wrong
    with pytest.raises(ValueError, match="primitive swapped_mul is declared twice"):
        primitive(swapped_mul)
    a, b = _param([1.0, 2.0]), _param([1.0, -3.0])
    # equal where a == b: the first element; the second is wrong for both inputs, input 0 first
    with pytest.raises(GradcheckError, match=r"input 0 of shape \(2,\): worst element \(1,\): "
                                             r"backward 2, finite differences -3"):
        bptt.gradcheck(lambda a, b: wrong(a, b).sum(), [a, b])
    # only b requires grad: now input 1 is named
    with pytest.raises(GradcheckError, match=r"input 1 .* backward -3, finite differences 2"):
        bptt.gradcheck(lambda a, b: wrong(a, b).sum(), [Tensor(a.data), b])


def test_catches_a_wrong_vjp_seen_only_through_the_projection(rng):
    # sum(y) would not see a transposed cotangent of a square matmul; the random projection does
    class matmul_transposed_vjp:
        def fwd(a, b):
            return a @ b, (a, b)

        def bwd(res, g, needs):
            a, b = res
            return g @ b.T, (a.T @ g).T

    a, b = _param(rng.standard_normal((3, 3))), _param(rng.standard_normal((3, 3)))
    with pytest.raises(GradcheckError, match="input 1"):
        bptt.gradcheck(lambda a, b: Primitive(matmul_transposed_vjp)(a, b), [a, b])


def test_rejects_float32():
    x = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    with pytest.raises(TypeError, match=r"gradcheck: input 0 is float32; central differences need float64"):
        bptt.gradcheck(lambda x: x.sum(), [x])
    y = _param(np.ones(3))
    with pytest.raises(TypeError, match=r"gradcheck: fn returned float32"):
        bptt.gradcheck(lambda y: y.astype(np.float32).sum(), [y])


def test_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="gradcheck: no input requires grad"):
        bptt.gradcheck(lambda x: x.sum(), [Tensor(np.ones(3))])


def test_checks_non_contiguous_inputs(rng):
    x = _param(rng.standard_normal((4, 3)))
    x.data = x.data.T                     # a transposed view: perturbations must reach it
    assert not x.data.flags.c_contiguous
    assert bptt.gradcheck(lambda x: (x * x).sum(), [x])
    with pytest.raises(GradcheckError):
        bptt.gradcheck(lambda x: Primitive(square_missing_two)(x).sum(), [x])


def test_unused_inputs_and_existing_grads(rng):
    x, unused = _param(rng.standard_normal(3)), _param(rng.standard_normal(2))
    x.grad = np.full(3, 7.0)
    assert bptt.gradcheck(lambda x, u: x.exp().sum(), [x, unused])
    np.testing.assert_array_equal(x.grad, np.full(3, 7.0))   # restored
    assert unused.grad is None


def test_numerical_grad_of_a_known_function():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    g = numerical_grad(lambda: float(np.sum(x ** 3)), x)
    np.testing.assert_allclose(g, 3 * x ** 2, rtol=1e-8)
    np.testing.assert_array_equal(x, [[1.0, -2.0], [0.5, 3.0]])  # restored


def _off_by(op, factor):
    """A copy of the primitive ``op`` whose VJP is scaled by ``factor``: wrong by factor - 1."""
    def bwd(*args, **kwargs):
        return tuple(None if d is None else d * factor for d in op.bwd(*args, **kwargs))

    spec = type(op.name, (), {"fwd": op.fwd, "bwd": bwd, "multiple_outputs": op.multiple_outputs})
    return Primitive(spec)


@pytest.mark.parametrize("name, args, static", _cases())
def test_defaults_catch_a_vjp_wrong_by_1e_4_relative(name, args, static):
    # the same check as test_ops.test_primitive_gradcheck, on a copy of the primitive whose
    # backward is off by 1e-4 relative: the default tolerances must reject every one
    wrong = _off_by(ops.REGISTRY[name], 1 + 1e-4)
    inputs = _as_inputs(args)
    v = []

    def fn(*xs):
        out = wrong(*xs, **static)
        if isinstance(out, Tensor):
            return out
        if not v:
            rng = np.random.default_rng(0)
            v.extend(rng.standard_normal(o.shape) for o in out)
        return _sum_all([(o * w).sum() for o, w in zip(out, v)])

    out = fn(*inputs)             # a gradient that is zero everywhere is the same when scaled
    (out * np.random.default_rng(1).standard_normal(out.shape)).sum().backward()
    params = [t for t in inputs if isinstance(t, Tensor)]
    if all(t.grad is None or not np.any(t.grad) for t in params):
        pytest.skip(f"{name}: the gradient is zero at this example, so a scaled VJP equals it")
    for t in params:
        t.grad = None
    with pytest.raises(GradcheckError, match="worst element"):
        bptt.gradcheck(fn, inputs)
