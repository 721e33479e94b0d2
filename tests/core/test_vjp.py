"""bptt.vjp: one recording, any number of vector-Jacobian products, against backward and finite
differences."""

import numpy as np
import pytest

import bptt
from bptt import Tensor, nn
from bptt.gradcheck import numerical_grad


def _rnn(h, x, W, U, b):
    """Three steps of a tanh recurrence: every input fans out."""
    for _ in range(3):
        h = bptt.tanh(x @ W + h @ U + b)
    return h


def _inputs(rng):
    return (rng.standard_normal((2, 4)), rng.standard_normal((2, 3)), rng.standard_normal((3, 4)) * 0.5,
            rng.standard_normal((4, 4)) * 0.5, rng.standard_normal(4))


def test_vjp_equals_backward_and_can_be_called_again(rng):
    values = _inputs(rng)
    y, vjp_fn = bptt.vjp(_rnn, *values)
    leaves = [Tensor(v, requires_grad=True) for v in values]
    out = _rnn(*leaves)
    np.testing.assert_array_equal(y.data, out.data)
    assert not y.requires_grad
    for _ in range(2):
        g = rng.standard_normal(out.shape)
        for t in leaves:
            t.grad = None
        out.backward(g, retain_graph=True)
        for first, second in zip(vjp_fn(g), vjp_fn(g)):
            np.testing.assert_array_equal(first, second)
        for t, d in zip(leaves, vjp_fn(g)):
            np.testing.assert_allclose(d, t.grad, rtol=1e-13, atol=1e-15)


def test_vjp_equals_finite_differences(rng):
    values = [v.copy() for v in _inputs(rng)]
    g = rng.standard_normal((2, 4))
    _, vjp_fn = bptt.vjp(_rnn, *values)
    for i, d in enumerate(vjp_fn(g)):
        def f():
            with bptt.no_grad():
                return float((_rnn(*[Tensor(v) for v in values]).data * g).sum())
        np.testing.assert_allclose(d, numerical_grad(f, values[i]), rtol=1e-7, atol=1e-9)


def test_vjp_is_linear_in_the_cotangent(rng):
    _, vjp_fn = bptt.vjp(_rnn, *_inputs(rng))
    a, b = rng.standard_normal((2, 2, 4))
    for da, db, dab in zip(vjp_fn(a), vjp_fn(b), vjp_fn(2 * a - b)):
        np.testing.assert_allclose(dab, 2 * da - db, rtol=1e-12, atol=1e-14)


def test_argnums_computes_only_the_inputs_asked_for(rng):
    values = _inputs(rng)
    _, vjp_fn = bptt.vjp(_rnn, *values)
    g = rng.standard_normal((2, 4))
    full = vjp_fn(g)
    part = vjp_fn(g, argnums=(0,))
    assert all(d is None for d in part[1:])
    np.testing.assert_array_equal(part[0], full[0])
    weights = vjp_fn(g, argnums=[2, 4])
    assert weights[0] is None and weights[1] is None and weights[3] is None
    np.testing.assert_array_equal(weights[2], full[2])
    np.testing.assert_array_equal(weights[4], full[4])


def test_argnums_skips_the_weight_gradient_work(rng):
    seen = []

    @bptt.ops.primitive
    class _scale_for_test_vjp:
        examples = bptt.ops.custom((((3,), ()), {}))

        def fwd(x, w):
            return x * w, (x, w)

        def bwd(res, g, needs):
            seen.append(needs)
            x, w = res
            return (g * w if needs[0] else None), ((g * x).sum() if needs[1] else None)

    try:
        _, vjp_fn = bptt.vjp(lambda x, w: _scale_for_test_vjp(x, w), np.ones(3), np.array(2.0))
        vjp_fn(np.ones(3), argnums=(0,))
        assert seen == [(True, False)]
    finally:
        del bptt.ops.REGISTRY["_scale_for_test_vjp"]


def test_several_outputs_from_one_entry_and_a_zero_cotangent(rng):
    cell = nn.LSTMCell(3, 4, dtype=np.float64)
    x, h, c = rng.standard_normal((2, 3)), rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    (h1, c1), vjp_fn = bptt.vjp(lambda x, h, c: cell(x, (h, c)), x, h, c)
    gh = rng.standard_normal((2, 4))
    grads = vjp_fn((gh, None))
    assert cell.weight_hh.grad is None      # parameters fn reads are constants: untouched
    leaves = [Tensor(v, requires_grad=True) for v in (x, h, c)]
    out_h, _ = cell(leaves[0], (leaves[1], leaves[2]))
    out_h.backward(gh)
    for t, d in zip(leaves, grads):
        np.testing.assert_allclose(d, t.grad, rtol=1e-13, atol=1e-15)


def test_inputs_keep_their_grad_and_unused_ones_get_zeros(rng):
    a = Tensor(rng.standard_normal(3), requires_grad=True)
    b = Tensor(rng.standard_normal(3).astype(np.float32))
    (y, same), vjp_fn = bptt.vjp(lambda a, b, unused: (a * 2.0, b), a, b, np.ones(2))
    da, db, dunused = vjp_fn((np.ones(3), np.full(3, 5.0)))
    np.testing.assert_array_equal(da, np.full(3, 2.0))
    np.testing.assert_array_equal(db, np.full(3, 5.0))
    assert db.dtype == np.float32
    np.testing.assert_array_equal(dunused, np.zeros(2))
    assert a.grad is None


def test_vjp_records_under_no_grad_and_leaves_an_outer_tape_alone(rng):
    w = Tensor(rng.standard_normal(3), requires_grad=True)
    outer = bptt.tanh(w)                          # on the outer tape; fn closes over it
    with bptt.no_grad():
        _, vjp_fn = bptt.vjp(lambda x: x * outer, np.ones(3))
    np.testing.assert_allclose(vjp_fn(np.ones(3))[0], np.tanh(w.data), rtol=1e-15)
    outer.sum().backward()                       # frees the outer entry; vjp_fn does not need it
    np.testing.assert_allclose(vjp_fn(np.ones(3))[0], np.tanh(w.data), rtol=1e-15)
    np.testing.assert_allclose(w.grad, 1 - np.tanh(w.data) ** 2, rtol=1e-14)


def test_vjp_errors():
    with pytest.raises(TypeError, match=r"vjp: input 1 has dtype int64; only floating-point"):
        bptt.vjp(lambda a, b: a, np.ones(2), np.arange(2))
    with pytest.raises(TypeError, match=r"vjp: fn must return a Tensor or a tuple of Tensors; output 1 is ndarray"):
        bptt.vjp(lambda a: (a, np.ones(2)), np.ones(2))
    _, vjp_fn = bptt.vjp(lambda a: a * 2.0, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"vjp_fn: cotangent 0 has shape \(3,\), output 0 has shape \(2, 3\)"):
        vjp_fn(np.ones(3))
    with pytest.raises(ValueError, match=r"vjp_fn: argnums \[1\] outside the 1 inputs"):
        vjp_fn(np.ones((2, 3)), argnums=[1])
    _, vjp_fn = bptt.vjp(lambda a: (a * 2.0, a * 3.0), np.ones(3))
    with pytest.raises(ValueError, match=r"vjp_fn: got 1 cotangents for 2 outputs"):
        vjp_fn((np.ones(3),))
