import math
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import bptt
import bptt.io
from bptt import nn
from bptt.nn import init
from bptt.tape import Tensor


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.ones(1, np.float32))
        self.body = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Dropout(0.5), nn.Linear(4, 2))
        self.head = nn.Linear(2, 1, bias=False)

    def forward(self, x):
        return self.head(self.body(x)) * self.scale


# -- traversal and naming ---------------------------------------------------------------------------

def test_named_parameters_in_registration_order():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == [
        "scale", "body.0.weight", "body.0.bias", "body.3.weight", "body.3.bias", "head.weight"]
    assert [n for n, _ in net.named_modules()] == ["", "body", "body.0", "body.1", "body.2", "body.3", "head"]
    assert net.num_parameters() == 1 + 12 + 4 + 8 + 2 + 2
    assert isinstance(net.body[0], nn.Linear) and len(net.body) == 4


def test_shared_parameter_listed_once_and_reassignment_replaces():
    net = Net()
    net.head.weight = net.body[3].bias.__class__(np.ones((1, 2), np.float32))
    net.extra = net.scale                      # the same Parameter under a second name
    names = [n for n, _ in net.named_parameters()]
    assert names.count("extra") == 0 and len(names) == 6
    net.head = nn.Identity()                   # a module replaced: its parameters are gone
    assert "head.weight" not in dict(net.named_parameters())
    del net.body
    assert [n for n, _ in net.named_parameters()] == ["scale"]


def test_module_needs_super_init():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(1))

    with pytest.raises(RuntimeError, match=r"Bad: call super\(\).__init__\(\) before assigning attributes"):
        Bad()


def test_parameter_requires_grad_and_zero_grad():
    net = Net()
    assert all(p.requires_grad for p in net.parameters())
    net(np.ones((5, 3), np.float32)).sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    with pytest.raises(TypeError, match="only floating-point tensors can require grad"):
        nn.Parameter(np.arange(3))


# -- state dicts and files ------------------------------------------------------------------------------

def test_state_dict_round_trip_copies():
    a, b = Net(), Net()
    sd = a.state_dict()
    sd["scale"][:] = 5.0
    assert a.scale.data[0] == 1.0                      # a copy
    b.load_state_dict(a.state_dict())
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    np.testing.assert_array_equal(a.eval()(x).data, b.eval()(x).data)
    b.load_state_dict({k: v.astype(np.float64) for k, v in a.state_dict().items()})
    assert b.body[0].weight.dtype == np.float32          # keeps the parameter's dtype


def test_load_state_dict_lists_every_problem():
    net = Net()
    sd = net.state_dict()
    del sd["scale"], sd["head.weight"]
    sd["body.0.weight"] = np.zeros((4, 5))
    sd["tail.bias"] = np.zeros(1)
    with pytest.raises(ValueError) as err:
        net.load_state_dict(sd)
    msg = str(err.value)
    assert msg.startswith("Net.load_state_dict: missing keys: scale, head.weight; unexpected keys: tail.bias; ")
    assert r"mis-shaped keys: body.0.weight: expected (4, 3), got (4, 5)" in msg
    # strict=False forgives missing and unexpected keys, never wrong shapes
    with pytest.raises(ValueError, match="mis-shaped keys: body.0.weight"):
        net.load_state_dict(sd, strict=False)
    del sd["body.0.weight"]
    before = net.scale.data.copy()
    net.load_state_dict(sd, strict=False)
    np.testing.assert_array_equal(net.scale.data, before)


def test_save_load_npz(tmp_path):
    a, b = Net(), Net()
    path = tmp_path / "sub" / "net.npz"
    a.save(path)
    with np.load(path, allow_pickle=False) as f:
        assert sorted(f.files) == sorted(a.state_dict())
    b.load(path)
    for (n, p), (m, q) in zip(a.named_parameters(), b.named_parameters()):
        assert n == m
        np.testing.assert_array_equal(p.data, q.data)


def test_save_is_atomic(tmp_path, monkeypatch):
    net = Net()
    path = tmp_path / "net.npz"
    net.save(path)
    before = path.read_bytes()

    def broken(f, **arrays):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(bptt.io.np, "savez", broken)
    net.scale.data = np.full(1, 7.0, np.float32)
    with pytest.raises(OSError, match="disk full"):
        net.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["net.npz"]        # no temporary left behind


def test_load_refuses_pickles_and_junk(tmp_path):
    np.savez(tmp_path / "obj.npz", scale=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="holds an object array"):
        Net().load(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz: "):
        Net().load(tmp_path / "junk.npz")


# -- modes and dtypes -----------------------------------------------------------------------------

def test_train_eval_switches_dropout_everywhere():
    net = Net()
    x = np.ones((200, 3), np.float32)
    assert net.training and net.body[2].training
    net.eval()
    assert not any(m.training for m in net.modules())
    h = net.body[1](net.body[0](x))
    np.testing.assert_array_equal(net.body[2](h).data, h.data)
    net.train()
    dropped = net.body[2](h).data
    zeros = np.mean(dropped == 0)
    assert 0.4 < zeros < 0.6
    np.testing.assert_allclose(dropped[dropped != 0], 2 * h.data[dropped != 0], rtol=1e-6)


def test_to_dtype():
    net = Net().to(np.float64)
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net.eval()(np.ones((2, 3))).dtype == np.float64
    with pytest.raises(TypeError, match="Net.to: need a floating dtype, got int32"):
        net.to(np.int32)


# -- Linear ---------------------------------------------------------------------------------------

@settings(max_examples=10, deadline=None, derandomize=True)
@given(lead=st.lists(st.integers(1, 4), min_size=0, max_size=3), bias=st.booleans())
def test_linear_over_the_last_axis_of_any_rank(lead, bias):
    layer = nn.Linear(3, 2, bias=bias, dtype=np.float64)
    x = np.random.default_rng(len(lead)).normal(size=(*lead, 3))
    y = layer(x)
    want = x @ layer.weight.data.T + (layer.bias.data if bias else 0)
    assert y.shape == (*lead, 2)
    np.testing.assert_allclose(y.data, want, rtol=1e-12)


def test_linear_gradcheck_rank3():
    layer = nn.Linear(4, 3, dtype=np.float64)
    x = Tensor(np.random.default_rng(0).normal(size=(2, 5, 4)), requires_grad=True)
    assert bptt.gradcheck(lambda x, w, b: bptt.linear(x, w, b), [x, layer.weight, layer.bias])


def test_linear_init_bounds_as_pytorch():
    layer = nn.Linear(100, 300)
    bound = 1 / math.sqrt(100)
    w, b = layer.weight.data, layer.bias.data
    assert layer.weight.shape == (300, 100) and layer.bias.shape == (300,) and w.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert np.abs(b).max() <= bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.01 * bound     # uniform: std = bound / sqrt 3
    assert repr(layer) == "Linear(in_features=100, out_features=300, bias=True)"


def test_linear_bad_input():
    layer = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"Linear\(in_features=3, out_features=2, bias=True\): input of "
                                         r"shape \(4, 5\) has 5 features in its last axis, expected 3"):
        layer(np.zeros((4, 5), np.float32))
    with pytest.raises(TypeError, match=r"Linear\(in_features=3.*input has dtype int64; need floating point"):
        layer(np.zeros((4, 3), dtype=np.int64))
    with pytest.raises(TypeError, match="input has dtype object"):
        layer(np.array([[1, 2, None]], dtype=object))
    with pytest.raises(ValueError, match="Linear: in_features must be a positive integer, got 0"):
        nn.Linear(0, 2)
    with pytest.raises(TypeError, match="Sequential: item 1 is a ufunc, not a Module"):
        nn.Sequential(nn.Tanh(), np.tanh)


def test_activations():
    x = np.array([-2.0, -0.5, 0.5, 2.0])
    np.testing.assert_allclose(nn.Tanh()(x).data, np.tanh(x))
    np.testing.assert_allclose(nn.Sigmoid()(x).data, 1 / (1 + np.exp(-x)))
    np.testing.assert_array_equal(nn.ReLU()(x).data, [0, 0, 0.5, 2.0])
    np.testing.assert_allclose(nn.LeakyReLU(0.1)(x).data, [-0.2, -0.05, 0.5, 2.0])
    assert nn.Identity()(x) is x
    t = Tensor(x, requires_grad=True)
    assert bptt.gradcheck(lambda t: nn.LeakyReLU(0.1)(t), [t])


# -- initialisers ---------------------------------------------------------------------------------

def _p(*shape):
    return nn.Parameter(np.zeros(shape))


def test_xavier_and_kaiming_bounds_and_stds():
    fan_in, fan_out = 200, 300
    w = init.xavier_uniform_(_p(fan_out, fan_in), gain=2.0).data
    bound = 2.0 * math.sqrt(6 / (fan_in + fan_out))
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    w = init.xavier_normal_(_p(fan_out, fan_in)).data
    assert w.std() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.02)
    w = init.kaiming_uniform_(_p(fan_out, fan_in), nonlinearity="relu").data
    bound = math.sqrt(2) * math.sqrt(3 / fan_in)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    w = init.kaiming_normal_(_p(fan_out, fan_in), mode="fan_out", nonlinearity="relu").data
    assert w.std() == pytest.approx(math.sqrt(2 / fan_out), rel=0.02)
    w = init.kaiming_normal_(_p(10, 20, 3)).data      # conv-style fans: 20 * 3 in
    assert w.shape == (10, 20, 3)
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))


@pytest.mark.parametrize("shape", [(6, 6), (8, 3), (3, 8), (4, 2, 3)])
def test_orthogonal_is_orthogonal(shape):
    w = init.orthogonal_(_p(*shape), gain=1.5).data.reshape(shape[0], -1)
    rows, cols = w.shape
    gram = w.T @ w if rows >= cols else w @ w.T
    np.testing.assert_allclose(gram, 1.5 ** 2 * np.eye(min(rows, cols)), atol=1e-12)


def test_uniform_normal_constant_eye():
    w = init.uniform_(_p(100, 100), -0.3, 0.7).data
    assert w.min() >= -0.3 and w.max() < 0.7 and w.mean() == pytest.approx(0.2, abs=0.01)
    w = init.normal_(_p(100, 100), 1.0, 0.5).data
    assert w.mean() == pytest.approx(1.0, abs=0.02) and w.std() == pytest.approx(0.5, rel=0.02)
    np.testing.assert_array_equal(init.eye_(_p(2, 3), gain=2).data, [[2, 0, 0], [0, 2, 0]])
    np.testing.assert_array_equal(init.zeros_(_p(2)).data, [0, 0])
    p32 = nn.Parameter(np.zeros((3, 3), np.float32))
    assert init.orthogonal_(p32).dtype == np.float32
    with pytest.raises(ValueError, match=r"xavier_uniform_: fan in and fan out need .* got shape \(5,\)"):
        init.xavier_uniform_(_p(5))
    with pytest.raises(ValueError, match="calculate_gain: unknown nonlinearity 'swish'"):
        init.calculate_gain("swish")


def test_init_uses_given_generator():
    a = init.normal_(_p(3, 3), rng=np.random.default_rng(9)).data
    b = init.normal_(_p(3, 3), rng=np.random.default_rng(9)).data
    np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="rng: need a numpy.random.Generator"):
        init.normal_(_p(2, 2), rng=9)


# -- seeding --------------------------------------------------------------------------------------

def test_seed_makes_everything_reproducible():
    def run():
        net = Net()
        y = net(np.ones((4, 3), np.float32))         # dropout masks come from the same generator
        return net.state_dict(), y.data

    bptt.seed(11)
    sd1, y1 = run()
    bptt.seed(11)
    sd2, y2 = run()
    bptt.seed(12)
    sd3, _ = run()
    for k in sd1:
        np.testing.assert_array_equal(sd1[k], sd2[k])
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(sd1["body.0.weight"], sd3["body.0.weight"])
