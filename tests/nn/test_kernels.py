"""The fused kernels' buffers: scratch and the pool hand out memory only when nothing else uses it."""

import numpy as np
import pytest

from bptt.nn import compiled, kernels
from tolerance import assert_close_sums


@pytest.fixture(autouse=True)
def _fresh():
    kernels.release_scratch()
    with compiled.enabled(False):        # these test the numpy kernels, even under BPTT_COMPILED=1
        yield
    kernels.release_scratch()


def test_pooled_buffer_is_reused_only_once_nothing_refers_to_it():
    a = kernels.pooled("t.a", (3, 4), np.float32)
    a[...] = 7
    b = kernels.pooled("t.a", (3, 4), np.float32)          # a is alive: a second buffer
    assert not np.shares_memory(a, b)
    assert (a == 7).all()
    view = a[1:]
    del a
    c = kernels.pooled("t.a", (3, 4), np.float32)          # a's buffer is held by the view
    assert not np.shares_memory(c, view) and not np.shares_memory(c, b)
    del view, c
    d = kernels.pooled("t.a", (2, 5), np.float32)          # free again: reused, any shape that fits
    assert d.shape == (2, 5) and d.dtype == np.float32
    assert np.shares_memory(d, kernels._pool.__dict__["t.a"][0])


def test_pooled_grows_a_free_buffer_that_is_too_small_or_of_another_dtype():
    a = kernels.pooled("t.g", (4,), np.float32)
    del a
    b = kernels.pooled("t.g", (100,), np.float64)
    assert b.shape == (100,) and b.dtype == np.float64
    assert kernels._pool.__dict__["t.g"][0].size == 100


def test_pool_falls_back_to_fresh_arrays_past_its_depth_and_limits(monkeypatch):
    live = [kernels.pooled("t.d", (2,), np.float32) for _ in range(kernels.POOL_DEPTH + 3)]
    assert len(kernels._pool.__dict__["t.d"]) == kernels.POOL_DEPTH
    assert len({id(a.base) if a.base is not None else id(a) for a in live}) == len(live)
    monkeypatch.setattr(kernels, "POOL_LIMIT", 100)
    big = kernels.pooled("t.big", (1000,), np.float32)     # over the pool's byte limit
    assert big.base is None and kernels._pool.__dict__["t.big"] == []
    monkeypatch.setattr(kernels, "SCRATCH_LIMIT", 10)
    assert kernels.pooled("t.s", (1000,), np.float32).base is None


def test_release_scratch_empties_both_caches():
    kernels.scratch("t.x", (5,), np.float64)
    keep = kernels.pooled("t.y", (5,), np.float64)
    kernels.release_scratch()
    assert not kernels._scratch.__dict__ and not kernels._pool.__dict__
    keep[...] = 1                                          # an array handed out stays valid
    assert keep.sum() == 5


@pytest.mark.parametrize("T,steps", [(1, 10 ** 9), (50, 1), (50, 2 ** 16), (7, 2 ** 30)])
def test_block_steps_fit_the_block_bytes_and_never_exceed_T(T, steps):
    S = kernels.block_steps(T, steps)
    assert 1 <= S <= T
    assert S == 1 or S * steps <= kernels.BLOCK_BYTES


def _row_major_lstm(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """The LSTM forward with one (B, H) @ (H, 4H) GEMM a step and ufuncs over strided gate slices,
    in the fused kernel's arithmetic (sigmoid as 0.5 tanh(a / 2) + 0.5, the halving folded in)."""
    H = w_hh.shape[1]
    half = np.full(4 * H, 0.5, x.dtype)
    half[2 * H:3 * H] = 1
    shift = np.where(half == 0.5, 0.5, 0).astype(x.dtype)
    xp = x.reshape(-1, x.shape[-1]) @ (w_ih * half[:, None]).T
    xp += (b_ih + b_hh) * half
    w_t = np.ascontiguousarray(w_hh.T * half) if x.shape[1] > 1 else w_hh.T * half
    ys = []
    for a in xp.reshape(len(x), x.shape[1], 4 * H):
        a += h @ w_t
        a = np.tanh(a) * half + shift
        c = a[:, H:2 * H] * c + a[:, :H] * a[:, 2 * H:3 * H]
        h = a[:, 3 * H:] * np.tanh(c)
        ys.append(h)
    return np.stack(ys), c


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("T,B,I,H", [(5, 1, 3, 16), (6, 4, 2, 32), (3, 64, 2, 64), (4, 8, 40, 48),
                                     (3, 1, 5, 24), (300, 16, kernels.WIDE_INPUT, 32)])
def test_the_gate_major_lstm_matches_the_row_major(T, B, I, H, dtype):
    """Each entry is the same dot product and the same ufuncs, but a per-gate GEMM (or one over a
    block of steps) need not add a dot product's terms in the one GEMM's order: that depends on
    the BLAS's kernels (equal bits with OpenBLAS's Sandybridge kernels, not its Haswell ones),
    so within the rounding of T steps of (I + H + 2)-term sums.  A permuted gate is off by O(1)."""
    from bptt.nn.cells import lstm
    rng = np.random.default_rng(T * B)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0, c0 = (rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    w = [rng.uniform(-0.3, 0.3, s).astype(dtype) for s in ((4 * H, I), (4 * H, H), (4 * H,), (4 * H,))]
    ys, (h, c), _ = lstm._forward(x, (h0, c0), tuple(w), False)
    want_ys, want_c = _row_major_lstm(x, h0, c0, *w)
    n = T * (I + H + 2)
    assert ys.dtype == c.dtype == dtype
    assert_close_sums(ys, want_ys, n, err_msg="y")
    assert_close_sums(c, want_c, n, err_msg="c")
    assert np.array_equal(h, ys[-1])           # the same array's last step: no arithmetic between


def _row_major_gru(x, h, w_ih, w_hh, b_ih, b_hh):
    """The GRU forward with one (B, H) @ (H, 3H) GEMM a step over strided gate slices, in the
    fused kernel's arithmetic (r, z halved and folded in, b_hn inside r * (...))."""
    H = w_hh.shape[1]
    half = np.where(np.arange(3 * H) < 2 * H, 0.5, 1).astype(x.dtype)
    fold = np.where(np.arange(3 * H) < 2 * H, 1, 0).astype(x.dtype)
    xp = x.reshape(-1, x.shape[-1]) @ (w_ih * half[:, None]).T
    xp += (b_ih + b_hh * fold) * half
    w_t = np.ascontiguousarray(w_hh.T * half) if x.shape[1] > 1 else w_hh.T * half
    ys = []
    for a in xp.reshape(len(x), x.shape[1], 3 * H):
        q = h @ w_t
        qn = q[:, 2 * H:] + b_hh[2 * H:]
        rz = np.tanh(a[:, :2 * H] + q[:, :2 * H]) * 0.5 + 0.5
        n = np.tanh(a[:, 2 * H:] + rz[:, :H] * qn)
        h = n + (h - n) * rz[:, H:]
        ys.append(h)
    return np.stack(ys)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("T,B,I,H", [(5, 1, 3, 16), (6, 4, 2, 32), (3, 64, 2, 64), (4, 16, 1, 32),
                                     (40, 16, kernels.WIDE_INPUT, 32)])
def test_the_gate_major_gru_matches_the_row_major(T, B, I, H, dtype):
    """As the LSTM's: the same formulas, GEMMs of other shapes, so within summation rounding."""
    from bptt.nn.cells import gru
    rng = np.random.default_rng(T * B)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    w = [rng.uniform(-0.3, 0.3, s).astype(dtype) for s in ((3 * H, I), (3 * H, H), (3 * H,), (3 * H,))]
    ys, (h,), _ = gru._forward(x, (h0,), tuple(w), False)
    assert ys.dtype == dtype
    assert_close_sums(ys, _row_major_gru(x, h0, *w), T * (I + H + 2), err_msg="y")
    assert np.array_equal(h, ys[-1])           # the same array's last step: no arithmetic between


def test_fixed_weights_lays_each_weight_set_out_once_and_frees_it_after():
    from bptt.nn.cells import lstm
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 4, 3)).astype(np.float32)
    state = (np.zeros((4, 8), np.float32),) * 2
    w = tuple(rng.uniform(-0.3, 0.3, s).astype(np.float32) for s in ((32, 3), (32, 8), (32,), (32,)))
    other = tuple(a.copy() for a in w)
    half = np.full(32, 0.5, np.float32)
    plain = lstm._forward(x, state, w, False)[0].copy()
    with kernels.fixed_weights():
        first = kernels.gate_major(x, *w, half, lstm.ORDER, "t.g")[1]
        with kernels.fixed_weights():                      # nested: the same layouts
            assert kernels.gate_major(x[:2], *w, half, lstm.ORDER, "t.g")[1] is first
        assert kernels.gate_major(x, *w, half, lstm.ORDER, "t.g")[1] is first
        assert kernels.gate_major(x, *other, half, lstm.ORDER, "t.g")[1] is not first
        # the same kernel on the same weights, laid out once instead of per call: the same bits
        assert np.array_equal(lstm._forward(x, state, w, False)[0], plain)
    assert kernels.gate_major(x, *w, half, lstm.ORDER, "t.g")[1] is not first   # freed
