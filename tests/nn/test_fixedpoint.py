"""FixedPoint: gradients of every adjoint solver against finite differences and unrolled BPTT,
memory in the number of iterations, errors, reports, and composition with the rest of the tape."""

import math
import tracemalloc
import warnings

import numpy as np
import pytest

import bptt
from bptt import Tensor, nn, optim
from bptt.gradcheck import numerical_grad
from bptt.nn.fixedpoint import FixedPointError
from bptt.tape import _reachable

# every cell the layer is tested with: (label, cell, options); a new cell is one more line
CELLS = [("rnn-tanh", "rnn", {}), ("rnn-relu", "rnn", {"nonlinearity": "relu"}), ("lstm", "lstm", {}),
         ("gru", "gru", {})]
CELL_PARAMS = [pytest.param(cell, options, id=label) for label, cell, options in CELLS]
SOLVERS = ["rbp", "gmres", "bicgstab", "neumann"]


I, H = 2, 3


def _layer(cell, options, hidden=H, seed=0, **kw):
    """A float64 layer at tight tolerances; weight_hh halved so that the iterations are few."""
    kw = {"tol": 1e-13, "grad_tol": 1e-13, "max_iter": 2000, "neumann_terms": 200, **kw}
    layer = nn.FixedPoint(cell, I, hidden, dtype=np.float64, rng=np.random.default_rng(seed), **kw, **options)
    layer.cell.weight_hh.data = layer.cell.weight_hh.data * 0.5
    return layer


class LinearCell(nn.Module):
    """A user's cell, ``h' = W h + U x``: J = W exactly, whatever the state."""

    def __init__(self, W, U):
        super().__init__()
        self.weight_hh = nn.Parameter(W)
        self.weight_ih = nn.Parameter(U)

    def forward(self, x, hx=None):
        y = x @ self.weight_ih.T
        return y if hx is None else y + hx @ self.weight_hh.T


def _linear_cell(rng, H=8, I=3, radius=0.5):
    """W symmetric with eigenvalues in [-radius, radius], radius among them."""
    Q, _ = np.linalg.qr(rng.standard_normal((H, H)))
    eigs = np.concatenate([[radius], rng.uniform(-radius * 0.8, radius * 0.8, H - 1)])
    return LinearCell((Q * eigs) @ Q.T, rng.standard_normal((H, I)))


def _flat_grads(model):
    return np.concatenate([p.grad.reshape(-1) for p in model.parameters()])


def _loss_grads(layer, x, target):
    layer.zero_grad()
    x.grad = None
    loss = ((layer(x) - target) ** 2).sum()
    loss.backward()
    return loss, _flat_grads(layer), x.grad.copy()


# -- gradients ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cell, options", CELL_PARAMS)
def test_every_solver_equals_finite_differences_and_gradcheck_passes(cell, options, rng):
    x = Tensor(rng.uniform(-1, 1, (2, I)), requires_grad=True)
    target = rng.standard_normal((2, H))
    layer = _layer(cell, options)
    assert bptt.gradcheck(lambda x, *params: layer(x), [x, *layer.parameters()])

    def loss():
        with bptt.no_grad():
            return float(((layer(x).data - target) ** 2).sum())

    fd = np.concatenate([numerical_grad(loss, p.data).reshape(-1) for p in layer.parameters()])
    fd_x = numerical_grad(loss, x.data)
    for grad in SOLVERS:
        _, dtheta, dx = _loss_grads(_layer(cell, options, grad=grad), x, target)
        np.testing.assert_allclose(dtheta, fd, rtol=1e-6, atol=1e-8 * np.abs(fd).max(), err_msg=grad)
        np.testing.assert_allclose(dx, fd_x, rtol=1e-6, atol=1e-8 * np.abs(fd_x).max(), err_msg=grad)


@pytest.mark.parametrize("cell, options", CELL_PARAMS)
def test_unrolled_bptt_to_convergence_equals_rbp(cell, options, rng):
    x = Tensor(rng.uniform(-1, 1, (3, I)), requires_grad=True)
    target = rng.standard_normal((3, H))
    _, rbp, rbp_x = _loss_grads(_layer(cell, options), x, target)
    _, unrolled, unrolled_x = _loss_grads(_layer(cell, options, grad="bptt"), x, target)
    np.testing.assert_allclose(unrolled, rbp, rtol=1e-9, atol=1e-10 * np.abs(rbp).max())
    np.testing.assert_allclose(unrolled_x, rbp_x, rtol=1e-9, atol=1e-10 * np.abs(rbp_x).max())


@pytest.mark.parametrize("cell, options", CELL_PARAMS)
def test_bptt_through_the_last_k_iterations_equals_k_neumann_terms(cell, options, rng):
    # Liao et al. 2018: at the fixed point, truncated BPTT over k steps is the k-term Neumann series
    x = Tensor(rng.uniform(-1, 1, (3, I)), requires_grad=True)
    target = rng.standard_normal((3, H))
    for k in (1, 3, 7):
        _, truncated, _ = _loss_grads(_layer(cell, options, grad="bptt", unroll=k), x, target)
        _, neumann, _ = _loss_grads(_layer(cell, options, grad="neumann", neumann_terms=k), x, target)
        np.testing.assert_allclose(truncated, neumann, rtol=1e-9, atol=1e-11)


def test_bptt_error_shrinks_at_the_spectral_radius_of_a_linear_map(rng):
    cell = _linear_cell(rng, radius=0.5)
    x = Tensor(rng.standard_normal((4, 3)), requires_grad=True)
    target = rng.standard_normal((4, 8))
    layer = nn.FixedPoint(cell, 3, 8, tol=1e-14, grad_tol=1e-14, max_iter=500)
    _, exact, _ = _loss_grads(layer, x, target)
    ks = np.arange(10, 31, 4)
    errors = []
    for k in ks:
        with layer.using(grad="bptt", unroll=int(k)):
            _, g, _ = _loss_grads(layer, x, target)
        errors.append(np.linalg.norm(g - exact) / np.linalg.norm(exact))
    rate = math.exp(np.polyfit(ks, np.log(errors), 1)[0])
    assert abs(rate - 0.5) < 0.03, (rate, errors)
    assert layer.last.jacobian_norms() == pytest.approx((0.5, 0.5), rel=1e-9)


@pytest.mark.parametrize("grad", ["rbp", "bptt"])
def test_the_map_gets_the_parameters_as_arguments_and_the_cell_keeps_its_own(grad, rng):
    """The damped map computes with the values it is given (a vjp recording's leaves, the
    rescaled weight_hh): the cell module keeps its parameters throughout, and they get the
    gradient."""
    class Watching(LinearCell):
        def forward(self, x, hx=None):
            kept.append(cell.weight_hh is W and cell.weight_ih is U)
            return super().forward(x, hx)

    kept = []
    linear = _linear_cell(rng, radius=0.5)
    cell = Watching(linear.weight_hh.data, linear.weight_ih.data)
    W, U = cell.weight_hh, cell.weight_ih
    layer = nn.FixedPoint(cell, 3, 8, tol=1e-12, max_iter=500, grad=grad, contractive=True)
    x = Tensor(rng.standard_normal((4, 3)), requires_grad=True)
    (layer(x) ** 2).sum().backward()
    layer.last.jacobian_norms()
    assert kept and all(kept)
    assert W.grad is not None and U.grad is not None


def test_damping_keeps_the_fixed_point_and_its_gradient(rng):
    x = Tensor(rng.uniform(-1, 1, (3, I)), requires_grad=True)
    target = rng.standard_normal((3, H))
    loss1, g1, _ = _loss_grads(_layer("lstm", {}), x, target)
    layer = _layer("lstm", {}, damping=0.4)
    loss2, g2, _ = _loss_grads(layer, x, target)
    assert loss2.item() == pytest.approx(loss1.item(), rel=1e-11)
    np.testing.assert_allclose(g2, g1, rtol=1e-8, atol=1e-11)


# -- memory -------------------------------------------------------------------------------------

def _measure(grad, K, rng):
    """(tape entries reachable from h*, peak traced bytes of forward + backward) for exactly K iterations."""
    cell = _linear_cell(np.random.default_rng(0), H=64, I=8, radius=0.999)
    layer = nn.FixedPoint(cell, 8, 64, tol=1e-300, max_iter=K, grad=grad, grad_tol=1e-3, on_fail="warn")
    x = Tensor(rng.standard_normal((16, 8)), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # K iterations do not converge: by design
        tracemalloc.start()
        h = layer(x)
        entries = len(_reachable(h._entry))
        (h * h).sum().backward()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert layer.last.iterations == K
    return entries, peak


def test_rbp_memory_is_flat_in_the_iterations_and_bptt_grows(rng):
    rbp10, rbp1000 = _measure("rbp", 10, rng), _measure("rbp", 1000, rng)
    bptt10, bptt1000 = _measure("bptt", 10, rng), _measure("bptt", 1000, rng)
    assert rbp10[0] == rbp1000[0] == 1                     # one entry, however long the forward
    assert bptt1000[0] >= 100 * bptt10[0] * 0.9
    assert rbp1000[1] < 1.5 * rbp10[1]
    assert bptt1000[1] > 20 * bptt10[1]
    assert bptt1000[1] > 20 * rbp1000[1]


# -- reports ------------------------------------------------------------------------------------

def test_last_reports_the_forward_and_the_adjoint(rng):
    layer = _layer("gru", {}, grad="rbp", grad_tol=1e-10)
    x = rng.uniform(-1, 1, (2, I))
    h = layer(x)
    last = layer.last
    assert last.converged and last.residual <= 1e-13 and last.iterations > 5
    assert last.adjoint() is None
    (h * h).sum().backward()
    k, residual = last.adjoint()
    assert 1 < k < 2000 and residual <= 1e-10
    norm, radius = last.jacobian_norms()
    assert 0 < radius <= norm


def test_h0_starts_the_iteration(rng):
    layer = _layer("lstm", {})
    x = rng.uniform(-1, 1, (2, I))
    h = layer(x)
    cold = layer.last.iterations
    state = (h.data, layer.last._state[1])
    again = layer(x, state)
    np.testing.assert_allclose(again.data, h.data, atol=1e-12)
    assert layer.last.iterations < 3 < cold


# -- contractive --------------------------------------------------------------------------------

def test_contractive_rescales_weight_hh_on_the_tape(rng):
    layer = _layer("rnn", {}, contractive=0.9, hidden=5)
    layer.cell.weight_hh.data = layer.cell.weight_hh.data * 10       # far from contractive
    x = Tensor(rng.uniform(-1, 1, (2, I)), requires_grad=True)
    layer(x)
    W = dict(zip(layer._names, layer.last._params))["weight_hh"]
    assert np.linalg.norm(W, 2) == pytest.approx(0.9, rel=1e-12)
    assert layer.last.jacobian_norms()[0] <= 0.9 + 1e-12
    assert bptt.gradcheck(lambda x, *params: layer(x), [x, *layer.parameters()])


# -- composition --------------------------------------------------------------------------------

def test_sequential_with_a_fixed_point_layer_trains_and_gradchecks(rng):
    bptt.seed(1)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.FixedPoint("rnn", 4, 6, tol=1e-10, contractive=True), nn.Linear(6, 1))
    model.to(np.float64)
    x = rng.uniform(-1, 1, (16, 2))
    y = (x[:, :1] * x[:, 1:] > 0).astype(np.float64)
    assert bptt.gradcheck(lambda *p: nn.binary_cross_entropy_with_logits(model(x), y), model.parameters())
    opt = optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = nn.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_no_grad_records_nothing(rng):
    layer = _layer("rnn", {})
    with bptt.no_grad():
        h = layer(rng.uniform(-1, 1, (2, I)))
    assert h.is_leaf and not h.requires_grad and layer.last.converged


# -- errors -------------------------------------------------------------------------------------

def test_forward_non_convergence_is_an_error_or_a_warning(rng):
    x = rng.uniform(-1, 1, (2, I))
    layer = _layer("rnn", {}, max_iter=3)
    with pytest.raises(FixedPointError, match=r"FixedPoint\(2, 3, grad='rbp'.*\): the forward iteration did not "
                                              r"converge in 3 iterations \(relative residual .* > tol 1e-13\); "
                                              r"try damping < 1 .* or a larger max_iter"):
        layer(x)
    layer = _layer("rnn", {}, max_iter=3, on_fail="warn")
    with pytest.warns(RuntimeWarning, match="did not converge in 3 iterations"):
        layer(x)
    assert not layer.last.converged and layer.last.iterations == 3


def test_adjoint_non_convergence_is_an_error_or_a_warning(rng):
    x = Tensor(rng.uniform(-1, 1, (2, I)), requires_grad=True)
    for grad in ("rbp", "gmres", "bicgstab"):
        h = _layer("lstm", {}, grad=grad, grad_max_iter=2)(x)
        with pytest.raises(FixedPointError, match=rf"the '{grad}' adjoint solve did not converge in \d+ products .* "
                                                  r"> grad_tol 1e-13\); try grad='gmres', damping < 1"):
            h.sum().backward()
    h = _layer("lstm", {}, grad_max_iter=2, on_fail="warn")(x)
    with pytest.warns(RuntimeWarning, match="adjoint solve did not converge in 2 products"):
        h.sum().backward()


def test_bad_options_and_shapes_are_errors(rng):
    with pytest.raises(ValueError, match=r"FixedPoint: unknown grad 'cg'; choose from rbp, neumann, gmres, bicgstab, bptt"):
        nn.FixedPoint("rnn", 3, 4, grad="cg")
    with pytest.raises(ValueError, match=r"FixedPoint: cell must be one of 'rnn', .*, got 'elman'"):
        nn.FixedPoint("elman", 3, 4)
    with pytest.raises(ValueError, match=r"FixedPoint: damping must be in \(0, 1\], got 0"):
        nn.FixedPoint("rnn", 3, 4, damping=0)
    with pytest.raises(ValueError, match=r"FixedPoint: on_fail must be 'raise' or 'warn', got 'ignore'"):
        nn.FixedPoint("rnn", 3, 4, on_fail="ignore")
    with pytest.raises(ValueError, match=r"FixedPoint: contractive must be True, False or a bound in \(0, 1\), got 1.5"):
        nn.FixedPoint("rnn", 3, 4, contractive=1.5)
    with pytest.raises(ValueError, match=r"FixedPoint: max_iter must be a positive integer, got 0"):
        nn.FixedPoint("rnn", 3, 4, max_iter=0)

    class NoRecurrentWeight(nn.Module):
        def forward(self, x, hx=None):
            return x

    with pytest.raises(ValueError, match=r"contractive=True rescales weight_hh, which NoRecurrentWeight does not have"):
        nn.FixedPoint(NoRecurrentWeight(), 3, 3, contractive=True)
    with pytest.raises(ValueError, match=r"options nonlinearity are for a cell built by name"):
        nn.FixedPoint(NoRecurrentWeight(), 3, 3, nonlinearity="relu")
    layer = nn.FixedPoint("lstm", 3, 4)
    with pytest.raises(ValueError, match=r"FixedPoint\(3, 4, .*\): input has shape \(2, 5\), expected \(B, 3\)"):
        layer(np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"FixedPoint\(3, 4, .*\): input has shape \(7, 2, 3\), expected \(B, 3\)"):
        layer(np.ones((7, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"h0 has shape \(2, 5\), expected \(2, 4\)"):
        layer(np.ones((2, 3), np.float32), (np.zeros((2, 5)), np.zeros((2, 5))))


# -- diagnostics --------------------------------------------------------------------------------

def test_fixed_point_gradients_match_the_spectral_radius_and_restore_the_model(rng):
    cell = _linear_cell(rng, radius=0.5)
    model = nn.Sequential(nn.FixedPoint(cell, 3, 8, tol=1e-14, max_iter=500), nn.Linear(8, 2, dtype=np.float64))
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    before = model[0].options
    model[1].weight.grad = np.ones((2, 8))
    result = bptt.diagnostics.fixed_point_gradients(model, x, y, nn.mse_loss, ks=(1, 5, 10, 20, 40))
    assert model[0].options == before
    np.testing.assert_array_equal(model[1].weight.grad, np.ones((2, 8)))
    np.testing.assert_allclose(result.bptt_cosine, result.neumann_cosine, rtol=1e-9)
    np.testing.assert_allclose(result.bptt_error, result.neumann_error, rtol=1e-6, atol=1e-13)
    assert np.all(np.diff(result.neumann_error) < 0) and result.neumann_error[-1] < 1e-10
    assert result.neumann_cosine[-1] == pytest.approx(1.0, abs=1e-12) and result.neumann_cosine[0] < 0.999
    rate = (result.neumann_error[2] / result.neumann_error[1]) ** (1 / 5)
    assert rate == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match="fixed_point_gradients: Linear has no FixedPoint layer"):
        bptt.diagnostics.fixed_point_gradients(nn.Linear(3, 2), x, y, nn.mse_loss)


# -- static tasks, the experiment and the command -------------------------------------------------

def test_two_spirals_are_mirrored_and_balanced():
    from bptt.data.tasks.static import TwoSpirals

    task = TwoSpirals(n=50, turns=1.5)
    x, y = task.train_set()
    assert x.shape == (100, 2) and y.shape == (100, 1) and y.sum() == 50
    np.testing.assert_array_equal(x[50:], -x[:50])
    assert np.all(np.linalg.norm(x, axis=1) <= 1 + 1e-6)
    xt, _ = task.test_set()
    assert not np.isin(xt[:, 0], x[:, 0]).any()                   # test points are fresh
    assert task.score(np.where(y > 0.5, 1.0, -1.0), y) == 1.0


def test_pattern_completion_flips_exactly_the_fraction_asked_for(rng):
    from bptt.data.tasks.static import PatternCompletion

    task = PatternCompletion(patterns=5, size=20, flip=0.25)
    x, y = task.batch(40, rng)
    clean = 2 * y - 1
    assert x.shape == y.shape == (40, 20)
    np.testing.assert_array_equal((x != clean).sum(axis=1), np.full(40, 5))
    assert all((task.patterns == c).all(axis=1).any() for c in clean)
    assert task.score(x, y) == pytest.approx(0.25)                 # the corrupted input read as the answer
    with pytest.raises(ValueError, match=r"PatternCompletion: flip must be in \[0, 0.5\), got 0.5"):
        PatternCompletion(flip=0.5)


def test_parse_methods():
    from bptt.errors import ConfigError
    from bptt.runs.experiments.fixedpoint import Method, parse_methods

    assert parse_methods("rbp,neumann:3,bptt,bptt:5") == [Method("rbp"), Method("neumann", 3), Method("bptt"),
                                                           Method("bptt", 5)]
    assert [m.label for m in parse_methods()] == ["rbp", "gmres", "bicgstab", "neumann:3", "bptt", "bptt:3"]
    for text, message in (("cg", "unknown method 'cg'"), ("rbp:3", "only neumann:k and bptt:k take a k"),
                          ("bptt:0", "k must be a positive integer"), ("rbp,rbp", "a method is given twice")):
        with pytest.raises(ConfigError, match=message):
            parse_methods(text)


def test_fixedpoint_command_writes_lines_figures_and_csv(tmp_path):
    import csv

    from click.testing import CliRunner

    from bptt.cli import main

    out = tmp_path / "fp.png"
    result = CliRunner().invoke(main, ["fixedpoint", "--steps", "3", "--hidden", "6", "--grad", "rbp,neumann:2,bptt:2",
                                       "--ks", "1,3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 7 and lines[-1].startswith("wrote ")
    assert lines[0].startswith("spirals   rbp") and "test accuracy" in lines[0] and "cosine to RBP 1.0000" in lines[0]
    assert lines[5].startswith("patterns  bptt:2") and "test recall error" in lines[5]
    assert (tmp_path / "fp.png").stat().st_size > 0 and (tmp_path / "fp_agreement.png").stat().st_size > 0
    rows = list(csv.DictReader(open(tmp_path / "fp.csv")))
    assert [(r["task"], r["method"]) for r in rows] == [(t, m) for t in ("spirals", "patterns")
                                                        for m in ("rbp", "neumann:2", "bptt:2")]
    assert all(float(r["peak_mb"]) > 0 and float(r["ms_per_update"]) > 0 for r in rows)
    bad = CliRunner().invoke(main, ["fixedpoint", "--grad", "rbp,cg"])
    assert bad.exit_code == 2 and "Invalid value for '--grad': unknown method 'cg'" in bad.output
