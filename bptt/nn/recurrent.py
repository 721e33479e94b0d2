"""Recurrent modules for any registered cell: one step, a sequence, and the SequenceModel.

The modules here know no cell: what a cell is (gates, state, options, equations, reference step,
fused kernels, initialisation) is its ``CellType`` in the registry (``bptt.nn.registry``), declared
in its own module under ``bptt.nn.cells``.  ``Cell("lstm", ...)`` is one step,
``Recurrent("lstm", ...)`` a stack of layers over a sequence, ``SequenceModel("lstm", ...)`` that
stack with a Linear head at every step.  PyTorch's ``RNNCell``/``LSTMCell``/``GRUCell`` and
``RNN``/``LSTM``/``GRU``, with their signatures, are thin subclasses declared with their cells.

Every module has two paths that give the same numbers, up to float rounding:

* ``fused=True`` (default): the cell's fused kernels, one tape entry per layer and direction
  for a whole sequence and one per layer for a step (the reference path for a cell without);
* ``fused=False``: the cell's reference step, built from small primitives.

Parameter names are PyTorch's (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``,
``bias_hh_l0``, ``..._reverse``), so a PyTorch ``state_dict`` converted to numpy loads unchanged.
"""

from __future__ import annotations

import numpy as np

from bptt.nn import recompute as checkpointing
from bptt import ops
from bptt.errors import integer
from bptt.nn import registry as registry
from bptt.nn.layers import Dropout, Linear, check_float
from bptt.nn.module import Module
from bptt.nn.state import public
from bptt.tape import Tensor, get_default_dtype

__all__ = ["Cell", "Recurrent", "SequenceModel"]


def _layer(cell, fused, x, state, weights, options, reverse, checkpoint=None):
    """One layer in one direction over a whole (T, B, I) sequence -> (y (T, B, H), final state);
    ``checkpoint`` a ``bptt.nn.recompute.Policy`` or None."""
    if checkpoint is not None:
        return checkpointing.checkpointed_layer(cell, fused, x, state, weights, options, reverse,
                                                checkpoint)
    if fused and cell.fused is not None:
        y, *final = cell.fused.sequence(x, *state, *weights, reverse=reverse, **options)
        return y, tuple(final)
    ys = [None] * len(x)
    for t in (range(len(x) - 1, -1, -1) if reverse else range(len(x))):
        state = cell.step(False, x[t], state, weights, options)
        ys[t] = state[0]
    return ops.stack(*ys, axis=0), state


def _input(x, dtype, who):
    """``x`` as a Tensor or array of the parameters' dtype (a Tensor keeps its gradient path)."""
    check_float(x, who)
    if isinstance(x, Tensor):
        return x if x.dtype == dtype else ops.astype(x, dtype=dtype)
    return np.asarray(x, dtype=dtype)


def _check_state(who, name, h, expected):
    if tuple(np.shape(h)) != tuple(expected):
        raise ValueError(f"{who}: {name} has shape {tuple(np.shape(h))}, expected {tuple(expected)}")


def _state(cell, who, hx, shape, dtype, suffix=""):
    """``hx`` as a tuple of the cell's state components, each checked to be ``shape``; zeros
    when None.  A cell with one component takes a single tensor, others a tuple."""
    names = [n + suffix for n in cell.state]
    if hx is None:
        return tuple(np.zeros(shape, dtype) for _ in names)
    if len(names) == 1:
        if isinstance(hx, (tuple, list)):
            raise ValueError(f"{who}: the state must be one tensor {names[0]} {shape}, got a "
                             f"{type(hx).__name__}")
        state = (hx,)
    else:
        if not isinstance(hx, (tuple, list)) or len(hx) != len(names):
            got = f"{len(hx)} tensors" if isinstance(hx, (tuple, list)) else type(hx).__name__
            raise ValueError(f"{who}: the state must be a tuple ({', '.join(names)}), got {got}")
        state = tuple(hx)
    for name, s in zip(names, state):
        _check_state(who, name, s, shape)
    return tuple(_input(s, dtype, who) for s in state)


class _CellModule(Module):
    """What a step and a sequence module share: the cell, its options, parameter creation."""

    def _setup(self, cell, who, input_size, hidden_size, bias, init, options, fused):
        self.cell_type = registry.get(cell, who)
        self.cell = self.cell_type.name
        self.input_size = integer(input_size, "input_size", who)
        self.hidden_size = integer(hidden_size, "hidden_size", who)
        if init not in self.cell_type.inits:
            raise ValueError(f"{who}: init must be one of {', '.join(self.cell_type.inits)}, got {init!r}")
        self.options = self.cell_type.resolve(who, options)
        self._step_options = self.cell_type.step_options(self.options)
        for name, value in self.options.items():   # rnn.nonlinearity, as in PyTorch
            object.__setattr__(self, name, value)
        self.bias, self.init, self.fused = bool(bias), init, fused
        self._weight_names = tuple(self.cell_type.parameter_shapes(1, 1, self.bias))

    def _make_parameters(self, who, suffix, input_size, dtype, rng):
        try:
            params = self.cell_type.make_parameters(input_size, self.hidden_size, self.bias,
                                                    self.init, self.options, dtype, rng)
        except ValueError as err:
            raise ValueError(f"{who}: {err}") from None
        for name, p in params.items():
            setattr(self, name + suffix, p)

    def _weights(self, suffix=""):
        return tuple(getattr(self, n + suffix) for n in self._weight_names)

    def _extra_options(self):
        return [f"{k}={v!r}" for k, v in self.options.items()
                if v != self.cell_type.options[k].default and not self.cell_type.options[k].init]


class Cell(_CellModule):
    """One step of a registered cell.

    Parameters
    ----------
    cell : str or CellType
        A name of ``bptt.nn.registry.names()`` (``'rnn'``, ``'lstm'``, ``'gru'``, ``'indrnn'``, ...).
    input_size, hidden_size : int
    bias : bool
        With ``bias_ih`` and ``bias_hh`` (two, as PyTorch has for cuDNN compatibility).
    init : str
        One of the cell's ``inits``: 'default' (PyTorch's U(-1/sqrt(H), 1/sqrt(H))),
        'orthogonal', 'identity' (the IRNN of Le et al. 2015), as the cell allows.
    fused : bool
        One tape entry per call (True) or the reference built from small ops (False).
    dtype : numpy dtype, optional
        Of the parameters; the default dtype (float32) when None.
    rng : numpy.random.Generator, optional
        For the initial weights; the package-wide generator when None.
    **options
        The cell's own options (``nonlinearity`` for 'rnn', ``forget_bias`` for 'lstm', ...).

    Attributes
    ----------
    weight_ih, weight_hh, bias_ih, bias_hh : Parameter
        Shapes as the cell declares: (G*H, I), (G*H, H), (G*H,) for G gates by default.

    Shapes
    ------
    ``cell(x (B, I), state = zeros) -> state'``, the state one (B, H) tensor h, or a tuple such
    as an LSTM's (h, c).
    """

    def __init__(self, cell, input_size, hidden_size, bias=True, init="default", fused=True,
                 dtype=None, rng=None, **options):
        super().__init__()
        who = type(self).__name__
        self._setup(cell, who, input_size, hidden_size, bias, init, options, fused)
        self._make_parameters(who, "", self.input_size, np.dtype(dtype or get_default_dtype()), rng)

    def forward(self, x, hx=None):
        who = repr(self)
        dtype = self.weight_hh.dtype
        x = _input(x, dtype, who)
        if np.ndim(x) != 2 or np.shape(x)[1] != self.input_size:
            raise ValueError(f"{who}: input has shape {tuple(np.shape(x))}, expected (B, {self.input_size})")
        state = _state(self.cell_type, who, hx, (np.shape(x)[0], self.hidden_size), dtype)
        out = self.cell_type.step(self.fused, x, state, self._weights(), self._step_options)
        return public(out)

    def extra_repr(self):
        head = "" if type(self) is not Cell else f"{self.cell!r}, "
        return ", ".join([f"{head}{self.input_size}, {self.hidden_size}, bias={self.bias}"]
                         + self._extra_options())


class Recurrent(_CellModule):
    """Layers of a registered cell over a whole sequence, as PyTorch's RNN/LSTM/GRU run theirs.

    Parameters
    ----------
    cell : str or CellType
        A registered cell name.
    input_size, hidden_size : int
    num_layers : int
        Stacked layers; layer l > 0 reads layer l-1's output (both directions concatenated).
    bias : bool
        With ``bias_ih_l{k}`` and ``bias_hh_l{k}``.
    batch_first : bool
        Input and output as (B, T, .) instead of (T, B, .); the state stays (L*D, B, H).
    dropout : float
        Dropout on the input of every layer but the first, in training mode only.
    bidirectional : bool
        Add a direction that runs from the last step to the first (``..._reverse`` parameters).
    init : str
        One of the cell's ``inits`` (see ``Cell``).
    fused : bool
        Whole-sequence kernels (True) or the reference unrolled from small ops (False).
    dtype : numpy dtype, optional
        Of the parameters; the default dtype (float32) when None.  Inputs are cast to it.
    rng : numpy.random.Generator, optional
        For the initial weights and dropout masks; the package-wide generator when None.
    **options
        The cell's own options.

    Attributes
    ----------
    weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k} : Parameter
        Layer k's parameters (input width I for k = 0, D*H after); ``..._reverse`` for the
        second direction.

    Shapes
    ------
    ``module(x, state, checkpoint=None) -> (y, state_n)``, with x (T, B, I), y (T, B, D*H) and
    each state component (L*D, B, H), D = 2 if bidirectional else 1; zeros when not given.  The
    state is one tensor for a one-component cell, a tuple (h, c) for an LSTM.  ``checkpoint``
    ('sqrt', a number of stored states, a budget such as '500MB' or
    ``bptt.nn.recompute.memory_budget(slots)``) stores only some states of each layer and
    recomputes the rest in backward, with the same gradient (``bptt.nn.recompute``).
    """

    def __init__(self, cell, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, init="default", fused=True, dtype=None,
                 rng=None, **options):
        super().__init__()
        who = type(self).__name__
        self._setup(cell, who, input_size, hidden_size, bias, init, options, fused)
        self.num_layers = integer(num_layers, "num_layers", who)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{who}: dropout must be in [0, 1), got {dropout!r}")
        self.batch_first, self.bidirectional = bool(batch_first), bool(bidirectional)
        self.dropout = float(dropout)
        self.num_directions = 2 if bidirectional else 1
        dtype = np.dtype(dtype or get_default_dtype())
        for layer in range(self.num_layers):
            width = self.input_size if layer == 0 else self.hidden_size * self.num_directions
            for suffix in self._suffixes(layer):
                self._make_parameters(who, suffix, width, dtype, rng)
        self.drop = Dropout(dropout, rng=rng) if dropout else None   # a submodule: follows train/eval

    def _who(self):
        return f"{type(self).__name__}({self.extra_repr()})"   # the repr without submodules

    def _suffixes(self, layer):
        return (f"_l{layer}",) + ((f"_l{layer}_reverse",) if self.bidirectional else ())

    @property
    def dtype(self):
        return self.weight_hh_l0.dtype

    def _state(self, hx, batch):
        """The initial state as a tuple of (L*D, B, H) Tensors/arrays, checked."""
        shape = (self.num_layers * self.num_directions, batch, self.hidden_size)
        return _state(self.cell_type, self._who(), hx, shape, self.dtype, suffix="0")

    def forward(self, x, hx=None, checkpoint=None):
        """Run over a whole sequence; see the class docstring."""
        who = self._who()
        policy = checkpointing.resolve(checkpoint, who)
        x = _input(x, self.dtype, who)
        layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
        if np.ndim(x) != 3:
            raise ValueError(f"{who}: expected a 3-D input {layout} with I = {self.input_size}, got "
                             f"shape {tuple(np.shape(x))}; for a single step use a cell or "
                             "SequenceModel.step")
        if np.shape(x)[2] != self.input_size:
            raise ValueError(f"{who}: input has shape {tuple(np.shape(x))}, expected {layout} with "
                             f"I = {self.input_size}")
        if self.batch_first:
            x = ops.transpose(x, axes=(1, 0, 2)) if isinstance(x, Tensor) else x.transpose(1, 0, 2)
        state = self._state(hx, np.shape(x)[1])
        finals = []
        for layer in range(self.num_layers):
            if layer > 0 and self.drop is not None:
                x = self.drop(x)
            outs = []
            for d, suffix in enumerate(self._suffixes(layer)):
                k = layer * self.num_directions + d
                y, fin = _layer(self.cell_type, self.fused, x, tuple(s[k] for s in state),
                                self._weights(suffix), self._step_options, reverse=d == 1,
                                checkpoint=policy)
                outs.append(y)
                finals.append(fin)
            x = outs[0] if len(outs) == 1 else ops.concat(*outs, axis=2)
        if self.batch_first:
            x = ops.transpose(x, axes=(1, 0, 2))
        h_n = tuple(ops.stack(*parts, axis=0) for parts in zip(*finals))
        return x, public(h_n)

    def extra_repr(self):
        parts = [f"{self.input_size}, {self.hidden_size}"]
        if type(self) is Recurrent:
            parts[0] = f"{self.cell!r}, {parts[0]}"
        if self.num_layers != 1:
            parts.append(f"num_layers={self.num_layers}")
        parts += self._extra_options()
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False)):
            if getattr(self, name) != default:
                parts.append(f"{name}={getattr(self, name)}")
        return ", ".join(parts)


class SequenceModel(Module):
    """A recurrent network of any registered cell with a Linear head applied at every step.

    Parameters
    ----------
    cell : str or CellType
        A registered cell name (``bptt.nn.registry.names()``).
    input_size, hidden_size, output_size : int
    num_layers : int
    dropout : float
        Between recurrent layers, in training mode only.
    init : str
        Of the recurrent weights, one of the cell's ``inits`` (see ``Cell``); 'identity' with
        ``cell='rnn', nonlinearity='relu'`` is the IRNN.
    dtype : numpy dtype, optional
        Of the parameters; the default dtype (float32) when None.
    fused : bool
        Fused kernels (True) or the reference from small ops (False); also settable later as
        ``model.fused``.
    rng : numpy.random.Generator, optional
    **options
        The cell's own options, e.g. ``nonlinearity='relu'`` for 'rnn', ``forget_bias=1.0``
        (added to the forget-gate bias) for 'lstm'.

    Attributes
    ----------
    rnn : Recurrent
        Unidirectional; its parameters appear as ``rnn.weight_ih_l0``, ...
    head : Linear (hidden_size -> output_size)

    Shapes
    ------
    ``model(x (T, B, I), state, checkpoint=None) -> (y (T, B, O), state)`` (``checkpoint`` as
    for ``Recurrent``); ``model.step(x_t (B, I), state) -> (y_t (B, O), state)``.  A state is
    a Tensor (L, B, H), or for a cell with several components (the LSTM's h and c) a tuple of
    them; ``None`` means zeros.
    """

    def __init__(self, cell, input_size, hidden_size, output_size, num_layers=1, dropout=0.0,
                 init="default", dtype=None, fused=True, rng=None, **options):
        super().__init__()
        who = "SequenceModel"
        cell_type = registry.get(cell, who)
        cell_type.resolve(who, options)     # errors name SequenceModel, not its submodule
        self.rnn = Recurrent(cell_type, input_size, hidden_size, num_layers=num_layers,
                             dropout=dropout, init=init, fused=fused, dtype=dtype, rng=rng, **options)
        self.head = Linear(hidden_size, output_size, dtype=dtype, rng=rng)
        self.cell = cell_type.name
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, output_size
        self.num_layers = num_layers

    @property
    def cell_type(self):
        return self.rnn.cell_type

    @property
    def fused(self):
        return self.rnn.fused

    @fused.setter
    def fused(self, flag):
        self.rnn.fused = bool(flag)

    @property
    def dtype(self):
        return self.rnn.dtype

    def initial_state(self, batch_size):
        """Zeros, as ``state=None`` means: (L, B, H), or a tuple of them for a multi-part state."""
        shape = (self.num_layers, batch_size, self.hidden_size)
        return public(tuple(Tensor(np.zeros(shape, self.dtype)) for _ in self.cell_type.state))

    def forward(self, x, state=None, checkpoint=None):
        """Run over a (T, B, I) sequence: ``(y (T, B, O), final state)``; ``checkpoint`` as for
        ``Recurrent``."""
        y, state = self.rnn(x, state, checkpoint=checkpoint)
        return self.head(y), state

    def step(self, x, state=None, return_layers=False):
        """One timestep: ``x (B, I)``, ``state`` as returned before -> ``(y (B, O), new state)``.

        With ``return_layers=True`` a third item is the tuple of every layer's new hidden state
        h^l_t (B, H), the very tensors that the head, the layer above and the next step read:
        after ``retain_grad()`` on them and a backward, their ``.grad`` is the total dL/dh^l_t.
        """
        who = f"SequenceModel({self.cell!r}).step"
        x = _input(x, self.dtype, who)
        if np.ndim(x) != 2 or np.shape(x)[1] != self.input_size:
            raise ValueError(f"{who}: input has shape {tuple(np.shape(x))}, expected (B, {self.input_size})")
        rnn = self.rnn
        state = rnn._state(state, np.shape(x)[0])
        new = []
        for layer in range(self.num_layers):
            if layer > 0:
                x = new[-1][0] if rnn.drop is None else rnn.drop(new[-1][0])
            new.append(self.cell_type.step(rnn.fused, x, tuple(s[layer] for s in state),
                                           rnn._weights(f"_l{layer}"), rnn._step_options))
        out = public(tuple(ops.stack(*parts, axis=0) for parts in zip(*new)))
        y = self.head(new[-1][0])
        return (y, out, tuple(s[0] for s in new)) if return_layers else (y, out)

    def extra_repr(self):
        return f"{self.cell!r}"
