"""The tape's behaviour: accumulation, freeing, retain_graph, no_grad, detach, retain_grad, dtypes,
long chains, composite functions and memory over a long training loop."""

import gc
import tracemalloc

import numpy as np
import pytest

import bptt
from bptt import Tensor
from bptt.ops import Primitive
from bptt.tape import Entry


def _param(a):
    return Tensor(np.array(a, dtype=np.float64), requires_grad=True)


# -- accumulation -------------------------------------------------------------------------------

def test_grads_add_up_until_zeroed():
    x = _param([1.0, 2.0])
    (x * 3.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0 + 2.0, 3.0 + 4.0])
    x.zero_grad()
    assert x.grad is None
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])


def test_a_value_used_twice_gets_both_contributions():
    x = _param([0.5, -1.0])
    h = x.tanh()                       # h fans out to three uses
    loss = (h * h + h + h * 2.0).sum()
    loss.backward()
    t = np.tanh(x.data)
    np.testing.assert_allclose(x.grad, (2 * t + 3) * (1 - t * t), rtol=1e-14)


def test_backward_with_grad_for_non_scalars():
    x = _param(np.arange(6.0).reshape(2, 3))
    y = x * x
    g = np.array([[1.0, 0.0, -1.0], [2.0, 0.5, 0.0]])
    y.backward(g)
    np.testing.assert_array_equal(x.grad, 2 * x.data * g)


def test_backward_of_a_non_scalar_without_grad_is_an_error():
    y = _param(np.ones((2, 3))) * 2.0
    with pytest.raises(RuntimeError, match=r"backward: a non-scalar tensor of shape \(2, 3\) needs grad="):
        y.backward()
    with pytest.raises(ValueError, match=r"backward: grad has shape \(3,\), tensor has shape \(2, 3\)"):
        y.backward(np.ones(3))


def test_backward_of_a_tensor_outside_the_tape_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(3)).sum().backward()


def test_backward_from_a_leaf():
    x = _param([1.0, 2.0])
    x.backward(np.array([3.0, 4.0]))
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])


def test_leaf_gradients_keep_the_leaf_dtype():
    w = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    y = (w * np.array([1.0, 2.0, 3.0])).sum()   # float64 constant: y is float64
    assert y.dtype == np.float64
    y.backward()
    assert w.grad.dtype == np.float32
    np.testing.assert_array_equal(w.grad, [1.0, 2.0, 3.0])


def test_broadcast_gradient_reduces_to_the_input_shape():
    b = _param([1.0, 2.0, 3.0])
    x = _param(np.ones((4, 1)))
    (x * b).sum().backward()
    np.testing.assert_array_equal(b.grad, [4.0, 4.0, 4.0])
    np.testing.assert_array_equal(x.grad, np.full((4, 1), 6.0))


def test_a_vjp_of_the_wrong_shape_is_named():
    class badshape:
        def fwd(x):
            return 2 * x, None

        def bwd(res, g, needs):
            return (np.ones(7),)

    with pytest.raises(ValueError, match=r"badshape: cotangent of shape \(7,\) cannot reduce to .* \(3,\)"):
        Primitive(badshape)(_param(np.ones(3))).sum().backward()


# -- freeing and retain_graph -------------------------------------------------------------------

def test_backward_frees_the_entries_and_a_second_backward_says_retain_graph():
    x = _param([1.0, 2.0])
    h = x.tanh()
    loss = (h * 2.0).sum()
    loss.backward()
    assert loss._entry.freed and h._entry.freed
    assert h._entry.res is None       # the residuals (tanh's output) are released
    grad = x.grad.copy()
    with pytest.raises(RuntimeError, match=r"'sum' was freed by an earlier backward; pass retain_graph=True"):
        loss.backward()
    np.testing.assert_array_equal(x.grad, grad)
    # an entry freed further down stops a new root too, before any gradient is touched
    with pytest.raises(RuntimeError, match=r"'tanh' was freed.*retain_graph=True"):
        (h * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, grad)


def test_retain_graph_allows_backward_twice():
    x = _param([1.0, 2.0])
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    assert not loss._entry.freed
    loss.backward(retain_graph=True)
    np.testing.assert_array_equal(x.grad, 2 * (2 * x.data))
    loss.backward()
    np.testing.assert_array_equal(x.grad, 3 * (2 * x.data))
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        loss.backward()


# -- no_grad, detach, retain_grad ---------------------------------------------------------------

def test_no_grad_records_nothing():
    x = _param([1.0, 2.0])
    with bptt.no_grad():
        assert not bptt.is_grad_enabled()
        y = (x * x).tanh()
        with bptt.enable_grad():
            z = x * x
    assert bptt.is_grad_enabled()
    assert y._entry is None and not y.requires_grad
    np.testing.assert_allclose(y.data, np.tanh(x.data ** 2))
    assert z._entry is not None and z.requires_grad


def test_detach_cuts_the_tape():
    x = _param([1.0, 2.0])
    d = x.detach()
    assert not d.requires_grad and d._entry is None and d.data is x.data
    (d * x).sum().backward()
    np.testing.assert_array_equal(x.grad, x.data)       # not 2 x: d is a constant
    h = x.tanh()
    (h.detach() * h).sum().backward()
    np.testing.assert_allclose(x.grad, x.data + np.tanh(x.data) * (1 - np.tanh(x.data) ** 2))


def test_retain_grad_keeps_the_gradient_of_an_intermediate():
    x = _param([0.3, -0.7])
    h = x.tanh().retain_grad()
    u = h * 2.0                        # not retained
    loss = (h * h).sum() + u.sum()
    loss.retain_grad()
    loss.backward()
    np.testing.assert_allclose(h.grad, 2 * h.data + 2.0, rtol=1e-14)   # total dL/dh over both uses
    assert u.grad is None
    np.testing.assert_array_equal(loss.grad, 1.0)
    np.testing.assert_allclose(x.grad, h.grad * (1 - h.data ** 2), rtol=1e-14)


def test_retain_grad_on_one_output_of_a_multiple_output_primitive():
    x = _param(np.arange(4.0))
    a, b = bptt.split(x, 2)
    b.retain_grad()
    a.retain_grad()
    (b * np.array([5.0, 7.0])).sum().backward()
    np.testing.assert_array_equal(b.grad, [5.0, 7.0])
    assert a.grad is None                                # no gradient reached it
    np.testing.assert_array_equal(x.grad, [0, 0, 5, 7])


def test_retain_grad_needs_requires_grad():
    with pytest.raises(RuntimeError, match="retain_grad: tensor does not require grad"):
        Tensor(np.ones(2)).retain_grad()


# -- an entry keeps the values it was recorded with --------------------------------------------

def test_rebinding_a_parameter_after_forward_does_not_change_backward():
    w = _param([1.0, 2.0])
    x = _param([3.0, 4.0])
    loss = (w * x).sum()
    y = (x @ w).tanh()
    w.data = w.data - 10.0               # an optimizer step between forward and backward
    x.data = np.zeros(2)
    loss.backward()
    np.testing.assert_array_equal(w.grad, [3.0, 4.0])
    np.testing.assert_array_equal(x.grad, [1.0, 2.0])
    w.zero_grad()
    y.backward()
    np.testing.assert_allclose(w.grad, (1 - np.tanh(11.0) ** 2) * np.array([3.0, 4.0]))


# -- dtypes -------------------------------------------------------------------------------------

def test_dtype_rules():
    assert Tensor([1, 2, 3]).dtype == np.float32            # lists take the default dtype
    assert Tensor(2.5).dtype == np.float32 and Tensor(2.5).shape == ()
    assert Tensor(np.arange(3)).dtype == np.int64           # arrays keep theirs
    assert Tensor(np.ones(2, dtype=np.float64)).dtype == np.float64
    assert Tensor(np.float64(1.0)).dtype == np.float64
    assert Tensor([1, 2], dtype=np.float64).dtype == np.float64
    x = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    assert (x * 2.0 + 1).dtype == np.float32                # Python scalars do not promote
    bptt.set_default_dtype(np.float64)
    assert bptt.get_default_dtype() == np.float64
    assert Tensor([1, 2, 3]).dtype == np.float64
    with pytest.raises(TypeError, match="set_default_dtype: need a floating dtype, got int32"):
        bptt.set_default_dtype(np.int32)


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="Tensor: only floating-point tensors can require grad, got int64"):
        Tensor(np.arange(3), requires_grad=True)
    with pytest.raises(TypeError, match="requires_grad_: only floating-point tensors"):
        Tensor(np.arange(3)).requires_grad_()


def test_tensor_attributes():
    x = Tensor(np.arange(6.0).reshape(2, 3))
    assert (x.shape, x.ndim, x.size, len(x), x.dtype) == ((2, 3), 2, 6, 2, np.float64)
    assert x.numpy() is x.data and x.sum().item() == 15.0 and isinstance(x.sum().item(), float)


# -- long chains --------------------------------------------------------------------------------

def test_a_10000_step_chain_backward_without_recursion():
    x = _param([1.0, -2.0])
    h = x
    for _ in range(10_000):
        h = h * 1.0001 + 0.0
    h.sum().backward(retain_graph=True)
    np.testing.assert_allclose(x.grad, 1.0001 ** 10_000, rtol=1e-10)
    del h   # the retained 20,000-entry chain is released without recursing either
    gc.collect()


# -- composite functions ------------------------------------------------------------------------

def test_small_mlp_gradcheck(rng):
    x = Tensor(rng.standard_normal((5, 3)))
    targets = np.array([0, 2, 1, 1, 0])
    params = [_param(rng.standard_normal(s) * 0.5) for s in [(3, 4), (4,), (2, 4), (2,), (4, 3)]]

    def mlp(W1, b1, W2, b2, W3):
        h = (x @ W1 + b1).tanh()
        h = bptt.linear(h, W2, b2).sigmoid()
        h = bptt.concat([h, h.relu() * 0.5], axis=1)          # (5, 4)
        logp = bptt.log_softmax(h @ W3, axis=1)
        return -logp[np.arange(5), targets].mean()

    assert bptt.gradcheck(mlp, params)


def test_unrolled_tanh_recurrence_gradcheck(rng):
    T, B, I, H = 6, 3, 2, 4
    xs = rng.standard_normal((T, B, I))
    W_x, W_h, b = _param(rng.standard_normal((I, H))), _param(rng.standard_normal((H, H)) * 0.5), _param(np.zeros(H))
    h0 = _param(rng.standard_normal((B, H)) * 0.1)

    def rnn(W_x, W_h, b, h0):
        h = h0
        outs = []
        for t in range(T):
            h = bptt.tanh(xs[t] @ W_x + h @ W_h + b)
            outs.append(h)
        ys = bptt.stack(outs)                                 # (T, B, H)
        return (ys * ys).mean() + h.sum()

    assert bptt.gradcheck(rnn, [W_x, W_h, b, h0])


# -- memory over a long training loop -----------------------------------------------------------

def _live_entries():
    return sum(1 for o in gc.get_objects() if type(o) is Entry)


def test_a_10000_iteration_training_loop_does_not_grow():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3))
    y = rng.standard_normal((4, 1))
    params = [_param(rng.standard_normal(s) * 0.3) for s in [(3, 5), (5,), (5, 1)]]

    def step():
        W1, b1, W2 = params
        loss = (((x @ W1 + b1).tanh() @ W2 - y) ** 2).mean()
        for p in params:
            p.grad = None
        loss.backward()
        for p in params:
            p.data = p.data - 0.05 * p.grad
        return loss

    gc.collect()
    baseline = _live_entries()
    tracemalloc.start()
    try:
        for i in range(1, 10_001):
            loss = step()
            if i == 1:
                first = loss.item()
            if i == 1_000:
                entries_1000 = _live_entries()
                current_1000, _ = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
        current_10000, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert _live_entries() == entries_1000 <= baseline + 7   # only the last step's entries live
    assert current_10000 - current_1000 < 16_384, (current_1000, current_10000)
    assert peak - current_1000 < 32_768, (current_1000, peak)
    assert loss.item() < 0.5 * first                          # and it did train
