"""RTRL and UORO against full BPTT, step-by-step references and their own statistics."""

import functools

import numpy as np
import pytest

import bptt
from bptt import Tensor, forward, nn
from bptt.nn import registry as registry
from bptt.credit import KFRTRL, RTRL, UORO
from bptt.optim import Recorder

# every registered cell, once per choice of its options: (cell, options, state components,
# a step-cell class); a new cell is checked with no edit
CELLS = [(c.name, v, len(c.state), functools.partial(nn.Cell, c.name))
         for c in registry.registered() for v in c.variants()]
CELL_IDS = ["-".join([name, *map(str, v.values())]) for name, v, _, _ in CELLS]


class Stacked(nn.Module):
    """Layers of step cells under a Linear head: a model built outside ``SequenceModel``.

    Its state is a tuple of (L, B, H) tensors, one per state component, as SequenceModel's.
    """

    def __init__(self, cell_cls, options, n_state, I, H, O, layers):
        super().__init__()
        self.cells = [cell_cls(I if l == 0 else H, H, fused=False, dtype=np.float64, **options)
                      for l in range(layers)]
        for l, c in enumerate(self.cells):
            setattr(self, f"cell{l}", c)
        self.head = nn.Linear(H, O, dtype=np.float64)
        self.n_state, self.H = n_state, H

    def initial_state(self, B):
        zeros = [Tensor(np.zeros((len(self.cells), B, self.H))) for _ in range(self.n_state)]
        return tuple(zeros) if self.n_state > 1 else zeros[0]

    def step(self, x, state):
        comps = state if self.n_state > 1 else (state,)
        new = []
        for l, cell in enumerate(self.cells):
            s = tuple(c[l] for c in comps)
            out = cell(x, s if self.n_state > 1 else s[0])
            out = out if self.n_state > 1 else (out,)
            new.append(out)
            x = out[0]
        stacked = tuple(bptt.stack(list(parts), axis=0) for parts in zip(*new))
        return self.head(x), (stacked if self.n_state > 1 else stacked[0])


def _model(kind, cell, options, n_state, cell_cls, layers, I=2, H=3, O=2, seed=0):
    bptt.seed(seed)
    if kind == "sequence":
        return nn.SequenceModel(cell, I, H, O, num_layers=layers, dtype=np.float64, **options)
    return Stacked(cell_cls, options, n_state, I, H, O, layers)


def _data(T=6, B=2, I=2, O=2, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, I))
    y = rng.standard_normal((T, B, O))
    mask = (rng.random(T) > 0.3).astype(float)
    mask[-1] = 1.0
    return x, y, mask


def _skip_unless_forward_mode_reaches(model, x_t):
    """Skip, saying why, when a step of the model on its reference path has no jvp."""
    fused = getattr(model, "fused", None)
    if fused is not None:
        model.fused = False
    try:
        state = model.initial_state(len(x_t))
        flat = state if isinstance(state, tuple) else (state,)
        with bptt.no_grad(), forward.forward_mode([(s, np.zeros((1, *s.shape))) for s in flat], 1):
            model.step(x_t, state)
    except forward.JVPError as err:
        pytest.skip(f"the reference step has a primitive without jvp: {err}")
    finally:
        if fused is not None:
            model.fused = fused


def _bptt_grads(model, x, y, mask, windows):
    """Reference: the tape through a loop of steps from the start, one gradient per window
    (start, stop) of losses, each the window's masked mean backpropagated to step 0."""
    params = model.parameters()
    out = []
    for start, stop in windows:
        state = model.initial_state(x.shape[1])
        total = None
        for t in range(stop):
            y_pred, state = model.step(x[t], state)
            if start <= t and mask[t]:
                term = bptt.nn.mse_loss(y_pred, y[t]) * float(mask[t])
                total = term if total is None else total + term
        for p in params:
            p.grad = None
        (total * (1.0 / max(1.0, mask[start:stop].sum()))).backward()
        out.append([p.grad.copy() for p in params])
    return out


@pytest.mark.parametrize("kind", ["sequence", "stacked"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell, options, n_state, cell_cls", CELLS, ids=CELL_IDS)
def test_rtrl_with_frozen_weights_is_full_bptt(kind, layers, cell, options, n_state, cell_cls):
    model = _model(kind, cell, options, n_state, cell_cls, layers)
    x, y, mask = _data()
    _skip_unless_forward_mode_reaches(model, x[0])
    opt = Recorder(model.parameters())
    # one update over the whole sequence, and updates every 4 steps (the last one by finish)
    rtrl = RTRL(model, bptt.nn.mse_loss, opt, k1=len(x))
    rtrl.run(x, y, mask)
    rtrl = RTRL(model, bptt.nn.mse_loss, opt, k1=4)
    rtrl.run(x[:3], y[:3], mask[:3])
    rtrl.run(x[3:], y[3:], mask[3:])
    rtrl.finish()
    expected = _bptt_grads(model, x, y, mask, [(0, 6), (0, 4), (4, 6)])
    assert len(opt.grads) == 3
    for got, want in zip(opt.grads, expected):
        for g, w, (name, _) in zip(got, want, model.named_parameters()):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10, err_msg=name)
    if kind == "sequence":
        assert model.fused     # the reference path was used inside run only


@pytest.mark.parametrize("cell, options, n_state, cell_cls", CELLS, ids=CELL_IDS)
def test_rtrl_online_updates_match_a_step_by_step_reference(cell, options, n_state, cell_cls):
    """k1 = 1 with weights changing: step t's gradient is the tape's through every past step,
    each with the weights it ran with (what RTRL's influence, carried forward, accumulates)."""
    lr = 0.05
    model = _model("sequence", cell, options, n_state, cell_cls, 1)
    x, y, mask = _data(T=5)
    params = model.parameters()
    start = [p.data.copy() for p in params]
    rtrl = RTRL(model, bptt.nn.mse_loss, bptt.optim.SGD(params, lr=lr), k1=1)
    records = rtrl.run(x, y, mask)
    online = [p.data.copy() for p in params]

    weights = [[w.copy() for w in start]]
    for t in range(len(x)):
        state = model.initial_state(x.shape[1])
        for s in range(t + 1):
            for p, w in zip(params, weights[s]):
                p.data = w
            y_pred, state = model.step(x[s], state)
        for p in params:
            p.grad = None
        loss = bptt.nn.mse_loss(y_pred, y[t]) * float(mask[t])
        if mask[t]:
            loss.backward()
        grads = [np.zeros_like(p.data) if p.grad is None else p.grad for p in params]
        assert records[t]["grad_norm"] == pytest.approx(
            np.sqrt(sum(float((g * g).sum()) for g in grads)), rel=1e-10)
        weights.append([w - lr * g for w, g in zip(weights[t], grads)])
    for got, want in zip(online, weights[-1]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_rtrl_is_invariant_to_chunking_and_chunk_size():
    x, y, mask = _data(T=7)
    results = []
    for chunks, chunk in [((7,), 2 ** 22), ((1, 4, 2), 2 ** 22), ((3, 4), 5)]:
        model = _model("sequence", "gru", {}, 1, None, 1)
        opt = bptt.optim.SGD(model.parameters(), lr=0.1)
        rtrl = RTRL(model, bptt.nn.mse_loss, opt, k1=2, chunk=chunk)
        a = 0
        for n in chunks:
            rtrl.run(x[a:a + n], y[a:a + n], mask[a:a + n])
            a += n
        rtrl.finish()
        results.append(([r["loss"] for r in rtrl.history], [p.data.copy() for p in model.parameters()]))
    for losses, ws in results[1:]:
        np.testing.assert_allclose(losses, results[0][0], rtol=1e-12)
        for w, w0 in zip(ws, results[0][1]):
            np.testing.assert_allclose(w, w0, rtol=1e-12)


def _uoro_estimates(model, x, y, samples, seed, estimator=UORO, mask=None):
    rng = np.random.default_rng(seed)
    opt = Recorder(model.parameters())
    for _ in range(samples):
        estimator(model, bptt.nn.mse_loss, opt, k1=len(x), rng=rng).run(x, y, mask)
    return np.array([np.concatenate([g.ravel() for g in grads]) for grads in opt.grads])


def test_uoro_is_unbiased_and_reproducible():
    model = _model("sequence", "rnn", {}, 1, None, 1, I=1, H=2, O=1)
    x, y, _ = _data(T=4, B=1, I=1, O=1)
    exact = np.concatenate([g.ravel() for g in
                            _bptt_grads(model, x, y, np.ones(4), [(0, 4)])[0]])
    draws = _uoro_estimates(model, x, y, 2000, seed=0)
    mean = draws.mean(axis=0)
    se = draws.std(axis=0, ddof=1) / np.sqrt(len(draws))
    assert np.all(np.abs(mean - exact) <= 3 * se + 1e-12), (mean - exact) / se
    # not unbiased by accident of a huge variance: the mean's direction approaches the exact one
    cos = [float(np.dot(draws[:n].mean(0), exact) / np.linalg.norm(draws[:n].mean(0)) / np.linalg.norm(exact))
           for n in (20, 2000)]
    assert cos[0] < cos[1] and cos[1] > 0.99
    # one estimate is reproducible for a seed, and another seed gives another one
    a, b, c = (_uoro_estimates(model, x, y, 1, seed=s)[0] for s in (7, 7, 8))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_kfrtrl_is_unbiased_with_less_variance_than_uoro(nonlinearity):
    model = _model("sequence", "rnn", {"nonlinearity": nonlinearity}, 1, None, 1, I=2, H=3, O=2)
    x, y, _ = _data(T=5, B=2)
    mask = np.zeros(5)
    mask[-1] = 1                        # one loss at the end: its gradient is all influence
    exact = np.concatenate([g.ravel() for g in _bptt_grads(model, x, y, mask, [(0, 5)])[0]])
    draws = _uoro_estimates(model, x, y, 1000, seed=0, estimator=KFRTRL, mask=mask)
    mean = draws.mean(axis=0)
    se = draws.std(axis=0, ddof=1) / np.sqrt(len(draws))
    assert np.all(np.abs(mean - exact) <= 3.5 * se + 1e-12), (mean - exact) / se
    assert (se > 1e-6).sum() >= 5       # a stochastic estimate, not RTRL's by accident
    error = lambda d: np.mean(np.linalg.norm(d - exact, axis=1)) / np.linalg.norm(exact)
    uoro = _uoro_estimates(model, x, y, 100, seed=0, mask=mask)
    assert error(draws) < 0.6 * error(uoro), (error(draws), error(uoro))


def test_kfrtrl_is_invariant_to_chunking_and_trains():
    x, y, mask = _data(T=7)
    results = []
    for chunks in ((7,), (3, 4), (1, 1, 5)):
        model = _model("sequence", "rnn", {}, 1, None, 1)
        kf = KFRTRL(model, bptt.nn.mse_loss, bptt.optim.SGD(model.parameters(), lr=0.1), k1=2,
                    rng=np.random.default_rng(3))
        a = 0
        for n in chunks:
            kf.run(x[a:a + n], y[a:a + n], mask[a:a + n])
            a += n
        kf.finish()
        assert [r["step"] for r in kf.history] == [2, 4, 6, 7]
        u, A = kf.influence
        assert u.shape == (2, 3 + 2 + 1) and A.shape == (2, 3, 3)
        results.append(([r["loss"] for r in kf.history], [p.data.copy() for p in model.parameters()]))
    before = _model("sequence", "rnn", {}, 1, None, 1).parameters()
    assert any(not np.allclose(w, p.data) for w, p in zip(results[0][1], before))
    for losses, ws in results[1:]:
        np.testing.assert_allclose(losses, results[0][0], rtol=1e-12)
        for w, w0 in zip(ws, results[0][1]):
            np.testing.assert_allclose(w, w0, rtol=1e-12)


def test_kfrtrl_needs_a_one_layer_rnn():
    for model in (_model("sequence", "gru", {}, 1, None, 1), _model("sequence", "rnn", {}, 1, None, 2)):
        with pytest.raises(ValueError, match="KFRTRL: needs a one-layer SequenceModel of the 'rnn' cell"):
            KFRTRL(model, bptt.nn.mse_loss, Recorder(model.parameters()))


def test_uoro_runs_every_cell_and_learns_with_changing_weights():
    for cell, options, n_state, cell_cls in CELLS:
        model = _model("sequence", cell, options, n_state, cell_cls, 1)
        x, y, mask = _data(T=6)
        uoro = UORO(model, bptt.nn.mse_loss, bptt.optim.SGD(model.parameters(), lr=0.01), k1=2,
                    clip_norm=1.0, rng=np.random.default_rng(0))
        records = uoro.run(x, y, mask)
        assert [r["step"] for r in records] == [2, 4, 6]
        assert all(np.isfinite(r["loss"]) and r["grad_norm"] >= 0 for r in records)
        s_tilde, theta_tilde = uoro.influence
        assert [s.shape for s in s_tilde] == [s.shape for s in (uoro.state if n_state > 1 else (uoro.state,))]


@pytest.mark.parametrize("make, message", [
    (lambda m, o: RTRL(m, bptt.nn.mse_loss, o, k1=0), r"RTRL: k1 \(steps between updates\) must be >= 1, got 0"),
    (lambda m, o: UORO(m, bptt.nn.mse_loss, o, clip_norm=-1.0), r"UORO: clip_norm must be positive"),
    (lambda m, o: RTRL(m, bptt.nn.mse_loss, o, chunk=0), r"RTRL: chunk must be a positive integer"),
    (lambda m, o: RTRL(object(), bptt.nn.mse_loss, o), r"RTRL: the model needs a step\(\) method"),
])
def test_bad_options_are_named(make, message):
    model = _model("sequence", "gru", {}, 1, None, 1)
    with pytest.raises((ValueError, TypeError), match=message):
        make(model, Recorder(model.parameters()))


def test_bad_streams_are_named():
    model = _model("sequence", "gru", {}, 1, None, 1)
    rtrl = RTRL(model, bptt.nn.mse_loss, Recorder(model.parameters()))
    x, y, mask = _data(T=4)
    with pytest.raises(ValueError, match=r"RTRL.run: x has 4 steps but y has 3"):
        rtrl.run(x, y[:3])
    with pytest.raises(ValueError, match=r"RTRL.run: mask must have shape \(T,\) = \(4,\)"):
        rtrl.run(x, y, mask[:2])


# -- adaptive truncation ------------------------------------------------------------------------

class LinearRNN(nn.Module):
    """h' = W h + U x with W = rho Q (Q orthogonal): ||dL/dh_{t-k}|| = rho^k ||dL/dh_t|| exactly."""

    def __init__(self, rho, H=4, I=2, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(rng.standard_normal((H, H)))
        self.weight_hh = nn.Parameter(rho * q)
        self.weight_ih = nn.Parameter(rng.standard_normal((H, I)))
        self.head = nn.Linear(H, 1, dtype=np.float64)
        self.H = H

    def initial_state(self, B):
        return Tensor(np.zeros((1, B, self.H)))

    def step(self, x, state):
        h = bptt.linear(state[0], self.weight_hh) + bptt.linear(Tensor(x), self.weight_ih)
        state = bptt.stack([h], axis=0)       # the head reads h through the returned state
        return self.head(state[0]), state


@pytest.mark.parametrize("rho, max_bias", [(0.8, 0.1), (0.5, 0.01), (0.9, 0.2), (0.3, 0.5)])
def test_adaptive_k2_on_a_linear_rnn_picks_the_analytic_length(rho, max_bias):
    from bptt.diagnostics import hidden_grad_norms
    from bptt.credit import adaptive_k2

    T = 30
    model = LinearRNN(rho)
    x = np.random.default_rng(1).standard_normal((T, 3, 2))
    mask = np.zeros(T)
    mask[-1] = 1
    by_lag = hidden_grad_norms(model, x, np.zeros((T, 3, 1)), bptt.nn.mse_loss, mask=mask)[0][::-1]
    np.testing.assert_allclose(by_lag[1:] / by_lag[:-1], rho, rtol=1e-10)
    analytic = int(np.ceil(np.log(max_bias) / np.log(rho)))     # smallest K with rho^K <= max_bias
    assert rho ** analytic <= max_bias < rho ** (analytic - 1)
    assert adaptive_k2(by_lag, max_bias) == analytic
    assert adaptive_k2(np.stack([by_lag, 2 * by_lag]), max_bias) == analytic   # windows averaged
    assert adaptive_k2(by_lag, max_bias, k2_max=analytic + 5) == analytic
    assert adaptive_k2(by_lag, max_bias, k2_max=1) == 1


def test_adaptive_k2_without_decay_and_bad_input():
    from bptt.credit import adaptive_k2

    growing = 1.1 ** np.arange(10)
    assert adaptive_k2(growing, 0.1, k2_max=25) == 25
    with pytest.raises(ValueError, match=r"norms do not decay \(factor 1.1 per step\).*give k2_max"):
        adaptive_k2(growing, 0.1)
    with pytest.raises(ValueError, match=r"max_bias must be in \(0, 1\), got 1.5"):
        adaptive_k2(growing, 1.5)
    with pytest.raises(ValueError, match="need at least two positive norms"):
        adaptive_k2([1.0, 0.0, np.nan], 0.1)
    # lags before min_lag (where losses are still added) are left out of the fit
    curve = np.concatenate([[5.0, 3.0, 9.0], 0.5 ** np.arange(8)])
    assert adaptive_k2(curve, 0.1, min_lag=3) == 4


def test_online_estimators_reject_non_finite_inputs():
    from bptt import nn, optim
    from bptt.credit import KFRTRL, RTRL, UORO

    model = nn.SequenceModel("rnn", 1, 2, 1, dtype=np.float64)
    x = np.zeros((4, 1, 1))
    x[2, 0, 0] = np.inf
    for cls in (RTRL, UORO):
        trainer = cls(model, nn.mse_loss, optim.SGD(model.parameters(), lr=0.1))
        with pytest.raises(ValueError, match=r"run: x holds a non-finite value \(inf\) at index \(2, 0, 0\)"):
            trainer.run(x, np.zeros((4, 1, 1)))
