"""The cell registry: one record per recurrent cell, declared in the cell's own module.

A cell is everything that differs between an Elman RNN, an LSTM, a GRU or an IndRNN: its gates,
the structure of its state, its options, its equations, its reference step and (optionally) its
fused kernels and initialisers.  A cell module declares one ``CellType`` and passes it to
``register``; the modules (``nn.Cell``, ``nn.Recurrent``, ``nn.SequenceModel``), the trainers,
the diagnostics, the command line and the tests read the registry, so a new cell is one new
module and nothing outside it names the cell::

    CELL = register(CellType(
        name="mycell",
        gates=("a", "b"),                          # row blocks of weight_ih / weight_hh
        state=("h",),                              # or ("h", "c"): the state's components
        equations=("a = ...", "h' = ..."),         # one string per equation
        reference=my_step,                         # (x, state, weights, **options) -> state
        options={"nonlinearity": Option("tanh", choices=("tanh", "relu"))},
        forward=my_forward, backward=my_backward,  # optional: the fused kernels
    ))

    @CELL.document                                 # the equations, rendered into the docstring
    class MyCell(Cell):
        ...

Each fact is given once, in the record: the fused primitives (``kernels.fused_kernels``) take
the cell's name, state, parameter shapes and reference step from it, ``describe`` and
``document`` render its equations.  The package's cells register when ``bptt.nn`` imports
``bptt.nn.cells``, before any lookup here can run.

Every cell has the parameters ``weight_ih``, ``weight_hh`` and (with ``bias=True``) ``bias_ih``,
``bias_hh``, in that order: PyTorch's names.  Their shapes are ``(G*H, I)``, ``(G*H, H)`` and
``(G*H,)`` for G gates unless the record's ``shapes`` says otherwise (IndRNN's ``weight_hh`` is a
vector).  A state is a tuple of (B, H) arrays or Tensors with the components named by ``state``;
``state[0]`` is always the hidden state h that the layer outputs.

Shapes: x (B, I) for a step, (T, B, I) for a sequence; G gates, H hidden units.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import numpy as np

from bptt import ops
from bptt.nn import init as initializers
from bptt.nn.kernels import FusedKernels, fused_kernels
from bptt.nn.module import Parameter
from bptt.tape import Tensor

__all__ = ["Option", "CellType", "register", "unregister", "get", "names", "registered",
           "standard_init", "affine", "padded", "gate_shapes", "INITS", "RECURRENCES"]

#: Initialisation schemes of square recurrent blocks, in the order they are documented.
INITS = ("default", "orthogonal", "identity")
#: What a cell may promise about how its step depends on the state (``CellType.recurrence``).
RECURRENCES = ("general", "elman", "diagonal")

_REGISTRY: dict[str, "CellType"] = {}
_Documented = TypeVar("_Documented")
#: Module arguments that a cell option may not shadow.
_RESERVED = {"input_size", "hidden_size", "bias", "init", "fused", "dtype", "rng", "num_layers",
             "batch_first", "dropout", "bidirectional", "output_size", "cell", "reverse"}


def affine(x, weight, bias):
    """``x @ weight.T + bias`` (no bias when None) as one ``linear`` entry: for reference steps."""
    return ops.linear(x, weight) if bias is None else ops.linear(x, weight, bias)


def gate_shapes(n_gates):
    """``shapes(input_size, hidden_size)`` for a cell whose weights stack ``n_gates`` row blocks."""
    def shapes(input_size, hidden_size):
        GH = n_gates * hidden_size
        return {"weight_ih": (GH, input_size), "weight_hh": (GH, hidden_size), "bias_ih": (GH,),
                "bias_hh": (GH,)}
    return shapes


def padded(weights):
    """``(weight_ih, weight_hh, bias_ih, bias_hh)``, the biases None when ``weights`` has none."""
    return tuple(weights) + (None,) * (4 - len(weights))


@dataclass(frozen=True)
class Option:
    """One option a cell accepts, with its default and its check.

    Parameters
    ----------
    default : object
    choices : tuple, optional
        The allowed values, when the option is a choice.
    kind : type
        What a value given as text (``lstm:forget_bias=1`` on the command line) is converted to.
    init : bool
        Used only when the parameters are initialised (``forget_bias``), not by the step.
    check : callable, optional
        ``check(value)`` returns an error message for a bad value, or None.
    doc : str
    """

    default: Any
    choices: tuple | None = None
    kind: type = str
    init: bool = False
    check: Callable[[Any], str | None] | None = None
    doc: str = ""

    def validate(self, who, name, value):
        """``value`` converted and checked, or a ValueError naming ``who`` and the option."""
        if value is None and self.default is None:    # an option that is off unless given
            return None
        if isinstance(value, str) and self.kind is not str:
            try:
                value = self.kind(value)
            except ValueError:
                what = "number" if self.kind is float else self.kind.__name__
                raise ValueError(f"{who}: {name}={value!r} is not a {what}") from None
        if self.choices is not None and value not in self.choices:
            allowed = " or ".join(repr(c) for c in self.choices)
            raise ValueError(f"{who}: {name} must be {allowed}, got {value!r}")
        if self.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise ValueError(f"{who}: {name} must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"{who}: {name} must be finite, got {value!r}")
        message = self.check(value) if self.check is not None else None
        if message:
            raise ValueError(f"{who}: {name} {message}, got {value!r}")
        return value


def standard_init(cell, params, hidden_size, init, rng, **options):
    """PyTorch's initialisation, then ``init``'s scheme for each square block of ``weight_hh``.

    'default' draws every parameter from U(-1/sqrt(H), 1/sqrt(H)); 'orthogonal' then makes each
    H x H gate block of weight_hh orthogonal (Saxe et al. 2014); 'identity' makes each block the
    identity and the biases zero (the IRNN of Le et al. 2015).
    """
    H = hidden_size
    k = 1.0 / math.sqrt(H)
    for p in params.values():
        initializers.uniform_(p, -k, k, rng)
    if init == "default":
        return
    w = params["weight_hh"]
    blocks = []
    for _ in range(w.shape[0] // H):
        block = Tensor(np.empty((H, H), w.dtype))
        blocks.append((initializers.orthogonal_(block, rng=rng) if init == "orthogonal"
                       else initializers.eye_(block)).data)
    w.data = np.concatenate(blocks, axis=0)
    if init == "identity":
        for name in ("bias_ih", "bias_hh"):
            if name in params:
                initializers.zeros_(params[name])


@dataclass(frozen=True)
class CellType:
    """The record of one recurrent cell.

    Attributes
    ----------
    name : str
        What users write: ``SequenceModel("lstm", ...)``, ``--cell lstm``.
    gates : tuple of str
        Gate names in the order of the row blocks of ``weight_ih`` and ``weight_hh``
        (PyTorch's order for its cells: LSTM i, f, g, o; GRU r, z, n).
    equations : tuple of str
        The step's equations, one string each (a single string is one equation), in PyTorch's
        notation; ``describe`` and ``document`` render them, nothing else writes them.
    reference : callable
        ``reference(x, state, weights, **options) -> state``: one step from small primitives,
        the specification the fused kernels are tested against.  ``state`` and the result are
        tuples; ``weights`` is ``(weight_ih, weight_hh[, bias_ih, bias_hh])``.
    state : tuple of str
        The state's components; ``state[0]`` is the hidden state h.
    options : dict of str to Option
        Extra keyword arguments of the modules, e.g. ``nonlinearity`` or ``forget_bias``.
    inits : tuple of str
        The ``init`` schemes the cell accepts.
    initialize : callable
        ``initialize(cell, params, hidden_size, init, rng, **options)`` fills the freshly
        created parameters (a dict name -> Parameter) in place; ``standard_init`` by default.
    shapes : callable, optional
        ``shapes(input_size, hidden_size) -> {name: shape}`` for the four parameters; G gate
        blocks per weight when None.
    forward, backward : callable, optional
        The fused kernels' pair, over a whole sequence (their contracts:
        ``bptt.nn.kernels.fused_kernels``); both or neither.  Without them the modules run the
        reference step (``fused=True`` is then the same path).
    kernel_examples : tuple of dict
        Option sets the op tests gradient-check the fused primitives with.
    recurrence : {'general', 'elman', 'diagonal'}
        What the step promises about how h' depends on h, for the methods that exploit it:
        'elman' (``elman_form``: the Elman RNN's step), 'diagonal' (``diagonal_jacobian``: each
        unit sees its own past only), or 'general', nothing (the default: LSTM, GRU).
    summary : str
        One line for listings (``bptt cells``).
    fused : FusedKernels or None
        Made from ``forward`` and ``backward`` with the record (not an argument); ``register``
        enters its primitives into the op registry, ``unregister`` removes them.
    """

    name: str
    gates: tuple
    equations: tuple
    reference: Callable
    state: tuple = ("h",)
    options: dict = field(default_factory=dict)
    inits: tuple = INITS
    initialize: Callable = standard_init
    shapes: Callable | None = None
    forward: Callable | None = None
    backward: Callable | None = None
    kernel_examples: tuple = ({},)
    recurrence: str = "general"
    summary: str = ""
    fused: FusedKernels | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self):
        # frozen: the derived fields are set once, here
        equations = (self.equations,) if isinstance(self.equations, str) else tuple(self.equations)
        object.__setattr__(self, "equations", equations)
        if (self.forward is None) != (self.backward is None):
            raise ValueError(f"CellType {self.name!r}: fused kernels need both forward and backward")
        if self.forward is not None:
            object.__setattr__(self, "fused", fused_kernels(
                self.name, self.forward, self.backward, self.parameter_shapes, self.reference,
                state=self.state, examples=self.kernel_examples))

    # -- what the credit-assignment methods ask of a cell ---------------------------------------
    @property
    def elman_form(self) -> bool:
        """Whether the step is ``h' = act(W_ih x + b_ih + W_hh h + b_hh)`` (``recurrence='elman'``).

        One state tensor, act elementwise, ``W_hh`` (H, H): the parameters reach h' through one
        pre-activation, affine in ``[h, x, 1]``, so a step's influence of the parameters on h' is
        a Kronecker product, ``diag(act') ⊗ [h, x, 1]``, on which KF-RTRL (Mujika et al. 2018)
        builds its approximation.  True for ``rnn``.
        """
        return self.recurrence == "elman"

    @property
    def diagonal_jacobian(self) -> bool:
        """Whether the recurrent Jacobian dh'/dh is diagonal at every step (``recurrence='diagonal'``).

        The state is one tensor and each unit sees its own past only, which a diagonal RTRL
        exploits (exact when, as in IndRNN, each parameter enters one unit's step).  True for
        ``indrnn``.
        """
        return self.recurrence == "diagonal"

    # -- what the modules ask of a cell --------------------------------------------------------
    def resolve(self, who, options):
        """All options, given or default, checked; a ValueError names the first bad one."""
        unknown = [k for k in options if k not in self.options]
        if unknown:
            key = unknown[0]
            others = [c.name for c in _REGISTRY.values() if key in c.options]
            where = (f"applies to {' or '.join(f'cell={n!r}' for n in others)} only, not {self.name!r}"
                     if others else f"is not an option of cell {self.name!r}")
            accepted = ", ".join(self.options) or "none"
            raise ValueError(f"{who}: {key} {where} (its options: {accepted})")
        return {k: opt.validate(who, k, options.get(k, opt.default)) for k, opt in self.options.items()}

    def step_options(self, options):
        """The resolved options the step itself reads (not those used only at initialisation)."""
        return {k: v for k, v in options.items() if not self.options[k].init}

    def parameter_shapes(self, input_size, hidden_size, bias=True):
        """``{name: shape}`` of the parameters of one layer, in PyTorch's order."""
        shapes = dict((self.shapes or gate_shapes(len(self.gates)))(input_size, hidden_size))
        if not bias:
            shapes = {k: v for k, v in shapes.items() if not k.startswith("bias")}
        return shapes

    def make_parameters(self, input_size, hidden_size, bias, init, options, dtype, rng):
        """Fresh, initialised parameters of one layer: ``{name: Parameter}`` in PyTorch's order."""
        params = {name: Parameter(np.empty(shape, dtype))
                  for name, shape in self.parameter_shapes(input_size, hidden_size, bias).items()}
        self.initialize(self, params, hidden_size, init, rng, **options)
        return params

    def step(self, fused, x, state, weights, options):
        """One step of one layer: ``state`` and the result are tuples of the state's components."""
        if fused and self.fused is not None:
            out = self.fused.step(x, *state, *weights, **options)
            return tuple(out) if len(self.state) > 1 else (out,)
        return tuple(self.reference(x, state, weights, **options))

    def variants(self):
        """Option sets that cover every choice of every option with choices (for tests)."""
        sets = [{}]
        for key, opt in self.options.items():
            if opt.choices is not None:
                sets = [{**s, key: c} for s in sets for c in opt.choices]
        return sets

    def describe(self) -> str:
        """Name, gates, state, options and inits on one line, then the equations, one a line."""
        opts = ", ".join(f"{k}={o.default!r}" for k, o in self.options.items()) or "none"
        summary = f"{self.summary}; " if self.summary else ""
        return (f"{self.name}: {summary}gates {', '.join(self.gates)}; state ({', '.join(self.state)}); "
                f"options {opts}; init {', '.join(self.inits)}\n" + self._equation_lines())

    def document(self, obj: _Documented) -> _Documented:
        """``obj`` with the equations in its docstring, after the first paragraph.

        A decorator for the classes that run the cell (``@CELL.document``), or a call on the cell's
        module (``CELL.document(sys.modules[__name__])``), so that the docstrings show the
        record's equations instead of a copy.
        """
        summary, _, rest = inspect.cleandoc(obj.__doc__ or "").partition("\n\n")
        parts = (summary, "Each step computes::", self._equation_lines(), rest)
        obj.__doc__ = "\n\n".join(p for p in parts if p)
        return obj

    def _equation_lines(self):
        return "\n".join("    " + e for e in self.equations)


def _primitives(cell):
    return () if cell.fused is None else (cell.fused.step, cell.fused.sequence)


def register(cell: CellType) -> CellType:
    """Add a ``CellType`` to the registry (once per name), its fused primitives to the op
    registry (``bptt.ops.registry``, whose tests gradient-check them), and return it."""
    if not isinstance(cell, CellType):
        raise TypeError(f"register: need a CellType, got {type(cell).__name__}")
    if cell.name in _REGISTRY:
        raise ValueError(f"register: a cell named {cell.name!r} is registered already")
    if not cell.gates or not cell.state:
        raise ValueError(f"register: cell {cell.name!r} needs at least one gate and one state component")
    clash = sorted(_RESERVED & set(cell.options))
    if clash:
        raise ValueError(f"register: cell {cell.name!r} has options named like module arguments: {clash}")
    bad = [i for i in cell.inits if i not in INITS]
    if bad and cell.initialize is standard_init:
        raise ValueError(f"register: cell {cell.name!r} lists inits {bad} that standard_init does not know")
    if cell.recurrence not in RECURRENCES:
        raise ValueError(f"register: cell {cell.name!r}: recurrence must be one of "
                         f"{', '.join(map(repr, RECURRENCES))}, got {cell.recurrence!r}")
    if cell.recurrence != "general" and len(cell.state) != 1:
        raise ValueError(f"register: cell {cell.name!r}: recurrence {cell.recurrence!r} needs a state "
                         "of one component")
    if cell.recurrence == "elman" and len(cell.gates) != 1:
        raise ValueError(f"register: cell {cell.name!r}: recurrence 'elman' needs one gate")
    taken = [op.name for op in _primitives(cell) if op.name in ops.REGISTRY]
    if taken:        # checked before anything is entered: a refused cell leaves no trace
        raise ValueError(f"register: cell {cell.name!r}: primitive {taken[0]} is declared already")
    ops.REGISTRY.update((op.name, op) for op in _primitives(cell))
    _REGISTRY[cell.name] = cell
    return cell


def unregister(name: str) -> None:
    """Undo ``register``: remove the cell and its fused primitives (so a test can register one
    for a while, and again)."""
    cell = _REGISTRY.pop(name, None)
    for op in () if cell is None else _primitives(cell):
        ops.REGISTRY.pop(op.name, None)


def registered() -> list[CellType]:
    """Every registered ``CellType``, in registration order."""
    return list(_REGISTRY.values())


def names() -> tuple[str, ...]:
    """The registered cell names, in registration order."""
    return tuple(_REGISTRY)


def get(name: str | CellType, who: str = "cell") -> CellType:
    """The ``CellType`` registered as ``name``; a ValueError that lists the registered ones."""
    if isinstance(name, CellType):
        return name
    if name not in _REGISTRY:
        raise ValueError(f"{who}: cell must be one of {', '.join(map(repr, _REGISTRY))}, got {name!r}")
    return _REGISTRY[name]
