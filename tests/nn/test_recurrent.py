"""Recurrent cells, sequence modules and SequenceModel: gradients, fused == reference, options, errors."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import bptt
from bptt import Tensor, nn, ops
from bptt.nn import registry as registry

F64 = np.float64
# every registered cell, once per choice of each of its options: a new cell is tested with no edit
CASES = [(c.name, v) for c in registry.registered() for v in c.variants()]
CASE_IDS = ["-".join([name, *map(str, v.values())]) for name, v in CASES]
LAYOUTS = [{}, {"num_layers": 2}, {"bidirectional": True}, {"batch_first": True},
           {"num_layers": 2, "bidirectional": True, "bias": False}]


def _tensor(rng, *shape):
    return Tensor(rng.standard_normal(shape), requires_grad=True)


def _random_state(cell, rng, shape):
    """A state of the cell's structure: one tensor, or a tuple such as an LSTM's (h, c)."""
    parts = tuple(_tensor(rng, *shape) for _ in registry.get(cell).state)
    return parts if len(parts) > 1 else parts[0]


def _state(module, rng, batch, given_state):
    if not given_state:
        return None
    return _random_state(module.cell, rng, (module.num_layers * module.num_directions, batch,
                                            module.hidden_size))


def _flat(state):
    return list(state) if isinstance(state, tuple) else [state]


def _objective(module, x, state):
    """A scalar reading the outputs and every final state, so every path is checked."""
    y, final = module(x, state)
    total = (y * Tensor(np.sin(np.arange(y.size)).reshape(y.shape))).sum()
    for k, s in enumerate(_flat(final)):
        total = total + (s * (k + 2.0)).sum()
    return total


def _grads(module, x, state):
    """Output and every gradient (input, state, parameters) of ``_objective``."""
    module.zero_grad()
    leaves = [x] + ([] if state is None else _flat(state))
    for t in leaves:
        t.grad = None
    y, final = module(x, state)
    _objective(module, x, state).backward()
    return [y.data] + [s.data for s in _flat(final)] + [t.grad for t in leaves] + \
        [p.grad for p in module.parameters()]


def _assert_fused_equals_reference(module, x, state):
    """The fused path's output and gradients equal the reference path's (float64)."""
    results = []
    for fused in (True, False):
        module.fused = fused
        results.append(_grads(module, x, state))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


# -- cells --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("given_state", [True, False])
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_cell_gradcheck(name, options, given_state, fused, rng):
    cell = nn.Cell(name, 3, 4, dtype=F64, fused=fused, **options)
    x = _tensor(rng, 2, 3)
    state = _random_state(name, rng, (2, 4)) if given_state else None

    def fn(*_):
        out = cell(x, state)
        h, c = out if isinstance(out, tuple) else (out, None)
        total = (h * Tensor(np.cos(np.arange(8.0)).reshape(2, 4))).sum()
        return total if c is None else total + (c * 3.0).sum()

    assert bptt.gradcheck(fn, [x, *cell.parameters(), *([] if state is None else _flat(state))])


@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_cell_fused_equals_reference(name, options, rng):
    cell = nn.Cell(name, 5, 6, dtype=F64, **options)
    x = rng.standard_normal((3, 5))
    outs = []
    for fused in (True, False):
        cell.fused = fused
        cell.zero_grad()
        out = cell(x)
        h, c = out if isinstance(out, tuple) else (out, None)
        loss = (h * h).sum() if c is None else (h * h).sum() + c.sum()
        loss.backward()
        outs.append([h.data] + [p.grad for p in cell.parameters()])
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_lstm_cell_by_hand():
    """One unit, weights chosen so each gate's pre-activation is known: a value computed by hand."""
    cell = nn.LSTMCell(1, 1, dtype=F64)
    cell.load_state_dict({"weight_ih": np.array([[1.0], [2.0], [3.0], [4.0]]),
                          "weight_hh": np.array([[0.5], [0.0], [-1.0], [1.0]]),
                          "bias_ih": np.array([0.0, 1.0, 0.0, 0.0]),
                          "bias_hh": np.array([0.0, 0.0, 0.5, -1.0])})
    x, h, c = 0.5, 2.0, -1.0
    sig = lambda a: 1 / (1 + math.exp(-a))  # noqa: E731
    i, f = sig(0.5 + 1.0), sig(1.0 + 1.0)
    g, o = math.tanh(1.5 - 2.0 + 0.5), sig(2.0 + 2.0 - 1.0)
    c_new = f * c + i * g
    for fused in (True, False):
        cell.fused = fused
        h1, c1 = cell(np.array([[x]]), (np.array([[h]]), np.array([[c]])))
        assert c1.item() == pytest.approx(c_new, abs=1e-15)
        assert h1.item() == pytest.approx(o * math.tanh(c_new), abs=1e-15)


def test_gru_cell_by_hand():
    """n uses r * (W_hn h + b_hn), PyTorch's form: b_hn is inside the reset gate's product."""
    cell = nn.GRUCell(1, 1, dtype=F64)
    cell.load_state_dict({"weight_ih": np.array([[1.0], [-1.0], [2.0]]),
                          "weight_hh": np.array([[0.5], [0.25], [3.0]]),
                          "bias_ih": np.array([0.0, 0.0, 0.1]),
                          "bias_hh": np.array([0.0, 0.0, 0.7])})
    x, h = 0.4, -0.6
    sig = lambda a: 1 / (1 + math.exp(-a))  # noqa: E731
    r, z = sig(0.4 - 0.3), sig(-0.4 - 0.15)
    n = math.tanh(0.8 + 0.1 + r * (-1.8 + 0.7))
    for fused in (True, False):
        cell.fused = fused
        assert cell(np.array([[x]]), np.array([[h]])).item() == pytest.approx((1 - z) * n + z * h, abs=1e-15)


# -- sequence modules ---------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()) or "plain")
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_sequence_gradcheck(name, options, layout, rng):
    module = nn.Recurrent(name, 2, 3, dtype=F64, **options, **layout)
    x = _tensor(rng, *((2, 4, 2) if layout.get("batch_first") else (4, 2, 2)))
    state = _state(module, rng, 2, given_state=layout.get("num_layers") != 2)
    inputs = [x, *module.parameters(), *([] if state is None else _flat(state))]
    assert bptt.gradcheck(lambda *_: _objective(module, x, state), inputs)


@pytest.mark.parametrize("given_state", [True, False])
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()) or "plain")
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_sequence_fused_equals_reference(name, options, layout, given_state, rng):
    module = nn.Recurrent(name, 3, 5, dtype=F64, **options, **layout)
    x = _tensor(rng, 6, 4, 3)
    state = _state(module, rng, 4 if not layout.get("batch_first") else 6, given_state)
    _assert_fused_equals_reference(module, x, state)


@settings(max_examples=8, deadline=None)
@given(cell=st.sampled_from(registry.names()), T=st.integers(1, 5), B=st.integers(1, 3),
       I=st.integers(1, 4), H=st.integers(1, 4), seed=st.integers(0, 2 ** 16))
def test_fused_equals_reference_over_shapes(cell, T, B, I, H, seed):
    bptt.seed(seed)
    module = nn.Recurrent(cell, I, H, dtype=F64, bidirectional=True)
    x = _tensor(np.random.default_rng(seed), T, B, I)
    _assert_fused_equals_reference(module, x, None)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("B, H", [(2, 511), (2, 512), (1, 512)])
def test_backward_by_gate_equals_reference(cell, B, H, rng):
    """From ``kernels.BACK_BY_GATE`` units on at B > 1, the gated cells' backward runs its
    recurrent product gate by gate and sums the parts: the gradients are still the reference
    path's (as with the one product below, and at B = 1)."""
    module = nn.Recurrent(cell, 3, H, dtype=F64, bidirectional=True)
    x = _tensor(rng, 3, B, 3)
    state = _state(module, rng, B, True)
    _assert_fused_equals_reference(module, x, state)


def test_output_shapes_and_state_order(rng):
    """h_n is (L*D, B, H), ordered l0, l0_reverse, l1, ...; y's second half is the reverse direction."""
    lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=F64)
    x = rng.standard_normal((2, 5, 3))
    y, (h, c) = lstm(x)
    assert y.shape == (2, 5, 8) and h.shape == c.shape == (4, 2, 4)
    np.testing.assert_array_equal(h.data[2], y.data[:, -1, :4])   # layer 1 forward: last step
    np.testing.assert_array_equal(h.data[3], y.data[:, 0, 4:])    # layer 1 reverse: first step
    assert [k for k in lstm.state_dict()][:8] == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_ih_l0_reverse",
        "weight_hh_l0_reverse", "bias_ih_l0_reverse", "bias_hh_l0_reverse"]
    assert lstm.weight_ih_l1.shape == (16, 8)


def test_encoder_lstm_head_gradchecks_end_to_end(rng):
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(3, 4, dtype=F64)
            self.lstm = nn.LSTM(4, 5, num_layers=2, dtype=F64)
            self.head = nn.Linear(5, 2, dtype=F64)

        def forward(self, x):
            y, _ = self.lstm(ops.tanh(self.encoder(x)))
            return self.head(y)

    model = Model()
    x = _tensor(rng, 4, 2, 3)
    target = rng.standard_normal((4, 2, 2))
    loss = lambda *_: ((model(x) - target) ** 2).mean()  # noqa: E731
    assert bptt.gradcheck(loss, [x, *model.parameters()])
    assert [n for n, _ in model.named_parameters()][:3] == ["encoder.weight", "encoder.bias", "lstm.weight_ih_l0"]


def test_float32_stays_float32(rng):
    for cell in registry.names():
        model = nn.SequenceModel(cell, 3, 4, 2, num_layers=2)
        x = Tensor(rng.standard_normal((5, 2, 3)).astype(np.float32), requires_grad=True)
        y, state = model(x)
        assert y.dtype == np.float32 and all(s.dtype == np.float32 for s in _flat(state))
        (y * y).sum().backward()
        assert x.grad.dtype == np.float32
        assert all(p.grad.dtype == np.float32 for p in model.parameters())
        y_t, s_t = model.step(x.data[0], None)
        assert y_t.dtype == np.float32 and all(s.dtype == np.float32 for s in _flat(s_t))


def test_float32_close_to_float64(rng):
    model = nn.SequenceModel("lstm", 3, 8, 2, dtype=F64)
    x = rng.standard_normal((20, 4, 3))
    y64 = model(x)[0].data
    y32 = model.to(np.float32)(x.astype(np.float32))[0].data
    np.testing.assert_allclose(y32, y64, atol=1e-5)


# -- options ------------------------------------------------------------------------------------

def test_default_init_is_uniform_in_one_over_sqrt_hidden():
    lstm = nn.LSTM(7, 16, num_layers=2)
    for name, p in lstm.named_parameters():
        assert p.dtype == np.float32
        assert np.abs(p.data).max() <= 0.25, name
        assert np.abs(p.data).max() > 0.2, name       # spread over the range, not clustered
    bptt.seed(3)
    a = nn.GRU(2, 3).state_dict()
    bptt.seed(3)
    b = nn.GRU(2, 3).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_orthogonal_and_identity_init_per_gate_block():
    lstm = nn.LSTM(3, 5, init="orthogonal", dtype=F64)
    for block in np.split(lstm.weight_hh_l0.data, 4):
        np.testing.assert_allclose(block @ block.T, np.eye(5), atol=1e-12)
    irnn = nn.RNN(3, 5, nonlinearity="relu", init="identity", num_layers=2)
    np.testing.assert_array_equal(irnn.weight_hh_l1.data, np.eye(5))
    assert not irnn.bias_ih_l0.data.any() and not irnn.bias_hh_l1.data.any()
    assert np.abs(irnn.weight_ih_l0.data).max() > 0      # the input weights keep the default init


def test_forget_bias_shifts_the_f_block_only():
    bptt.seed(5)
    plain = nn.SequenceModel("lstm", 3, 4, 1)
    bptt.seed(5)
    shifted = nn.SequenceModel("lstm", 3, 4, 1, forget_bias=1.0)
    delta = shifted.rnn.bias_hh_l0.data - plain.rnn.bias_hh_l0.data
    np.testing.assert_allclose(delta, [0] * 4 + [1] * 4 + [0] * 8, atol=1e-6)
    np.testing.assert_array_equal(shifted.rnn.bias_ih_l0.data, plain.rnn.bias_ih_l0.data)


def test_dropout_between_layers_only_in_training(rng):
    bptt.seed(1)
    model = nn.SequenceModel("gru", 3, 6, 2, num_layers=2, dropout=0.5, dtype=F64)
    bptt.seed(1)
    plain = nn.SequenceModel("gru", 3, 6, 2, num_layers=2, dtype=F64)
    x = rng.standard_normal((4, 3, 3))
    train = model(x)[0].data
    model.eval()
    np.testing.assert_array_equal(model(x)[0].data, plain(x)[0].data)
    assert np.abs(train - plain(x)[0].data).max() > 1e-3
    one_layer = nn.SequenceModel("gru", 3, 6, 2, dropout=0.5, dtype=F64)
    y1 = one_layer(x)[0].data
    np.testing.assert_array_equal(y1, one_layer(x)[0].data)  # nothing to drop with one layer


# -- SequenceModel ------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", registry.names())
def test_sequence_model_step_equals_forward(cell, rng):
    model = nn.SequenceModel(cell, 3, 4, 2, num_layers=2, dtype=F64)
    x = rng.standard_normal((5, 2, 3))
    y, final = model(x)
    state = model.initial_state(2)
    assert all(not s.data.any() and s.shape == (2, 2, 4) for s in _flat(state))
    for t in range(5):
        y_t, state = model.step(x[t], state)
        np.testing.assert_allclose(y_t.data, y.data[t], atol=1e-14)
    for a, b in zip(_flat(state), _flat(final)):
        np.testing.assert_allclose(a.data, b.data, atol=1e-14)
    assert list(model.state_dict())[-2:] == ["head.weight", "head.bias"]
    assert model.rnn.num_directions == 1 and model.head.in_features == 4


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("cell", registry.names())
def test_step_layer_grads_are_total_for_every_layer(cell, fused, rng):
    """The diagnostics contract: the per-layer hidden states that ``step(return_layers=True)``
    gives have, once retained, the total dL/dh^l_t as their grad, including the path through the
    layer above at the same step (checked against central differences of a perturbation added to
    h^l_t as it is made, in a loop over the cell's reference step)."""
    model = nn.SequenceModel(cell, 3, 4, 2, num_layers=3, dtype=F64, fused=fused)
    x = rng.standard_normal((4, 2, 3))
    target = rng.standard_normal((4, 2, 2))
    kind = model.cell_type

    def loss_with(t_hit=None, layer_hit=None, delta=0.0):
        states = [tuple(np.zeros((2, 4)) for _ in kind.state)] * 3
        loss = 0.0
        for t in range(4):
            inp = x[t]
            for layer in range(3):
                weights = [getattr(model.rnn, f"{n}_l{layer}").data
                           for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                out = tuple(kind.reference(inp, states[layer], weights, **model.rnn._step_options))
                out = tuple(o.data if isinstance(o, Tensor) else o for o in out)
                if (t, layer) == (t_hit, layer_hit):
                    out = (out[0] + delta,) + out[1:]
                states[layer] = out
                inp = out[0]
            loss += float((((model.head(inp) - target[t]) ** 2).sum()).item())
        return loss

    state, loss, hs = None, 0.0, []
    for t in range(4):
        y_t, state, layers = model.step(x[t], state, return_layers=True)
        assert len(layers) == 3 and all(h.shape == (2, 4) for h in layers)
        hs.append([h.retain_grad() for h in layers])
        loss = loss + ((y_t - target[t]) ** 2).sum()
    loss.backward()
    assert loss.item() == pytest.approx(loss_with(), abs=1e-12)
    eps = 1e-6
    for t, layer in [(0, 0), (1, 1), (2, 0), (3, 1), (1, 2)]:
        delta = np.zeros((2, 4))
        delta[1, 2] = eps
        fd = (loss_with(t, layer, delta) - loss_with(t, layer, -delta)) / (2 * eps)
        assert hs[t][layer].grad[1, 2] == pytest.approx(fd, rel=1e-6, abs=1e-8), (t, layer)


@pytest.mark.parametrize("cell", registry.names())
def test_retained_grads_on_fused_sequence_output(cell, rng):
    """retain_grad works on the fused path: the output's grad equals the reference path's."""
    model = nn.SequenceModel(cell, 3, 4, 2, num_layers=2, dtype=F64)
    x = rng.standard_normal((5, 2, 3))
    grads = []
    for fused in (True, False):
        model.fused = fused
        y, h_n = model.rnn(x)
        y.retain_grad()
        (model.head(y) ** 2).sum().backward()
        grads.append(y.grad)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)
    assert np.abs(grads[0]).min() > 0


def test_inputs_may_be_arrays_or_tensors(rng):
    model = nn.SequenceModel("rnn", 2, 3, 1, dtype=F64)
    x = rng.standard_normal((4, 2, 2))
    np.testing.assert_array_equal(model(x)[0].data, model(Tensor(x))[0].data)
    assert model(x.astype(np.float32))[0].dtype == np.float64   # cast to the parameters


# -- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("call, kind, message", [
    (lambda: nn.LSTM(3, 4)(np.zeros((5, 2, 2), np.float32)), ValueError,
     r"LSTM\(3, 4\): input has shape \(5, 2, 2\), expected \(T, B, I\) with I = 3"),
    (lambda: nn.GRU(3, 4, batch_first=True)(np.zeros((5, 3), np.float32)), ValueError,
     r"GRU\(3, 4, batch_first=True\): expected a 3-D input \(B, T, I\) with I = 3, got shape \(5, 3\)"),
    (lambda: nn.RNN(3, 4, num_layers=2)(np.zeros((5, 2, 3), np.float32), np.zeros((1, 2, 4))),
     ValueError, r"RNN\(3, 4, num_layers=2\): h0 has shape \(1, 2, 4\), expected \(2, 2, 4\)"),
    (lambda: nn.LSTM(3, 4)(np.zeros((5, 2, 3), np.float32), np.zeros((1, 2, 4))), ValueError,
     r"LSTM\(3, 4\): the state must be a tuple \(h0, c0\)"),
    (lambda: nn.LSTM(3, 4)(np.zeros((5, 2, 3), np.float32), (np.zeros((1, 2, 4)), np.zeros((1, 3, 4)))),
     ValueError, r"c0 has shape \(1, 3, 4\), expected \(1, 2, 4\)"),
    (lambda: nn.LSTMCell(3, 4)(np.zeros((2, 5), np.float32)), ValueError,
     r"LSTMCell\(3, 4, bias=True\): input has shape \(2, 5\), expected \(B, 3\)"),
    (lambda: nn.GRUCell(3, 4)(np.zeros((2, 3), np.float32), np.zeros((2, 5))), ValueError,
     r"GRUCell\(3, 4, bias=True\): h has shape \(2, 5\), expected \(2, 4\)"),
    (lambda: nn.SequenceModel("lstm", 3, 4, 1).step(np.zeros((5, 2, 3), np.float32)), ValueError,
     r"SequenceModel\('lstm'\)\.step: input has shape \(5, 2, 3\), expected \(B, 3\)"),
    (lambda: nn.SequenceModel("gru", 3, 4, 1)(np.zeros((5, 3), np.float32)), ValueError,
     r"Recurrent\('gru', 3, 4\): expected a 3-D input \(T, B, I\)"),
    (lambda: nn.LSTM(3, 4)(np.zeros((5, 2, 3), np.int64)), TypeError, r"LSTM\(3, 4\): input has dtype int64"),
    (lambda: nn.SequenceModel("cnn", 3, 4, 1), ValueError,
     "cell must be one of " + ", ".join(map(repr, registry.names())) + ", got 'cnn'"),
    (lambda: nn.SequenceModel("gru", 3, 4, 1, forget_bias=1.0), ValueError, r"forget_bias applies to .*lstm"),
    (lambda: nn.SequenceModel("lstm", 3, 4, 1, nonlinearity="relu"), ValueError, r"nonlinearity applies to cell='rnn'"),
    (lambda: nn.RNN(3, 4, nonlinearity="sigmoid"), ValueError, r"RNN: nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"),
    (lambda: nn.LSTM(3, 4, init="xavier"), ValueError, r"LSTM: init must be one of default, orthogonal, identity"),
    (lambda: nn.GRU(3, 0), ValueError, r"GRU: hidden_size must be a positive integer, got 0"),
    (lambda: nn.LSTM(3, 4, dropout=1.0), ValueError, r"LSTM: dropout must be in \[0, 1\)"),
])
def test_bad_input_is_named(call, kind, message):
    with pytest.raises(kind, match=message):
        call()
