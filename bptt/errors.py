"""Options and their checks, in one place.

Two kinds of caller share these checks.  The API (a layer, a task, a trainer) raises a
``ValueError`` that names itself and the argument: ``GRU: hidden_size must be a positive integer,
got 0``.  The command line and run configurations raise ``ConfigError``, which names the option
as the user wrote it: ``--steps: need a positive integer, got 0`` (or the file and key it was
read from: ``runs/a/config.json: key 'steps': ...``).

The package's errors come in two kinds, which the command line reports differently: a
``ConfigError`` is a usage error (the user asked for something invalid; exit status 2), a
``RunError`` a stated runtime error (a run that cannot go on as asked: a locked, corrupt or
mismatched run directory, a diverged loss; exit status 1).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike

T = TypeVar("T")

__all__ = ["ConfigError", "RunError", "Interrupted", "integer", "option_integer", "option_choice", "option_float",
           "check_finite"]


class ConfigError(ValueError):
    """An invalid option; ``option`` names it as the user gave it (``--k2``, a spec key, ...)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


class RunError(RuntimeError):
    """A run that cannot go on as asked; the message says what was found and what to do."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) after a run saved its state and said where; the message says it."""


def _is_integer(value: object, least: int) -> bool:
    return (isinstance(value, numbers.Integral) and not isinstance(value, bool)
            and value >= least)  # type: ignore[operator]  # typeshed's Integral has no >=


def _kind(least: int) -> str:
    return "a positive integer" if least == 1 else f"an integer >= {least}"


def integer(value: Any, name: str, who: str, least: int = 1) -> int:
    """``value`` as an ``int``, or a ValueError ``"{who}: {name} must be a positive integer, got ..."``."""
    if not _is_integer(value, least):
        raise ValueError(f"{who}: {name} must be {_kind(least)}, got {value!r}")
    return int(value)


def option_integer(value: Any, option: str, least: int = 1) -> int:
    """``value`` as an ``int``, or ``ConfigError(option, "need a positive integer, got ...")``."""
    if not _is_integer(value, least):
        raise ConfigError(option, f"need {_kind(least)}, got {value!r}")
    return int(value)


def option_choice(value: T, allowed: Collection[T], option: str) -> T:
    """``value`` if it is one of ``allowed``, else a ConfigError listing them."""
    if value not in allowed:
        raise ConfigError(option, f"unknown value {value!r}; choose from {', '.join(map(str, allowed))}")
    return value


def option_float(value: Any, option: str, low: float = -math.inf, low_open: bool = False,
                 what: str = "a finite number") -> float:
    """``value`` as a finite ``float`` above ``low`` (or at it unless ``low_open``), else a
    ConfigError ``"need {what} > low, got ..."``; NaN and infinity are always refused."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(option, f"need a number, got {value!r}") from None
    if not math.isfinite(v) or v < low or (low_open and v == low):
        bound = "" if low == -math.inf else f" {'>' if low_open else '>='} {low:g}"
        finite = "" if math.isfinite(v) else " (NaN and infinity are refused)"
        raise ConfigError(option, f"need {what}{bound}, got {value!r}{finite}")
    return v


def check_finite(who: str, **arrays: ArrayLike) -> None:
    """Raise a ValueError naming the array and its first NaN or infinite element, if any.

    An array named ``mask`` must also hold no negative weight.
    """
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.kind not in "fc":
            continue
        bad = ~np.isfinite(a)
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{who}: {name} holds a non-finite value ({float(a[at])}) at index {at} "
                             f"(shape {a.shape})")
        if name == "mask" and (a < 0).any():
            at = tuple(int(i) for i in np.argwhere(a < 0)[0])
            raise ValueError(f"{who}: mask weights must be >= 0, got {float(a[at])} at index {at}")
