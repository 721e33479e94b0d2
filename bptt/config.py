"""Options and their checks, in one place.

Two kinds of caller share these checks.  The API (a layer, a task, a trainer) raises a
``ValueError`` that names itself and the argument: ``GRU: hidden_size must be a positive integer,
got 0``.  The command line and run configurations raise ``ConfigError``, which names the option
as the user wrote it: ``--steps: need a positive integer, got 0``.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["ConfigError", "integer", "option_integer", "option_choice", "option_float"]


class ConfigError(ValueError):
    """An invalid option; ``option`` names it as the user gave it (``--k2``, a spec key, ...)."""

    def __init__(self, option, message):
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


def _is_integer(value, least):
    return (isinstance(value, numbers.Integral) and not isinstance(value, bool)
            and value >= least)


def _kind(least):
    return "a positive integer" if least == 1 else f"an integer >= {least}"


def integer(value, name, who, least=1):
    """``value`` as an ``int``, or a ValueError ``"{who}: {name} must be a positive integer, got ..."``."""
    if not _is_integer(value, least):
        raise ValueError(f"{who}: {name} must be {_kind(least)}, got {value!r}")
    return int(value)


def option_integer(value, option, least=1):
    """``value`` as an ``int``, or ``ConfigError(option, "need a positive integer, got ...")``."""
    if not _is_integer(value, least):
        raise ConfigError(option, f"need {_kind(least)}, got {value!r}")
    return int(value)


def option_choice(value, allowed, option):
    """``value`` if it is one of ``allowed``, else a ConfigError listing them."""
    if value not in allowed:
        raise ConfigError(option, f"unknown value {value!r}; choose from {', '.join(map(str, allowed))}")
    return value


def option_float(value, option, low=-math.inf, low_open=False):
    """``value`` as a finite ``float`` above ``low`` (or at it unless ``low_open``), else a ConfigError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(option, f"need a number, got {value!r}") from None
    if not math.isfinite(v) or v < low or (low_open and v == low):
        bound = "" if low == -math.inf else f" {'>' if low_open else '>='} {low:g}"
        raise ConfigError(option, f"need a finite number{bound}, got {value!r}")
    return v
