import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import bptt
from bptt import nn, ops
from bptt.tape import Tensor

REDUCTIONS = ["mean", "sum", "none"]


def _reduce(x, reduction):
    return {"mean": np.mean, "sum": np.sum, "none": lambda a: a}[reduction](x)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _away_from(rng, shape, kinks, low=-3, high=3, gap=0.1):
    """Differences d uniform in [low, high] but at least ``gap`` from every kink."""
    d = rng.uniform(low, high, shape)
    for k in kinks:
        near = np.abs(d - k) < gap
        d[near] = k + gap * np.where(d[near] >= k, 2, -2)
    return d


# -- values against numpy, by hand --------------------------------------------------------------

def test_small_cases_by_hand():
    p, t = np.array([1.0, -2.0, 0.5]), np.array([0.0, 0.0, 2.5])
    assert nn.mse_loss(p, t).item() == pytest.approx((1 + 4 + 4) / 3)
    assert nn.l1_loss(p, t, reduction="sum").item() == pytest.approx(1 + 2 + 2)
    # |d| = 1, 2, 2 with delta 1.5: 0.5, 1.5 * (2 - 0.75) twice
    np.testing.assert_allclose(nn.huber_loss(p, t, reduction="none", delta=1.5).data, [0.5, 1.875, 1.875])
    # logit 0 is probability 1/2: log 2 whatever the target
    np.testing.assert_allclose(nn.binary_cross_entropy_with_logits(np.zeros(2), np.array([0.0, 1.0]),
                                                                   reduction="none").data, [np.log(2)] * 2)
    # uniform logits over 4 classes: log 4
    assert nn.cross_entropy(np.zeros((2, 4)), np.array([0, 3])).item() == pytest.approx(np.log(4))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_regression_losses_match_numpy(reduction, rng):
    p, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    d = p - t
    np.testing.assert_allclose(nn.mse_loss(p, t, reduction).data, _reduce(d ** 2, reduction), rtol=1e-12)
    np.testing.assert_allclose(nn.l1_loss(p, t, reduction).data, _reduce(np.abs(d), reduction), rtol=1e-12)
    for delta in (1.0, 0.3):
        want = np.where(np.abs(d) < delta, 0.5 * d ** 2, delta * (np.abs(d) - 0.5 * delta))
        np.testing.assert_allclose(nn.huber_loss(p, t, reduction, delta=delta).data,
                                   _reduce(want, reduction), rtol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_matches_numpy(reduction, rng):
    x, y = rng.normal(0, 3, size=(5, 2)), rng.random((5, 2))
    want = -(y * np.log(_sigmoid(x)) + (1 - y) * np.log(1 - _sigmoid(x)))
    np.testing.assert_allclose(nn.binary_cross_entropy_with_logits(x, y, reduction).data,
                               _reduce(want, reduction), rtol=1e-10)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_matches_numpy(reduction, rng):
    x, y = rng.normal(0, 2, size=(6, 4)), rng.integers(0, 4, size=6)
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    want = -logp[np.arange(6), y]
    np.testing.assert_allclose(nn.cross_entropy(x, y, reduction).data, _reduce(want, reduction), rtol=1e-12)


@settings(max_examples=8, deadline=None, derandomize=True)
@given(lead=st.lists(st.integers(1, 3), min_size=0, max_size=3), classes=st.integers(1, 5))
def test_cross_entropy_any_leading_shape(lead, classes):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(*lead, classes))
    y = rng.integers(0, classes, size=tuple(lead))
    out = nn.cross_entropy(x, y, reduction="none")
    assert out.shape == tuple(lead)
    logp = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(out.data, -np.take_along_axis(logp, y[..., None], -1)[..., 0],
                               rtol=1e-12, atol=1e-14)


# -- gradients ----------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ["mse", "l1", "huber", "huber_small_delta", "bce"])
def test_elementwise_losses_gradcheck(name, reduction, rng):
    t = rng.normal(size=(3, 4))
    if name == "bce":
        t = rng.random((3, 4))
        fn = lambda p, t: nn.binary_cross_entropy_with_logits(p, t, reduction)  # noqa: E731
        p = rng.normal(0, 3, size=(3, 4))
    else:
        delta = 0.4 if name == "huber_small_delta" else 1.0
        kinks = {"mse": [], "l1": [0.0]}.get(name, [0.0, -delta, delta])
        p = t + _away_from(rng, (3, 4), kinks)
        fn = {"mse": lambda p, t: nn.mse_loss(p, t, reduction),
              "l1": lambda p, t: nn.l1_loss(p, t, reduction)}.get(
            name, lambda p, t: nn.huber_loss(p, t, reduction, delta=delta))
    # the gradient reaches the target too, when it is a Tensor that requires grad
    assert bptt.gradcheck(fn, [Tensor(p, requires_grad=True), Tensor(t, requires_grad=True)])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_gradcheck_and_closed_form(reduction, rng):
    x, y = rng.normal(size=(2, 3, 5)), rng.integers(0, 5, size=(2, 3))
    assert bptt.gradcheck(lambda x: nn.cross_entropy(x, y, reduction), [Tensor(x, requires_grad=True)])
    if reduction == "mean":
        xt = Tensor(x, requires_grad=True)
        nn.cross_entropy(xt, y).backward()
        softmax = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
        np.testing.assert_allclose(xt.grad, (softmax - np.eye(5)[y]) / 6, atol=1e-14)


def test_mean_mse_gradient_by_hand():
    p = Tensor(np.array([1.0, -2.0, 0.5, 4.0]), requires_grad=True)
    nn.mse_loss(p, np.zeros(4)).backward()
    np.testing.assert_allclose(p.grad, 2 * p.data / 4)


# -- large logits ---------------------------------------------------------------------------------

def test_bce_stable_at_large_logits():
    x = Tensor(np.array([1000.0, 1000.0, -1000.0, -1000.0]), requires_grad=True)
    y = np.array([1.0, 0.0, 0.0, 1.0])
    loss = nn.binary_cross_entropy_with_logits(x, y, reduction="none")
    np.testing.assert_array_equal(loss.data, [0.0, 1000.0, 0.0, 1000.0])
    loss.backward(np.ones(4))
    np.testing.assert_array_equal(x.grad, [0.0, 1.0, 0.0, -1.0])     # sigmoid(x) - y
    x32 = np.array([1000.0, -1000.0], np.float32)
    out = nn.binary_cross_entropy_with_logits(x32, np.array([0.0, 0.0], np.float32), reduction="sum")
    assert out.dtype == np.float32 and out.item() == 1000.0


def test_cross_entropy_stable_at_large_logits():
    x = Tensor(np.array([[1000.0, -1000.0, 0.0]] * 3), requires_grad=True)
    y = np.array([0, 1, 2])
    loss = nn.cross_entropy(x, y, reduction="none")
    np.testing.assert_array_equal(loss.data, [0.0, 2000.0, 1000.0])
    loss.backward(np.ones(3))
    np.testing.assert_array_equal(x.grad, [[0, 0, 0], [1, -1, 0], [1, 0, -1]])
    loss32 = nn.cross_entropy(x.data.astype(np.float32), y)
    assert loss32.dtype == np.float32 and np.isfinite(loss32.item())


def test_softplus_primitive():
    x = np.array([-1000.0, -30.0, 0.0, 2.0, 1000.0])
    np.testing.assert_allclose(ops.softplus(x).data, [0.0, np.exp(-30.0), np.log(2), np.log1p(np.exp(2)), 1000.0],
                               rtol=1e-12)
    t = Tensor(x, requires_grad=True)
    ops.softplus(t).backward(np.ones(5))
    # sigmoid's tanh form is exact to 1e-16 absolute, not relative, in the far negative tail
    np.testing.assert_allclose(t.grad, [0.0, np.exp(-30.0) / (1 + np.exp(-30.0)), 0.5, _sigmoid(2.0), 1.0],
                               rtol=1e-12, atol=1e-16)
    assert bptt.gradcheck(lambda a: ops.softplus(a), [Tensor(np.linspace(-5, 5, 7), requires_grad=True)])


# -- modules --------------------------------------------------------------------------------------

@pytest.mark.parametrize("module, fn", [(nn.MSELoss, nn.mse_loss), (nn.L1Loss, nn.l1_loss),
                                        (nn.HuberLoss, nn.huber_loss),
                                        (nn.BCEWithLogitsLoss, nn.binary_cross_entropy_with_logits)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_modules_equal_functions(module, fn, reduction, rng):
    p, t = rng.normal(size=(3, 2)), rng.random((3, 2))
    np.testing.assert_array_equal(module(reduction=reduction)(p, t).data, fn(p, t, reduction).data)


def test_loss_modules_options():
    x, y = np.random.default_rng(0).normal(size=(4, 3)), np.array([0, 2, 1, 1])
    np.testing.assert_array_equal(nn.CrossEntropyLoss("sum")(x, y).data, nn.cross_entropy(x, y, "sum").data)
    h = nn.HuberLoss(delta=0.5)
    assert repr(h) == "HuberLoss(reduction='mean', delta=0.5)"
    p, t = np.array([2.0]), np.array([0.0])
    assert h(p, t).item() == pytest.approx(0.5 * (2 - 0.25))
    assert nn.MSELoss().num_parameters() == 0


def test_dtypes():
    p32 = Tensor(np.ones(3, np.float32), requires_grad=True)
    loss = nn.mse_loss(p32, np.zeros(3))     # float64 target: computed in the prediction's float32
    assert loss.dtype == np.float32
    loss.backward()
    assert p32.grad.dtype == np.float32
    assert nn.mse_loss([1.0, 2.0], [1.0, 0.0]).item() == pytest.approx(2.0)   # lists take the default dtype


# -- bad input ------------------------------------------------------------------------------------

def test_shape_mismatch_names_loss_and_shapes():
    with pytest.raises(ValueError, match=r"mse_loss: input of shape \(4, 1\) and target of shape \(4,\) differ"):
        nn.mse_loss(np.zeros((4, 1)), np.zeros(4))
    with pytest.raises(ValueError, match=r"binary_cross_entropy_with_logits: input of shape \(3,\)"):
        nn.BCEWithLogitsLoss()(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match=r"cross_entropy: input of shape \(4, 3\) needs a target of shape "
                                         r"\(4,\) .*got \(4, 1\)"):
        nn.cross_entropy(np.zeros((4, 3)), np.zeros((4, 1), int))


def test_dtype_errors():
    with pytest.raises(TypeError, match="l1_loss: input has dtype int64"):
        nn.l1_loss(np.arange(3), np.zeros(3))
    with pytest.raises(TypeError, match="huber_loss: target has dtype int64"):
        nn.huber_loss(np.zeros(3), np.arange(3))
    with pytest.raises(TypeError, match="cross_entropy: target has dtype float64; need integer class"):
        nn.cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match=r"cross_entropy: input \(logits\) has dtype int64"):
        nn.cross_entropy(np.zeros((2, 3), int), np.array([0, 1]))


def test_option_errors():
    with pytest.raises(ValueError, match="cross_entropy: target holds 3, outside the 3 classes"):
        nn.cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="cross_entropy: target holds -1"):
        nn.cross_entropy(np.zeros((2, 3)), np.array([-1, 0]))
    with pytest.raises(ValueError, match="mse_loss: reduction must be one of 'mean', 'sum', 'none', got 'avg'"):
        nn.mse_loss(np.zeros(2), np.zeros(2), reduction="avg")
    with pytest.raises(ValueError, match="MSELoss: reduction must be one of"):
        nn.MSELoss("batchmean")
    with pytest.raises(ValueError, match="HuberLoss: delta must be positive, got -1"):
        nn.HuberLoss(delta=-1)
