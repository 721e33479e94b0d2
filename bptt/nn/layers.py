"""Feedforward layers: Linear, Embedding, Sequential, activations and Dropout."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, TypeVar

import numpy as np
from numpy.typing import DTypeLike

from bptt import ops
from bptt.errors import integer
from bptt.nn import init
from bptt.nn.module import Module, Parameter
from bptt.rng import generator
from bptt.tape import Tensor, TensorLike, get_default_dtype

__all__ = ["Linear", "Embedding", "Sequential", "Identity", "Tanh", "Sigmoid", "ReLU", "LeakyReLU", "Dropout"]

X = TypeVar("X")


def check_float(x: X, who: str) -> X:
    """``x`` as something a layer can compute with, or a TypeError naming the layer and dtype."""
    dtype = x.dtype if isinstance(x, (Tensor, np.ndarray)) else np.asarray(x).dtype
    if dtype.kind != "f":
        raise TypeError(f"{who}: input has dtype {dtype}; need floating point (cast with .astype(np.float32))")
    return x


class Linear(Module):
    """``y = x @ weight.T + bias`` over the last axis of an input of any rank.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    dtype : numpy dtype, optional
        Of the parameters; the default dtype (float32) when None.
    rng : numpy.random.Generator, optional
        For the initial parameters; the package-wide generator when None.

    Attributes
    ----------
    weight : Parameter, shape (out_features, in_features)
        Initialised as PyTorch does: U(-1/sqrt(in_features), 1/sqrt(in_features))
        (``kaiming_uniform_`` with a = sqrt(5)).
    bias : Parameter, shape (out_features,), or None
        U(-1/sqrt(in_features), 1/sqrt(in_features)).

    Shapes
    ------
    x (..., in_features) -> y (..., out_features)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: DTypeLike | None = None,
                 rng: np.random.Generator | None = None) -> None:
        super().__init__()
        self.in_features = integer(in_features, "in_features", "Linear")
        self.out_features = integer(out_features, "out_features", "Linear")
        dtype = np.dtype(dtype or get_default_dtype())
        self.weight = Parameter(np.empty((out_features, in_features), dtype))
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), rng=rng)
        self.bias: Parameter | None = None
        if bias:
            bound = 1 / math.sqrt(in_features)
            self.bias = init.uniform_(Parameter(np.empty(out_features, dtype)), -bound, bound, rng)

    def forward(self, x: TensorLike) -> Tensor:
        check_float(x, repr(self))
        if np.ndim(x) == 0 or np.shape(x)[-1] != self.in_features:  # type: ignore[arg-type]  # a Tensor's .ndim
            raise ValueError(f"{self!r}: input of shape {np.shape(x)} has "
                             f"{np.shape(x)[-1] if np.ndim(x) else 0} "  # type: ignore[arg-type]
                             f"features in its last axis, expected {self.in_features}")
        if self.bias is None:
            return ops.linear(x, self.weight)
        return ops.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


@ops.primitive
class embedding(ops.Spec):
    """Rows ``weight[indices]`` for integer ``indices`` of any shape; the gradient scatter-adds.

    The cotangent of ``weight`` sums the output cotangents of every position that reads a row:
    a (V, N) sparse selection matrix times the (N, D) cotangents (``scipy.sparse``), never a
    dense one-hot.  The row ``padding_idx``, if given, gets no gradient (PyTorch's rule).
    """

    @staticmethod
    def examples(rng: np.random.Generator) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        # padding_idx is not among them: its row's zero gradient is a rule, not d/dW
        weight = rng.uniform(-2, 2, size=(6, 3))
        return [((weight, np.array([0, 2, 2, 5])), {}),
                ((weight, rng.integers(0, 6, size=(4, 3))), {}),
                ((weight, np.array(3)), {})]

    @staticmethod
    def fwd(weight: np.ndarray, indices: np.ndarray, padding_idx: int | None = None
            ) -> tuple[np.ndarray, tuple[tuple[int, ...], np.ndarray, int | None]]:
        return weight[indices], (weight.shape, indices, padding_idx)

    @staticmethod
    def bwd(res: tuple[tuple[int, ...], np.ndarray, int | None], g: np.ndarray, needs: tuple[bool, ...]
            ) -> tuple[np.ndarray, None]:
        import scipy.sparse     # imported where used: `import bptt` stays quick

        (V, D), indices, padding_idx = res
        flat = indices.reshape(-1)
        select = scipy.sparse.csr_matrix((np.ones(flat.size, g.dtype), (flat, np.arange(flat.size))),
                                         shape=(V, flat.size))
        dW = np.asarray(select @ g.reshape(flat.size, D))
        if padding_idx is not None:
            dW[padding_idx] = 0
        return dW, None


class Embedding(Module):
    """A lookup table: row ``x`` of ``weight`` for every integer ``x`` of the input.

    Parameters
    ----------
    num_embeddings : int
        V, the size of the vocabulary.
    embedding_dim : int
        D, the size of each vector.
    padding_idx : int, optional
        A row that is initialised to zeros and never receives a gradient (negative counts from
        the end, as in PyTorch).
    dtype : numpy dtype, optional
        Of the weight; the default dtype (float32) when None.
    rng : numpy.random.Generator, optional
        For the initial weight; the package-wide generator when None.

    Attributes
    ----------
    weight : Parameter, shape (num_embeddings, embedding_dim)
        Initialised from N(0, 1), as PyTorch does.

    Shapes
    ------
    x (*) integers in [0, V) -> y (*, D)
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 dtype: DTypeLike | None = None, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        who = "Embedding"
        self.num_embeddings = integer(num_embeddings, "num_embeddings", who)
        self.embedding_dim = integer(embedding_dim, "embedding_dim", who)
        if padding_idx is not None:
            if integer(padding_idx, "padding_idx", who, least=-self.num_embeddings) >= self.num_embeddings:
                raise ValueError(f"{who}: padding_idx must be in [-{self.num_embeddings}, "
                                 f"{self.num_embeddings}), got {padding_idx}")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        dtype = np.dtype(dtype or get_default_dtype())    # as in Linear (inline, it costs mypy 15 s)
        self.weight = init.normal_(Parameter(np.empty((self.num_embeddings, self.embedding_dim), dtype)), rng=rng)
        if padding_idx is not None:
            self.weight.data[padding_idx] = 0

    def forward(self, x: TensorLike) -> Tensor:
        x = x.data if isinstance(x, Tensor) else np.asarray(x)
        if x.dtype.kind not in "iu":
            raise TypeError(f"{self!r}: input has dtype {x.dtype}; need integer indices")
        if x.size and (x.min() < 0 or x.max() >= self.num_embeddings):
            bad = x[(x < 0) | (x >= self.num_embeddings)].reshape(-1)[0]
            raise IndexError(f"{self!r}: index {bad} is outside [0, {self.num_embeddings})")
        return embedding(self.weight, x, padding_idx=self.padding_idx)

    def extra_repr(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class Sequential(Module):
    """Modules applied in order; children are named "0", "1", ... as in PyTorch."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: item {i} is a {type(m).__name__}, not a Module")
            setattr(self, str(i), m)

    def forward(self, x: Any) -> Any:
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


class Identity(Module):
    def forward(self, x: X) -> X:
        return x


class Tanh(Module):
    def forward(self, x: TensorLike) -> Tensor:
        return ops.tanh(x)


class Sigmoid(Module):
    def forward(self, x: TensorLike) -> Tensor:
        return ops.sigmoid(x)


class ReLU(Module):
    def forward(self, x: TensorLike) -> Tensor:
        return ops.relu(x)


class LeakyReLU(Module):
    """``max(x, 0) + negative_slope * min(x, 0)``."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x: TensorLike) -> Tensor:
        return ops.maximum(x, 0.0) + self.negative_slope * ops.minimum(x, 0.0)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Dropout(Module):
    """Zero each element with probability ``p`` in training and scale the rest by 1/(1-p);
    the identity in eval mode.  Masks come from ``rng`` or the package-wide generator."""

    def __init__(self, p: float = 0.5, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = rng

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = generator(self.rng).random(np.shape(x)) >= self.p
        return x * (keep / (1.0 - self.p)).astype(x.dtype)

    @property
    def draws_random(self) -> bool:
        return self.training and self.p > 0

    def extra_repr(self) -> str:
        return f"p={self.p}"
