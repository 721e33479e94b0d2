"""Optimizers, clipping and schedules against torch.optim on the same gradients (skipped without torch)."""

import math

import numpy as np
import pytest

from bptt import nn, optim

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

A = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 0.2]])
C = np.array([1.0, -2.0, 0.5])


def _grad(p):
    # the gradient of a quadratic, plus a term that flips sign so momentum and maxima matter
    return A @ p + C + np.sin(3 * p)


CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.1, weight_decay=0.1, initial_accumulator_value=0.2, eps=1e-6)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.1)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.1)),
    ("RMSprop", dict(centered=True)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.05, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.05)),
    ("AdamW", dict(lr=0.05, weight_decay=0.5, amsgrad=True, maximize=True)),
]


@pytest.mark.parametrize("name, kw", CONFIGS)
def test_trajectory_matches_torch(name, kw):
    p0 = np.array([0.5, -1.5, 2.0])
    ours = nn.Parameter(p0.copy())
    theirs = torch.tensor(p0.copy(), requires_grad=True)
    opt = getattr(optim, name)([ours], **kw)
    ref = getattr(torch.optim, name)([theirs], **kw)
    for _ in range(25):
        ours.grad = _grad(ours.data)
        theirs.grad = torch.from_numpy(_grad(theirs.detach().numpy()))
        opt.step()
        ref.step()
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    # and the buffers agree under the same names
    sd = opt.state_dict()
    for key, value in ref.state_dict()["state"].get(0, {}).items():
        np.testing.assert_allclose(sd[f"state.0.{key}"], value.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("norm_type, max_norm", [(2.0, 1.0), (2.0, 100.0), (1.0, 0.5), (math.inf, 0.3)])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(3, 4)), rng.normal(size=5)]
    ours = [nn.Parameter(np.zeros_like(g)) for g in grads]
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, q, g in zip(ours, theirs, grads):
        p.grad, q.grad = g.copy(), torch.from_numpy(g.copy())
    total = optim.clip_grad_norm(ours, max_norm, norm_type)
    ref = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert total == pytest.approx(ref.item(), rel=1e-12)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("make, make_ref", [
    (lambda o: optim.StepLR(o, 3, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, gamma=0.5)),
    (lambda o: optim.ExponentialLR(o, 0.9), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9)),
    (lambda o: optim.CosineAnnealingLR(o, 7, eta_min=0.01),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 7, eta_min=0.01)),
])
def test_schedules_match_torch(make, make_ref):
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=0.2)
    ref_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    sched, ref = make(opt), make_ref(ref_opt)
    for _ in range(12):   # past T_max: the cosine climbs back as PyTorch's does
        assert opt.lr == pytest.approx(ref.get_last_lr()[0], rel=1e-10, abs=1e-14)
        opt.step()
        ref_opt.step()
        sched.step()
        ref.step()
