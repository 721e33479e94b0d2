"""The classic feedforward examples: the textbook MLP's deltas, XOR, two spirals, and gradient descent
in its batch, mini-batch and stochastic flavours."""

import math

import numpy as np
import pytest

import bptt
from bptt import nn, optim
from bptt.data.readers import batches
from bptt.data.tasks.static import two_spirals

# -- the textbook MLP -------------------------------------------------------------------------------
# (hours studied, hours slept) -> test score, each column scaled by its maximum, scores by 100
X = np.array([[3.0, 5.0], [5.0, 1.0], [10.0, 2.0]]) / np.array([10.0, 5.0])
Y = np.array([[75.0], [82.0], [93.0]]) / 100


def textbook_mlp():
    """2 inputs, 3 ReLU hidden units, 1 sigmoid output; weights fixed by hand so that each hidden unit
    is off for at least one example (ReLU' = 0 shows) and every pre-activation is >= 0.15 from the kink."""
    hidden, out = nn.Linear(2, 3, dtype=np.float64), nn.Linear(3, 1, dtype=np.float64)
    hidden.weight.data = np.array([[0.5, -0.4], [-0.3, 0.8], [0.9, 0.2]])
    hidden.bias.data = np.array([0.1, -0.2, -0.65])
    out.weight.data = np.array([[0.7, -0.5, 1.2]])
    out.bias.data = np.array([0.05])
    return nn.Sequential(hidden, nn.ReLU(), out, nn.Sigmoid())


def test_textbook_mlp_tape_equals_hand_derived_deltas():
    model = textbook_mlp()
    loss = nn.mse_loss(model(X), Y)
    loss.backward()

    W1, b1 = model[0].weight.data, model[0].bias.data
    W2, b2 = model[2].weight.data, model[2].bias.data
    z = X @ W1.T + b1
    a = np.maximum(z, 0)
    z_out = a @ W2.T + b2
    y_pred = 1 / (1 + np.exp(-z_out))
    assert loss.item() == pytest.approx(np.mean((y_pred - Y) ** 2), rel=1e-14)
    n = Y.size
    delta_out = (y_pred - Y) * (2 / n) * y_pred * (1 - y_pred)       # (N, 1): mean MSE, sigmoid'
    delta_hidden = (delta_out @ W2) * (z > 0)                          # (N, 3): back through W_out, ReLU'
    assert ((z > 0).sum(axis=0) < 3).all() and (np.abs(z) >= 0.15).all()
    np.testing.assert_allclose(model[2].weight.grad, delta_out.T @ a, rtol=1e-13)
    np.testing.assert_allclose(model[2].bias.grad, delta_out.sum(axis=0), rtol=1e-13)
    np.testing.assert_allclose(model[0].weight.grad, delta_hidden.T @ X, rtol=1e-13, atol=1e-17)
    np.testing.assert_allclose(model[0].bias.grad, delta_hidden.sum(axis=0), rtol=1e-13, atol=1e-17)


def test_textbook_mlp_gradcheck_and_training():
    model = textbook_mlp()
    params = model.parameters()

    def loss_of(*_):
        return nn.mse_loss(model(X), Y)

    assert bptt.gradcheck(loss_of, params)
    opt = optim.SGD(params, lr=1.0)
    first = loss_of().item()
    for _ in range(200):
        opt.zero_grad()
        loss = loss_of()
        loss.backward()
        opt.step()
    assert loss.item() < first / 10


# -- XOR and two spirals ------------------------------------------------------------------------------

def _fit(model, x, y, opt, steps, check_every=50):
    """Full-batch training on binary labels; stops once every example is right; returns accuracy."""
    for step in range(steps):
        opt.zero_grad()
        nn.binary_cross_entropy_with_logits(model(x), y).backward()
        opt.step()
        if (step + 1) % check_every == 0:
            with bptt.no_grad():
                accuracy = float(np.mean((model(x).data > 0) == (y > 0.5)))
            if accuracy == 1.0:
                break
    return accuracy


def test_xor_2_4_1():
    x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = np.array([[0.0], [1.0], [1.0], [0.0]])
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).to(np.float64)
    assert _fit(model, x, y, optim.Adam(model.parameters(), lr=0.1), 300, check_every=10) == 1.0
    prob = 1 / (1 + np.exp(-model(x).data))
    assert (np.abs(prob - y) < 0.5).all()


def test_two_spirals_at_least_97_percent():
    x, y = two_spirals(100, turns=2, rng=np.random.default_rng(0))
    model = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
    accuracy = _fit(model, x, y, optim.Adam(model.parameters(), lr=0.02), 1500)
    assert accuracy >= 0.97


# -- batch, mini-batch and stochastic gradient descent ----------------------------------------------

@pytest.mark.parametrize("batch_size, lr, epochs", [(None, 0.5, 300), (16, 0.1, 60), (1, 0.02, 20)])
def test_gradient_descent_flavours_reach_least_squares(batch_size, lr, epochs):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 3))
    w_true, b_true = np.array([[1.5, -2.0, 0.3]]), np.array([0.7])
    y = x @ w_true.T + b_true                        # noiseless: every flavour converges exactly
    model = nn.Linear(3, 1, dtype=np.float64)
    opt = optim.SGD(model.parameters(), lr=lr)
    updates = 0
    for _ in range(epochs):
        for xb, yb in batches([x, y], batch_size, shuffle=True, rng=rng):
            opt.zero_grad()
            nn.mse_loss(model(xb), yb).backward()
            opt.step()
            updates += 1
    assert updates == epochs * math.ceil(64 / (batch_size or 64))
    np.testing.assert_allclose(model.weight.data, w_true, atol=1e-6)
    np.testing.assert_allclose(model.bias.data, b_true, atol=1e-6)


def test_batches_cover_every_example_once():
    x, y = np.arange(10.0)[:, None], np.arange(10)
    seen = [yb for _, yb in batches([x, y], 3, rng=np.random.default_rng(0))]
    assert [len(b) for b in seen] == [3, 3, 3, 1]
    assert sorted(np.concatenate(seen)) == list(range(10))
    with pytest.raises(ValueError, match="batches: arrays hold different numbers of examples"):
        next(batches([x, y[:5]], 2))
