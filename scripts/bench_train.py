"""Time the main job's update, ``bptt train`` with no options, against the same PyTorch loop.

The workload: the adding problem at T=50, a 64-unit LSTM (forget-gate bias 1) with a Linear
head, batch 64, Adam at lr 0.01, gradient norm clipped to 1, full BPTT, float32.  bptt runs it
as ``bptt train`` does (``bptt.TBPTT`` over one batch per update); PyTorch runs ``nn.LSTM`` +
``nn.Linear`` from the same initial weights (copied through ``state_dict``) on the same batches,
with ``torch.optim.Adam`` and ``clip_grad_norm_``; with numba installed, bptt also runs on its
compiled LSTM kernels (``bptt.nn.compiled``, from the same initial weights).  Each update is one
round, the contenders in the orders of ``bench_rnn.orders``; the script prints medians and the
ratios bptt / PyTorch, and checks that the losses agree::

    PYTHONPATH=. /work/torchenv/bin/python scripts/bench_train.py --updates 40
"""

from __future__ import annotations

import os
import statistics
import time

import click
import numpy as np

from bench_rnn import _blas_threads, _compiled, orders, pin_to_one_cpu, rounds


def _bptt_update(config):
    from bptt.data import tasks
    from bptt.runs.build import build_model, build_optimizer
    from bptt.runs.config import prepare
    from bptt.credit.tbptt import TBPTT

    config, task = prepare(config)
    model = build_model(config, task)
    trainer = TBPTT(model, tasks.loss_function(task), build_optimizer(config, model),
                    config.k1, config.k2, clip_norm=config.clip)

    def update(batch):
        x, y, mask = batch
        trainer.reset_state()
        return trainer.run(x, y, mask)[0]["loss"]
    return config, task, model, update


def _torch_update(torch, model, config):
    lstm = torch.nn.LSTM(model.input_size, model.hidden_size)
    head = torch.nn.Linear(model.hidden_size, model.output_size)
    state = model.state_dict()
    lstm.load_state_dict({k[4:]: torch.tensor(v) for k, v in state.items() if k.startswith("rnn.")})
    head.load_state_dict({k[5:]: torch.tensor(v) for k, v in state.items() if k.startswith("head.")})
    params = [*lstm.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=config.lr)

    def update(batch):
        x, y, mask = (torch.tensor(a) for a in batch)
        opt.zero_grad()
        out = head(lstm(x)[0])
        w = mask / mask.sum()               # TBPTT's masked mean of the per-step losses
        loss = sum(w[t] * torch.nn.functional.mse_loss(out[t], y[t]) for t in torch.nonzero(mask)[:, 0])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.clip)
        opt.step()
        return loss.item()
    return update


@click.command()
@click.option("--updates", default=40, show_default=True, help="Timed updates per contender.")
def main(updates):
    """Median ms per update of the main job in bptt and in PyTorch, and their ratio."""
    from bptt.runs.config import TrainConfig

    import torch
    torch.set_num_threads(_blas_threads())
    cpu = pin_to_one_cpu()
    config, task, model, ours = _bptt_update(TrainConfig())     # resolved: lr, k1, k2 filled in
    contenders = {"bptt": ours, "torch": _torch_update(torch, model, config)}
    from bptt.nn import compiled
    if compiled.available():
        contenders["bptt-compiled"] = _compiled(_bptt_update(TrainConfig())[3])    # same initial weights
    else:
        click.echo("bptt-compiled skipped: needs numba (pip install 'bptt[compiled]')")
    rng = np.random.default_rng(0)
    names, square = list(contenders), orders(len(contenders))
    updates, warm = rounds(updates, len(names)), len(square)
    batches = [task.batch(config.batch, rng) for _ in range(updates + warm)]
    times = {name: [] for name in contenders}
    losses = {name: [] for name in contenders}
    for i, batch in enumerate(batches):
        for name in (names[j] for j in square[i % len(square)]):
            fn = contenders[name]
            start = time.perf_counter()
            losses[name].append(fn(batch))
            if i >= warm:                   # the first updates warm up allocations
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    env = ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    click.echo(f"main job update (adding T=50, LSTM 64, B=64, Adam, clip 1, float32); {updates} updates; "
               f"BLAS threads {_blas_threads()}, torch {torch.get_num_threads()}; "
               f"{'all CPUs' if cpu is None else f'on CPU {cpu} alone'}; {env}")
    for name in contenders:
        if name != "torch":
            gap = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses[name], losses["torch"]))
            click.echo(f"{name} {med[name]:.2f} ms, PyTorch {med['torch']:.2f} ms, ratio "
                       f"{med[name] / med['torch']:.2f}; losses within {gap:.1e} of PyTorch's")


if __name__ == "__main__":
    main()
