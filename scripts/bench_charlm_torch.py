"""bptt's stateful character-level language model side by side with the same model in PyTorch.

Both sides get the same architecture (Embedding -> one recurrent layer -> Linear over the
vocabulary), the same initial weights (bptt's, copied into PyTorch through ``load_state_dict``),
the same batches (the training part of the text cut into B contiguous streams), the same
optimizer (Adam, gradient norm clipped) and the same truncation: PyTorch's chunk-and-detach loop
of the word_language_model example (forward k steps from the detached state, backward, step),
which is BPTT(k; k), against ``bptt.runs.streams.StreamTraining`` (``bptt.TBPTT`` with k1 = k2 = k).
Every ``--val-every`` updates both score the same validation text as one stream with the state
carried; the script prints both bits-per-character curves, their largest gap, and each side's
median time per update (updates interleaved, one bptt then one PyTorch, so load hits them alike)
with the ratio bptt / PyTorch.  Run it where torch is importable::

    PYTHONPATH=. OPENBLAS_NUM_THREADS=1 /work/torchenv/bin/python scripts/bench_charlm_torch.py
    PYTHONPATH=. /work/torchenv/bin/python scripts/bench_charlm_torch.py --updates 60 --hidden 128

PyTorch runs with as many threads as numpy's BLAS (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``
or the number of CPUs, in that order).
"""

from __future__ import annotations

import math
import os
import statistics
import time

import click
import numpy as np

import bptt
from bptt.runs import streams
from bptt.data import tasks
from bptt.runs.build import build_model, build_optimizer
from bptt.runs.config import TrainConfig, prepare
from bench_rnn import _blas_threads


class _TorchLM:
    """The same model in PyTorch, with bptt's parameter names so that a state_dict maps 1:1."""

    def __init__(self, torch, cell, vocab, embed, hidden, state):
        layer = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
        self.torch = torch
        self.modules = torch.nn.ModuleDict({"embedding": torch.nn.Embedding(vocab, embed),
                                            "rnn": layer(embed, hidden),
                                            "head": torch.nn.Linear(hidden, vocab)})
        self.modules.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
        self.lstm = cell == "lstm"

    def __call__(self, x, state):
        y, state = self.modules["rnn"](self.modules["embedding"](x), state)
        return self.modules["head"](y), state

    def detach(self, state):
        if state is None:
            return None
        return tuple(s.detach() for s in state) if self.lstm else state.detach()

    def score(self, x, y, chunk):
        """Bits per character over one stream, the state carried (x, y (N,) int64 tensors)."""
        torch, nats, state = self.torch, 0.0, None
        with torch.no_grad():
            for a in range(0, len(x), chunk):
                logits, state = self(x[a:a + chunk, None], state)
                nats += torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), y[a:a + chunk], reduction="sum").item()
        return nats / len(x) / math.log(2)


def _score(model, x, y, chunk):
    """bptt's side of ``_TorchLM.score``: bits per character over one stream, state carried."""
    nats, state = 0.0, None
    model.eval()
    with bptt.no_grad():
        for a in range(0, len(x), chunk):
            logits, state = model(x[a:a + chunk, None], state)
            nats += bptt.nn.cross_entropy(logits.data[:, 0], y[a:a + chunk], reduction="sum").item()
    model.train()
    return nats / len(x) / math.log(2)


@click.command()
@click.option("--task", default="shakespeare", show_default=True, help="A text task of `bptt tasks`.")
@click.option("--data", default=None, help="A UTF-8 text file instead of --task.")
@click.option("--cell", default="lstm", show_default=True, type=click.Choice(["rnn", "lstm", "gru"]))
@click.option("--hidden", default=256, show_default=True)
@click.option("--embed", default=None, type=int, help="Embedding width  [default: --hidden]")
@click.option("--batch", default=32, show_default=True)
@click.option("--k", default=100, show_default=True, help="Chunk length: BPTT(k; k).")
@click.option("--lr", default=2e-3, show_default=True)
@click.option("--clip", default=1.0, show_default=True)
@click.option("--updates", default=100, show_default=True)
@click.option("--val-every", default=10, show_default=True)
@click.option("--val-chars", default=10000, show_default=True,
              help="Characters of the validation part scored at each point (0: all).")
@click.option("--seed", default=0, show_default=True)
def main(task, data, cell, hidden, embed, batch, k, lr, clip, updates, val_every, val_chars, seed):
    """Train both for --updates; print the validation bpc curves, their gap and the time ratio."""
    import torch

    torch.set_num_threads(_blas_threads())
    config, text = prepare(TrainConfig(task="text" if data else task, data=data, cell=cell,
                                       hidden=hidden, embed=embed, batch=batch, seq_len=k, k1=k,
                                       k2=k, lr=lr, clip=clip, optimizer="adam", stateful=True,
                                       steps=updates, seed=seed))
    ours = build_model(config, text)
    walk = streams.StreamTraining(text, config)
    trainer = bptt.TBPTT(ours, tasks.loss_function(text), build_optimizer(config, ours), k, k,
                         clip_norm=config.clip, window_loss=walk.window_loss)
    theirs = _TorchLM(torch, cell, text.output_size, config.embed or hidden, hidden, ours.state_dict())
    params = list(theirs.modules.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    xs, ys = (torch.from_numpy(np.ascontiguousarray(a)) for a in (walk.x, walk.y))
    vx, vy, _ = streams.part_stream(text, "validation")
    if val_chars:
        vx, vy = vx[:val_chars], vy[:val_chars]
    vxt, vyt = torch.from_numpy(vx), torch.from_numpy(vy)

    state, position = None, 0

    def torch_update():
        nonlocal state, position
        a, b = position, min(position + k, len(xs))
        logits, new = theirs(xs[a:b], theirs.detach(state))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 ys[a:b].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        state, position = (None, 0) if b == len(xs) else (new, b)
        return loss.item()

    env = ", ".join(f"{k}={os.environ.get(k, 'unset')}"
                    for k in ("OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    click.echo(f"{text.name}: {cell} H={hidden} E={config.embed or hidden} B={batch} k={k} Adam "
               f"lr={lr:g} clip={clip:g}; {updates} updates; validation: {len(vx)} characters as "
               f"one stream; {env}; torch {torch.__version__} with {torch.get_num_threads()} threads")
    click.echo("\n| update | bptt train loss | torch train loss | bptt val bpc | torch val bpc | gap |")
    click.echo("|---|---|---|---|---|---|")
    times = {"bptt": [], "torch": []}
    gaps = []
    for u in range(1, updates + 1):
        start = time.perf_counter()
        ours_loss = [r["loss"] for r in walk.updates(trainer)][-1]
        times["bptt"].append(time.perf_counter() - start)
        start = time.perf_counter()
        their_loss = torch_update()
        times["torch"].append(time.perf_counter() - start)
        if u % val_every == 0 or u == updates:
            a = _score(ours, vx, vy, streams.SCORE_CHUNK)
            b = theirs.score(vxt, vyt, streams.SCORE_CHUNK)
            gaps.append(abs(a - b))
            click.echo(f"| {u} | {ours_loss:.4f} | {their_loss:.4f} | {a:.4f} | {b:.4f} | {gaps[-1]:.4f} |")
    ms = {side: 1e3 * statistics.median(v[1:]) for side, v in times.items()}   # the first: warm-up
    click.echo(f"\nlargest validation gap {max(gaps):.4f} bpc over {len(gaps)} points")
    click.echo(f"median ms per update: bptt {ms['bptt']:.1f}, torch {ms['torch']:.1f}, "
               f"bptt / torch {ms['bptt'] / ms['torch']:.2f}")


if __name__ == "__main__":
    main()
