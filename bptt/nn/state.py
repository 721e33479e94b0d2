"""A recurrent state as the package passes it around: one Tensor h, or a tuple such as (h, c).

Models take and return a state in its *public* form: the tensor itself when it has one
component, a tuple of its components otherwise (``SequenceModel``'s are (L, B, H) each, a
``Cell``'s (B, H)).  The trainers, recomputation and diagnostics work on the components as a
tuple and give the result back in the structure they were handed.  Every such conversion is
one of the functions here.

Shapes: a state of components S_1, ..., S_n (each e.g. (L, B, H)).
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np

from bptt.tape import Tensor

__all__ = ["State", "as_array", "flatten", "unflatten", "public", "hidden", "detach", "leaves"]

#: A state: one Tensor (or array), or a tuple of them.
State = Union[Tensor, np.ndarray, tuple]


def as_array(x: Any) -> np.ndarray:
    """The array of a Tensor (its data, shared), or ``x`` as an array.

    Parameters
    ----------
    x : Tensor or array_like

    Returns
    -------
    np.ndarray
        ``x.data`` itself for a Tensor, ``np.asarray(x)`` otherwise.

    Shapes
    ------
    x's shape.
    """
    return x.data if isinstance(x, Tensor) else np.asarray(x)


def flatten(state: State) -> tuple:
    """A state's components as a tuple.

    Parameters
    ----------
    state : Tensor, array, or tuple or list of them

    Returns
    -------
    tuple
        ``(state,)`` for a single tensor, ``tuple(state)`` for a tuple or list.

    Shapes
    ------
    S or (S_1, ..., S_n) -> (S_1, ..., S_n)
    """
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def unflatten(like: State, parts: Sequence) -> State:
    """``parts`` in the structure of the state ``like``: a tuple if ``like`` is one, else
    the single part.

    Parameters
    ----------
    like : Tensor, array, or tuple or list of them
        A state of the structure wanted.
    parts : sequence
        One item per component of ``like``.

    Returns
    -------
    tuple or the one item of ``parts``

    Shapes
    ------
    (S_1, ..., S_n) -> like's structure
    """
    return tuple(parts) if isinstance(like, (tuple, list)) else parts[0]


def public(parts: Sequence) -> State:
    """A state's components as models give them out: the one component itself, or a tuple.

    Parameters
    ----------
    parts : sequence
        The components, at least one.

    Returns
    -------
    Tensor or tuple

    Shapes
    ------
    (S_1, ..., S_n) -> S_1 if n == 1 else (S_1, ..., S_n)
    """
    return tuple(parts) if len(parts) > 1 else parts[0]


def hidden(state: State) -> Any:
    """The hidden state h: the state itself, or its first component (an LSTM's h of (h, c)).

    Parameters
    ----------
    state : Tensor, array, or tuple or list of them

    Returns
    -------
    Tensor or array

    Shapes
    ------
    S or (S_1, ..., S_n) -> S_1
    """
    return flatten(state)[0]


def detach(state: State) -> State:
    """The state's arrays as new Tensors cut from the tape, in the state's structure.

    Parameters
    ----------
    state : Tensor, array, or tuple or list of them

    Returns
    -------
    Tensor or tuple of Tensor
        Sharing the arrays (no copy), requiring no gradient.

    Shapes
    ------
    like ``state``
    """
    return unflatten(state, tuple(Tensor(as_array(s)) for s in flatten(state)))


def leaves(state: State) -> tuple:
    """The state's arrays as new leaf Tensors that require grad: what a recording starts from
    when it needs the cotangent of the state.

    Parameters
    ----------
    state : Tensor, array, or tuple or list of them

    Returns
    -------
    tuple of Tensor
        One per component, sharing its array.

    Shapes
    ------
    S or (S_1, ..., S_n) -> (S_1, ..., S_n)
    """
    return tuple(Tensor(as_array(s), requires_grad=True) for s in flatten(state))
