"""nn.Embedding: PyTorch's names, shapes and initialisation; its gradient a scatter-add."""

import numpy as np
import pytest

import bptt
from bptt import Tensor, nn
from bptt.nn.layers import embedding


def test_names_shapes_and_normal_initialisation():
    emb = nn.Embedding(400, 50, rng=np.random.default_rng(0))
    assert [n for n, _ in emb.named_parameters()] == ["weight"]
    assert emb.weight.shape == (400, 50) and emb.weight.dtype == np.float32
    w = emb.weight.data.astype(np.float64)
    # N(0, 1): 20,000 draws put the sample mean within 0.02 and the std within 0.015 of 0 and 1
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.015
    assert repr(emb) == "Embedding(400, 50)"


def test_lookup_of_any_shape():
    emb = nn.Embedding(7, 3, rng=np.random.default_rng(1))
    x = np.array([[0, 6, 6], [2, 1, 0]])
    y = emb(x)
    assert y.shape == (2, 3, 3)
    np.testing.assert_array_equal(y.data, emb.weight.data[x])


def test_gradient_is_the_scatter_add_of_the_output_cotangents():
    rng = np.random.default_rng(2)
    emb = nn.Embedding(5, 4, dtype=np.float64, rng=rng)
    x = np.array([[1, 3, 1], [4, 1, 0]])       # row 1 read three times, row 2 never
    g = rng.standard_normal((2, 3, 4))
    emb(x).backward(g)
    onehot = np.eye(5)[x.reshape(-1)]           # (N, V): what the scatter-add avoids forming
    np.testing.assert_allclose(emb.weight.grad, onehot.T @ g.reshape(-1, 4), rtol=1e-12, atol=1e-12)
    assert not emb.weight.grad[2].any()


def test_gradcheck_through_a_model():
    rng = np.random.default_rng(3)
    weight = Tensor(rng.standard_normal((6, 3)), requires_grad=True)
    x = rng.integers(0, 6, size=(5, 2))
    assert bptt.gradcheck(lambda w: bptt.tanh(embedding(w, x)).sum(), [weight])


def test_padding_idx_starts_at_zero_and_gets_no_gradient():
    emb = nn.Embedding(5, 3, padding_idx=-1, dtype=np.float64, rng=np.random.default_rng(4))
    assert emb.padding_idx == 4 and repr(emb) == "Embedding(5, 3, padding_idx=4)"
    assert not emb.weight.data[4].any()
    emb(np.array([4, 4, 1])).sum().backward()
    np.testing.assert_array_equal(emb.weight.grad[4], 0.0)
    np.testing.assert_array_equal(emb.weight.grad[1], 1.0)


@pytest.mark.parametrize("x, error, message", [
    (np.array([0.0, 1.0]), TypeError, "input has dtype float64; need integer indices"),
    (np.array([0, 5]), IndexError, "index 5 is outside [0, 5)"),
    (np.array([-1]), IndexError, "index -1 is outside [0, 5)"),
])
def test_bad_input_names_the_problem(x, error, message):
    with pytest.raises(error, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        nn.Embedding(5, 2)(x)


@pytest.mark.parametrize("args, message", [
    ((0, 2), "num_embeddings must be a positive integer, got 0"),
    ((5, 2, 5), r"padding_idx must be in \[-5, 5\), got 5"),
    ((5, 2, -6), "padding_idx must be an integer >= -5, got -6"),
])
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        nn.Embedding(*args)


def test_matches_torch():
    torch = pytest.importorskip("torch")
    ref = torch.nn.Embedding(9, 4, padding_idx=2).double()
    emb = nn.Embedding(9, 4, padding_idx=2, dtype=np.float64)
    emb.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    x = np.array([[2, 8, 8], [0, 2, 5]])
    g = np.random.default_rng(5).standard_normal((2, 3, 4))
    out = ref(torch.from_numpy(x))
    out.backward(torch.from_numpy(g))
    y = emb(x)
    y.backward(g)
    np.testing.assert_allclose(y.data, out.detach().numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(emb.weight.grad, ref.weight.grad.numpy(), rtol=1e-12, atol=1e-12)
