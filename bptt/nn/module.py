"""Module and Parameter: named, nested containers of trainable tensors."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from bptt.io import StrPath, load_npz, save_npz
from bptt.tape import Tensor, TensorLike

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Parameter", "Module"]


class Parameter(Tensor):
    """A Tensor that a Module owns and trains: it always requires grad.

    Parameters
    ----------
    data : array_like
        Initial value; must be floating point.  Arrays keep their dtype, other input takes the
        default dtype.
    """

    __slots__ = ()

    def __init__(self, data: TensorLike, requires_grad: bool = True) -> None:
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter" + super().__repr__()[len("Tensor"):]


class Module:
    """Base class of layers and models.

    Assigning a ``Parameter`` or a ``Module`` to an attribute registers it, in order, so that
    ``named_parameters`` yields dotted names (``"rnn.weight_ih_l0"``, ``"head.bias"``) in
    registration order, as PyTorch does.  Subclasses define ``forward``; calling the module runs it.
    """

    _parameters: dict[str, Parameter]
    _modules: dict[str, Module]
    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # -- traversal ----------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """Yield ``(dotted name, module)`` for this module and every submodule, depth first."""
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def children(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def modules(self) -> Iterator[Module]:
        return (m for _, m in self.named_modules())

    @property
    def draws_random(self) -> bool:
        """Whether a forward in the current mode draws random numbers (active dropout, say).

        A replay of such a forward would not reproduce it; ``bptt.TBPTT`` reads this.  A module
        that draws its own numbers overrides it; a container asks its submodules.
        """
        return any(m.draws_random for m in self.children())

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """Yield ``(dotted name, Parameter)`` in registration order, each parameter once."""
        seen = set()
        for prefix, m in self.named_modules():
            for name, p in m._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self) -> list[Parameter]:
        """The parameters, as a list, in the order of ``named_parameters``."""
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))

    def zero_grad(self) -> None:
        """Forget accumulated gradients (set every ``.grad`` to None)."""
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Self:
        """Set training mode (dropout on) here and in every submodule; returns self."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Self:
        """Set evaluation mode (dropout off); returns self."""
        return self.train(False)

    def to(self, dtype: DTypeLike) -> Self:
        """Cast every parameter to ``dtype`` (e.g. ``np.float64`` for gradient checks); returns self."""
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"{type(self).__name__}.to: need a floating dtype, got {dtype}")
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = None
        return self

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """``{dotted name: np.ndarray}`` (copies) of every parameter."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: Mapping[str, ArrayLike], strict: bool = True) -> Self:
        """Copy arrays into the parameters of the same names, keeping each parameter's dtype.

        Parameters
        ----------
        state : mapping of str to array_like
            For example a ``state_dict()`` of this model, or PyTorch's converted to numpy.
        strict : bool
            Require the keys to match exactly.  Shapes must always match.

        Raises
        ------
        ValueError
            Listing every missing, unexpected and mis-shaped key at once.
        """
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        wrong = [f"{k}: expected {own[k].shape}, got {np.shape(state[k])}"
                 for k in own if k in state and np.shape(state[k]) != own[k].shape]
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if wrong:
            problems.append("mis-shaped keys: " + "; ".join(wrong))
        if problems:
            raise ValueError(f"{type(self).__name__}.load_state_dict: " + "; ".join(problems))
        for k, p in own.items():
            if k in state:
                value = np.asarray(state[k])
                if value.dtype.kind not in "fiu":
                    raise TypeError(f"{type(self).__name__}.load_state_dict: {k} has dtype {value.dtype}")
                p.data = value.astype(p.dtype, copy=True)
        return self

    def save(self, path: StrPath) -> None:
        """Write ``state_dict()`` to ``path`` as ``.npz``, atomically."""
        save_npz(path, self.state_dict())

    def load(self, path: StrPath, strict: bool = True) -> Self:
        """Load parameters saved by ``save`` (never unpickles); returns self."""
        return self.load_state_dict(load_npz(path), strict=strict)

    # -- display ------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not self._modules:
            return head + ")"
        lines = [head]
        for name, m in self._modules.items():
            lines.append("  (" + name + "): " + repr(m).replace("\n", "\n  "))
        return "\n".join(lines) + "\n)"
