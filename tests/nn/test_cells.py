"""The cell registry: a user's own cell works everywhere with no other edit; IndRNN; the records."""

import dataclasses
import math
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import bptt
from bptt import nn, ops
from bptt.cli import main
from bptt.diagnostics import hidden_grad_norms, jacobian_norms
from bptt.nn import registry as registry
from bptt.nn.registry import CellType, Option, affine, padded

F64 = np.float64


# -- a cell from outside the package: the minimal gated unit (Zhou et al. 2016) -----------------

def mgu_step(x, state, weights, scale=1.0):
    """f = σ(W_if x + b_if + W_hf h + b_hf); n = tanh(W_in x + b_in + scale * W_hn (f h) + b_hn);
    h' = (1 - f) h + f n."""
    (h,), (w_ih, w_hh, b_ih, b_hh) = state, padded(weights)
    H = h.shape[-1]
    xf, xn = ops.split(affine(x, w_ih, b_ih), sections=2, axis=-1)
    f = ops.sigmoid(xf + affine(h, w_hh[:H], None if b_hh is None else b_hh[:H]))
    n = ops.tanh(xn + scale * affine(f * h, w_hh[H:], None if b_hh is None else b_hh[H:]))
    return ((1 - f) * h + f * n,)


@pytest.fixture
def mgu():
    cell = registry.register(CellType(name="mgu", gates=("f", "n"), equations="h' = (1 - f) h + f n",
                                      reference=mgu_step,
                                      options={"scale": Option(1.0, kind=float, doc="of W_hn")}))
    yield cell
    registry.unregister("mgu")


def mgu_by_hand(model, x):
    """The MGU recursion in plain numpy, one layer: the outputs y (T, B, O)."""
    p = model.state_dict()
    H = model.hidden_size
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    h = np.zeros((x.shape[1], H))
    ys = []
    for x_t in x:
        a = x_t @ p["rnn.weight_ih_l0"].T + p["rnn.bias_ih_l0"]
        f = sig(a[:, :H] + h @ p["rnn.weight_hh_l0"][:H].T + p["rnn.bias_hh_l0"][:H])
        n = np.tanh(a[:, H:] + (f * h) @ p["rnn.weight_hh_l0"][H:].T + p["rnn.bias_hh_l0"][H:])
        h = (1 - f) * h + f * n
        ys.append(h @ p["head.weight"].T + p["head.bias"])
    return np.stack(ys)


def test_a_users_cell_runs_in_every_module_and_gradchecks(mgu, rng):
    assert "mgu" in registry.names()
    model = nn.SequenceModel("mgu", 3, 4, 2, dtype=F64, rng=rng)
    x = rng.standard_normal((5, 2, 3))
    y, h = model(x)
    np.testing.assert_allclose(y.data, mgu_by_hand(model, x), rtol=1e-12)
    assert h.shape == (1, 2, 4) and model.rnn.weight_hh_l0.shape == (8, 4)
    model.fused = True          # no fused kernels: the reference path serves both settings
    np.testing.assert_array_equal(model(x)[0].data, y.data)
    for t in range(5):
        y_t, state = model.step(x[t], None if t == 0 else state)
        np.testing.assert_allclose(y_t.data, y.data[t], rtol=1e-12)
    two = nn.Recurrent("mgu", 3, 4, num_layers=2, bidirectional=True, dtype=F64, scale=0.5)
    xt = bptt.Tensor(x, requires_grad=True)
    assert bptt.gradcheck(lambda *_: (two(xt)[0] ** 2).sum(), [xt, *two.parameters()])
    cell = nn.Cell("mgu", 3, 4, dtype=F64)
    assert repr(cell) == "Cell('mgu', 3, 4, bias=True)"
    assert cell(x[0]).shape == (2, 4)


def test_a_users_cell_trains_with_tbptt_and_is_measured(mgu, rng):
    model = nn.SequenceModel("mgu", 2, 3, 1, dtype=F64, rng=rng)
    x, y = rng.standard_normal((12, 2, 2)), rng.standard_normal((12, 2, 1))
    trainer = bptt.TBPTT(model, nn.mse_loss, bptt.optim.SGD(model.parameters(), lr=0.1), k1=4, k2=6)
    records = trainer.run(x, y)
    assert [r["step"] for r in records] == [4, 8, 12] and all(math.isfinite(r["loss"]) for r in records)
    norms = hidden_grad_norms(model, x, y, nn.mse_loss)
    assert norms.shape == (1, 12) and (norms > 0).all()
    _, sv = jacobian_norms(model, x[:, :1], singular_values=True)
    assert sv.shape[-1] == 3 and np.isfinite(sv).all()


def test_a_users_cell_in_the_gradflow_command(mgu, tmp_path):
    out = tmp_path / "mgu.png"
    result = CliRunner().invoke(main, ["gradflow", "--cells", "rnn,mgu:scale=0.5", "--seq-len", "12",
                                       "--hidden", "4", "--seeds", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].startswith("mgu:scale=0.5") and "decay rate" in lines[1]
    assert out.exists()
    result = CliRunner().invoke(main, ["gradflow", "--cells", "mgu:forget_bias=1", "--out", str(out)])
    assert result.exit_code == 2 and "unknown key 'forget_bias' for mgu" in result.output


def test_registry_errors_name_what_is_wrong(mgu):
    with pytest.raises(ValueError, match="a cell named 'mgu' is registered already"):
        registry.register(mgu)
    with pytest.raises(ValueError, match=r"cell must be one of 'rnn', 'lstm', 'gru', 'indrnn', 'mgu', got 'mug'"):
        nn.Recurrent("mug", 2, 3)
    with pytest.raises(ValueError, match=r"options named like module arguments: \['bias'\]"):
        registry.register(CellType(name="bad", gates=("h",), equations="", reference=mgu_step,
                                   options={"bias": Option(0.0)}))
    with pytest.raises(ValueError, match=r"Cell: scale='big' is not a number"):
        nn.Cell("mgu", 2, 3, scale="big")
    with pytest.raises(ValueError, match=r"Cell: scale must be a number, got \[1\]"):
        nn.Cell("mgu", 2, 3, scale=[1])
    with pytest.raises(ValueError, match=r"SequenceModel: forget_bias applies to cell='lstm' only, not 'mgu' "
                                         r"\(its options: scale\)"):
        nn.SequenceModel("mgu", 2, 3, 1, forget_bias=1.0)


# -- the package's cells ------------------------------------------------------------------------

@pytest.mark.parametrize("name", registry.names())
def test_records_match_the_modules(name, rng):
    cell = registry.get(name)
    module = nn.Recurrent(name, 3, 5, num_layers=2, dtype=F64)
    shapes = cell.parameter_shapes(3, 5)
    assert list(shapes) == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    assert module.weight_ih_l0.shape == shapes["weight_ih"] and module.weight_hh_l1.shape == shapes["weight_hh"]
    assert cell.equations and cell.summary and cell.state[0] == "h"
    assert name in cell.describe()
    # a state_dict moves between two modules of the cell and gives the same outputs
    other = nn.Recurrent(name, 3, 5, num_layers=2, dtype=F64).load_state_dict(module.state_dict())
    x = rng.standard_normal((4, 2, 3))
    np.testing.assert_array_equal(other(x)[0].data, module(x)[0].data)


def test_indrnn_step_by_hand():
    """h' = relu(W_ih x + b_ih + u * h + b_hh), u elementwise; recurrent_max clips u in the step."""
    cell = nn.Cell("indrnn", 1, 2, dtype=F64)
    cell.load_state_dict({"weight_ih": np.array([[1.0], [-2.0]]), "weight_hh": np.array([0.5, 3.0]),
                          "bias_ih": np.array([0.1, 0.0]), "bias_hh": np.array([0.0, 1.0])})
    x, h = np.array([[0.5]]), np.array([[2.0, -1.0]])
    for fused in (True, False):
        cell.fused = fused
        np.testing.assert_allclose(cell(x, h).data, [[0.5 + 0.1 + 1.0, 0.0]], atol=1e-15)
    clipped = nn.Cell("indrnn", 1, 2, dtype=F64, nonlinearity="tanh", recurrent_max=2.0)
    clipped.load_state_dict(cell.state_dict())
    for fused in (True, False):
        clipped.fused = fused
        np.testing.assert_allclose(clipped(x, h).data, np.tanh([[1.6, -1.0 - 2.0 + 1.0]]), atol=1e-15)


def test_indrnn_clip_gradient_and_init(rng):
    cell = nn.Cell("indrnn", 2, 3, dtype=F64, recurrent_max=0.5)
    cell.weight_hh.data = np.array([0.2, 0.9, -0.7])
    for fused in (True, False):
        cell.fused = fused
        cell.zero_grad()
        (cell(rng.standard_normal((4, 2)), rng.uniform(0.5, 1, (4, 3))) ** 2).sum().backward()
        g = cell.weight_hh.grad
        assert g[0] != 0 and g[1] == 0 and g[2] == 0          # no gradient where |u| is clipped
    bptt.seed(0)
    u = nn.Recurrent("indrnn", 3, 200).weight_hh_l0.data
    assert u.shape == (200,) and 0 <= u.min() < 0.05 and 0.95 < u.max() <= 1   # U(0, 1)
    ident = nn.Recurrent("indrnn", 3, 4, init="identity")
    np.testing.assert_array_equal(ident.weight_hh_l0.data, np.ones(4))
    assert not ident.bias_hh_l0.data.any()
    with pytest.raises(ValueError, match="Recurrent: init must be one of default, identity, got 'orthogonal'"):
        nn.Recurrent("indrnn", 3, 4, init="orthogonal")
    with pytest.raises(ValueError, match="recurrent_max must be positive, got -1.0"):
        nn.Recurrent("indrnn", 3, 4, recurrent_max=-1)


def test_indrnn_identity_carries_the_gradient_back_unchanged(rng):
    """With u = 1, no input weight and relu on positive states, dh_T/dh_t is the identity."""
    model = nn.SequenceModel("indrnn", 2, 4, 1, init="identity", dtype=F64, rng=rng)
    model.rnn.weight_ih_l0.data = np.zeros((4, 2))
    state = bptt.Tensor(np.full((1, 3, 4), 0.5))
    x = rng.standard_normal((30, 3, 2))
    y = np.zeros((30, 3, 1))
    mask = np.zeros(30)
    mask[-1] = 1
    norms = hidden_grad_norms(model, x, y, nn.mse_loss, mask=mask, state=state)[0]
    np.testing.assert_allclose(norms, norms[-1], rtol=1e-12)


@pytest.mark.parametrize("name", registry.names())
def test_equations_are_given_once_and_rendered_into_the_docstrings_and_describe(name):
    cell = registry.get(name)
    module = sys.modules[cell.reference.__module__]
    classes = [c for c in vars(module).values() if isinstance(c, type) and c.__module__ == module.__name__
               and issubclass(c, (nn.Cell, nn.Recurrent))]
    docs = [c.__doc__ for c in classes] or [module.__doc__]    # IndRNN has no classes: its module
    for text in (*docs, cell.describe()):
        for equation in cell.equations:
            assert "    " + equation + "\n" in text + "\n", (equation, text)
    assert not any(".. math::" in doc for doc in docs)


def test_a_users_cell_documents_its_classes(mgu):
    assert mgu.equations == ("h' = (1 - f) h + f n",)       # one equation given as a string

    @mgu.document
    class MGU(nn.Recurrent):
        """A minimal gated unit over a sequence.

        Parameters
        ----------
        input_size, hidden_size : int
        """
    assert MGU.__doc__ == ("A minimal gated unit over a sequence.\n\nEach step computes::\n\n"
                           "    h' = (1 - f) h + f n\n\nParameters\n----------\ninput_size, hidden_size : int")
    assert mgu.describe().endswith("\n    h' = (1 - f) h + f n")


def test_unregister_undoes_register_so_the_cell_registers_again(rng, monkeypatch):
    toy = dataclasses.replace(registry.get("rnn"), name="toy")    # its own fused primitives, named for it
    assert (toy.fused.step.name, toy.fused.sequence.name) == ("toy_step", "toy_sequence")
    x = rng.standard_normal((4, 2, 3))
    ys = []
    for _ in range(2):
        registry.register(toy)
        try:
            assert "toy" in registry.names() and {"toy_step", "toy_sequence"} <= set(ops.registry())
            ys.append(nn.Recurrent("toy", 3, 5, dtype=F64, rng=np.random.default_rng(0))(x)[0].data)
        finally:
            registry.unregister("toy")
        assert "toy" not in registry.names() and not {"toy_step", "toy_sequence"} & set(ops.registry())
    np.testing.assert_array_equal(ys[0], ys[1])
    # a register refused for a taken primitive name enters nothing
    monkeypatch.setitem(ops.REGISTRY, "toy_sequence", object())
    with pytest.raises(ValueError, match="register: cell 'toy': primitive toy_sequence is declared already"):
        registry.register(toy)
    assert "toy" not in registry.names() and "toy_step" not in ops.REGISTRY


def test_records_say_how_the_step_depends_on_the_state(mgu):
    form = {name: (registry.get(name).elman_form, registry.get(name).diagonal_jacobian)
            for name in ("rnn", "lstm", "gru", "indrnn", "mgu")}
    assert form == {"rnn": (True, False), "lstm": (False, False), "gru": (False, False),
                    "indrnn": (False, True), "mgu": (False, False)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        mgu.diagonal_jacobian = True
    with pytest.raises(ValueError, match="recurrence must be one of 'general', 'elman', 'diagonal', got 'sparse'"):
        registry.register(dataclasses.replace(mgu, name="bad", recurrence="sparse"))
    with pytest.raises(ValueError, match="recurrence 'elman' needs one gate"):
        registry.register(dataclasses.replace(mgu, name="bad", recurrence="elman"))
    with pytest.raises(ValueError, match="recurrence 'diagonal' needs a state of one component"):
        registry.register(dataclasses.replace(registry.get("lstm"), name="bad", recurrence="diagonal"))
    with pytest.raises(ValueError, match="CellType 'bad': fused kernels need both forward and backward"):
        dataclasses.replace(mgu, name="bad", forward=registry.get("rnn").forward)


def test_cells_command_lists_the_registry():
    result = CliRunner().invoke(main, ["cells"])
    assert result.exit_code == 0
    for name in registry.names():
        assert any(line.startswith(name + ":") for line in result.output.splitlines())
    assert "gates i, f, g, o; state (h, c)" in result.output
