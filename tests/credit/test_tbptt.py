"""Truncated BPTT, BPTT(k2; k1), against independent references built from the model's own step.

The references never go through TBPTT's machinery: they recompute each update's window from the
stored, detached h_{t-k2} with the weights each step ran with, and backpropagate the masked mean
of the last k1 losses in one ordinary backward.  Everything is float64 and compared at 1e-12.
"""

import gc
import math
import weakref

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import bptt
from bptt import nn
from bptt.nn import Module
from bptt.optim import SGD, Recorder
from bptt.tape import Tensor, no_grad
from bptt import TBPTT

F64 = np.float64


# -- stand-in models: a step and a sequence path built from primitives -------------------------

class TinyRNN(Module):
    """``h_t = tanh(W x_t + U h_{t-1} + b)``, ``y_t = head(h_t)``; state (B, H)."""

    def __init__(self, I=2, H=3, O=2, rng=None):
        super().__init__()
        self.ih = nn.Linear(I, H, dtype=F64, rng=rng)
        self.hh = nn.Linear(H, H, bias=False, dtype=F64, rng=rng)
        self.head = nn.Linear(H, O, dtype=F64, rng=rng)
        self.hidden = H

    def initial_state(self, B):
        return Tensor(np.zeros((B, self.hidden)))

    def step(self, x_t, h):
        h = bptt.tanh(self.ih(x_t) + self.hh(h))
        return self.head(h), h

    def forward(self, x, state=None):
        state = self.initial_state(x.shape[1]) if state is None else state
        ys = []
        for x_t in x:
            y_t, state = self.step(x_t, state)
            ys.append(y_t)
        return bptt.stack(ys), state


class TinyGated(TinyRNN):
    """A gated cell with a tuple state (h, c): ``f = sigmoid(.)``, ``c' = f c + (1 - f) tanh(.)``,
    ``h' = tanh(c')``."""

    def __init__(self, I=2, H=3, O=2, rng=None):
        super().__init__(I, H, O, rng)
        self.gate = nn.Linear(I + H, H, dtype=F64, rng=rng)

    def initial_state(self, B):
        return (Tensor(np.zeros((B, self.hidden))), Tensor(np.full((B, self.hidden), 0.3)))

    def step(self, x_t, state):
        h, c = state
        f = bptt.sigmoid(self.gate(bptt.concat([Tensor(x_t), h], axis=1)))
        c = f * c + (1 - f) * bptt.tanh(self.ih(x_t) + self.hh(h))
        h = bptt.tanh(c)
        return self.head(h), (h, c)


def mse(y_pred, y_t):
    return nn.mse_loss(y_pred, y_t)


def stream(T, B=2, I=2, O=2, seed=3):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((T, B, I)), rng.standard_normal((T, B, O))


def detach(state):
    return tuple(Tensor(s.data) for s in state) if isinstance(state, tuple) else Tensor(state.data)


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


# -- the independent reference ------------------------------------------------------------------

def reference(model, x, y, mask, k1, k2, lr=0.0, finish=True):
    """Every update of BPTT(k2; k1) as ``(gradients, loss)``, applying ``p -= lr * g`` by hand.

    The stream is run forward without a tape, keeping each h_s and the weight arrays step s ran
    with; each update's window is then recorded afresh from h_{t-k2} (detached) with those weights
    and the masked mean of its last k1 losses backpropagated in one ordinary backward.
    """
    params = model.parameters()
    T = len(x)
    mask = np.ones(T) if mask is None else mask
    states = [detach(model.initial_state(x.shape[1]))]
    weights = [None]
    out, last = [], 0
    for t in range(1, T + 1):
        weights.append([p.data for p in params])
        with no_grad():
            states.append(detach(model.step(x[t - 1], states[-1])[1]))
        if t % k1 and not (finish and t == T):
            continue
        now = [p.data for p in params]
        h, losses = states[max(0, t - k2)], []
        for s in range(max(0, t - k2) + 1, t + 1):
            for p, w in zip(params, weights[s]):
                p.data = w
            y_s, h = model.step(x[s - 1], h)
            if s > last and mask[s - 1]:
                losses.append(mse(y_s, y[s - 1]) * mask[s - 1])
        for p, w in zip(params, now):
            p.data = w
            p.grad = None
        den = max(1.0, mask[last:t].sum())
        if losses:
            total = bptt.stack(losses).sum() / den
            total.backward()
        grads = [np.zeros_like(p.data) if p.grad is None else p.grad.copy() for p in params]
        out.append((grads, total.item() if losses else 0.0))
        for p, g in zip(params, grads):
            p.data = p.data - lr * g
        last = t
    return out


def train(model, x, y, mask, k1, k2, chunks=None, finish=True, **options):
    opt = Recorder(model.parameters())
    trainer = TBPTT(model, mse, opt, k1, k2, **options)
    bounds = np.cumsum([0] + list(chunks or [len(x)]))
    assert bounds[-1] == len(x)
    records = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        records += trainer.run(x[a:b], y[a:b], None if mask is None else mask[a:b])
    if finish:
        records += trainer.finish()
    return trainer, opt.grads, records


def assert_matches(grads, records, ref):
    assert len(grads) == len(records) == len(ref)
    for got, rec, (want, loss) in zip(grads, records, ref):
        for g, w in zip(got, want):
            close(g, w)
        assert rec["loss"] == pytest.approx(loss, rel=1e-12, abs=1e-15)
        norm = math.sqrt(sum(float((w * w).sum()) for w in want))
        assert rec["grad_norm"] == pytest.approx(norm, rel=1e-12)


# -- exactness ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("Model", [TinyRNN, TinyGated])
def test_k1_equals_k2_equals_T_is_full_bptt(Model, fast):
    model = Model(rng=np.random.default_rng(0))
    x, y = stream(9)
    _, grads, records = train(model, x, y, None, 9, 9, fast_path=fast)
    for p in model.parameters():
        p.grad = None
    out, state = model(x)
    losses = [mse(out[t], y[t]) for t in range(9)]
    bptt.stack(losses).mean().backward()
    assert len(grads) == 1 and records[0]["step"] == 9
    for g, p in zip(grads[0], model.parameters()):
        close(g, p.grad)
    assert records[0]["loss"] == pytest.approx(np.mean([l.item() for l in losses]), rel=1e-12)


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("Model", [TinyRNN, TinyGated])
@pytest.mark.parametrize("k1,k2", [(1, 1), (1, 3), (2, 5), (3, 4), (3, 7), (4, 4), (5, 12)])
def test_every_update_equals_fresh_window_reference(Model, k1, k2, fast):
    """Step by step, or in pieces through the sequence path (cut wherever the windows need)."""
    model = Model(rng=np.random.default_rng(1))
    x, y = stream(17)
    mask = (np.random.default_rng(5).random(17) > 0.3).astype(F64) * 1.5
    mask[:4] = 0           # an all-zero window: zero gradient, loss 0, and an update all the same
    _, grads, records = train(model, x, y, mask, k1, k2, chunks=[6, 11], fast_path=fast)
    assert_matches(grads, records, reference(model, x, y, mask, k1, k2))
    assert [r["step"] for r in records] == list(range(k1, 18, k1)) + ([17] if 17 % k1 else [])


@settings(max_examples=15, deadline=None, derandomize=True)
@given(st.integers(1, 4), st.integers(0, 5), st.integers(1, 16), st.lists(st.integers(1, 6), max_size=4),
       st.booleans())
def test_any_k1_k2_length_and_chunks_against_reference(k1, extra, T, cuts, fast):
    k2 = k1 + extra
    bounds = sorted({c for c in np.cumsum(cuts) if c < T})
    chunks = list(np.diff([0, *bounds, T]))
    model = TinyGated(rng=np.random.default_rng(17))
    x, y = stream(T)
    mask = (np.arange(T) % 3 != 1).astype(F64)
    _, grads, records = train(model, x, y, mask, k1, k2, chunks=chunks, fast_path=fast)
    assert_matches(grads, records, reference(model, x, y, mask, k1, k2))


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("k1,k2", [(2, 5), (3, 3), (4, 9), (3, 8)])
def test_sgd_updates_equal_replay_with_the_weights_each_step_ran_with(k1, k2, fast):
    model = TinyGated(rng=np.random.default_rng(2))
    ref_model = TinyGated(rng=np.random.default_rng(2))
    x, y = stream(23)
    lr = 0.3
    trainer = TBPTT(model, mse, SGD(model.parameters(), lr=lr), k1, k2, fast_path=fast)
    trainer.run(x, y)
    trainer.finish()
    ref = reference(ref_model, x, y, None, k1, k2, lr=lr)
    assert len(trainer.history) == len(ref)
    for a, b in zip(model.parameters(), ref_model.parameters()):
        close(a.data, b.data)
    # the weights did move: the overlapping steps really ran with older weights
    fresh = TinyGated(rng=np.random.default_rng(2))
    assert max(np.abs(a.data - b.data).max() for a, b in zip(model.parameters(), fresh.parameters())) > 1e-2
    for rec, (_, loss) in zip(trainer.history, ref):
        assert rec["loss"] == pytest.approx(loss, rel=1e-12)


@pytest.mark.parametrize("k1,k2", [(3, 3), (2, 7), (5, 5)])
def test_uneven_chunks_give_identical_updates(k1, k2):
    # the step path: a piece is one step however the stream is cut, so every update runs the
    # same operations in the same order, and the records and gradients are the same bits
    x, y = stream(29)
    mask = (np.arange(29) % 4 != 1).astype(F64)
    _, whole, rec_whole = train(TinyGated(rng=np.random.default_rng(4)), x, y, mask, k1, k2, fast_path=False)
    for chunks in ([1, 6, 2, 13, 7], [11, 11, 7], [1] * 29):
        _, parts, rec_parts = train(TinyGated(rng=np.random.default_rng(4)), x, y, mask, k1, k2,
                                    chunks=chunks, fast_path=False)
        assert rec_parts == rec_whole
        for a, b in zip(parts, whole):
            for g, h in zip(a, b):
                np.testing.assert_array_equal(g, h)


# -- the sequence path ----------------------------------------------------------------------------

@pytest.mark.parametrize("chunks", [None, [7, 9, 2, 8], [4, 4, 4, 4, 4, 4, 2]])
def test_sequence_path_equals_step_path(chunks):
    """Whole windows through model(x, state), with a final partial window whose cut falls inside
    the last whole window (replayed with the weights it ran with): same updates as step by step."""
    x, y = stream(26)
    mask = (np.arange(26) % 3 != 0).astype(F64)
    results = []
    for fast in (True, False):
        model = TinyGated(rng=np.random.default_rng(6))
        trainer = TBPTT(model, mse, SGD(model.parameters(), lr=0.2), 4, fast_path=fast)
        bounds = np.cumsum([0] + (chunks or [26]))
        for a, b in zip(bounds[:-1], bounds[1:]):
            trainer.run(x[a:b], y[a:b], mask[a:b])
        trainer.finish()
        results.append((trainer.history, model.parameters()))
    (hist_fast, p_fast), (hist_step, p_step) = results
    assert [r["step"] for r in hist_fast] == [4, 8, 12, 16, 20, 24, 26]
    for a, b in zip(hist_fast, hist_step):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-12)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-12)
    for a, b in zip(p_fast, p_step):
        close(a.data, b.data)


class CountingRNN(TinyRNN):
    """TinyRNN recording the lengths its sequence path is called with."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = []

    def forward(self, x, state=None):
        self.calls.append(len(x))
        return super().forward(x, state)


@pytest.mark.parametrize("chunks,calls", [
    # pieces 1-4, 5-8, 9 (one step, through step), 10-12, 13-14; 9-12 freed after the update at
    # 12; finish cuts at 10: 10 run to get h_10 (no tape), 11-12 recorded again
    ([9, 5], [4, 4, 3, 2, 1, 2]),
    # pieces 1-4, 5-8, 9-12, 13-14; finish cuts at 10, inside 9-12: 9-10 run to get h_10 (no
    # tape), 11-12 recorded again with the weights they ran with
    ([14], [4, 4, 4, 2, 2, 2])])
def test_sequence_path_is_used_and_matches_reference(chunks, calls):
    model = CountingRNN(rng=np.random.default_rng(7))
    x, y = stream(14)
    _, grads, records = train(model, x, y, None, 4, 4, chunks=chunks)
    assert model.calls == calls
    assert_matches(grads, records, reference(model, x, y, None, 4, 4))


def test_a_replay_gets_the_weights_it_ran_with_as_arguments_and_leaves_the_parameters_alone():
    """k1 = k2 = 4 over 14 steps fed as 8 + 6: finish cuts at 10, inside the piece 9-12 recorded
    before the update at 12, so 9-12 is replayed: its forward computes with the weights after
    the update at 8 while every parameter of the model keeps the array it has."""
    class Watching(TinyRNN):
        def forward(self, x, state=None):
            seen.append(([p.data for p in model.parameters()], self.ih.weight.data))
            return super().forward(x, state)

    seen = []
    model = Watching(rng=np.random.default_rng(7))
    x, y = stream(14)
    trainer = TBPTT(model, mse, SGD(model.parameters(), lr=0.1), 4)
    trainer.run(x[:8], y[:8])
    ran_with = model.ih.weight.data
    trainer.run(x[8:], y[8:])
    current = [p.data for p in model.parameters()]
    del seen[:]
    trainer.finish()
    assert len(seen) == 2         # 9-10 run to get h_10, 11-12 recorded again
    for params, weight in seen:
        assert all(a is b for a, b in zip(params, current))
        assert weight is ran_with and weight is not model.ih.weight.data


def test_a_restored_stream_of_a_model_that_is_no_module_cannot_be_replayed():
    """Replaying a restored piece binds the weights it ran with to the model's modules."""
    model = StepOnly()
    x, y = stream(10)
    trainer = TBPTT(model, mse, SGD(model.inner.parameters(), lr=0.1), 3, 5)
    trainer.run(x[:6], y[:6])
    again = TBPTT(model, mse, SGD(model.inner.parameters(), lr=0.1), 3, 5)
    again.load_stream_state(trainer.stream_state())
    with pytest.raises(TypeError, match="TBPTT: replaying a piece .* needs a Module; StepOnly is not"):
        again.run(x[6:], y[6:])


def window_mse(y_pred, y):
    return nn.mse_loss(y_pred, y, reduction="none").mean(axis=(1, 2))


def test_window_loss_equals_per_step_losses():
    x, y = stream(19)
    mask = (np.arange(19) % 3 != 0).astype(F64)
    runs = []
    for window_loss in (None, window_mse):
        model = CountingRNN(rng=np.random.default_rng(13))
        trainer = TBPTT(model, mse, SGD(model.parameters(), lr=0.4), 5, window_loss=window_loss)
        trainer.run(x, y, mask)
        trainer.finish()
        # finish at 19 cuts at 14, inside the freed 11-15: h_14 from 11-14, 15 recorded again
        assert model.calls == [5, 5, 5, 4, 4]
        runs.append((trainer.history, model.parameters()))
    for a, b in zip(runs[0][0], runs[1][0]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-12)
    for a, b in zip(runs[0][1], runs[1][1]):
        close(a.data, b.data)
    bad = TBPTT(TinyRNN(), mse, Recorder(TinyRNN().parameters()), 5, window_loss=lambda p, t: window_mse(p, t).sum())
    with pytest.raises(ValueError, match=r"window_loss must return the \(5,\) per-step losses .* got shape \(\)"):
        bad.run(x, y)


def test_dropout_turns_the_sequence_path_off():
    """A replay for finish could not redraw the masks a whole window drew: step by step instead."""
    model = CountingRNN(rng=np.random.default_rng(8))
    model.drop = nn.Dropout(0.5)
    x, y = stream(8)
    trainer = TBPTT(model, mse, Recorder(model.parameters()), 4)
    trainer.run(x, y)
    assert model.calls == []
    model.eval()
    trainer.run(x, y)
    assert model.calls == [4, 4]


# -- the toolkit's recurrent models ---------------------------------------------------------------

# every registered cell, one and two layers (and three for one of them): new cells with no edit
SEQUENCE_MODELS = [(c, L) for c in nn.cell_names() for L in (1, 2)] + [(nn.cell_names()[-1], 3)]


def sequence_model(cell, layers, seed=12):
    return nn.SequenceModel(cell, 2, 3, 2, num_layers=layers, dtype=F64, rng=np.random.default_rng(seed))


@pytest.mark.parametrize("cell,layers", SEQUENCE_MODELS)
@pytest.mark.parametrize("k1,k2", [(2, 5), (3, 3)])
def test_sequence_models_match_reference(cell, layers, k1, k2):
    model = sequence_model(cell, layers)
    x, y = stream(13)
    mask = (np.arange(13) % 5 != 2).astype(F64)
    _, grads, records = train(model, x, y, mask, k1, k2, chunks=[5, 8])
    assert_matches(grads, records, reference(model, x, y, mask, k1, k2))


@pytest.mark.parametrize("cell,layers", SEQUENCE_MODELS)
def test_sequence_models_fused_windows_equal_step_path_with_sgd(cell, layers):
    x, y = stream(22)
    results = []
    for fast in (True, False):
        model = sequence_model(cell, layers)
        trainer = TBPTT(model, mse, SGD(model.parameters(), lr=0.5), 5, fast_path=fast)
        trainer.run(x, y)
        trainer.finish()
        results.append((trainer, model))
    (fast, m_fast), (step, m_step) = results
    assert [r["step"] for r in fast.history] == [5, 10, 15, 20, 22]
    for a, b in zip(fast.history, step.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-12)
    for a, b in zip(m_fast.parameters(), m_step.parameters()):
        close(a.data, b.data)
    for a, b in zip(_flat_state(fast.state), _flat_state(step.state)):
        close(a.data, b.data)


def _flat_state(state):
    return state if isinstance(state, tuple) else (state,)


def test_sequence_model_dropout_takes_the_step_path():
    calls = []

    class Counting(nn.SequenceModel):
        def forward(self, x, state=None):
            calls.append(len(x))
            return super().forward(x, state)

    model = Counting("lstm", 2, 3, 2, num_layers=2, dropout=0.3, dtype=F64)
    x, y = stream(8)
    TBPTT(model, mse, Recorder(model.parameters()), 4).run(x, y)
    assert calls == []
    model.eval()
    TBPTT(model, mse, Recorder(model.parameters()), 4).run(x, y)
    assert calls == [4, 4]


# -- memory -------------------------------------------------------------------------------------

@pytest.mark.parametrize("k1,k2,fast", [(3, 8, False), (5, 5, False), (5, 5, True), (3, 8, True),
                                        (4, 10, True)])
def test_tape_holds_at_most_k2_steps_and_old_steps_are_freed(k1, k2, fast):
    """Counting the step outputs still alive (the tape's entries hold them) after each update:
    step by step the last k2 steps are kept (a finish may cut at any of them); in pieces only the
    k2 - k1 steps the next window backpropagates through again (a finish replays older ones)."""
    model = TinyRNN(rng=np.random.default_rng(9))
    alive = []
    step = model.step

    def tracking_step(x_t, h):
        y_t, h = step(x_t, h)
        alive.append(weakref.ref(h))
        return y_t, h

    model.step = tracking_step
    trainer = TBPTT(model, mse, Recorder(model.parameters()), k1, k2, fast_path=fast)
    x, y = stream(60)
    for a in range(0, 60, k1):
        trainer.run(x[a:a + k1], y[a:a + k1])
        assert trainer.tape_length < k2 + k1
        gc.collect()
        live = sum(r() is not None for r in alive)
        assert live == min(a + k1, k2 if not fast else k2 - k1)


def test_pieces_follow_update_and_cut_points_without_replays():
    """k1 = 3, k2 = 8: updates at 3, 6, ..., cuts at 3j - 8 = 1, 4, ... (mod 3): pieces of 1 and
    2 steps, the 2-step ones through forward; no piece is ever run twice until finish."""
    model = CountingRNN(rng=np.random.default_rng(16))
    x, y = stream(24)
    _, grads, records = train(model, x, y, None, 3, 8, finish=False)
    assert model.calls == [2] * 8
    assert_matches(grads, records, reference(model, x, y, None, 3, 8, finish=False))


# -- the rest of the API --------------------------------------------------------------------------

def test_finish_reset_state_and_history():
    model = TinyRNN(rng=np.random.default_rng(10))
    x, y = stream(11)
    opt = Recorder(model.parameters())
    trainer = TBPTT(model, mse, opt, 4, 6)
    records = trainer.run(x, y)
    assert [r["step"] for r in records] == [4, 8] and trainer.history == records
    assert set(records[0]) == {"step", "loss", "grad_norm", "clipped"}
    assert not any(r["clipped"] for r in records)
    last = trainer.finish()
    assert [r["step"] for r in last] == [11] and trainer.history == records + last
    assert trainer.finish() == []
    assert_matches(opt.grads, trainer.history, reference(model, x, y, None, 4, 6))
    # state carried (detached) after finish; reset_state starts over as a fresh trainer would
    with no_grad():
        want = model(x)[1]
    close(trainer.state.data, want.data)
    assert not trainer.state.requires_grad
    trainer.run(x[:3], y[:3])          # a partial window ...
    trainer.reset_state()              # ... dropped with the stream
    assert trainer.state is None and trainer.finish() == []
    n = len(opt.grads)
    again = trainer.run(x, y) + trainer.finish()
    assert [r["step"] for r in again] == [18, 22, 25]
    for a, b in zip(opt.grads[n:], opt.grads[:n]):     # the same stream run again from the same
        for g, h in zip(a, b):                           # weights (Recorder never steps them)
            np.testing.assert_array_equal(g, h)


def test_clip_norm():
    model = TinyRNN(rng=np.random.default_rng(11))
    x, y = stream(8)
    opt = Recorder(model.parameters())
    ref = reference(model, x, y, None, 4, 4)
    norms = [math.sqrt(sum(float((g * g).sum()) for g in grads)) for grads, _ in ref]
    limit = 0.5 * min(norms)
    trainer = TBPTT(model, mse, opt, 4, clip_norm=limit)
    records = trainer.run(x, y)
    for rec, norm, got, (want, _) in zip(records, norms, opt.grads, ref):
        assert rec["clipped"] and rec["grad_norm"] == pytest.approx(norm, rel=1e-12)
        for g, w in zip(got, want):
            close(g, w * limit / (norm + 1e-6))
    loose = TBPTT(model, mse, Recorder(model.parameters()), 4, clip_norm=10 * max(norms))
    assert not any(r["clipped"] for r in loose.run(x, y))


class StepOnly:
    """The least a model needs: step and initial_state."""

    def __init__(self):
        self.inner = TinyRNN()

    def step(self, x_t, state):
        return self.inner.step(x_t, state)

    def initial_state(self, B):
        return self.inner.initial_state(B)


def test_a_model_with_only_step_and_initial_state():
    model = StepOnly()
    x, y = stream(10)
    opt = Recorder(model.inner.parameters())
    trainer = TBPTT(model, mse, opt, 3, 5, clip_norm=1e9)   # parameters come from the optimizer
    records = trainer.run(x, y) + trainer.finish()
    assert_matches(opt.grads, records, reference(model.inner, x, y, None, 3, 5))


def test_errors():
    model = TinyRNN()
    opt = Recorder(model.parameters())
    with pytest.raises(ValueError, match=r"k1 \(steps between updates\) must be >= 1, got 0"):
        TBPTT(model, mse, opt, 0)
    with pytest.raises(ValueError, match="k2 .* must be >= k1; got k1=5, k2=3"):
        TBPTT(model, mse, opt, 5, 3)
    with pytest.raises(TypeError, match="k1 must be an integer, got 2.5"):
        TBPTT(model, mse, opt, 2.5)
    with pytest.raises(ValueError, match="clip_norm must be positive"):
        TBPTT(model, mse, opt, 2, clip_norm=0)
    with pytest.raises(ValueError, match="fast_path=True needs a Module with a sequence forward"):
        TBPTT(StepOnly(), mse, opt, 2, 3, fast_path=True)
    with pytest.raises(TypeError, match="model needs a step"):
        TBPTT(object(), mse, opt, 2)
    with pytest.raises(TypeError, match="optimizer needs a zero_grad"):
        TBPTT(model, mse, object(), 2)
    trainer = TBPTT(model, mse, opt, 2)
    x, y = stream(5)
    with pytest.raises(ValueError, match="x has 5 steps but y has 4"):
        trainer.run(x, y[:4])
    with pytest.raises(ValueError, match=r"mask must have shape \(T,\) = \(5,\).*got \(5, 2\)"):
        trainer.run(x, y, np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"x must be \(T, B, ...\), got shape \(5,\)"):
        trainer.run(np.ones(5), y)
    assert trainer.history == [] and trainer.steps == 0


# -- against PyTorch ------------------------------------------------------------------------------

@pytest.mark.torch
@pytest.mark.parametrize("k1,k2", [(4, 4), (3, 7)])
def test_against_pytorch_lstm(k1, k2):
    """The same weights in PyTorch: nn.LSTM stepped from detached states, cotangents chained back
    k2 steps with a multi-root autograd.backward, run functionally on weight versions that each
    SGD update replaces (an in-place step would corrupt the overlapping steps' graphs)."""
    torch = pytest.importorskip("torch")
    model = nn.SequenceModel("lstm", 2, 3, 2, num_layers=2, dtype=F64, rng=np.random.default_rng(14))
    start = model.state_dict()
    x, y = stream(21)
    lr = 0.3
    TBPTT(model, mse, SGD(model.parameters(), lr=lr), k1, k2).run(x, y)

    module = torch.nn.ModuleDict({"rnn": torch.nn.LSTM(2, 3, num_layers=2), "head": torch.nn.Linear(3, 2)})
    names = list(start)
    weights = [torch.from_numpy(start[n]).requires_grad_() for n in names]

    def forward(ws, x_t, state):
        params = dict(zip(names, ws))
        out, state = torch.func.functional_call(module["rnn"], {n[4:]: p for n, p in params.items()
                                                                if n.startswith("rnn.")}, (x_t, state))
        return torch.nn.functional.linear(out[0], params["head.weight"], params["head.bias"]), state

    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    state = (torch.zeros(2, 2, 3, dtype=torch.float64),) * 2
    tape = []
    for t in range(21):
        leaves = tuple(s.detach().requires_grad_() for s in state)
        y_t, state = forward(weights, X[t:t + 1], leaves)
        tape = (tape + [(leaves, state, torch.nn.functional.mse_loss(y_t, Y[t]), weights)])[-k2:]
        if (t + 1) % k1:
            continue
        used = list({id(w): w for *_, w in tape}.values())
        for w in (w for ws in used for w in ws):
            w.grad = None
        g = None
        for i in range(len(tape) - 1, -1, -1):
            leaves, out_state, loss, _ = tape[i]
            roots, grads = [], []
            if i >= len(tape) - k1:
                roots.append(loss)
                grads.append(torch.tensor(1.0 / k1, dtype=torch.float64))
            if g is not None:
                roots += list(out_state)
                grads += list(g)
            torch.autograd.backward(roots, grads, retain_graph=True)
            g = tuple(leaf.grad for leaf in leaves)
            for leaf in leaves:
                leaf.grad = None
        with torch.no_grad():
            total = [sum(ws[j].grad for ws in used if ws[j].grad is not None) for j in range(len(names))]
            weights = [(w - lr * gw).requires_grad_() for w, gw in zip(weights, total)]
    ours = model.state_dict()
    for n, w in zip(names, weights):
        close(ours[n], w.detach().numpy())


@pytest.mark.parametrize("k1,k2", [(4, 4), (2, 4)])
def test_float32_models_stay_float32(k1, k2):
    model = nn.SequenceModel("gru", 2, 3, 2, rng=np.random.default_rng(15))
    x, y = (a.astype(np.float32) for a in stream(10))
    opt = Recorder(model.parameters())
    records = TBPTT(model, mse, opt, k1, k2).run(x, y)
    assert len(records) == 10 // k1
    assert all(g.dtype == np.float32 and np.isfinite(g).all() for grads in opt.grads for g in grads)
    assert all(p.dtype == np.float32 for p in model.parameters())


# -- adaptive truncation ------------------------------------------------------------------------

def test_auto_k2_picks_the_analytic_length_on_a_linear_regime_rnn(rng):
    """W_hh = rho Q (Q orthogonal) and tiny inputs: tanh' = 1 to 1e-6, so ||dL/dh|| shrinks by
    rho per step beyond the window's losses, and the bound rho^K <= max_bias gives
    K = ceil(log max_bias / log rho): k2 = k1 - 1 + K."""
    k1, rho, max_bias = 5, 0.5, 0.1
    model = nn.SequenceModel("rnn", 1, 6, 1, dtype=F64, rng=rng)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    model.rnn.weight_hh_l0.data = rho * q
    model.rnn.bias_ih_l0.data[:] = 0
    model.rnn.bias_hh_l0.data[:] = 0
    trainer = TBPTT(model, nn.mse_loss, SGD(model.parameters(), lr=0.0), k1=k1, k2="auto",
                    max_bias=max_bias, k2_max=30)
    x = 1e-4 * rng.standard_normal((60, 2, 1))
    records = trainer.run(x, np.zeros((60, 2, 1)))
    expected = k1 - 1 + math.ceil(math.log(max_bias) / math.log(rho))
    # the first window (t = 5) reaches back to the stream's start only, lag 5: one lag beyond its
    # losses is too few to fit, so the second runs at k2_max too and measures lags 5 .. 10
    assert [r["k2"] for r in records[:3]] == [30, 30, expected]
    assert {r["k2"] for r in records[2:]} == {expected}
    assert trainer.tape_length <= 30


def test_auto_k2_options_are_checked():
    model = nn.SequenceModel("rnn", 1, 2, 1)
    opt = SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="k2 must be an integer >= k1 or 'auto', got 'aut'"):
        TBPTT(model, nn.mse_loss, opt, k1=2, k2="aut")
    with pytest.raises(ValueError, match=r"max_bias must be in \(0, 1\), got 1.5"):
        TBPTT(model, nn.mse_loss, opt, k1=2, k2="auto", max_bias=1.5)
    with pytest.raises(ValueError, match=r"k2_max must be an integer >= k1 \+ 2 = 4"):
        TBPTT(model, nn.mse_loss, opt, k1=2, k2="auto", k2_max=3)


def test_auto_k2_carries_across_a_saved_stream_and_restarts_with_a_new_one(rng):
    def trainer_and_data():
        bptt.seed(3)
        model = nn.SequenceModel("gru", 1, 4, 1, dtype=F64)
        return model, TBPTT(model, nn.mse_loss, SGD(model.parameters(), lr=0.05), k1=4, k2="auto",
                            max_bias=0.2, k2_max=20)
    x, y = rng.standard_normal((80, 2, 1)), rng.standard_normal((80, 2, 1))
    _, whole = trainer_and_data()
    expected = [r["k2"] for r in whole.run(x, y)]
    model, first = trainer_and_data()
    first.run(x[:40], y[:40])
    saved = {k: np.array(v) for k, v in first.stream_state().items()}
    weights = [p.data.copy() for p in model.parameters()]
    model2, second = trainer_and_data()
    for p, w in zip(model2.parameters(), weights):
        p.data = w
    second.load_stream_state(saved)
    assert [r["k2"] for r in first.history] + [r["k2"] for r in second.run(x[40:], y[40:])] == expected
    assert len(set(expected)) > 1                  # it did adapt
    second.reset_state()
    assert second.schedule.k2 == 20 and second.run(x[:4], y[:4])[0]["k2"] == 20
