"""Every primitive's gradient and jvp against finite differences, and the operators that reach them."""

import builtins

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import bptt
import bptt.nn  # noqa: F401  (declares the layers' and the cells' primitives, checked here too)
from bptt import Tensor, forward, ops
from bptt.gradcheck import numerical_grad


def _cases():
    """(op name, example number, inputs, static kwargs) for every example of every registered op."""
    cases = []
    rng = np.random.default_rng(0)
    for name, op in sorted(ops.registry().items()):
        if op.examples is None:
            continue
        for k, (args, static) in enumerate(op.examples(rng)):
            cases.append(pytest.param(name, args, static, id=f"{name}-{k}"))
    return cases


def _as_inputs(args):
    """Float arrays become float64 tensors that require grad; the rest stay constants."""
    return [Tensor(np.array(a, dtype=np.float64), requires_grad=True)
            if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args]


def _sum_all(terms):
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def test_every_primitive_declares_examples():
    missing = [name for name, op in ops.registry().items() if op.examples is None]
    assert not missing, f"primitives without examples (their gradients go unchecked): {missing}"


@pytest.mark.parametrize("name, args, static", _cases())
def test_primitive_gradcheck(name, args, static):
    op = ops.registry()[name]
    inputs = _as_inputs(args)
    assert any(isinstance(t, Tensor) for t in inputs), f"{name}: an example without float inputs checks nothing"
    rng = np.random.default_rng(0)
    v = None

    def fn(*xs):
        nonlocal v
        out = op(*xs, **static)
        if isinstance(out, Tensor):
            return out
        if v is None:  # one fixed projection per output, the same in every call
            v = [rng.standard_normal(o.shape) for o in out]
        return _sum_all([(o * w).sum() for o, w in zip(out, v)])

    assert bptt.gradcheck(fn, inputs)


# -- full Jacobians of tiny cases ---------------------------------------------------------------

def _jacobian_tape(fn, x):
    """Rows d y_i / d x, one backward per output element (retain_graph keeps the tape)."""
    x.grad = None
    y = fn(x)
    rows = []
    for i in range(y.size):
        e = np.zeros(y.shape)
        e.flat[i] = 1.0
        x.grad = None
        y.backward(e, retain_graph=True)
        rows.append(x.grad.reshape(-1).copy())
    return np.array(rows)


def _jacobian_fd(fn, x):
    """Rows d y_i / d x by central differences."""
    y = fn(x).data
    rows = []
    for i in range(y.size):
        with bptt.no_grad():
            rows.append(numerical_grad(lambda: float(fn(x).data.flat[i]), x.data).reshape(-1))
    return np.array(rows)


@pytest.mark.parametrize("fn, shape", [
    (lambda x: x.tanh(), (2, 3)),
    (lambda x: bptt.softmax(x, axis=-1), (2, 3)),
    (lambda x: bptt.log_softmax(x, axis=0), (3, 2)),
    (lambda x: x @ Tensor(np.arange(6.0).reshape(3, 2) - 2), (2, 3)),
    (lambda x: x[np.array([0, 2, 2])] * 3.0, (3, 2)),
    (lambda x: bptt.concat([x, x * x], axis=1), (2, 2)),
    (lambda x: x.max(axis=1), (2, 3)),
], ids=["tanh", "softmax", "log_softmax", "matmul", "getitem", "concat", "max"])
def test_full_jacobian(fn, shape, rng):
    x = Tensor(rng.uniform(-2, 2, shape), requires_grad=True)
    np.testing.assert_allclose(_jacobian_tape(fn, x), _jacobian_fd(fn, x), rtol=1e-6, atol=1e-8)


def test_softmax_jacobian_is_diag_minus_outer():
    x = Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    y = np.exp(x.data) / np.exp(x.data).sum()
    np.testing.assert_allclose(_jacobian_tape(bptt.softmax, x), np.diag(y) - np.outer(y, y), atol=1e-12)


def test_getitem_repeated_index_accumulates():
    x = Tensor(np.zeros(4), requires_grad=True)
    x[np.array([1, 1, 3, 1])].sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 3.0, 0.0, 1.0])


def test_split_with_unused_outputs_gets_zeros():
    x = Tensor(np.arange(6.0), requires_grad=True)
    a, b, c = bptt.split(x, 3)
    (b * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 0, 2, 2, 0, 0])


# -- binary elementwise ops on broadcast shapes drawn by hypothesis ------------------------------

_BINARY = {  # numpy reference and where each operand is sampled (away from poles and kinks)
    "add": (np.add, (-2, 2), (-2, 2)),
    "sub": (np.subtract, (-2, 2), (-2, 2)),
    "mul": (np.multiply, (-2, 2), (-2, 2)),
    "div": (np.divide, (-2, 2), (0.5, 2)),
    "pow": (np.power, (0.5, 2), (-2, 2)),
    "maximum": (np.maximum, (-2, 2), (-2, 2)),
    "minimum": (np.minimum, (-2, 2), (-2, 2)),
}


@pytest.mark.parametrize("name", sorted(_BINARY))
@settings(max_examples=8, deadline=None, derandomize=True)
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
       seed=st.integers(0, 2**16))
def test_binary_broadcasting(name, shapes, seed):
    ref, (lo_a, hi_a), (lo_b, hi_b) = _BINARY[name]
    rng = np.random.default_rng(seed)
    (sa, sb), _ = shapes
    a = rng.uniform(lo_a, hi_a, sa)
    b = rng.uniform(lo_b, hi_b, sb)
    if name == "div":
        b *= rng.choice([-1.0, 1.0], size=sb)
    ta, tb = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    y = ops.registry()[name](ta, tb)
    np.testing.assert_allclose(y.data, ref(a, b), rtol=1e-15)
    (y * np.linspace(-1, 1, y.size).reshape(y.shape)).sum().backward()
    assert ta.grad.shape == a.shape and tb.grad.shape == b.shape
    assert bptt.gradcheck(lambda p, q: ops.registry()[name](p, q), [ta, tb])


# -- operators and methods map to the primitives -----------------------------------------------

def _op(t):
    return t._entry.op.name


def test_methods_and_functions_record_their_primitive(rng):
    x = Tensor(rng.uniform(-1, 1, (3, 4)), requires_grad=True)
    for y, name, expected in [
        (x.tanh(), "tanh", np.tanh(x.data)),
        (bptt.tanh(x), "tanh", np.tanh(x.data)),
        (x.sum(axis=1), "sum", x.data.sum(axis=1)),
        (x.mean(axis=0, keepdims=True), "mean", x.data.mean(axis=0, keepdims=True)),
        (x.max(), "max", x.data.max()),
        (x.reshape(2, 6), "reshape", x.data.reshape(2, 6)),
        (x.T, "transpose", x.data.T),
        (x.transpose(1, 0), "transpose", x.data.T),
        (x.clip(-0.5, 0.5), "clip", np.clip(x.data, -0.5, 0.5)),
        (x.exp(), "exp", np.exp(x.data)),
        (x.sigmoid(), "sigmoid", 1 / (1 + np.exp(-x.data))),
        (x.relu(), "relu", np.maximum(x.data, 0)),
        (abs(x), "abs", np.abs(x.data)),
        (-x, "neg", -x.data),
        (x ** 2, "pow", x.data ** 2),
        (x @ x.data.T, "matmul", x.data @ x.data.T),
        (x[1:, np.array([0, 2])], "getitem", x.data[1:, [0, 2]]),
        (x[Tensor(np.array([2, 0]))], "getitem", x.data[[2, 0]]),
        (bptt.concat([x, x], axis=0), "concat", np.concatenate([x.data, x.data])),
        (bptt.stack([x, x], axis=1), "stack", np.stack([x.data, x.data], axis=1)),
        (bptt.where(x.data > 0, x, 0.0), "where", np.where(x.data > 0, x.data, 0.0)),
        (bptt.maximum(x, 0.25), "maximum", np.maximum(x.data, 0.25)),
        (bptt.softmax(x, axis=0), "softmax", np.exp(x.data) / np.exp(x.data).sum(axis=0)),
        (x.astype(np.float32), "astype", x.data.astype(np.float32)),
    ]:
        assert _op(y) == name
        assert y.dtype == expected.dtype
        np.testing.assert_allclose(y.data, expected, rtol=1e-6, err_msg=name)
    parts = bptt.split(x, [1], axis=0)
    assert [_op(p) for p in parts] == ["split", "split"] and parts[0]._entry is parts[1]._entry


@pytest.mark.parametrize("expr, value, grad", [
    (lambda a, x: a + x, lambda a, x: a + x, lambda a, x: np.ones_like(x)),
    (lambda a, x: a - x, lambda a, x: a - x, lambda a, x: -np.ones_like(x)),
    (lambda a, x: a * x, lambda a, x: a * x, lambda a, x: a),
    (lambda a, x: a / x, lambda a, x: a / x, lambda a, x: -a / x ** 2),
    (lambda a, x: a ** x, lambda a, x: a ** x, lambda a, x: a ** x * np.log(a)),
    (lambda a, x: 2.0 ** x, lambda a, x: 2.0 ** x, lambda a, x: 2.0 ** x * np.log(2.0)),
    (lambda a, x: 3.0 - x, lambda a, x: 3.0 - x, lambda a, x: -np.ones_like(x)),
], ids=["radd", "rsub", "rmul", "rtruediv", "rpow", "rpow-scalar", "rsub-scalar"])
def test_reflected_operators_with_arrays_on_the_left(expr, value, grad, rng):
    a = rng.uniform(0.5, 2, (3, 4))
    x = Tensor(rng.uniform(0.5, 2, (3, 4)), requires_grad=True)
    y = expr(a, x)
    assert isinstance(y, Tensor)
    np.testing.assert_allclose(y.data, value(a, x.data), rtol=1e-14)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, grad(a, x.data), rtol=1e-12)


def test_reflected_matmul_with_array_on_the_left(rng):
    a = rng.standard_normal((2, 3))
    x = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    y = a @ x
    assert isinstance(y, Tensor) and _op(y) == "matmul"
    y.sum().backward()
    np.testing.assert_allclose(x.grad, a.T @ np.ones((2, 4)), rtol=1e-14)


def test_comparisons_give_constant_boolean_tensors():
    x = Tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True)
    m = x > 0
    assert m.dtype == bool and not m.requires_grad
    np.testing.assert_array_equal(m.data, [False, False, True])
    np.testing.assert_array_equal((x <= np.array([0.0, 0.0, 0.0])).data, [True, True, False])


# -- errors name the op and the shapes ----------------------------------------------------------

@pytest.mark.parametrize("call, kind, message", [
    (lambda: bptt.matmul(Tensor(np.ones((32, 10))), Tensor(np.ones((20, 5)))), ValueError,
     r"matmul: shapes \(32, 10\) and \(20, 5\) do not align"),
    (lambda: Tensor(np.ones((3, 4))) @ np.ones(5), ValueError, r"matmul: shapes \(3, 4\) and \(5,\) do not align"),
    (lambda: Tensor(np.ones((3, 4))) + Tensor(np.ones(5)), ValueError,
     r"add: .*broadcast.*\(input shapes \(3, 4\), \(5,\)\)"),
    (lambda: Tensor(np.ones((3, 4))).reshape(5), ValueError, r"reshape: .*\(input shapes \(3, 4\)\)"),
    (lambda: Tensor(np.ones((3, 4)))[7], IndexError, r"getitem: .*\(input shapes \(3, 4\)\)"),
    (lambda: bptt.concat([Tensor(np.ones((3, 4))), Tensor(np.ones((3, 5)))]), ValueError,
     r"concat: .*\(input shapes \(3, 4\), \(3, 5\)\)"),
    (lambda: bptt.linear(Tensor(np.ones((2, 3))), Tensor(np.ones((4, 5)))), ValueError,
     r"linear: input of shape \(2, 3\) has 3 features.*weight \(4, 5\) expects 5"),
    (lambda: Tensor(np.ones((2, 3))).sum(axis=2), ValueError, r"sum: .*axis 2.*\(input shapes \(2, 3\)\)"),
])
def test_errors_name_op_and_shapes(call, kind, message):
    with pytest.raises(kind, match=message):
        call()


# -- numerical stability ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stable_at_extreme_inputs(dtype):
    x = Tensor(np.array([1000.0, -1000.0, 0.0], dtype=dtype), requires_grad=True)
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # underflow to 0 is fine
        s = bptt.sigmoid(x)
        np.testing.assert_array_equal(s.data, np.array([1.0, 0.0, 0.5], dtype=dtype))
        sm = bptt.softmax(x)
        np.testing.assert_array_equal(sm.data, np.array([1.0, 0.0, 0.0], dtype=dtype))
        lsm = bptt.log_softmax(x)
        np.testing.assert_allclose(lsm.data, np.array([0.0, -2000.0, -1000.0], dtype=dtype))
        (s.sum() + (sm * np.array([1.0, 2.0, 3.0], dtype=dtype)).sum() + lsm[0]).backward()
    assert x.grad.dtype == dtype and np.all(np.isfinite(x.grad))
    # sigmoid' is 0 at both ends and 0.25 at 0; the saturated softmax passes nothing back, and
    # log_softmax[0]'s gradient e_0 - softmax(x) is 0 too
    np.testing.assert_allclose(x.grad, [0.0, 0.0, 0.25], atol=1e-6)


def test_tanh_gradient_at_large_inputs():
    x = Tensor(np.array([-800.0, -30.0, 30.0, 800.0]), requires_grad=True)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        x.tanh().sum().backward()
    np.testing.assert_array_equal(x.grad, np.zeros(4))


# -- declaration and registration ---------------------------------------------------------------

def test_no_module_level_name_in_ops_shadows_a_builtin():
    import builtins
    shadowing = [n for n in vars(ops) if not n.startswith("__") and hasattr(builtins, n)]
    assert not shadowing, f"bptt.ops shadows builtins: {shadowing}"


@pytest.mark.parametrize("public, cls", [("pow", "power"), ("abs", "absolute"), ("sum", "reduce_sum"),
                                         ("max", "reduce_max")])
def test_renamed_classes_keep_their_public_names(public, cls):
    op = getattr(ops, cls)
    assert op.name == public and ops.registry()[public] is op
    x = Tensor(np.array([[0.5, 2.0]]), requires_grad=True)
    y = getattr(bptt, public)(x, 2.0) if public == "pow" else getattr(bptt, public)(x)
    assert y._entry.op is op


def test_registry_holds_the_primitives_declared_outside_ops():
    table = ops.registry()
    declared_in = {op.fwd.__module__ for op in table.values()}
    assert {"bptt.ops", "bptt.nn.kernels"} <= declared_in
    assert table is not ops.registry()     # a copy: callers cannot unregister by accident


def test_error_messages_use_the_primitive_name():
    with pytest.raises(ValueError, match=r"^sum: .*axis 3"):
        bptt.sum(Tensor(np.ones((2, 3))), axis=3)


# -- forward mode: every primitive's jvp against central differences and against its VJP ------

def _forward_case(name, args, static, P=3, seed=0):
    """The op, its float64 inputs, P random tangents per float input and the outputs' jvp."""
    op = ops.registry()[name]
    if op.jvp is None and op.reference is None:
        pytest.skip(f"{name} declares no jvp and no reference (forward mode raises JVPError)")
    rng = np.random.default_rng(seed)
    inputs = _as_inputs(args)
    ts = [rng.standard_normal((P, *t.shape)) if isinstance(t, Tensor) else None for t in inputs]
    out, tout = forward.jvp(lambda *xs: op(*xs, **static), inputs, ts, batched=True)
    outs = out if isinstance(out, tuple) else (out,)
    tout = tout if isinstance(tout, tuple) else (tout,)
    return op, inputs, ts, outs, tout


@pytest.mark.parametrize("name, args, static", _cases())
def test_primitive_jvp_matches_central_differences(name, args, static):
    op, inputs, ts, outs, tout = _forward_case(name, args, static)
    eps = 1e-6

    def at(sign, p):
        xs = [Tensor(t.data + sign * eps * v[p]) if v is not None else t for t, v in zip(inputs, ts)]
        with bptt.no_grad():
            out = op(*xs, **static)
        return [o.data for o in (out if isinstance(out, tuple) else (out,))]

    for p in range(len(ts[next(i for i, v in enumerate(ts) if v is not None)])):
        for k, (up, down) in enumerate(zip(at(1, p), at(-1, p))):
            np.testing.assert_allclose(tout[k][p], (up - down) / (2 * eps), rtol=1e-5, atol=1e-7,
                                       err_msg=f"{name}: output {k}, tangent {p}")


@pytest.mark.parametrize("name, args, static", _cases())
def test_primitive_jvp_is_the_transpose_of_its_vjp(name, args, static):
    """<u, J v> = <J^T u, v> for random u and v: the jvp and the tape's VJP are one Jacobian."""
    op, inputs, ts, outs, tout = _forward_case(name, args, static)
    rng = np.random.default_rng(1)
    us = [rng.standard_normal(o.shape) for o in outs]
    out = op(*inputs, **static)
    _sum_all([(o * u).sum() for o, u in zip(out if isinstance(out, tuple) else (out,), us)]).backward()
    for p in range(len(tout[0])):
        u_jv = builtins.sum(float(np.sum(u * t[p])) for u, t in zip(us, tout))
        jtu_v = builtins.sum(float(np.sum((x.grad if x.grad is not None else 0.0) * v[p]))
                             for x, v in zip(inputs, ts) if v is not None)
        assert u_jv == pytest.approx(jtu_v, rel=1e-10, abs=1e-12), f"{name}: tangent {p}"


def _unregistered(**rules):
    """tanh as a primitive built (not registered) from its fwd and bwd and the given ``rules``."""
    spec = type("fused_tanh", (), {"fwd": staticmethod(lambda x: (np.tanh(x), np.tanh(x))),
                                   "bwd": staticmethod(lambda y, g, needs: (g * (1 - y * y),)),
                                   **{k: staticmethod(v) for k, v in rules.items()}})
    return ops.Primitive(spec)


def test_a_primitive_without_jvp_is_named_in_the_error():
    fused_tanh = _unregistered()
    x = np.array([0.5, 1.0])
    with pytest.raises(forward.JVPError, match=r"^fused_tanh: no jvp declared"):
        forward.jvp(lambda x: fused_tanh(x) * 2.0, [x], [np.ones(2)])
    # when no tangent reaches it, it needs none
    y, ty = forward.jvp(lambda x, c: x + fused_tanh(c), [x, Tensor(x)], [np.ones(2), None])
    np.testing.assert_array_equal(ty, np.ones(2))


def test_a_primitive_gets_its_tangents_through_its_reference():
    fused_tanh = _unregistered(reference=lambda x: 2.0 * bptt.sigmoid(2.0 * x) - 1.0)
    x = Tensor(np.array([0.3, -1.2, 2.0]), requires_grad=True)
    v = np.array([1.0, 2.0, -1.0])
    y, ty = forward.jvp(fused_tanh, [x], [v])
    np.testing.assert_allclose(y.data, np.tanh(x.data))
    np.testing.assert_allclose(ty, (1 - np.tanh(x.data) ** 2) * v, rtol=1e-12)
    # the reference ran for its tangents only: the tape holds the primitive's own entry
    assert y._entry.op is fused_tanh
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 1 - np.tanh(x.data) ** 2)


def test_jvp_of_a_composition_and_its_errors(rng):
    a = rng.standard_normal((3, 4))
    w = rng.standard_normal((5, 4))
    v = rng.standard_normal((2, 3, 4))

    def f(a, w):
        return bptt.softmax(bptt.linear(a, w).tanh(), axis=-1).sum(axis=0)

    y, ty = forward.jvp(f, [a, w], [v, None], batched=True)
    assert ty.shape == (2, 5)
    for p in range(2):
        _, t1 = forward.jvp(f, [a, w], [v[p], None])
        np.testing.assert_allclose(ty[p], t1, rtol=1e-12)
    with pytest.raises(ValueError, match=r"jvp: primal 0 has shape \(3, 4\) but its tangent \(4,\)"):
        forward.jvp(f, [a, w], [np.ones(4), None])
    with pytest.raises(ValueError, match="jvp: 2 primals but 1 tangents"):
        forward.jvp(f, [a, w], [v])
    with pytest.raises(RuntimeError, match="nested forward mode"):
        forward.jvp(lambda x: forward.jvp(bptt.tanh, [x], [np.ones(3)])[0], [np.ones(3)], [np.ones(3)])
