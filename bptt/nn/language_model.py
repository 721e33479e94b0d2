"""A language model: Embedding -> recurrent layers of any registered cell -> Linear over the vocabulary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from bptt.nn.layers import Embedding
from bptt.nn.recurrent import SequenceModel
from bptt.tape import Tensor

if TYPE_CHECKING:
    from bptt.nn.recompute import Policy
    from bptt.nn.registry import CellType

__all__ = ["LanguageModel"]


class LanguageModel(SequenceModel):
    """A ``SequenceModel`` that reads integer tokens through an ``Embedding``.

    It has the same interface (``forward``, ``step``, ``initial_state``), so ``bptt.TBPTT``, the
    diagnostics and the training runs take it as they take a ``SequenceModel``; its outputs are
    logits over the vocabulary.  The architecture of PyTorch's word_language_model example (with
    separate input and output matrices).

    Parameters
    ----------
    cell : str or CellType
        A registered cell name.
    vocab_size : int
        V, the number of tokens (the embedding's rows and the head's outputs).
    embedding_dim : int
        E, the input width of the first recurrent layer.
    hidden_size : int
    num_layers, dropout, init, dtype, fused, rng, **options
        As ``SequenceModel``.

    Attributes
    ----------
    embedding : Embedding (V -> E), weight N(0, 1)
    rnn : Recurrent
    head : Linear (hidden_size -> V)

    Shapes
    ------
    ``model(x (T, B) int, state) -> (logits (T, B, V), state)``; ``model.step(x_t (B,) int, state)
    -> (logits (B, V), state)``.
    """

    def __init__(self, cell: str | CellType, vocab_size: int, embedding_dim: int, hidden_size: int,
                 num_layers: int = 1, dropout: float = 0.0, init: str = "default", dtype: DTypeLike | None = None,
                 fused: bool = True, rng: np.random.Generator | None = None, **options: Any) -> None:
        super().__init__(cell, embedding_dim, hidden_size, vocab_size, num_layers=num_layers,
                         dropout=dropout, init=init, dtype=dtype, fused=fused, rng=rng, **options)
        self.embedding = Embedding(vocab_size, embedding_dim, dtype=dtype, rng=rng)
        self.vocab_size, self.embedding_dim = vocab_size, embedding_dim

    def forward(self, x: Tensor | ArrayLike, state: Tensor | tuple[Tensor, ...] | None = None,
                checkpoint: str | int | Policy | None = None) -> tuple[Tensor, Tensor | tuple[Tensor, ...]]:
        """Run over a (T, B) sequence of tokens: ``(logits (T, B, V), final state)``;
        ``checkpoint`` as for ``Recurrent``."""
        return super().forward(self.embedding(x), state, checkpoint=checkpoint)

    def step(self, x: Tensor | ArrayLike, state: Tensor | tuple[Tensor, ...] | None = None,
             return_layers: bool = False) -> tuple[Any, ...]:
        """One timestep of tokens ``x (B,)``: ``(logits (B, V), new state)`` (see ``SequenceModel.step``)."""
        return super().step(self.embedding(x), state, return_layers=return_layers)

    def extra_repr(self) -> str:
        return f"{self.cell!r}, vocab_size={self.vocab_size}"
