"""Checkpointed BPTT against the unchecked path, the dynamic program against a brute-force search.

Equality is exact (``np.array_equal``) only where the same operations run in the same order: on
the reference path (a cell without fused kernels, or ``fused=False``) the checkpointed forward and
backward run the unchecked path's steps and add its cotangents in its order.  The fused kernels
run a segment at a time: the input projections and the weight gradients are GEMMs over a
segment's rows instead of all T steps', whose sums the BLAS may add in another order, so there
outputs, states and gradients are compared within ``tolerance.summation_tol``.
"""

import gc
import heapq
import itertools
import math
import tracemalloc

import numpy as np
import pytest

import bptt
from bptt.nn import recompute as ck
from bptt import nn
from bptt.diagnostics import hidden_grad_norms
from bptt.nn import registry as registry
from bptt.nn import compiled
from bptt.nn.cells import rnn
from bptt.nn.kernels import release_scratch
from bptt.tape import Tensor
from tolerance import assert_close_sums

F64 = np.float64
CASES = [(c.name, v) for c in registry.registered() for v in c.variants()]
POLICIES = ["sqrt", 1, 2, 5, ck.memory_budget(2), ck.memory_budget(4), ck.memory_budget(9), "50KB"]


def _run(module, x, h0, checkpoint, w):
    """Gradients of a loss weighting each step (some by 0, a mask) and the final state."""
    module.zero_grad()
    x.grad = None
    for s in h0:
        s.grad = None
    y, h_n = module(x, h0 if len(h0) > 1 else h0[0], checkpoint=checkpoint)
    final = h_n if isinstance(h_n, tuple) else (h_n,)
    loss = (y * y * w[:, None, None]).sum() + sum((s * s).sum() for s in final)
    loss.backward()
    grads = {n: p.grad.copy() for n, p in module.named_parameters()}
    grads["x"] = x.grad.copy()
    grads.update({f"h0[{k}]": s.grad.copy() for k, s in enumerate(h0)})
    return y.data, [s.data for s in final], grads


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("name, options", CASES)
def test_gradients_equal_the_unchecked_path(name, options, fused, rng):
    cell = registry.get(name)
    module = nn.Recurrent(name, 3, 4, num_layers=2, bidirectional=True, fused=fused, dtype=F64,
                          rng=rng, **options)
    T, B = 13, 2
    x = Tensor(rng.standard_normal((T, B, 3)), requires_grad=True)
    h0 = tuple(Tensor(0.5 * rng.standard_normal((4, B, 4)), requires_grad=True) for _ in cell.state)
    w = (rng.random(T) > 0.3).astype(F64)          # a loss mask: steps weighted 0 have no loss
    y, final, ref = _run(module, x, h0, None, w)
    exact = not fused or cell.fused is None
    # fused: per step and layer an entry's sums take at most the widest input's 8 terms, 4H = 16
    # back through the gates and B = 2 into a weight gradient
    n = T * 2 * (8 + 4 * 4 + B)

    def same(a, b, what):
        if exact:      # the same steps, their cotangents added in the same order: the same bits
            assert np.array_equal(a, b), what
        else:          # a segment's GEMMs against the whole sequence's
            assert_close_sums(a, b, n, err_msg=str(what))
    for policy in POLICIES:
        y_c, final_c, grads = _run(module, x, h0, policy, w)
        same(y_c, y, (policy, "y"))
        for k, (a, b) in enumerate(zip(final_c, final)):
            same(a, b, (policy, f"final[{k}]"))
        for key, g in ref.items():
            same(grads[key], g, (policy, key))


def test_sequence_model_float32_and_twice_through_the_entry(rng):
    model = nn.SequenceModel("lstm", 3, 8, 2, num_layers=2, fused=False, rng=rng)
    x = rng.standard_normal((20, 3, 3)).astype(np.float32)
    grads = []
    for policy in (None, "sqrt"):
        model.zero_grad()
        y, _ = model(x, checkpoint=policy)
        assert y.dtype == np.float32
        loss = (y * y).sum()
        for retain in (True, False):     # the recomputation never changes the residuals it reads
            model.zero_grad()
            loss.backward(retain_graph=retain)
            grads.append([p.grad.copy() for p in model.parameters()])
    # the reference path (fused=False) both ways: the same steps in the same order, the same bits
    assert all(all(np.array_equal(a, b) for a, b in zip(grads[0], g)) for g in grads[1:])


# -- the dynamic program ------------------------------------------------------------------------

def brute_force_cost(T, M):
    """Fewest recomputed steps to backpropagate T steps with M slots, by searching every
    schedule (Dijkstra over which states are stored and how far backward has come).

    Slots hold stored states (h0 is the input and free) and recorded steps.  Moves: the first
    pass stores any set of states for free; advance from a stored state (or h0) to a later
    position and store it (cost: the steps run); record the steps from a stored state to the
    backward frontier and backpropagate them (cost: the steps recorded; they and the stored
    states must fit in M); drop a stored state.
    """
    start = [frozenset(s) for k in range(min(M, T - 1) + 1) for s in itertools.combinations(range(1, T), k)]
    heap = [(0, sorted(s), T) for s in start]
    heapq.heapify(heap)
    done = set()
    while heap:
        cost, stored, b = heapq.heappop(heap)
        if b == 0:
            return cost
        key = (tuple(stored), b)
        if key in done:
            continue
        done.add(key)
        S = set(stored)
        for p in [0, *S]:
            if len(S) + (b - p) <= M:                     # record [p, b) and backpropagate it
                heapq.heappush(heap, (cost + b - p, sorted(q for q in S if q < p), p))
            if len(S) < M:                                 # advance from p and store q
                for q in range(p + 1, b):
                    if q not in S:
                        heapq.heappush(heap, (cost + q - p, sorted(S | {q}), b))
        for q in S:                                        # drop a state
            heapq.heappush(heap, (cost, sorted(S - {q}), b))
    return math.inf


@pytest.mark.parametrize("T", range(1, 9))
def test_dynamic_program_recomputes_as_little_as_a_brute_force_search(T):
    for M in range(1, 6):
        assert ck.plan_cost(T, M) == brute_force_cost(T, M), (T, M)


def test_dynamic_program_known_values():
    assert ck.plan_cost(100, 10) == 151      # two recomputation levels for part of the sequence
    assert ck.plan_cost(55, 10) == 55        # 10 + 9 + ... + 1 = 55 steps: once each
    assert ck.plan_cost(56, 10) > 56
    assert ck.plan_cost(5, 1) == math.inf


_COUNTS = {"recorded": 0, "advanced": 0}


def _counting_step(x, state, weights, nonlinearity="tanh"):
    _COUNTS["recorded" if getattr(state[0], "requires_grad", False) else "advanced"] += 1
    return rnn.step_reference(x, state, weights, nonlinearity=nonlinearity)


@pytest.fixture
def counting_cell():
    """A cell without fused kernels whose reference step counts how often it runs."""
    base = registry.get("rnn")
    cell = registry.register(registry.CellType(name="counting", gates=base.gates, equations=base.equations,
                                               reference=_counting_step, options=base.options))
    yield cell
    registry.unregister("counting")


@pytest.mark.parametrize("T, slots", [(30, 3), (40, 6), (100, 10), (60, 11), (57, 57)])
def test_backward_recomputes_what_the_plan_costs(counting_cell, T, slots, rng):
    module = nn.Recurrent(counting_cell, 2, 3, dtype=F64, rng=rng)
    x = rng.standard_normal((T, 2, 2))
    y, _ = module(x, checkpoint=ck.memory_budget(slots))
    _COUNTS.update(recorded=0, advanced=0)
    y.sum().backward()
    assert _COUNTS["recorded"] + _COUNTS["advanced"] == ck.plan_cost(T, slots)
    assert _COUNTS["recorded"] == T                        # every step backpropagated once


def test_plans_above_the_program_size_split_on_blocks():
    # 10^4 steps: one recomputation needs 141 slots (141 * 142 / 2 >= 10^4), by the closed form
    assert ck.plan_cost(10_000, 141) == 10_000
    assert 10_000 < ck.plan_cost(10_000, 100) < 2 * 10_000 < ck.plan_cost(10_000, 30)
    p = ck.plan(ck.memory_budget(100), 10_000)
    assert p.block == 10 and all(s % 10 == 0 for s in p.spine())


# -- memory -------------------------------------------------------------------------------------

def _traced_peak(module, x, gy, policy):
    """Peak bytes traced by tracemalloc during one forward and backward, Python objects included.

    A first pass outside the trace computes the plan and the layer's footprint (both cached).
    The kernels' scratch buffers are then freed, so that the traced pass allocates, and counts,
    its own, and so are Python's free lists of small objects (a full collection empties them):
    an object the traced pass parks there stays counted, so they must start empty, as they do
    when the footprint is measured."""
    module.zero_grad()
    y, _ = module(x, checkpoint=policy)
    y.backward(gy)
    del y
    module.zero_grad()
    release_scratch()
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        y, _ = module(x, checkpoint=policy)
        y.backward(gy)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        gc.enable()


@pytest.mark.parametrize("name, fused, kernels", [("lstm", True, "numpy"), ("lstm", False, "numpy"),
                                                   ("gru", True, "numpy"), ("gru", False, "numpy"),
                                                   ("lstm", True, "compiled")])
def test_peak_memory_falls_with_the_budget_and_stays_within_it(name, fused, kernels, rng):
    if kernels == "compiled":
        pytest.importorskip("numba")
    T, B, I, H = 200, 4, 8, 32
    module = nn.Recurrent(name, I, H, fused=fused, rng=rng, dtype=np.float32)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    gy = rng.standard_normal((T, B, H)).astype(np.float32)
    with compiled.enabled(kernels == "compiled"):        # whatever BPTT_COMPILED says
        unchecked = _traced_peak(module, x, gy, None)
        peaks = []
        for budget in (2_000_000, 1_000_000, 600_000, 400_000, 300_000):
            peak = _traced_peak(module, x, gy, f"{budget}B")
            # The reference path records a tape of small Python objects per step, and those its
            # backward parks on Python's free lists stay counted by tracemalloc (by a third more
            # here): only the fused path's peak is held to the budget
            assert peak <= budget or not fused, (budget, peak)
            peaks.append(peak)
    assert all(a > b for a, b in zip([unchecked] + peaks, peaks)), (unchecked, peaks)
    # the compiled kernels keep fewer temporaries, so less is left to save (0.24 measured)
    assert peaks[-1] < (0.2 if kernels == "numpy" else 0.3) * unchecked


def test_a_footprint_is_measured_per_step_from_the_cell():
    B, I, H = 4, 8, 32
    x = np.zeros((5, B, I), np.float32)
    for name in ("lstm", "gru"):
        cell = registry.get(name)
        weights = tuple(np.zeros(s, np.float32) for s in cell.parameter_shapes(I, H).values())
        state = (np.zeros((B, H), np.float32),) * len(cell.state)
        fp = ck.footprint(cell, True, x, state, weights, {})
        assert fp.per_step == B * (H + I) * 4                  # the output y and the input's dx
        assert ck.footprint(cell, True, x, state, weights, {}, need_x=False).per_step == B * H * 4
        # one step's fused residuals alone: the gates and the states, G*H + 2*H floats a row
        assert fp.slot >= B * (len(cell.gates) + 2) * H * 4
        assert fp.fixed >= 2 * sum(w.nbytes for w in weights)  # the weight gradients summed
        assert ck.footprint(cell, True, x, state, weights, {}) is fp     # measured once


# -- TBPTT and the gradient-flow diagnostics ----------------------------------------------------

@pytest.mark.parametrize("fused", [True, False])
def test_tbptt_long_k2_short_k1_matches_the_unchecked_trainer(fused, rng):
    x = rng.standard_normal((50, 2, 3))
    y = rng.standard_normal((50, 2, 2))
    mask = (rng.random(50) > 0.3).astype(F64)
    results = []
    for policy in (None, "sqrt", 2, ck.memory_budget(3)):
        bptt.seed(0)
        model = nn.SequenceModel("gru", 3, 5, 2, num_layers=2, fused=fused, dtype=F64)
        trainer = bptt.TBPTT(model, nn.mse_loss, bptt.optim.SGD(model.parameters(), lr=0.1),
                             k1=7, k2=20, checkpoint=policy)
        trainer.run(x[:31], y[:31], mask[:31])
        trainer.run(x[31:], y[31:], mask[31:])
        trainer.finish()
        results.append(([r["loss"] for r in trainer.history],
                        np.concatenate([p.data.ravel() for p in model.parameters()])))
    for losses, params in results[1:]:
        np.testing.assert_allclose(losses, results[0][0], rtol=1e-12)
        np.testing.assert_allclose(params, results[0][1], rtol=1e-12, atol=1e-14)


def test_tbptt_checkpoint_needs_the_sequence_path():
    model = nn.SequenceModel("rnn", 2, 3, 1)
    with pytest.raises(ValueError, match="checkpoint= applies to the sequence path"):
        bptt.TBPTT(model, nn.mse_loss, bptt.optim.SGD(model.parameters()), k1=2, fast_path=False,
                   checkpoint="sqrt")


@pytest.mark.parametrize("name", registry.names())
def test_hidden_grad_norms_checkpointed_equal_the_unchecked(name, rng):
    model = nn.SequenceModel(name, 3, 5, 2, num_layers=2, dtype=F64, rng=rng)
    x, y = rng.standard_normal((23, 2, 3)), rng.standard_normal((23, 2, 2))
    mask = (rng.random(23) > 0.5).astype(F64)
    mask[3] = 1
    ref = hidden_grad_norms(model, x, y, nn.mse_loss, mask=mask)
    ref_grads = [p.grad.copy() for p in model.parameters()]
    for policy in ("sqrt", 1, 4, 23, ck.memory_budget(7)):
        norms = hidden_grad_norms(model, x, y, nn.mse_loss, mask=mask, checkpoint=policy)
        # the step path both ways, each segment's cotangents added in the unchecked order
        assert np.array_equal(norms, ref), policy
        assert all(np.array_equal(p.grad, g) for p, g in zip(model.parameters(), ref_grads)), policy


def test_hidden_grad_norms_checkpoint_refuses_dropout_and_byte_budgets(rng):
    model = nn.SequenceModel("rnn", 2, 3, 1, num_layers=2, dropout=0.5)
    x, y = rng.standard_normal((6, 1, 2)), rng.standard_normal((6, 1, 1))
    with pytest.raises(ValueError, match="active dropout"):
        hidden_grad_norms(model, x, y, nn.mse_loss, checkpoint="sqrt")
    model.eval()
    with pytest.raises(ValueError, match="a budget in bytes needs a layer"):
        hidden_grad_norms(model, x, y, nn.mse_loss, checkpoint="1MB")
    with pytest.raises(ValueError, match="needs at least 3 slots"):
        hidden_grad_norms(model, x, y, nn.mse_loss, checkpoint=ck.memory_budget(2))


# -- policies and their errors ------------------------------------------------------------------

def test_policies_resolve_from_what_users_write():
    assert ck.resolve("sqrt") == ck.Policy("sqrt")
    assert ck.resolve(12) == ck.resolve("12") == ck.Policy("segments", 12)
    assert ck.resolve("500MB") == ck.Policy("bytes", 500 * 10**6)
    assert ck.resolve("1.5GiB") == ck.Policy("bytes", int(1.5 * 2**30))
    assert ck.memory_budget(40) == ck.Policy("slots", 40)
    assert ck.plan(ck.resolve("sqrt"), 1000).bounds[:3] == (0, 31, 62)
    assert len(ck.plan(ck.resolve("sqrt"), 1000).bounds) == 32
    assert ck.plan(ck.resolve(4), 10).bounds == (0, 2, 5, 7)


@pytest.mark.parametrize("spec, kind, message", [
    ("often", ValueError, "checkpoint must be 'sqrt', a number of stored states or a memory budget"),
    (0, ValueError, "checkpoint must store at least 1 state, got 0"),
    (2.5, TypeError, "checkpoint must be None, 'sqrt', an int"),
    (True, TypeError, "checkpoint must be None, 'sqrt', an int"),
])
def test_bad_policies_are_named(spec, kind, message):
    module = nn.GRU(2, 3)
    with pytest.raises(kind, match=message) as err:
        module(np.zeros((4, 1, 2)), checkpoint=spec)
    assert str(err.value).startswith("GRU(2, 3)")


def test_a_budget_too_small_names_the_least_that_fits():
    module = nn.LSTM(2, 3)
    with pytest.raises(ValueError, match=r"lstm layer: a memory budget of 10 bytes is "
                                         r"too small for 4 steps; the least that fits is (\d+) bytes "
                                         r"\(\d+ for the output, the gradients and a segment's fixed "
                                         r"cost, and 2 slots of \d+ bytes") as err:
        module(np.zeros((4, 1, 2)), checkpoint="10B")
    least = int(str(err.value).split("the least that fits is ")[1].split()[0])
    module(np.zeros((4, 1, 2)), checkpoint=f"{least}B")          # the least that fits does
    with pytest.raises(ValueError, match="too small for 4 steps"):
        module(np.zeros((4, 1, 2)), checkpoint=f"{least - 1}B")
    with pytest.raises(ValueError, match="memory budget of 1 slots is too small; 4 steps need at least 2"):
        module(np.zeros((4, 1, 2)), checkpoint=ck.memory_budget(1))
    with pytest.raises(ValueError, match="is not a size in bytes"):
        ck.memory_budget("lots")


def test_a_language_model_checkpoints_its_layers_with_the_same_gradient():
    grads = []
    for policy in (None, "sqrt", ck.memory_budget(3)):
        bptt.seed(0)
        model = nn.LanguageModel("lstm", 7, 4, 5, dtype=F64)
        tokens = np.arange(24).reshape(12, 2) % 7
        logits, _ = model(tokens, checkpoint=policy)
        (logits * logits).sum().backward()
        grads.append(np.concatenate([p.grad.ravel() for p in model.parameters()]))
    for g in grads[1:]:          # fused kernels, segment by segment: within summation rounding
        assert_close_sums(g, grads[0], 12 * (4 + 4 * 5 + 2))     # T (I + 4H + B) terms


@pytest.mark.parametrize("task", ["adding", "shakespeare"])
def test_bptt_train_refuses_a_budget_too_small_before_the_run_starts(task, tmp_path):
    from click.testing import CliRunner
    from bptt.cli import main
    out = tmp_path / "run"
    args = ["train", "--task", task, "--checkpoint", "1B", "--steps", "2", "--out", str(out)]
    result = CliRunner().invoke(main, args + (["--stateful", "--hidden", "8"] if task == "shakespeare" else []))
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--checkpoint'" in result.output
    assert "a memory budget of 1 bytes is too small" in result.output and "the least that fits is" in result.output
    assert not (out / "checkpoint.npz").exists() and not (out / "config.json").exists()
