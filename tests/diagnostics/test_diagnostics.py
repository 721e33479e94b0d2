import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bptt import diagnostics, ops
from bptt.gradcheck import numerical_grad
from bptt.diagnostics import (decay_rate, hidden_grad_norms, jacobian_norms, jacobians, memory_horizon,
                              parameter_grad_norms, suggest_truncation)
from bptt.nn import Linear, Module, Parameter, SequenceModel, cell_names
from bptt.nn.state import hidden
from bptt.tape import Tensor, no_grad
from tolerance import summation_tol


def exact_fit_stderr(rate, n):
    """The most ``decay_rate`` may report as the standard error of a line through n points that
    lie on it: scipy's linregress gives |slope| sqrt((1 - r^2) / (n - 2)), and for points on a
    line 1 - r^2 = (1 - r)(1 + r) is only the rounding of r's n-term sums, at most 2
    ``summation_tol``.  So about sqrt(eps) |slope|, or 0 when r happens to round to 1 (which of
    the two, the BLAS's order of summation decides)."""
    return abs(rate) * math.sqrt(2 * summation_tol(np.float64, n) / (n - 2))


# -- a stand-in with SequenceModel's step interface, built from primitives -----------------------

class StandIn(Module):
    """A stack of recurrent layers with a Linear head: 'linear' (h' = W h + U x), 'tanh', or 'lstm'.

    The head and the next step read the returned state, so a retained top-layer h gets the total
    dL/dh_t; a lower layer's gets only the part through later steps (the layer above reads it
    before the stack), which is all the tests below compare for lower layers.
    """

    def __init__(self, kind, input_size, hidden_size, output_size, num_layers=1, scale=1.0, rng=None):
        super().__init__()
        rng = rng or np.random.default_rng(0)
        self.kind, self.num_layers, self.hidden_size = kind, num_layers, hidden_size
        gates = 4 if kind == "lstm" else 1
        for l in range(num_layers):
            i = input_size if l == 0 else hidden_size
            setattr(self, f"weight_ih_l{l}", Parameter(rng.normal(0, 1 / np.sqrt(i), (gates * hidden_size, i))))
            setattr(self, f"weight_hh_l{l}",
                    Parameter(scale * rng.normal(0, 1 / np.sqrt(hidden_size), (gates * hidden_size, hidden_size))))
            setattr(self, f"bias_l{l}", Parameter(rng.normal(0, 0.1, gates * hidden_size)))
        self.head = Linear(hidden_size, output_size, dtype=np.float64, rng=rng)

    def initial_state(self, batch_size):
        z = Tensor(np.zeros((self.num_layers, batch_size, self.hidden_size)))
        return (z, Tensor(z.data.copy())) if self.kind == "lstm" else z

    def step(self, x_t, state):
        hs, cs = [], []
        inp = x_t
        for l in range(self.num_layers):
            pre = ops.linear(inp, getattr(self, f"weight_ih_l{l}"), getattr(self, f"bias_l{l}"))
            if self.kind == "lstm":
                h, c = state[0][l], state[1][l]
                i, f, g, o = ops.split(pre + ops.linear(h, getattr(self, f"weight_hh_l{l}")), sections=4, axis=-1)
                c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
                h = ops.sigmoid(o) * ops.tanh(c)
                cs.append(c)
            else:
                h = pre + ops.linear(state[l], getattr(self, f"weight_hh_l{l}"))
                h = h if self.kind == "linear" else ops.tanh(h)
            hs.append(h)
            inp = h
        h = ops.stack(*hs)
        return self.head(h[self.num_layers - 1]), ((h, ops.stack(*cs)) if self.kind == "lstm" else h)


KINDS = ["standin-tanh", "standin-lstm", *cell_names()]     # and every registered cell


def make(kind, rng, L=2, H=3, I=2, O=2):
    """A float64 model of ``kind``: a stand-in above, or a SequenceModel on its fused path."""
    if kind.startswith("standin-"):
        return StandIn(kind[len("standin-"):], I, H, O, num_layers=L, rng=rng)
    return SequenceModel(kind, I, H, O, num_layers=L, dtype=np.float64, rng=rng)


def mse(y_pred, y):
    return ops.mean((y_pred - y) ** 2)


def reflection(n, rng):
    """A symmetric orthogonal matrix (a Householder reflection): every eigenvalue is +1 or -1."""
    v = rng.standard_normal(n)
    return np.eye(n) - 2 * np.outer(v, v) / (v @ v)


def last_step(T):
    m = np.zeros(T)
    m[-1] = 1
    return m


def data(rng, T=7, B=3, I=2, O=2):
    return rng.standard_normal((T, B, I)), rng.standard_normal((T, B, O))


def run_from(model, x, state, t0):
    """Run steps t0 .. T-1 from ``state`` without recording; the top layer's last h."""
    with no_grad():
        for t in range(t0, len(x)):
            _, state = model.step(x[t], state)
    return hidden(state).data[-1]


# -- hidden_grad_norms --------------------------------------------------------------------------

def test_linear_rnn_norms_equal_closed_form(rng):
    # h_t = h_{t-1} W^T + x_t U^T, loss at the last step: dL/dh_t = dL/dh_{T-1} W^(T-1-t)
    T, B, H = 9, 4, 5
    model = StandIn("linear", 2, H, 3, rng=rng)
    x, y = data(rng, T, B, 2, 3)
    norms = hidden_grad_norms(model, x, y, mse, mask=last_step(T))
    with no_grad():
        state = model.initial_state(B)
        for t in range(T):
            y_pred, state = model.step(x[t], state)
    g = 2 * (y_pred.data - y[-1]) / y_pred.data.size @ model.head.weight.data   # dL/dh_{T-1}
    W = model.weight_hh_l0.data
    expected = [np.linalg.norm(g @ np.linalg.matrix_power(W, T - 1 - t)) for t in range(T)]
    assert norms.shape == (1, T)
    np.testing.assert_allclose(norms[0], expected, rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_norms_are_the_masked_mean_of_per_step_gradients(kind, rng):
    # superposition: dL/dh_t = sum_s m_s dl_s/dh_t / sum m, each term from its own forward and
    # backward with retained grads, on the reference path (cells unrolled from small ops)
    T, B, H, L = 6, 3, 4, 2
    model = make(kind, rng, L, H)
    x, y = data(rng, T, B)
    mask = np.array([0.0, 1.0, 0.5, 0.0, 2.0, 0.0])
    norms = hidden_grad_norms(model, x, y, mse, mask=mask, per_example=True)
    if isinstance(model, SequenceModel):
        model.fused = False
    total = np.zeros((L, T, B, H))
    for s in np.flatnonzero(mask):
        state, hs = model.initial_state(B), []
        for t in range(s + 1):
            if isinstance(model, SequenceModel):      # every layer's h^l_t, as the layers read it
                y_t, state, layers = model.step(x[t], state, return_layers=True)
                hs.append([h.retain_grad() for h in layers])
            else:
                y_t, state = model.step(x[t], state)
                hs.append([hidden(state).retain_grad()])
        mse(y_t, y[s]).backward()
        grads = np.stack([np.stack([h.grad for h in step]).reshape(L, B, H) for step in hs], axis=1)
        total[:, :s + 1] += mask[s] / mask.sum() * grads
    np.testing.assert_allclose(norms, np.linalg.norm(total, axis=-1), rtol=1e-10, atol=1e-15)
    assert norms[:, -1].max() == 0   # the last step reaches no weighted loss
    whole = hidden_grad_norms(model, x, y, mse, mask=mask)
    np.testing.assert_allclose(whole, np.sqrt((norms ** 2).sum(axis=-1)), rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_top_layer_norms_match_finite_differences_of_the_state(kind, rng):
    # with the loss at the last step, perturbing the top layer's state returned at step t < T-1
    # acts only through the later steps, so central differences see exactly the retained gradient
    # (a lower layer's total gradient also flows through the layer above at step t itself)
    T, B, H, L = 5, 2, 3, 2
    model = make(kind, rng, L, H)
    x, y = data(rng, T, B)
    norms = hidden_grad_norms(model, x, y, mse, mask=last_step(T), per_example=True)
    for t in (0, 2):
        with no_grad():
            state = model.initial_state(B)
            for s in range(t + 1):
                _, state = model.step(x[s], state)
        h = hidden(state).data

        def loss():
            with no_grad():
                st_ = state
                for s in range(t + 1, T):
                    y_t, st_ = model.step(x[s], st_)
                return mse(y_t, y[-1]).item()
        grad = numerical_grad(loss, h)
        np.testing.assert_allclose(norms[-1, t], np.linalg.norm(grad[-1], axis=-1), rtol=1e-6)


def test_parameter_gradients_are_those_of_the_measured_loss(rng):
    model = StandIn("tanh", 2, 3, 2, rng=rng)
    x, y = data(rng, 4, 2)
    model.weight_hh_l0.grad = np.full((3, 3), 100.0)   # stale: must be reset, not added to
    hidden_grad_norms(model, x, y, mse, mask=last_step(4))
    got = model.weight_hh_l0.grad.copy()
    model.zero_grad()
    state = model.initial_state(2)
    for t in range(4):
        y_t, state = model.step(x[t], state)
    mse(y_t, y[-1]).backward()
    np.testing.assert_allclose(got, model.weight_hh_l0.grad, rtol=1e-12)


@settings(max_examples=8, deadline=None, derandomize=True)
@given(T=st.integers(1, 6), B=st.integers(1, 3), L=st.integers(1, 3), lstm=st.booleans())
def test_hidden_grad_norms_shapes(T, B, L, lstm):
    rng = np.random.default_rng(T * 100 + B * 10 + L)
    model = StandIn("lstm" if lstm else "tanh", 2, 3, 2, num_layers=L, rng=rng)
    x, y = data(rng, T, B)
    assert hidden_grad_norms(model, x, y, mse).shape == (L, T)
    per = hidden_grad_norms(model, x, y, mse, per_example=True)
    assert per.shape == (L, T, B) and per.dtype == np.float64 and np.all(per[-1, -1] > 0)


def test_hidden_grad_norms_rejects_bad_input(rng):
    model = StandIn("tanh", 2, 3, 2, rng=rng)
    x, y = data(rng, 4, 2)
    with pytest.raises(ValueError, match=r"hidden_grad_norms: x must be a sequence shaped \(T, B, I\).*\(4, 2\)"):
        hidden_grad_norms(model, x[:, 0], y, mse)
    with pytest.raises(ValueError, match=r"hidden_grad_norms: mask must weight the T=4 steps.*\(3,\)"):
        hidden_grad_norms(model, x, y, mse, mask=np.ones(3))
    with pytest.raises(ValueError, match="hidden_grad_norms: mask must be non-negative with a positive sum"):
        hidden_grad_norms(model, x, y, mse, mask=np.zeros(4))
    with pytest.raises(ValueError, match="hidden_grad_norms: y must have one target per step, T=4, got length 3"):
        hidden_grad_norms(model, x, y[:3], mse)


# -- Jacobians ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,L", [("standin-tanh", 1), ("standin-lstm", 2), (cell_names()[0], 1),
                                    *((c, 2) for c in cell_names())])
def test_jacobians_equal_finite_differences(kind, L, rng):
    T, B, H = 5, 2, 3
    model = make(kind, rng, L, H)
    x, _ = data(rng, T, B)
    J = jacobians(model, x)
    assert J.shape == (T, B, H, H)
    np.testing.assert_allclose(J[-1], np.broadcast_to(np.eye(H), (B, H, H)))
    for t in range(T - 1):
        with no_grad():
            state = model.initial_state(B)
            for s in range(t + 1):
                _, state = model.step(x[s], state)
        h = hidden(state).data
        fd = np.empty((B, H, H))
        for b in range(B):
            for j in range(H):
                h[L - 1, b, j] += 1e-6
                up = run_from(model, x, state, t + 1)[b]
                h[L - 1, b, j] -= 2e-6
                down = run_from(model, x, state, t + 1)[b]
                h[L - 1, b, j] += 1e-6
                fd[b, :, j] = (up - down) / 2e-6
        np.testing.assert_allclose(J[t], fd, rtol=1e-6, atol=1e-9)


def test_jacobian_norms_average_the_examples_singular_values(rng):
    model = StandIn("lstm", 2, 4, 2, num_layers=2, rng=rng)
    x, _ = data(rng, 6, 3)
    norms, sv = jacobian_norms(model, x, singular_values=True)
    s = np.linalg.svd(jacobians(model, x), compute_uv=False)          # (T, B, H)
    np.testing.assert_allclose(sv, s.mean(axis=1), rtol=1e-10)
    np.testing.assert_allclose(norms, s[..., 0].mean(axis=1), rtol=1e-10)
    assert norms[-1] == pytest.approx(1.0)
    per = jacobian_norms(model, x, per_example=True)
    assert per.shape == (6, 3)
    np.testing.assert_allclose(per, s[..., 0], rtol=1e-10)


def test_jacobians_leave_mode_and_gradients_alone(rng):
    model = SequenceModel("lstm", 2, 3, 2, num_layers=2, dropout=0.5, dtype=np.float64, rng=rng)
    model.head.eval()
    model.head.bias.grad = np.ones(2)
    x = data(rng, 3, 2)[0]
    first = jacobians(model, x)
    np.testing.assert_array_equal(first, jacobians(model, x))    # no dropout while measuring
    assert model.training and not model.head.training
    assert all(p.requires_grad for p in model.parameters())
    np.testing.assert_array_equal(model.head.bias.grad, np.ones(2))
    assert model.rnn.weight_hh_l0.grad is None


@pytest.mark.parametrize("kind", cell_names())
def test_fused_and_reference_paths_measure_the_same(kind, rng):
    model = make(kind, rng, L=2, H=4)
    x, y = data(rng, 6, 3)
    norms, J = hidden_grad_norms(model, x, y, mse), jacobians(model, x)
    model.fused = False
    np.testing.assert_allclose(hidden_grad_norms(model, x, y, mse), norms, rtol=1e-10)
    np.testing.assert_allclose(jacobians(model, x), J, rtol=1e-10, atol=1e-14)


# -- decay of a linear RNN: the rate is log of W's spectral radius -------------------------------

def test_linear_rnn_decay_rate_is_log_spectral_radius(rng):
    # W = rho * Q with Q symmetric orthogonal: ||g W^k|| = rho^k ||g|| exactly
    T, B, H, rho = 40, 3, 6, 0.8
    model = StandIn("linear", 2, H, 2, rng=rng)
    model.weight_hh_l0.data = rho * reflection(H, rng)
    x, y = data(rng, T, B)
    fit = decay_rate(hidden_grad_norms(model, x, y, mse, mask=last_step(T))[0])
    assert fit.rate == pytest.approx(np.log(rho), rel=1e-10)
    assert fit.factor == pytest.approx(rho, rel=1e-10)
    assert fit.stderr <= exact_fit_stderr(fit.rate, T) and fit.points == T
    jfit = decay_rate(jacobian_norms(model, x))
    assert jfit.rate == pytest.approx(np.log(rho), rel=1e-10)
    assert jfit.intercept == pytest.approx(0, abs=1e-10)


def test_tanh_rnn_at_its_fixed_point_decays_at_log_spectral_radius(rng):
    # x = 0, no biases, h_0 = 0: every state stays 0 where tanh' = 1, so dh_t/dh_{t-1} = W exactly
    T, B, H, rho = 30, 2, 5, 0.7
    model = SequenceModel("rnn", 2, H, 2, dtype=np.float64, rng=rng)
    model.rnn.weight_hh_l0.data = rho * reflection(H, rng)
    model.rnn.bias_ih_l0.data[:] = 0
    model.rnn.bias_hh_l0.data[:] = 0
    x, y = np.zeros((T, B, 2)), rng.standard_normal((T, B, 2))
    assert decay_rate(hidden_grad_norms(model, x, y, mse, mask=last_step(T))[0]).rate == \
        pytest.approx(np.log(rho), rel=1e-10)
    assert decay_rate(jacobian_norms(model, x)).rate == pytest.approx(np.log(rho), rel=1e-10)


def test_symmetric_w_decay_rate_tends_to_log_spectral_radius(rng):
    # eigenvalues spread in [-0.9, 0.9]: past a transient the largest one dominates
    T, B, H = 120, 4, 8
    Q, _ = np.linalg.qr(rng.standard_normal((H, H)))
    eig = np.linspace(-0.9, 0.9, H)
    model = StandIn("linear", 2, H, 2, rng=rng)
    model.weight_hh_l0.data = Q @ np.diag(eig) @ Q.T
    x, y = data(rng, T, B)
    norms = hidden_grad_norms(model, x, y, mse, mask=last_step(T))[0]
    assert decay_rate(norms, min_lag=40).rate == pytest.approx(np.log(0.9), rel=1e-3)


# -- decay_rate, memory_horizon, suggest_truncation ----------------------------------------------

def test_decay_rate_recovers_a_geometric_curve():
    lag = np.arange(30)[::-1]                  # t = 0 has lag 29
    fit = decay_rate(3.0 * 0.9 ** lag)
    assert fit.rate == pytest.approx(np.log(0.9), rel=1e-12)
    assert fit.factor == pytest.approx(0.9, rel=1e-12)
    assert fit.intercept == pytest.approx(np.log(3.0), rel=1e-12)
    assert fit.stderr <= exact_fit_stderr(fit.rate, lag.size)      # 0 with some BLAS kernels only


def test_decay_rate_skips_zeros_and_honours_the_lag_range():
    norms = 0.5 ** np.arange(10)[::-1]
    norms[:3] = 0                               # underflowed at the largest lags
    fit = decay_rate(norms)
    assert fit.points == 7 and fit.rate == pytest.approx(np.log(0.5))
    bent = np.concatenate([0.5 ** np.arange(10, 20)[::-1] * 0.5 ** 10, 0.9 ** np.arange(10)[::-1]])
    assert decay_rate(bent, max_lag=9).rate == pytest.approx(np.log(0.9))
    assert decay_rate(bent, min_lag=10).rate == pytest.approx(np.log(0.5))


def test_decay_rate_rejects_bad_curves():
    with pytest.raises(ValueError, match=r"decay_rate: need at least two positive norms at lags 0..3.*got 1 of 4"):
        decay_rate([0.0, 0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match=r"decay_rate: norms must be one curve.*\(2, 3\)"):
        decay_rate(np.ones((2, 3)))
    with pytest.raises(ValueError, match="decay_rate: norms must be finite and non-negative"):
        decay_rate([1.0, np.nan, 2.0])


def test_memory_horizon():
    norms = 0.5 ** np.arange(20)[::-1]
    assert memory_horizon(norms) == 10          # 0.5^10 = 9.8e-4 is the first below 1e-3
    assert memory_horizon(norms, ratio=0.3) == 2
    assert memory_horizon(np.ones(5)) is None
    with pytest.raises(ValueError, match="memory_horizon: ratio must be in"):
        memory_horizon(norms, ratio=1.5)
    with pytest.raises(ValueError, match="memory_horizon: the norm at lag 0"):
        memory_horizon([1.0, 0.0])


def test_suggest_truncation():
    assert suggest_truncation(np.ones(10), mass=0.5) == 5
    assert suggest_truncation(np.ones(10), mass=1.0) == 10
    assert suggest_truncation(np.ones(10), mass=0.51) == 6
    # lags 0, 1, 2 hold 4 + 2 + 1 = 7 of 8
    assert suggest_truncation([1.0, 1.0, 2.0, 4.0], mass=7 / 8) == 3
    with pytest.raises(ValueError, match="suggest_truncation: mass must be in"):
        suggest_truncation(np.ones(3), mass=0)
    with pytest.raises(ValueError, match="suggest_truncation: every norm is 0"):
        suggest_truncation(np.zeros(3))


# -- parameters ---------------------------------------------------------------------------------

def test_parameter_grad_norms():
    model = Linear(2, 2)
    with pytest.raises(ValueError, match="parameter_grad_norms: no parameter of Linear has a gradient"):
        parameter_grad_norms(model)
    model.weight.grad = np.array([[1.0, -3.0], [0.0, 2.0]], dtype=np.float32)
    stats = parameter_grad_norms(model)
    assert stats.names == ("weight", "bias")
    np.testing.assert_allclose(stats.mean, [1.5, 0.0])
    np.testing.assert_allclose(stats.max, [3.0, 0.0])
    np.testing.assert_allclose(stats.norm, [np.sqrt(14.0), 0.0])
