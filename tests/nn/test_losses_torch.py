"""Losses and their gradients against torch.nn.functional (skipped without torch)."""

import numpy as np
import pytest

from bptt import nn
from bptt.tape import Tensor

torch = pytest.importorskip("torch")
F = torch.nn.functional
pytestmark = pytest.mark.torch


def _both(ours, theirs, x, y, reduction):
    xt = Tensor(x, requires_grad=True)
    out = ours(xt, y, reduction=reduction)
    out.backward(np.ones(out.shape))
    xr = torch.tensor(x, requires_grad=True)
    ref = theirs(xr, torch.from_numpy(y), reduction=reduction)
    ref.backward(torch.ones_like(ref))
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(xt.grad, xr.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_match_torch(reduction):
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 2, size=(5, 3)), rng.normal(size=(5, 3))
    y[0, 0] = x[0, 0]      # a tie, where l1's subgradient convention shows
    _both(nn.mse_loss, F.mse_loss, x, y, reduction)
    _both(nn.l1_loss, F.l1_loss, x, y, reduction)
    _both(lambda a, b, reduction: nn.huber_loss(a, b, reduction, delta=0.7),
          lambda a, b, reduction: F.huber_loss(a, b, reduction=reduction, delta=0.7), x, y, reduction)
    big = np.concatenate([x, [[1000.0, -1000.0, 0.0]]])
    probs = rng.random(big.shape)
    _both(nn.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, big, probs, reduction)
    _both(nn.cross_entropy, F.cross_entropy, big, np.array([0, 1, 2, 1, 0, 1]), reduction)
