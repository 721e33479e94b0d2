"""A tiny end-to-end run on the bare tape: a hand-unrolled tanh recurrence learns to sum its inputs."""

from __future__ import annotations

import numpy as np

import bptt


def run_demo(steps=300, lr=0.1, seed=0, hidden=8, seq_len=10, batch=32, every=None):
    """Train ``h_t = tanh(x_t W_x + h_{t-1} W_h + b)``, ``y = h_T w_y`` by plain gradient descent
    to output the mean of a sequence of inputs drawn from [-1, 1].

    Yields ``(step, loss)`` every ``every`` steps (default: 10 reports over the run) and last.
    """
    rng = np.random.default_rng(seed)
    every = every or max(1, steps // 10)
    scale = 1 / np.sqrt(hidden)
    params = {
        "W_x": rng.uniform(-scale, scale, (1, hidden)),
        "W_h": rng.uniform(-scale, scale, (hidden, hidden)),
        "b": np.zeros(hidden),
        "w_y": rng.uniform(-scale, scale, (hidden, 1)),
    }
    params = {k: bptt.Tensor(v.astype(np.float32), requires_grad=True) for k, v in params.items()}
    for step in range(1, steps + 1):
        x = rng.uniform(-1, 1, (seq_len, batch, 1)).astype(np.float32)
        target = x.mean(axis=0)
        h = bptt.Tensor(np.zeros((batch, hidden), np.float32))
        for t in range(seq_len):
            h = bptt.tanh(bptt.Tensor(x[t]) @ params["W_x"] + h @ params["W_h"] + params["b"])
        loss = ((h @ params["w_y"] - target) ** 2).mean()
        for p in params.values():
            p.grad = None
        loss.backward()
        for p in params.values():
            p.data = p.data - lr * p.grad
        if step % every == 0 or step == 1 or step == steps:
            yield step, loss.item()
