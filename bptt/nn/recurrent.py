"""Recurrent cells, sequence modules and the SequenceModel the trainers and diagnostics use.

Parameter names, shapes, gate order and formulas are PyTorch's, so a PyTorch ``state_dict``
converted to numpy loads unchanged.  Every module has two paths that give the same numbers:

* ``fused=True`` (default): the kernels of ``bptt.nn.kernels``; one tape entry per layer and
  direction for a whole sequence, one per layer for a step;
* ``fused=False``: the readable reference, each step built from ``linear``, ``split``,
  ``sigmoid``, ``tanh``, ``mul`` and ``add``, about twenty entries a step.

The reference step functions below are the definition; the kernels are tested against them.
"""

from __future__ import annotations

import math

import numpy as np

from bptt import ops
from bptt.nn import init, kernels
from bptt.nn.layers import Dropout, Linear, check_float
from bptt.nn.module import Module, Parameter
from bptt.tape import Tensor, get_default_dtype

__all__ = ["RNNCell", "LSTMCell", "GRUCell", "RNN", "LSTM", "GRU", "SequenceModel"]

_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
_INITS = ("default", "orthogonal", "identity")


# -- the reference: one step from small primitives ----------------------------------------------

def _affine(x, weight, bias):
    return ops.linear(x, weight) if bias is None else ops.linear(x, weight, bias)


def rnn_step_reference(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None, nonlinearity="tanh"):
    """``h' = act(W_ih x + b_ih + W_hh h + b_hh)`` from small ops (the definition the kernels match)."""
    a = _affine(x, weight_ih, bias_ih) + _affine(h, weight_hh, bias_hh)
    return ops.tanh(a) if nonlinearity == "tanh" else ops.relu(a)


def lstm_step_reference(x, h, c, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One LSTM step from small ops; gate order i, f, g, o.  Returns ``(h', c')``."""
    i, f, g, o = ops.split(_affine(x, weight_ih, bias_ih) + _affine(h, weight_hh, bias_hh),
                           sections=4, axis=-1)
    c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
    return ops.sigmoid(o) * ops.tanh(c), c


def gru_step_reference(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One GRU step from small ops; gate order r, z, n, with n = tanh(W_in x + b_in + r (W_hn h + b_hn))."""
    xr, xz, xn = ops.split(_affine(x, weight_ih, bias_ih), sections=3, axis=-1)
    hr, hz, hn = ops.split(_affine(h, weight_hh, bias_hh), sections=3, axis=-1)
    r = ops.sigmoid(xr + hr)
    z = ops.sigmoid(xz + hz)
    n = ops.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def _step(cell, fused, x, state, weights, nonlinearity):
    """One step of one layer: ``state`` and the result are tuples ((h,) or (h, c))."""
    if cell == "lstm":
        return tuple((kernels.lstm_cell if fused else lstm_step_reference)(x, *state, *weights))
    if cell == "gru":
        return ((kernels.gru_cell if fused else gru_step_reference)(x, *state, *weights),)
    return ((kernels.rnn_cell if fused else rnn_step_reference)(x, *state, *weights,
                                                                nonlinearity=nonlinearity),)


def _layer(cell, fused, x, state, weights, nonlinearity, reverse):
    """One layer in one direction over a whole (T, B, I) sequence -> (y (T, B, H), final state)."""
    if fused:
        static = {"reverse": reverse}
        if cell == "rnn":
            static["nonlinearity"] = nonlinearity
        kernel = {"rnn": kernels.rnn_sequence, "lstm": kernels.lstm_sequence,
                  "gru": kernels.gru_sequence}[cell]
        y, *final = kernel(x, *state, *weights, **static)
        return y, tuple(final)
    ys = [None] * len(x)
    for t in (range(len(x) - 1, -1, -1) if reverse else range(len(x))):
        state = _step(cell, False, x[t], state, weights, nonlinearity)
        ys[t] = state[0]
    return ops.stack(*ys, axis=0), state


# -- parameters and their initialisation --------------------------------------------------------

def _check_options(who, cell, input_size, hidden_size, nonlinearity, init_name, forget_bias, bias):
    for name, n in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ValueError(f"{who}: {name} must be a positive integer, got {n!r}")
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"{who}: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    if init_name not in _INITS:
        raise ValueError(f"{who}: init must be one of {', '.join(_INITS)}, got {init_name!r}")
    if forget_bias and cell != "lstm":
        raise ValueError(f"{who}: forget_bias applies to LSTM cells only, got {forget_bias!r} for {cell!r}")
    if forget_bias and not bias:
        raise ValueError(f"{who}: forget_bias needs bias=True")


def _make_weights(owner, suffix, cell, input_size, hidden_size, bias, init_name, forget_bias,
                  dtype, rng):
    """Create and register ``weight_ih{suffix}``, ``weight_hh{suffix}`` (and biases) on ``owner``.

    'default' is PyTorch's U(-1/sqrt(H), 1/sqrt(H)) for every parameter; 'orthogonal' then makes
    each H x H gate block of weight_hh orthogonal (Saxe et al. 2014); 'identity' makes each block
    the identity and the biases zero (the IRNN of Le et al. 2015).  ``forget_bias`` is then added
    to the f block of bias_hh (Gers et al. 2000; Jozefowicz et al. 2015).
    """
    G, H = _GATES[cell], hidden_size
    k = 1.0 / math.sqrt(H)
    shapes = {"weight_ih": (G * H, input_size), "weight_hh": (G * H, H)}
    if bias:
        shapes.update(bias_ih=(G * H,), bias_hh=(G * H,))
    params = {}
    for name, shape in shapes.items():
        params[name] = init.uniform_(Parameter(np.empty(shape, dtype)), -k, k, rng)
    if init_name != "default":
        blocks = []
        for _ in range(G):
            block = Tensor(np.empty((H, H), dtype))
            blocks.append((init.orthogonal_(block, rng=rng) if init_name == "orthogonal"
                           else init.eye_(block)).data)
        params["weight_hh"].data = np.concatenate(blocks, axis=0)
        if init_name == "identity" and bias:
            init.zeros_(params["bias_ih"])
            init.zeros_(params["bias_hh"])
    if forget_bias:
        params["bias_hh"].data[H:2 * H] += forget_bias
    for name, p in params.items():
        setattr(owner, name + suffix, p)


def _weights(owner, suffix, bias):
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if bias else ("weight_ih", "weight_hh")
    return tuple(getattr(owner, n + suffix) for n in names)


def _input(x, dtype, who):
    """``x`` as a Tensor or array of the parameters' dtype (a Tensor keeps its gradient path)."""
    check_float(x, who)
    if isinstance(x, Tensor):
        return x if x.dtype == dtype else ops.astype(x, dtype=dtype)
    return np.asarray(x, dtype=dtype)


def _check_state(who, name, h, expected):
    if tuple(np.shape(h)) != tuple(expected):
        raise ValueError(f"{who}: {name} has shape {tuple(np.shape(h))}, expected {tuple(expected)}")


# -- cells --------------------------------------------------------------------------------------

class _Cell(Module):
    cell = None

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", init="default",
                 forget_bias=0.0, fused=True, dtype=None, rng=None):
        super().__init__()
        who = type(self).__name__
        _check_options(who, self.cell, input_size, hidden_size, nonlinearity, init, forget_bias, bias)
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.bias, self.nonlinearity, self.fused = bool(bias), nonlinearity, fused
        _make_weights(self, "", self.cell, self.input_size, self.hidden_size, self.bias, init,
                      forget_bias, np.dtype(dtype or get_default_dtype()), rng)

    def forward(self, x, hx=None):
        who = repr(self)
        dtype = self.weight_hh.dtype
        x = _input(x, dtype, who)
        if np.ndim(x) != 2 or np.shape(x)[1] != self.input_size:
            raise ValueError(f"{who}: input has shape {tuple(np.shape(x))}, expected (B, {self.input_size})")
        shape = (np.shape(x)[0], self.hidden_size)
        n_state = 2 if self.cell == "lstm" else 1
        if hx is None:
            state = tuple(np.zeros(shape, dtype) for _ in range(n_state))
        else:
            state = tuple(hx) if n_state == 2 else (hx,)
            if len(state) != n_state:
                raise ValueError(f"{who}: state must be (h, c), got {len(state)} tensors")
            for name, s in zip(("h", "c"), state):
                _check_state(who, name, s, shape)
            state = tuple(_input(s, dtype, who) for s in state)
        out = _step(self.cell, self.fused, x, state, _weights(self, "", self.bias), self.nonlinearity)
        return out if n_state == 2 else out[0]

    def extra_repr(self):
        extra = f", nonlinearity={self.nonlinearity!r}" if self.cell == "rnn" else ""
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}{extra}"


class RNNCell(_Cell):
    """An Elman RNN cell: ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``, act tanh or relu.

    Parameters
    ----------
    input_size, hidden_size : int
    bias : bool
        With ``bias_ih`` and ``bias_hh`` (two, as PyTorch has for cuDNN compatibility).
    nonlinearity : {'tanh', 'relu'}
    init : {'default', 'orthogonal', 'identity'}
        Of ``weight_hh``: PyTorch's uniform, orthogonal, or the identity with zero biases (IRNN).
    fused : bool
        One tape entry per call (True) or the reference built from small ops (False).
    dtype : numpy dtype, optional
        Of the parameters; the default dtype (float32) when None.
    rng : numpy.random.Generator, optional
        For the initial weights; the package-wide generator when None.

    Attributes
    ----------
    weight_ih : Parameter (H, I)
    weight_hh : Parameter (H, H)
    bias_ih, bias_hh : Parameter (H,)
        All drawn from U(-1/sqrt(H), 1/sqrt(H)) by default.

    Shapes
    ------
    ``cell(x (B, I), h (B, H) = zeros) -> h' (B, H)``
    """
    cell = "rnn"

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", init="default",
                 fused=True, dtype=None, rng=None):
        super().__init__(input_size, hidden_size, bias, nonlinearity, init, 0.0, fused, dtype, rng)


class LSTMCell(_Cell):
    """A long short-term memory cell (Hochreiter & Schmidhuber 1997, with a forget gate).

    .. math::
        i = \\sigma(W_{ii} x + b_{ii} + W_{hi} h + b_{hi}) \\quad
        f = \\sigma(W_{if} x + b_{if} + W_{hf} h + b_{hf}) \\\\
        g = \\tanh(W_{ig} x + b_{ig} + W_{hg} h + b_{hg}) \\quad
        o = \\sigma(W_{io} x + b_{io} + W_{ho} h + b_{ho}) \\\\
        c' = f c + i g \\qquad h' = o \\tanh(c')

    Parameters
    ----------
    input_size, hidden_size, bias, init, fused, dtype, rng
        As for ``RNNCell``.
    forget_bias : float
        Added to the f block of ``bias_hh`` after initialisation (1.0 is the usual choice).

    Attributes
    ----------
    weight_ih : Parameter (4H, I)
        Row blocks in gate order i, f, g, o.
    weight_hh : Parameter (4H, H)
    bias_ih, bias_hh : Parameter (4H,)

    Shapes
    ------
    ``cell(x (B, I), (h, c) (B, H) each = zeros) -> (h', c')``
    """
    cell = "lstm"

    def __init__(self, input_size, hidden_size, bias=True, init="default", forget_bias=0.0,
                 fused=True, dtype=None, rng=None):
        super().__init__(input_size, hidden_size, bias, "tanh", init, forget_bias, fused, dtype, rng)


class GRUCell(_Cell):
    """A gated recurrent unit (Cho et al. 2014) as PyTorch defines it.

    .. math::
        r = \\sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}) \\quad
        z = \\sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) \\\\
        n = \\tanh(W_{in} x + b_{in} + r (W_{hn} h + b_{hn})) \\qquad
        h' = (1 - z) n + z h

    Parameters
    ----------
    input_size, hidden_size, bias, init, fused, dtype, rng
        As for ``RNNCell``.

    Attributes
    ----------
    weight_ih : Parameter (3H, I)
        Row blocks in gate order r, z, n.
    weight_hh : Parameter (3H, H)
    bias_ih, bias_hh : Parameter (3H,)

    Shapes
    ------
    ``cell(x (B, I), h (B, H) = zeros) -> h' (B, H)``
    """
    cell = "gru"

    def __init__(self, input_size, hidden_size, bias=True, init="default", fused=True, dtype=None,
                 rng=None):
        super().__init__(input_size, hidden_size, bias, "tanh", init, 0.0, fused, dtype, rng)


# -- sequence modules ---------------------------------------------------------------------------

class _Recurrent(Module):
    cell = None

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, nonlinearity="tanh", init="default",
                 forget_bias=0.0, fused=True, dtype=None, rng=None):
        super().__init__()
        who = type(self).__name__
        _check_options(who, self.cell, input_size, hidden_size, nonlinearity, init, forget_bias, bias)
        if not isinstance(num_layers, (int, np.integer)) or num_layers < 1:
            raise ValueError(f"{who}: num_layers must be a positive integer, got {num_layers!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{who}: dropout must be in [0, 1), got {dropout!r}")
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        self.nonlinearity, self.dropout, self.fused = nonlinearity, float(dropout), fused
        self.num_directions = 2 if bidirectional else 1
        dtype = np.dtype(dtype or get_default_dtype())
        for layer in range(self.num_layers):
            width = self.input_size if layer == 0 else self.hidden_size * self.num_directions
            for suffix in self._suffixes(layer):
                _make_weights(self, suffix, self.cell, width, self.hidden_size, self.bias, init,
                              forget_bias, dtype, rng)
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
        who = self._who()
        shape = (self.num_layers * self.num_directions, batch, self.hidden_size)
        if self.cell == "lstm":
            if hx is None:
                return (np.zeros(shape, self.dtype),) * 2
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise ValueError(f"{who}: the state must be a tuple (h0, c0), got {type(hx).__name__}")
            state = tuple(hx)
        else:
            if hx is None:
                return (np.zeros(shape, self.dtype),)
            if isinstance(hx, (tuple, list)):
                raise ValueError(f"{who}: the state must be one tensor h0 {shape}, got a {type(hx).__name__}")
            state = (hx,)
        for name, s in zip(("h0", "c0"), state):
            _check_state(who, name, s, shape)
        return tuple(_input(s, self.dtype, who) for s in state)

    def forward(self, x, hx=None):
        """Run over a whole sequence; see the class docstring."""
        who = self._who()
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
                s0 = tuple(s[k] for s in state)
                y, fin = _layer(self.cell, self.fused, x, s0, _weights(self, suffix, self.bias),
                                self.nonlinearity, reverse=d == 1)
                outs.append(y)
                finals.append(fin)
            x = outs[0] if len(outs) == 1 else ops.concat(*outs, axis=2)
        if self.batch_first:
            x = ops.transpose(x, axes=(1, 0, 2))
        h_n = tuple(ops.stack(*parts, axis=0) for parts in zip(*finals))
        return x, (h_n if self.cell == "lstm" else h_n[0])

    def extra_repr(self):
        parts = [f"{self.input_size}, {self.hidden_size}"]
        if self.num_layers != 1:
            parts.append(f"num_layers={self.num_layers}")
        if self.cell == "rnn" and self.nonlinearity != "tanh":
            parts.append(f"nonlinearity={self.nonlinearity!r}")
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False)):
            if getattr(self, name) != default:
                parts.append(f"{name}={getattr(self, name)}")
        return ", ".join(parts)


_SEQUENCE_DOC = """

    Parameters
    ----------
    input_size, hidden_size : int
    num_layers : int
        Stacked layers; layer l > 0 reads layer l-1's output (both directions concatenated).
    bias : bool
        With ``bias_ih_l{{k}}`` and ``bias_hh_l{{k}}``.
    batch_first : bool
        Input and output as (B, T, .) instead of (T, B, .); the state stays (L*D, B, H).
    dropout : float
        Dropout on the input of every layer but the first, in training mode only.
    bidirectional : bool
        Add a direction that runs from the last step to the first (``..._reverse`` parameters).{extra}
    init : {{'default', 'orthogonal', 'identity'}}
        Of the ``weight_hh`` gate blocks: PyTorch's U(-1/sqrt(H), 1/sqrt(H)), orthogonal, or the
        identity with zero biases (the IRNN of Le et al. 2015).
    fused : bool
        Whole-sequence kernels (True) or the reference unrolled from small ops (False).
    dtype : numpy dtype, optional
        Of the parameters; the default dtype (float32) when None.  Inputs are cast to it.
    rng : numpy.random.Generator, optional
        For the initial weights and dropout masks; the package-wide generator when None.

    Attributes
    ----------
    weight_ih_l{{k}} : Parameter (G*H, I) for k = 0, (G*H, D*H) after
    weight_hh_l{{k}} : Parameter (G*H, H)
    bias_ih_l{{k}}, bias_hh_l{{k}} : Parameter (G*H,)
        G = {gates}, gate order {order}; ``..._reverse`` for the second direction.

    Shapes
    ------
    ``{call}``, with x (T, B, I), y (T, B, D*H) and the state (L*D, B, H) each, D = 2 if
    bidirectional else 1; zeros when not given.
    """


class RNN(_Recurrent):
    cell = "rnn"
    __doc__ = ("An Elman RNN over a sequence: ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``."
               + _SEQUENCE_DOC.format(gates=1, order="-", call="rnn(x, h0) -> (y, h_n)", extra="""
    nonlinearity : {'tanh', 'relu'}"""))

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, init="default", fused=True,
                 dtype=None, rng=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, nonlinearity, init, 0.0, fused, dtype, rng)


class LSTM(_Recurrent):
    cell = "lstm"
    __doc__ = ("An LSTM over a sequence, each step as ``LSTMCell`` defines it."
               + _SEQUENCE_DOC.format(gates=4, order="i, f, g, o",
                                      call="lstm(x, (h0, c0)) -> (y, (h_n, c_n))", extra="""
    forget_bias : float
        Added to the f block of every ``bias_hh`` after initialisation."""))

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, init="default", forget_bias=0.0, fused=True,
                 dtype=None, rng=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, "tanh", init, forget_bias, fused, dtype, rng)


class GRU(_Recurrent):
    cell = "gru"
    __doc__ = ("A GRU over a sequence, each step as ``GRUCell`` defines it."
               + _SEQUENCE_DOC.format(gates=3, order="r, z, n", call="gru(x, h0) -> (y, h_n)",
                                      extra=""))

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, init="default", fused=True, dtype=None,
                 rng=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, "tanh", init, 0.0, fused, dtype, rng)


# -- the model the trainers use -----------------------------------------------------------------

class SequenceModel(Module):
    """A recurrent network with a Linear head applied at every step.

    Parameters
    ----------
    cell : {'rnn', 'lstm', 'gru'}
    input_size, hidden_size, output_size : int
    num_layers : int
    nonlinearity : {'tanh', 'relu'}
        For ``cell='rnn'``.
    dropout : float
        Between recurrent layers, in training mode only.
    forget_bias : float
        For ``cell='lstm'``: added to the forget-gate bias (``bias_hh``'s f block).
    init : {'default', 'orthogonal', 'identity'}
        Of the recurrent weights (see ``RNN``); 'identity' with relu is the IRNN.
    dtype : numpy dtype, optional
        Of the parameters; the default dtype (float32) when None.
    fused : bool
        Fused kernels (True) or the reference from small ops (False); also settable later as
        ``model.fused``.
    rng : numpy.random.Generator, optional

    Attributes
    ----------
    rnn : RNN, LSTM or GRU
        Unidirectional; its parameters appear as ``rnn.weight_ih_l0``, ...
    head : Linear (hidden_size -> output_size)

    Shapes
    ------
    ``model(x (T, B, I), state) -> (y (T, B, O), state)``; ``model.step(x_t (B, I), state) ->
    (y_t (B, O), state)``.  A state is a Tensor (L, B, H), or for 'lstm' a tuple (h, c) of them;
    ``None`` means zeros.

    Notes
    -----
    On the step path every reader of a layer's new hidden state, the head, the next step and the
    layer above, reads it through the returned state, so after ``state.retain_grad()`` (or
    ``state[0]`` for 'lstm') and ``backward``, ``.grad`` is the total dL/dh_t of every layer.
    """

    def __init__(self, cell, input_size, hidden_size, output_size, num_layers=1,
                 nonlinearity="tanh", dropout=0.0, forget_bias=0.0, init="default", dtype=None,
                 fused=True, rng=None):
        super().__init__()
        if cell not in _GATES:
            raise ValueError(f"SequenceModel: cell must be one of 'rnn', 'lstm', 'gru', got {cell!r}")
        if nonlinearity != "tanh" and cell != "rnn":
            raise ValueError(f"SequenceModel: nonlinearity applies to cell='rnn' only, got "
                             f"{nonlinearity!r} for {cell!r}")
        options = dict(num_layers=num_layers, dropout=dropout, init=init, fused=fused, dtype=dtype,
                       rng=rng)
        if cell == "rnn":
            self.rnn = RNN(input_size, hidden_size, nonlinearity=nonlinearity, **options)
        elif cell == "lstm":
            self.rnn = LSTM(input_size, hidden_size, forget_bias=forget_bias, **options)
        else:
            if forget_bias:
                raise ValueError(f"SequenceModel: forget_bias applies to cell='lstm' only, got "
                                 f"{forget_bias!r} for 'gru'")
            self.rnn = GRU(input_size, hidden_size, **options)
        self.head = Linear(hidden_size, output_size, dtype=dtype, rng=rng)
        self.cell = cell
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, output_size
        self.num_layers = num_layers

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
        """Zeros, as ``state=None`` means: (L, B, H), or a tuple (h, c) of them for 'lstm'."""
        shape = (self.num_layers, batch_size, self.hidden_size)
        h = Tensor(np.zeros(shape, self.dtype))
        return (h, Tensor(np.zeros(shape, self.dtype))) if self.cell == "lstm" else h

    def forward(self, x, state=None):
        """Run over a (T, B, I) sequence: ``(y (T, B, O), final state)``."""
        y, state = self.rnn(x, state)
        return self.head(y), state

    def step(self, x, state=None):
        """One timestep: ``x (B, I)``, ``state`` as returned before -> ``(y (B, O), new state)``."""
        who = f"SequenceModel({self.cell!r}).step"
        x = _input(x, self.dtype, who)
        if np.ndim(x) != 2 or np.shape(x)[1] != self.input_size:
            raise ValueError(f"{who}: input has shape {tuple(np.shape(x))}, expected (B, {self.input_size})")
        rnn = self.rnn
        state = rnn._state(state, np.shape(x)[0])
        sink = kernels.StateSink()
        new = []
        for layer in range(self.num_layers):
            if layer > 0:
                x = kernels.feed_up(new[-1][0], sink=sink, index=layer - 1)
                x = x if rnn.drop is None else rnn.drop(x)
            new.append(_step(self.cell, rnn.fused, x, tuple(s[layer] for s in state),
                             _weights(rnn, f"_l{layer}", rnn.bias), rnn.nonlinearity))
        out = tuple(ops.stack(*parts, axis=0) for parts in zip(*new))
        sink.point_to(out[0])
        y = self.head(out[0][self.num_layers - 1])
        return y, (out if self.cell == "lstm" else out[0])

    def extra_repr(self):
        return f"{self.cell!r}"
