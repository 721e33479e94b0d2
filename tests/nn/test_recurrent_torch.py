"""Cross-check against PyTorch: the same weights give the same outputs and every gradient (float64)."""

import numpy as np
import pytest

from bptt import Tensor, nn

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

TOL = 1e-10
MODULES = [("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {}), ("GRU", {})]
LAYOUTS = [{}, {"num_layers": 2}, {"bidirectional": True}, {"batch_first": True},
           {"num_layers": 3, "bidirectional": True, "batch_first": True}, {"bias": False}]


def _ours_from_torch(ours, theirs):
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return ours


def _close(a, b, what):
    np.testing.assert_allclose(a, b.detach().numpy(), rtol=0, atol=TOL, err_msg=what)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()) or "plain")
@pytest.mark.parametrize("name, options", MODULES, ids=["rnn-tanh", "rnn-relu", "lstm", "gru"])
def test_sequence_module_matches_torch(name, options, layout, fused):
    torch.manual_seed(0)
    theirs = getattr(torch.nn, name)(3, 5, **options, **layout).double()
    ours = _ours_from_torch(getattr(nn, name)(3, 5, dtype=np.float64, fused=fused, **options, **layout), theirs)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6, 3) if layout.get("batch_first") else (6, 4, 3))
    d = 2 if layout.get("bidirectional") else 1
    shape = (layout.get("num_layers", 1) * d, 4, 5)
    states = [rng.standard_normal(shape) for _ in range(2 if name == "LSTM" else 1)]
    x_t = torch.tensor(x, requires_grad=True)
    s_t = [torch.tensor(s, requires_grad=True) for s in states]
    x_o = Tensor(x, requires_grad=True)
    s_o = [Tensor(s, requires_grad=True) for s in states]
    y_t, fin_t = theirs(x_t, tuple(s_t) if name == "LSTM" else s_t[0])
    y_o, fin_o = ours(x_o, tuple(s_o) if name == "LSTM" else s_o[0])
    fin_t = fin_t if isinstance(fin_t, tuple) else (fin_t,)
    fin_o = fin_o if isinstance(fin_o, tuple) else (fin_o,)
    w = rng.standard_normal(y_o.shape)
    loss_t = (y_t * torch.tensor(w)).sum() + sum((k + 2) * f.sum() for k, f in enumerate(fin_t))
    loss_o = (y_o * Tensor(w)).sum()
    for k, f in enumerate(fin_o):
        loss_o = loss_o + f.sum() * (k + 2.0)
    loss_t.backward()
    loss_o.backward()
    _close(y_o.data, y_t, "output")
    for a, b in zip(fin_o, fin_t):
        _close(a.data, b, "final state")
    _close(x_o.grad, x_t.grad, "input grad")
    for a, b in zip(s_o, s_t):
        _close(a.grad, b.grad, "initial state grad")
    theirs_params = dict(theirs.named_parameters())
    for k, p in ours.named_parameters():
        _close(p.grad, theirs_params[k].grad, k)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("name, options", [("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu"}),
                                           ("LSTMCell", {}), ("GRUCell", {})],
                         ids=["rnn-tanh", "rnn-relu", "lstm", "gru"])
def test_cell_matches_torch(name, options, fused):
    torch.manual_seed(0)
    theirs = getattr(torch.nn, name)(3, 5, **options).double()
    ours = _ours_from_torch(getattr(nn, name)(3, 5, dtype=np.float64, fused=fused, **options), theirs)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3))
    states = [rng.standard_normal((4, 5)) for _ in range(2 if name == "LSTMCell" else 1)]
    x_t, x_o = torch.tensor(x, requires_grad=True), Tensor(x, requires_grad=True)
    s_t = [torch.tensor(s, requires_grad=True) for s in states]
    s_o = [Tensor(s, requires_grad=True) for s in states]
    out_t = theirs(x_t, tuple(s_t) if name == "LSTMCell" else s_t[0])
    out_o = ours(x_o, tuple(s_o) if name == "LSTMCell" else s_o[0])
    out_t = out_t if isinstance(out_t, tuple) else (out_t,)
    out_o = out_o if isinstance(out_o, tuple) else (out_o,)
    ws = [rng.standard_normal((4, 5)) for _ in out_o]
    sum(((o * torch.tensor(w)).sum() for o, w in zip(out_t, ws))).backward()
    total = (out_o[0] * Tensor(ws[0])).sum()
    for o, w in zip(out_o[1:], ws[1:]):
        total = total + (o * Tensor(w)).sum()
    total.backward()
    for a, b in zip(out_o, out_t):
        _close(a.data, b, "output")
    _close(x_o.grad, x_t.grad, "input grad")
    for a, b in zip(s_o, s_t):
        _close(a.grad, b.grad, "state grad")
    theirs_params = dict(theirs.named_parameters())
    for k, p in ours.named_parameters():
        _close(p.grad, theirs_params[k].grad, k)


def test_sequence_model_matches_torch_lstm_and_linear():
    """SequenceModel's keys are rnn.* and head.*: a torch LSTM + Linear pair loads unchanged."""
    torch.manual_seed(0)
    lstm, head = torch.nn.LSTM(3, 5, num_layers=2).double(), torch.nn.Linear(5, 2).double()
    state = {f"rnn.{k}": v.detach().numpy() for k, v in lstm.state_dict().items()}
    state.update({f"head.{k}": v.detach().numpy() for k, v in head.state_dict().items()})
    model = nn.SequenceModel("lstm", 3, 5, 2, num_layers=2, dtype=np.float64).load_state_dict(state)
    x = np.random.default_rng(3).standard_normal((7, 4, 3))
    y_t = head(lstm(torch.tensor(x))[0])
    _close(model(x)[0].data, y_t, "SequenceModel output")
