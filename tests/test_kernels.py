"""The fused kernels' buffers: scratch and the pool hand out memory only when nothing else uses it."""

import numpy as np
import pytest

from bptt.nn import kernels


@pytest.fixture(autouse=True)
def _fresh():
    kernels.release_scratch()
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
