"""The compiled LSTM kernels (bptt.nn.compiled): the numpy kernels' numbers, gradients vs finite
differences, the switch, and the error without numba."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("numba")

import bptt  # noqa: E402
from bptt import Tensor, nn  # noqa: E402
from bptt.nn import compiled  # noqa: E402
from bptt.nn.cells import lstm  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(bptt.__file__)))
#: float32: both paths round every operation to float32 but differ in the activations (numpy's
#: vectorised float32 tanh, within about 1.5 ulp, its sigmoids 0.5 tanh(a / 2) + 0.5; ours from
#: a float32 exp, within 2.5 ulps), in fused multiply-adds and in the BLAS's order of
#: summation; over the 6 steps of these cases the largest difference is a few 1e-7 of the
#: array's largest entry, for inputs of order one, so 1e-5 leaves a margin of 10 or more.  A
#: wrong formula moves entries by 1e-2 and more.
F32_TOL = 1e-5


@pytest.fixture(params=["loop", "steps"])
def both_paths(request, monkeypatch):
    """Each layer runs all its steps in one compiled loop ("loop"), or step by step from Python
    ("steps"), whatever its size (a backward at B = 1 always loops)."""
    monkeypatch.setattr(compiled, "LOOP_MACS", 1 << 62 if request.param == "loop" else 0)
    return request.param


@pytest.fixture(autouse=True)
def _numpy_path():
    """Each test starts with the compiled path off, whatever BPTT_COMPILED says, and leaves it so."""
    before = compiled.use(False)
    yield
    compiled.use(before)


def _case(rng, T, B, I, H, dtype, bias):
    x = rng.standard_normal((T, B, I)).astype(dtype)
    state = tuple(rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    k = 1 / np.sqrt(H)
    w = [rng.uniform(-k, k, s).astype(dtype) for s in ((4 * H, I), (4 * H, H), (4 * H,), (4 * H,))]
    if not bias:
        w[2] = w[3] = None
    return x, state, tuple(w)


def _run(forward, backward, x, state, weights, reverse, gy, gstate, need_x):
    """Every output of one forward and backward, copied (the paths reuse their buffers)."""
    y, final, res = forward(x, state, weights, reverse)
    out = [y.copy(), *(s.copy() for s in final)]
    dx, dstate, dweights = backward(res, gy, gstate, need_x, True, True)
    return out + [dx, *dstate, *dweights]


def _assert_close(got, want, tol):
    """Entry by entry within ``tol`` of the larger of the entry and the array's largest entry's
    order (a sum that cancels to near zero is off by rounding of its terms' size)."""
    for a, b in zip(got, want):
        if b is None:
            assert a is None
            continue
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max()))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("gy_given", [True, False])
@pytest.mark.parametrize("need_x", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("H", [1, 5, 16, 32])
@pytest.mark.parametrize("B", [1, 3, 16])
def test_compiled_equals_numpy(B, H, reverse, bias, need_x, gy_given, dtype, both_paths):
    rng = np.random.default_rng(B * 100 + H)
    T, I = 6, 3
    x, state, weights = _case(rng, T, B, I, H, dtype, bias)
    gy = rng.standard_normal((T, B, H)).astype(dtype) if gy_given else None
    gstate = tuple(rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    args = (x, state, weights, reverse, gy, gstate, need_x)
    ours = _run(compiled.lstm_forward, compiled.lstm_backward, *args)
    ref = _run(lstm._forward, lstm._backward, *args)
    assert (ours[3] is None) == (not need_x) and (ours[8] is None) == (not bias)
    _assert_close(ours, ref, 1e-12 if dtype == np.float64 else F32_TOL)


def test_float32_is_as_accurate_as_numpy(both_paths):
    """Against float64, the compiled float32 kernels are no further off than the numpy ones."""
    rng = np.random.default_rng(7)
    T, B, I, H = 20, 4, 3, 32
    x, state, weights = _case(rng, T, B, I, H, np.float64, True)
    gy = rng.standard_normal((T, B, H))
    gstate = tuple(np.zeros((B, H)) for _ in range(2))
    truth = _run(lstm._forward, lstm._backward, x, state, weights, False, gy, gstate, True)

    def f32(a):
        return None if a is None else a.astype(np.float32)
    args = (f32(x), tuple(map(f32, state)), tuple(map(f32, weights)), False, f32(gy),
            tuple(map(f32, gstate)), True)
    for forward, backward in ((compiled.lstm_forward, compiled.lstm_backward), (lstm._forward, lstm._backward)):
        errors = [np.abs(a - b).max() / np.abs(b).max() for a, b in zip(_run(forward, backward, *args), truth)]
        if forward is compiled.lstm_forward:
            ours = errors
    assert all(e < 2e-6 for e in ours)
    assert max(ours) <= 2 * max(errors)


def test_gradcheck_through_lstm_module(rng, monkeypatch):
    """Finite differences through a 2-layer bidirectional nn.LSTM (float64) on the compiled path."""
    calls = []
    forward = compiled.lstm_forward
    monkeypatch.setattr(compiled, "lstm_forward", lambda *a: calls.append(1) or forward(*a))
    module = nn.LSTM(2, 3, num_layers=2, bidirectional=True, dtype=np.float64)
    x = Tensor(rng.standard_normal((4, 2, 2)), requires_grad=True)
    state = tuple(Tensor(rng.standard_normal((4, 2, 3)), requires_grad=True) for _ in range(2))
    weight = Tensor(np.sin(np.arange(48.0)).reshape(4, 2, 6))

    def objective(*_):
        y, (h, c) = module(x, state)
        return (y * weight).sum() + (h * 2.0).sum() + (c * 3.0).sum()

    with compiled.enabled():
        assert bptt.gradcheck(objective, [x, *state, *module.parameters()])
    assert len(calls) > 4      # every layer and direction, on every evaluation


def test_threads_keep_their_own_buffers(rng, both_paths):
    """Loops run without the GIL on per-thread buffers: concurrent calls give the serial results."""
    cases = [_case(rng, 8, B, 3, 16, np.float64, True) for B in (1, 2, 3, 4)]
    gstate = [tuple(np.ones((B, 16)) for _ in range(2)) for B in (1, 2, 3, 4)]

    def run(j):
        x, state, weights = cases[j % 4]
        return _run(compiled.lstm_forward, compiled.lstm_backward, x, state, weights, j % 2 == 1,
                    None, gstate[j % 4], True)
    serial = [run(j) for j in range(8)]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            for got, want in zip(pool.map(run, range(8)), serial):
                for a, b in zip(got, want):       # the same calls on the same inputs: the same bits
                    np.testing.assert_array_equal(a, b)


def test_use_and_enabled_set_and_restore():
    assert compiled.use(True) is False
    assert compiled.is_enabled() and compiled.use(True) is True
    assert compiled.use(False) is True and not compiled.is_enabled()
    with pytest.raises(RuntimeError, match="inside"):
        with compiled.enabled():
            assert compiled.is_enabled()
            with compiled.enabled(False):
                assert not compiled.is_enabled()
            assert compiled.is_enabled()
            raise RuntimeError("inside")
    assert not compiled.is_enabled()
    assert compiled.available()


def test_which_calls_run_compiled(rng):
    """float32 layers of every size run on the compiled kernels, float64 ones of at most
    FLOAT64_UNITS units a step; other dtypes stay on numpy."""
    H = 8
    for B, dtype, expected in ((2, np.float32, True), (compiled.FLOAT64_UNITS // H, np.float64, True),
                               (compiled.FLOAT64_UNITS // H + 1, np.float64, False),
                               (compiled.LOOP_MACS // (4 * H * H) + 1, np.float32, True), (2, np.float16, False)):
        x, state, weights = _case(rng, 3, B, 2, H, dtype, True)
        with compiled.enabled():
            res = lstm._forward(x, state, weights, False)[2]
        assert isinstance(res, compiled.Residuals) is expected, (B, dtype)
        assert isinstance(lstm._forward(x, state, weights, False)[2], compiled.Residuals) is False


def test_float32_activations_within_their_ulps():
    """The compiled float32 sigmoid and tanh against float64 over float32's range: within 2.5
    ulps (numpy's float32 tanh: 1.3), the special values right."""
    import numba

    compiled.use(True)

    @numba.njit
    def apply(x, s, t):
        for i in range(x.shape[0]):
            s[i] = compiled._sigmoid(x[i])
            t[i] = compiled._tanh(x[i])
    x = np.concatenate([np.linspace(-100, 100, 400001), np.geomspace(1e-38, 100, 20000),
                        -np.geomspace(1e-38, 100, 20000)]).astype(np.float32)
    s, t = np.empty_like(x), np.empty_like(x)
    apply(x, s, t)
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        sigmoid = 1 / (1 + np.exp(-x64))

    def ulps(got, true):
        return np.abs(got - true) / np.spacing(np.abs(true).astype(np.float32))
    normal = x > -87          # below, exp(-|x|) is clipped at exp(-87)
    assert ulps(s[normal], sigmoid[normal]).max() <= 2.5
    assert np.abs(s[~normal] - sigmoid[~normal]).max() < 2e-38
    assert ulps(t, np.tanh(x64)).max() <= 2.5
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], np.float32)
    s, t = np.empty_like(special), np.empty_like(special)
    apply(special, s, t)
    np.testing.assert_array_equal(t, [0.0, -0.0, 1.0, -1.0, np.nan])
    assert np.signbit(t[1]) and s[0] == s[1] == 0.5 and s[2] == 1 and 0 <= s[3] < 2e-38
    assert np.isnan(s[4])


def test_fixed_weights_lays_the_weights_out_once(rng, monkeypatch, both_paths):
    """Within ``kernels.fixed_weights`` (a checkpointed layer's passes) the compiled forward lays
    a weight set out once, as the numpy kernels do, with the same results."""
    from bptt.nn import kernels
    x, state, weights = _case(rng, 5, 3, 2, 8, np.float32, True)
    plain = compiled.lstm_forward(x, state, weights, False)[0].copy()
    made = []
    layout = compiled._layout
    monkeypatch.setattr(compiled, "_layout", lambda *a: made.append(1) or layout(*a))
    with kernels.fixed_weights():
        for _ in range(3):      # the same loops on the same weights, laid out once: the same bits
            np.testing.assert_array_equal(compiled.lstm_forward(x, state, weights, False)[0], plain)
    assert len(made) == 1
    compiled.lstm_forward(x, state, weights, False)
    assert len(made) == 2          # freed with the block


def test_backward_follows_its_forward_across_a_switch(rng):
    """Residuals say which path made them: a forward's backward runs there, whatever the setting
    is by then (the compiled path is off in one order, on in the other)."""
    x, state, weights = _case(rng, 5, 2, 3, 4, np.float64, True)
    gy = rng.standard_normal((5, 2, 4))
    gstate = tuple(np.zeros((2, 4)) for _ in range(2))
    ref = _run(lstm._forward, lstm._backward, x, state, weights, False, gy, gstate, True)
    with compiled.enabled():
        _, _, res = lstm._forward(x, state, weights, False)
    assert isinstance(res, compiled.Residuals)
    _assert_close(lstm._backward(res, gy, gstate, True, True, True)[0:1], ref[3:4], 1e-12)
    _, _, res = lstm._forward(x, state, weights, False)
    with compiled.enabled():
        dx = lstm._backward(res, gy, gstate, True, True, True)[0]
    # the numpy backward on the numpy forward's residuals, as ref's: the same operations, bit for bit
    np.testing.assert_array_equal(dx, ref[3])

    # through the tape: recorded with the path on, replayed with it off
    module = nn.LSTM(3, 4, dtype=np.float64)
    grads = []
    for on in (True, False):
        module.zero_grad()
        with compiled.enabled(on):
            y, _ = module(x)
        (y * y).sum().backward()
        grads.append([p.grad.copy() for p in module.parameters()])
    _assert_close(*grads, 1e-12)


def _python(code, **env):
    environ = {k: v for k, v in os.environ.items() if k != "BPTT_COMPILED"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**environ, **env})


def test_environment_variable_and_import_of_numba():
    code = "import sys, bptt; from bptt.nn import compiled; print(compiled.is_enabled(), 'numba' in sys.modules)"
    assert _python(code).stdout.split() == ["False", "False"]         # importing bptt never imports numba
    assert _python(code, BPTT_COMPILED="0").stdout.split() == ["False", "False"]
    out = _python(code, BPTT_COMPILED="1")
    assert out.stdout.split() == ["True", "True"], out.stderr
    out = _python(code, BPTT_COMPILED="yes")
    assert out.returncode != 0 and "BPTT_COMPILED: must be 0 or 1, got 'yes'" in out.stderr
    lazy = "import sys, bptt; print('numba' in sys.modules)"       # applied on first use only
    assert _python(lazy, BPTT_COMPILED="1").stdout.split() == ["False"]


def test_a_wrong_environment_variable_is_a_usage_error_of_the_cli(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bptt", "train", "--steps", "1", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "BPTT_COMPILED": "yes"})
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "Invalid value for 'BPTT_COMPILED': must be 0 or 1, got 'yes'" in out.stderr


def test_missing_numba_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)       # import numba now raises ImportError
    monkeypatch.setattr(compiled, "_loops", None)
    assert not compiled.available()
    with pytest.raises(ImportError, match=r"the compiled LSTM kernels need numba: pip install 'bptt\[compiled\]'"):
        compiled.use(True)
    assert not compiled.is_enabled()
    with pytest.raises(ImportError, match=r"pip install 'bptt\[compiled\]'"):
        with compiled.enabled():
            pass
