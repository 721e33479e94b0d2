import math

import numpy as np
import pytest

import bptt
from bptt import nn, optim
from bptt.io import load_npz, save_npz
from bptt.tape import Tensor
from tolerance import summation_tol


def _param(values):
    return nn.Parameter(np.array(values, dtype=np.float64))


def _run(opt, p, grads):
    """Feed ``grads`` (arrays, or callables of p's value) to ``opt`` one step each; p's values after each."""
    out = []
    for g in grads:
        p.grad = np.array(g(p.data) if callable(g) else g, dtype=np.float64)
        opt.step()
        out.append(p.data.copy())
    return np.array(out)


GRADS = [np.array([1.0, -2.0]), np.array([0.5, 0.5]), np.array([-1.0, 3.0]), np.array([2.0, 0.1])]


# -- first steps, by hand ---------------------------------------------------------------------------

def test_sgd_by_hand():
    p = _param([1.0])
    # plain: 1 - 0.1 * 1
    assert _run(optim.SGD([p], lr=0.1), p, [[1.0]])[-1] == pytest.approx(0.9)
    # momentum 0.9 with g = 1 twice: buffers 1 and 1.9 -> 1 - 0.1 - 0.19
    p = _param([1.0])
    np.testing.assert_allclose(_run(optim.SGD([p], lr=0.1, momentum=0.9), p, [[1.0], [1.0]])[:, 0], [0.9, 0.71])
    # nesterov: steps g + 0.9 b = 1.9, then 1 + 0.9 * 1.9 = 2.71
    p = _param([1.0])
    np.testing.assert_allclose(_run(optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True), p, [[1.0], [1.0]])[:, 0],
                               [1 - 0.19, 1 - 0.19 - 0.271])
    # dampening 0.5 leaves the first buffer at g, halves g in later ones: 1 - 0.1 - 0.1 * (0.9 + 0.5)
    p = _param([1.0])
    np.testing.assert_allclose(_run(optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.5), p, [[1.0], [1.0]])[:, 0],
                               [0.9, 0.76])
    # weight decay 0.5 adds 0.5 * p = 1 to the gradient 1
    p = _param([2.0])
    assert _run(optim.SGD([p], lr=0.1, weight_decay=0.5), p, [[1.0]])[-1] == pytest.approx(1.8)


def test_adam_first_step_is_lr_times_sign():
    # bias correction makes the first step lr * g / (|g| + eps): lr * sign(g) for every size of g
    p = _param([1.0, 1.0, 1.0])
    after = _run(optim.Adam([p], lr=0.01), p, [[1e-3, -5.0, 200.0]])[-1]
    np.testing.assert_allclose(after, [0.99, 1.01, 0.99], rtol=1e-6)


def test_adagrad_and_rmsprop_first_steps():
    p = _param([1.0])
    # sum = 4 after g = 2: 1 - 0.1 * 2 / 2
    assert _run(optim.Adagrad([p], lr=0.1), p, [[2.0]])[-1] == pytest.approx(0.9)
    p = _param([1.0])
    # v = 0.01 * 4 -> sqrt 0.2: 1 - 0.01 * 2 / 0.2
    assert _run(optim.RMSprop([p]), p, [[2.0]])[-1] == pytest.approx(0.9, rel=1e-6)
    p = _param([1.0])
    # Adadelta: v = 0.1 * 4, step sqrt(1e-6) / sqrt(0.4 + 1e-6) * 2
    assert _run(optim.Adadelta([p]), p, [[2.0]])[-1] == pytest.approx(1 - 1e-3 / math.sqrt(0.400001) * 2)


# -- several steps against the documented rules -------------------------------------------------------

def _reference(name, kw, grads, p0):
    """The update rules as written in PyTorch's documentation, in plain numpy."""
    p, t = np.array(p0, dtype=np.float64), 0
    lr, wd = kw.get("lr"), kw.get("weight_decay", 1e-2 if name == "AdamW" else 0.0)
    s = {}
    out = []
    for g in grads:
        t += 1
        g = np.array(g, dtype=np.float64)
        if name == "AdamW":
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        if name == "SGD":
            mom, damp = kw.get("momentum", 0.0), kw.get("dampening", 0.0)
            if mom:
                s["b"] = g.copy() if t == 1 else mom * s["b"] + (1 - damp) * g
                g = g + mom * s["b"] if kw.get("nesterov") else s["b"]
            p = p - lr * g
        elif name == "Adagrad":
            s["sum"] = s.get("sum", kw.get("initial_accumulator_value", 0.0)) + g * g
            p = p - lr / (1 + (t - 1) * kw.get("lr_decay", 0.0)) * g / (np.sqrt(s["sum"]) + kw.get("eps", 1e-10))
        elif name == "Adadelta":
            rho, eps = kw.get("rho", 0.9), kw.get("eps", 1e-6)
            s["v"] = rho * s.get("v", 0.0) + (1 - rho) * g * g
            d = np.sqrt(s.get("u", 0.0) + eps) / np.sqrt(s["v"] + eps) * g
            s["u"] = rho * s.get("u", 0.0) + (1 - rho) * d * d
            p = p - lr * d
        elif name == "RMSprop":
            a, eps, mom = kw.get("alpha", 0.99), kw.get("eps", 1e-8), kw.get("momentum", 0.0)
            s["v"] = a * s.get("v", 0.0) + (1 - a) * g * g
            v = s["v"]
            if kw.get("centered"):
                s["m"] = a * s.get("m", 0.0) + (1 - a) * g
                v = v - s["m"] ** 2
            step = g / (np.sqrt(v) + eps)
            if mom:
                s["b"] = mom * s.get("b", 0.0) + step
                step = s["b"]
            p = p - lr * step
        else:   # Adam, AdamW
            b1, b2 = kw.get("betas", (0.9, 0.999))
            eps = kw.get("eps", 1e-8)
            s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
            s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
            v = s["v"]
            if kw.get("amsgrad"):
                s["vmax"] = v = np.maximum(s.get("vmax", 0.0), v)
            mhat, vhat = s["m"] / (1 - b1 ** t), v / (1 - b2 ** t)
            p = p - lr * mhat / (np.sqrt(vhat) + eps)
        out.append(p.copy())
    return np.array(out)


CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.5, weight_decay=0.1, initial_accumulator_value=0.2)),
    ("Adadelta", dict(lr=1.0)),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.5, amsgrad=True)),
]


@pytest.mark.parametrize("name, kw", CONFIGS)
def test_several_steps_match_documented_rule(name, kw):
    p0 = [0.5, -1.5]
    p = _param(p0)
    got = _run(getattr(optim, name)([p], **kw), p, GRADS)
    np.testing.assert_allclose(got, _reference(name, kw, GRADS, p0), rtol=1e-12, atol=1e-15)


def test_defaults_are_pytorchs():
    p = _param([0.0])
    assert optim.SGD([p]).lr == 1e-3
    a = optim.Adam([p])
    assert (a.lr, a.betas, a.eps, a.weight_decay, a.amsgrad) == (1e-3, (0.9, 0.999), 1e-8, 0.0, False)
    assert optim.AdamW([p]).weight_decay == 1e-2
    r = optim.RMSprop([p])
    assert (r.lr, r.alpha, r.eps, r.momentum, r.centered) == (1e-2, 0.99, 1e-8, 0.0, False)
    d = optim.Adadelta([p])
    assert (d.lr, d.rho, d.eps) == (1.0, 0.9, 1e-6)
    g = optim.Adagrad([p])
    assert (g.lr, g.eps, g.lr_decay, g.initial_accumulator_value) == (1e-2, 1e-10, 0.0, 0.0)


def test_maximize_ascends():
    p = _param([1.0])
    assert _run(optim.SGD([p], lr=0.1, maximize=True), p, [[1.0]])[-1] == pytest.approx(1.1)


def test_float32_parameters_stay_float32():
    p = nn.Parameter(np.ones(3, np.float32))
    for opt in (optim.SGD([p], lr=0.1, momentum=0.9), optim.Adam([p]), optim.RMSprop([p], centered=True)):
        p.grad = np.ones(3, np.float32)
        opt.step()
        assert p.data.dtype == np.float32
        assert all(v.dtype == np.float32 for k, v in opt.state_dict().items() if not k.endswith("step")
                   and k.startswith("state."))


# -- mechanics ------------------------------------------------------------------------------------

def test_step_rebinds_and_the_tape_keeps_old_values():
    p = _param([2.0, 3.0])
    x = Tensor(np.array([1.0, 10.0]), requires_grad=True)
    before = p.data
    y = (p * x).sum()              # the entry keeps p's array [2, 3]
    p.grad = np.ones(2)
    optim.SGD([p], lr=1.0).step()
    assert p.data is not before
    np.testing.assert_array_equal(before, [2.0, 3.0])
    y.backward()
    np.testing.assert_array_equal(x.grad, [2.0, 3.0])


def test_params_without_grad_are_skipped():
    a, b = _param([1.0]), _param([1.0])
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = np.array([1.0])
    opt.step()
    assert b.data[0] == 1.0 and a.data[0] != 1.0
    assert "state.1.step" not in opt.state_dict() and opt.state_dict()["state.0.step"] == 1
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_closure_is_called_and_returned():
    p = _param([3.0])
    opt = optim.SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 9.0
    assert p.data[0] == pytest.approx(3.0 - 0.25 * 6.0)


def test_accepts_a_module():
    m = nn.Linear(2, 1)
    assert optim.SGD(m).params == m.parameters()


@pytest.mark.parametrize("name, kw", [c for c in CONFIGS if c[1].get("momentum") or c[0] != "SGD"])
def test_state_dict_checkpoint_resumes_exactly(name, kw, tmp_path):
    p = _param([0.5, -1.5])
    opt = getattr(optim, name)([p], **kw)
    _run(opt, p, GRADS[:2])
    save_npz(tmp_path / "opt.npz", opt.state_dict())
    saved_p = p.data.copy()
    rest = _run(opt, p, GRADS[2:])

    q = nn.Parameter(saved_p)
    fresh = getattr(optim, name)([q], lr=123.0)   # the checkpoint restores lr too
    fresh.load_state_dict(load_npz(tmp_path / "opt.npz"))
    assert fresh.lr == kw["lr"]
    np.testing.assert_array_equal(_run(fresh, q, GRADS[2:]), rest)    # the same steps: the same bits


def test_state_dict_is_flat_arrays_and_a_copy():
    p = _param([1.0, 2.0])
    opt = optim.Adam([p], betas=(0.8, 0.9))
    _run(opt, p, GRADS[:1])
    sd = opt.state_dict()
    assert set(sd) == {"hyper.lr", "hyper.betas", "hyper.eps", "hyper.weight_decay", "hyper.amsgrad",
                       "hyper.maximize", "state.0.step", "state.0.exp_avg", "state.0.exp_avg_sq"}
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    sd["state.0.exp_avg"][:] = 99
    assert opt.state[0]["exp_avg"][0] != 99
    again = optim.Adam([_param([0.0, 0.0])])
    again.load_state_dict(sd)
    assert again.betas == (0.8, 0.9) and isinstance(again.amsgrad, bool)


def test_load_state_dict_errors():
    opt = optim.SGD([_param([1.0, 2.0])], momentum=0.9)
    with pytest.raises(ValueError, match=r"SGD.load_state_dict: state.0.momentum_buffer: shape \(3,\), "
                                         r"parameter \(2,\); state.4.momentum_buffer: unexpected key"):
        opt.load_state_dict({"state.0.momentum_buffer": np.zeros(3), "state.4.momentum_buffer": np.zeros(2)})
    with pytest.raises(ValueError, match="hyper.betas: unexpected key"):
        opt.load_state_dict({"hyper.betas": np.array([0.9, 0.99])})


def test_constructor_errors():
    p = _param([1.0])
    with pytest.raises(ValueError, match="SGD: nesterov needs momentum > 0 and dampening 0"):
        optim.SGD([p], nesterov=True)
    with pytest.raises(ValueError, match="Adam: beta2 must be in"):
        optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="AdamW: betas must be a pair"):
        optim.AdamW([p], betas=(0.9,))
    with pytest.raises(ValueError, match="RMSprop: got an empty parameter list"):
        optim.RMSprop([])
    with pytest.raises(ValueError, match="Adagrad: lr must be >= 0, got -1"):
        optim.Adagrad([p], lr=-1)
    with pytest.raises(TypeError, match="SGD: parameter 0 is a ndarray, not a Tensor"):
        optim.SGD([np.zeros(2)])
    with pytest.raises(ValueError, match=r"Adam: parameter 0 of shape \(2,\) does not require grad"):
        optim.Adam([Tensor(np.zeros(2))])
    with pytest.raises(ValueError, match="SGD: a parameter appears more than once"):
        optim.SGD([p, p])


# -- clipping -------------------------------------------------------------------------------------

def test_clip_grad_norm():
    a, b, c = _param([0.0, 0.0]), _param([0.0]), _param([0.0])
    a.grad, b.grad = np.array([3.0, 0.0]), np.array([4.0])
    total = optim.clip_grad_norm([a, b, c], max_norm=1.0)
    assert total == 5.0 and c.grad is None
    np.testing.assert_allclose(np.concatenate([a.grad, b.grad]), np.array([3.0, 0.0, 4.0]) / (5 + 1e-6))
    # below the limit: untouched, and the norm still reported
    assert optim.clip_grad_norm([a, b], max_norm=10.0) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(a.grad, [3 / (5 + 1e-6), 0.0])


def test_clip_grad_norm_other_norms():
    a = _param([0.0, 0.0, 0.0])
    a.grad = np.array([1.0, -4.0, 2.0])
    assert optim.clip_grad_norm(a, 2.0, norm_type=math.inf) == 4.0
    np.testing.assert_allclose(a.grad, np.array([1.0, -4.0, 2.0]) * 2 / (4 + 1e-6))
    a.grad = np.array([1.0, -4.0, 2.0])
    assert optim.clip_grad_norm([a], 100.0, norm_type=1) == 7.0
    assert optim.clip_grad_norm([_param([1.0])], 1.0) == 0.0    # no gradients at all
    with pytest.raises(ValueError, match="clip_grad_norm: max_norm must be >= 0"):
        optim.clip_grad_norm([a], -1.0)


def test_clip_grad_value():
    a = _param([0.0, 0.0, 0.0])
    a.grad = np.array([0.5, -4.0, 2.0])
    optim.clip_grad_value([a], 1.0)
    np.testing.assert_array_equal(a.grad, [0.5, -1.0, 1.0])


# -- schedules ------------------------------------------------------------------------------------

def _lrs(sched, n):
    out = [sched.get_last_lr()]
    for _ in range(n):
        sched.optimizer.step()
        sched.step()
        out.append(sched.get_last_lr())
    return np.array(out)


def test_step_lr():
    opt = optim.SGD([_param([0.0])], lr=1.0)
    np.testing.assert_allclose(_lrs(optim.StepLR(opt, step_size=2, gamma=0.5), 5), [1, 1, 0.5, 0.5, 0.25, 0.25])
    assert opt.lr == 0.25


def test_exponential_lr():
    opt = optim.SGD([_param([0.0])], lr=0.1)
    np.testing.assert_allclose(_lrs(optim.ExponentialLR(opt, gamma=0.9), 3), 0.1 * 0.9 ** np.arange(4))


def test_cosine_annealing_lr():
    opt = optim.SGD([_param([0.0])], lr=1.0)
    lrs = _lrs(optim.CosineAnnealingLR(opt, T_max=4, eta_min=0.2), 4)
    half = (1 - 0.2) / 2
    np.testing.assert_allclose(lrs, [1.0, 0.2 + half * (1 + np.sqrt(0.5)), 0.6, 0.2 + half * (1 - np.sqrt(0.5)), 0.2])


def test_schedule_state_dict_resumes():
    opt = optim.SGD([_param([0.0])], lr=1.0)
    sched = optim.StepLR(opt, step_size=2, gamma=0.1)
    _lrs(sched, 3)
    sd = sched.state_dict()
    opt2 = optim.SGD([_param([0.0])], lr=1.0)
    sched2 = optim.StepLR(opt2, step_size=2, gamma=0.1)
    sched2.load_state_dict(sd)
    assert opt2.lr == pytest.approx(0.1) and sched2.last_epoch == 3
    np.testing.assert_allclose(_lrs(sched2, 2)[1:], _lrs(sched, 2)[1:])
    with pytest.raises(ValueError, match="StepLR: step_size must be a positive integer"):
        optim.StepLR(opt, step_size=0)
    with pytest.raises(TypeError, match="ExponentialLR: need a bptt.optim optimizer"):
        optim.ExponentialLR(object(), 0.9)


# -- scipy ----------------------------------------------------------------------------------------

def test_minimize_reaches_least_squares():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 3))
    y = x @ np.array([[1.5], [-2.0], [0.3]]) + 0.7 + 0.1 * rng.normal(size=(60, 1))
    model = nn.Linear(3, 1, dtype=np.float64)
    # the line search compares values of f, a 60-term sum rounded within tol = summation_tol of
    # itself, which hides a step's decrease g^2 / (2 lambda) once the gradient g is below
    # sqrt(2 lambda f tol), under sqrt(tol) here (f < 0.01, the Hessian's lambda about 2): a
    # tighter gtol is met or not by luck of the rounding, which the BLAS's kernels decide
    gtol = math.sqrt(summation_tol(np.float64, 60))
    result = optim.minimize(model, lambda: nn.mse_loss(model(x), y), options={"gtol": gtol, "ftol": 0})
    assert result.success, result.message
    coef, *_ = np.linalg.lstsq(np.hstack([x, np.ones((60, 1))]), y, rcond=None)
    np.testing.assert_allclose(model.weight.data.ravel(), coef[:3, 0], atol=1e-6)
    np.testing.assert_allclose(model.bias.data, coef[3], atol=1e-6)
    assert all(p.grad is None for p in model.parameters())
    for method in ("BFGS", "CG"):
        model = nn.Linear(3, 1, dtype=np.float64)
        optim.minimize(model, lambda: nn.mse_loss(model(x), y), method=method, tol=1e-12)
        np.testing.assert_allclose(model.weight.data.ravel(), coef[:3, 0], atol=1e-6)


def test_minimize_closure_error():
    model = nn.Linear(1, 1, dtype=np.float64)
    with pytest.raises(TypeError, match="minimize: closure must return a scalar Tensor"):
        optim.minimize(model, lambda: model(np.ones((3, 1))))


def test_bptt_optim_is_importable():
    assert bptt.optim is optim


def test_recorder_keeps_the_weights_and_copies_each_gradient():
    from bptt.optim import Recorder
    w = nn.Parameter(np.array([1.0, 2.0], np.float32))
    rec = Recorder([w], dtype=np.float64)
    for g in ([0.5, -1.0], [2.0, 3.0]):
        w.grad = np.array(g, np.float32)
        rec.step()
        w.grad[...] = 99                       # a later change of .grad does not reach the copy
    assert np.array_equal(w.data, [1.0, 2.0])
    assert [r[0].tolist() for r in rec.grads] == [[0.5, -1.0], [2.0, 3.0]]
    assert rec.grads[0][0].dtype == np.float64
    rec.zero_grad()
    assert w.grad is None
