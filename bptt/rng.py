"""The package-wide random generator that modules draw initial weights and dropout masks from.

``bptt.seed(n)`` resets it, so a script that seeds once is reproducible end to end.  Everything
that takes an ``rng=`` argument falls back to this generator when given ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["seed", "generator", "get_state", "set_state"]

_generator = np.random.default_rng()


def seed(n: int | Sequence[int] | np.random.SeedSequence | None) -> np.random.Generator:
    """Reset the package-wide generator to ``numpy.random.default_rng(n)`` and return it."""
    global _generator
    _generator = np.random.default_rng(n)
    return _generator


def generator(rng: np.random.Generator | None = None) -> np.random.Generator:
    """``rng`` if given, else the package-wide ``numpy.random.Generator``."""
    if rng is None:
        return _generator
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: need a numpy.random.Generator (numpy.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    return rng


def get_state() -> Mapping[str, Any]:
    """The package-wide generator's state (a JSON-serialisable dict), for checkpoints."""
    return _generator.bit_generator.state


def set_state(state: Mapping[str, Any]) -> None:
    """Restore a state returned by ``get_state``."""
    _generator.bit_generator.state = state
