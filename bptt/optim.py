"""Optimizers, gradient clipping, learning-rate schedules and a bridge to ``scipy.optimize``.

The optimizers follow PyTorch's ``torch.optim`` classes of the same names: keyword names,
defaults and update rules (each class docstring gives its rule, with g the gradient and p the
parameter).  One difference in mechanism, not in numbers: a step *rebinds* ``p.data`` to a new
array instead of writing into it, because tape entries recorded before the step keep the arrays
they read, and an in-place write would change what a later backward through them computes.
Parameters whose ``grad`` is None are skipped, and their state (e.g. Adam's step count) does not
advance, as in PyTorch.

``state_dict()`` is a flat ``{str: np.ndarray}`` (storable with ``bptt.io.save_npz``) holding the
hyperparameters (``lr`` included, so a schedule's progress survives) and every per-parameter
buffer and step count, keyed ``"state.<parameter index>.<buffer>"``; ``load_state_dict`` restores
it exactly, so training can checkpoint and resume bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from bptt.tape import Tensor, enable_grad

if TYPE_CHECKING:
    from scipy.optimize import OptimizeResult
    from typing_extensions import TypeAlias

__all__ = ["Optimizer", "SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Recorder",
           "clip_grad_norm", "clip_grad_value", "LRScheduler", "StepLR", "ExponentialLR",
           "CosineAnnealingLR", "minimize"]


class HasParameters(Protocol):
    """Anything with a ``parameters()`` method, as ``bptt.nn.Module``."""

    def parameters(self) -> Iterable[Tensor]: ...


#: What the optimizers and clipping take: a Tensor, an iterable of them, or a Module.
Params: TypeAlias = Union[Tensor, Iterable[Tensor], HasParameters]


def _param_list(params: Any, who: str) -> list[Tensor]:
    if isinstance(params, Tensor):
        params = [params]
    if hasattr(params, "parameters") and callable(params.parameters):
        params = params.parameters()   # a Module given where its parameters were meant
    params = list(params)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{who}: parameter {i} is a {type(p).__name__}, not a Tensor")
        if not p.requires_grad:
            raise ValueError(f"{who}: parameter {i} of shape {p.shape} does not require grad")
    return params


def _check_nonneg(who: str, **values: float) -> None:
    for name, v in values.items():
        if not v >= 0:
            raise ValueError(f"{who}: {name} must be >= 0, got {v!r}")


def _check_unit(who: str, **values: float) -> None:
    for name, v in values.items():
        if not 0 <= v < 1:
            raise ValueError(f"{who}: {name} must be in [0, 1), got {v!r}")


class Optimizer:
    """Base class: holds the parameters, the hyperparameters as plain attributes and per-parameter state.

    Subclasses list their hyperparameters in ``defaults`` (set as attributes, ``lr`` among them)
    and implement ``_update(p, g, state) -> new value of p.data``, where ``g`` is the gradient
    after ``maximize`` (and, unless the subclass decouples it, ``weight_decay``) and ``state`` is
    that parameter's dict of buffers, filled on its first step.

    Parameters
    ----------
    params : iterable of Parameter, or a Module
        The tensors to train (a Module stands for its ``parameters()``); each once.
    **defaults
        The hyperparameters, ``lr`` among them.
    """

    # set from ``defaults`` (every optimizer has these three)
    lr: float
    weight_decay: float
    maximize: bool

    def __init__(self, params: Params, **defaults: Any) -> None:
        name = type(self).__name__
        self.params = _param_list(params, name)
        if not self.params:
            raise ValueError(f"{name}: got an empty parameter list")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError(f"{name}: a parameter appears more than once in the list")
        _check_nonneg(name, lr=defaults["lr"])
        self.defaults = dict(defaults)
        for k, v in defaults.items():
            setattr(self, k, v)
        self.state: list[dict[str, np.ndarray]] = [dict() for _ in self.params]

    def zero_grad(self) -> None:
        """Forget the parameters' gradients (set each ``.grad`` to None, as PyTorch's default)."""
        for p in self.params:
            p.grad = None

    _decoupled = False   # AdamW applies weight decay to p itself, not through g

    def _grad(self, p: Tensor) -> np.ndarray:
        # step() calls this for the parameters that have a gradient
        g: np.ndarray = -p.grad if self.maximize else p.grad  # type: ignore[operator, assignment]
        if self.weight_decay and not self._decoupled:
            g = g + self.weight_decay * p.data
        return g

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient.

        Parameters
        ----------
        closure : callable, optional
            Recomputes the loss and calls backward; called first (with recording on) and its
            value returned, as in PyTorch.

        Returns
        -------
        object
            What ``closure`` returned, or None without one.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for p, state in zip(self.params, self.state):
            if p.grad is None:
                continue
            if p.grad.shape != p.shape:
                raise ValueError(f"{type(self).__name__}.step: a gradient of shape {p.grad.shape} "
                                 f"for a parameter of shape {p.shape}")
            new = self._update(p, self._grad(p), state)
            p.data = np.asarray(new, dtype=p.dtype)
        return loss

    def _update(self, p: Tensor, g: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """A flat ``{str: np.ndarray}`` of hyperparameters and per-parameter state (copies)."""
        out = {f"hyper.{k}": np.array(getattr(self, k)) for k in self.defaults}
        for i, state in enumerate(self.state):
            for k, v in state.items():
                out[f"state.{i}.{k}"] = np.array(v, copy=True)
        return out

    def load_state_dict(self, state_dict: Mapping[str, ArrayLike]) -> None:
        """Restore hyperparameters and state saved by ``state_dict`` (for the same parameters).

        Raises
        ------
        ValueError
            On keys this optimizer does not have, a parameter index out of range, or a buffer
            whose shape differs from its parameter's.
        """
        name = type(self).__name__
        hypers: dict[str, ArrayLike]
        states: list[dict[str, np.ndarray]]
        bad: list[str]
        hypers, states, bad = {}, [dict() for _ in self.params], []
        for key, value in state_dict.items():
            parts = key.split(".")
            if len(parts) == 2 and parts[0] == "hyper" and parts[1] in self.defaults:
                hypers[parts[1]] = value
            elif len(parts) == 3 and parts[0] == "state" and parts[1].isdigit() \
                    and int(parts[1]) < len(self.params):
                p = self.params[int(parts[1])]
                value = np.array(value, copy=True)
                if parts[2] != "step" and value.shape != p.shape:
                    bad.append(f"{key}: shape {value.shape}, parameter {p.shape}")
                    continue
                states[int(parts[1])][parts[2]] = value if parts[2] == "step" else value.astype(p.dtype)
            else:
                bad.append(f"{key}: unexpected key")
        if bad:
            raise ValueError(f"{name}.load_state_dict: " + "; ".join(bad))
        for k, v in hypers.items():
            default = self.defaults[k]
            if isinstance(default, tuple):
                v = tuple(float(x) for x in np.asarray(v).ravel())
            else:
                v = type(default)(np.asarray(v).item())
            setattr(self, k, v)
        self.state = states

    def __repr__(self) -> str:
        hypers = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.defaults)
        return f"{type(self).__name__}({len(self.params)} parameters, {hypers})"


class SGD(Optimizer):
    """Stochastic gradient descent, with momentum, Nesterov momentum and weight decay.

    ``g += weight_decay * p``; with momentum ``b = g`` on the first step, then
    ``b = momentum * b + (1 - dampening) * g``, and ``g = g + momentum * b`` (Nesterov) or
    ``g = b``; finally ``p -= lr * g``.

    Parameters
    ----------
    params : iterable of Parameter
    lr : float
    momentum, dampening, weight_decay : float
    nesterov : bool
        Needs ``momentum > 0`` and ``dampening == 0``.
    maximize : bool
        Ascend instead of descend.
    """

    momentum: float
    dampening: float
    nesterov: bool

    def __init__(self, params: Params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False) -> None:
        _check_nonneg("SGD", momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"SGD: nesterov needs momentum > 0 and dampening 0, got momentum={momentum}, "
                             f"dampening={dampening}")
        super().__init__(params, lr=float(lr), momentum=float(momentum), dampening=float(dampening),
                         weight_decay=float(weight_decay), nesterov=bool(nesterov), maximize=bool(maximize))

    def _update(self, p: Tensor, g: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        if self.momentum:
            if "momentum_buffer" not in state:
                buf = np.array(g, copy=True)
            else:
                buf = self.momentum * state["momentum_buffer"] + (1 - self.dampening) * g
            state["momentum_buffer"] = buf
            g = g + self.momentum * buf if self.nesterov else buf
        return p.data - self.lr * g


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011).

    ``g += weight_decay * p``; ``s += g^2``; ``p -= lr / (1 + (t - 1) lr_decay) * g / (sqrt(s) + eps)``
    at step t (1, 2, ...), with ``s`` starting at ``initial_accumulator_value``.

    Parameters
    ----------
    params : iterable of Parameter
    lr, lr_decay, weight_decay, initial_accumulator_value, eps : float
    maximize : bool
    """

    lr_decay: float
    initial_accumulator_value: float
    eps: float

    def __init__(self, params: Params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, *, maximize: bool = False) -> None:
        _check_nonneg("Adagrad", lr_decay=lr_decay, weight_decay=weight_decay, eps=eps,
                      initial_accumulator_value=initial_accumulator_value)
        super().__init__(params, lr=float(lr), lr_decay=float(lr_decay), weight_decay=float(weight_decay),
                         initial_accumulator_value=float(initial_accumulator_value), eps=float(eps),
                         maximize=bool(maximize))

    def _update(self, p: Tensor, g: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        if not state:
            state["step"] = np.array(0.0)
            state["sum"] = np.full(p.shape, self.initial_accumulator_value, p.dtype)
        state["step"] = state["step"] + 1
        clr = self.lr / (1 + (float(state["step"]) - 1) * self.lr_decay)
        state["sum"] = state["sum"] + g * g
        return p.data - clr * g / (np.sqrt(state["sum"]) + self.eps)


class Adadelta(Optimizer):
    """Adadelta (Zeiler, 2012).

    ``g += weight_decay * p``; ``v = rho v + (1 - rho) g^2``;
    ``d = sqrt(u + eps) / sqrt(v + eps) * g``; ``u = rho u + (1 - rho) d^2``; ``p -= lr * d``.

    Parameters
    ----------
    params : iterable of Parameter
    lr, rho, eps, weight_decay : float
    maximize : bool
    """

    rho: float
    eps: float

    def __init__(self, params: Params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, *, maximize: bool = False) -> None:
        _check_unit("Adadelta", rho=rho)
        _check_nonneg("Adadelta", eps=eps, weight_decay=weight_decay)
        super().__init__(params, lr=float(lr), rho=float(rho), eps=float(eps),
                         weight_decay=float(weight_decay), maximize=bool(maximize))

    def _update(self, p: Tensor, g: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        if not state:
            state["step"] = np.array(0.0)
            state["square_avg"] = np.zeros_like(p.data)
            state["acc_delta"] = np.zeros_like(p.data)
        rho, eps = self.rho, self.eps
        state["step"] = state["step"] + 1
        v = state["square_avg"] = rho * state["square_avg"] + (1 - rho) * g * g
        d = np.sqrt(state["acc_delta"] + eps) / np.sqrt(v + eps) * g
        state["acc_delta"] = rho * state["acc_delta"] + (1 - rho) * d * d
        return p.data - self.lr * d


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e), optionally centered and with momentum.

    ``g += weight_decay * p``; ``v = alpha v + (1 - alpha) g^2``; the denominator is
    ``sqrt(v) + eps``, or ``sqrt(v - m^2) + eps`` with ``m = alpha m + (1 - alpha) g`` when
    centered; then ``b = momentum b + g / denominator``, ``p -= lr * b`` (with momentum) or
    ``p -= lr * g / denominator``.

    Parameters
    ----------
    params : iterable of Parameter
    lr, alpha, eps, weight_decay, momentum : float
    centered, maximize : bool
    """

    alpha: float
    eps: float
    momentum: float
    centered: bool

    def __init__(self, params: Params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False, *,
                 maximize: bool = False) -> None:
        _check_unit("RMSprop", alpha=alpha)
        _check_nonneg("RMSprop", eps=eps, weight_decay=weight_decay, momentum=momentum)
        super().__init__(params, lr=float(lr), alpha=float(alpha), eps=float(eps),
                         weight_decay=float(weight_decay), momentum=float(momentum),
                         centered=bool(centered), maximize=bool(maximize))

    def _update(self, p: Tensor, g: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        if not state:
            state["step"] = np.array(0.0)
            state["square_avg"] = np.zeros_like(p.data)
            if self.momentum:
                state["momentum_buffer"] = np.zeros_like(p.data)
            if self.centered:
                state["grad_avg"] = np.zeros_like(p.data)
        a = self.alpha
        state["step"] = state["step"] + 1
        v = state["square_avg"] = a * state["square_avg"] + (1 - a) * g * g
        if self.centered:
            m = state["grad_avg"] = a * state["grad_avg"] + (1 - a) * g
            v = v - m * m
        denom = np.sqrt(v) + self.eps
        if self.momentum:
            b = state["momentum_buffer"] = self.momentum * state["momentum_buffer"] + g / denom
            return p.data - self.lr * b
        return p.data - self.lr * g / denom


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), with the AMSGrad variant (Reddi et al., 2018).

    ``g += weight_decay * p``; ``m = b1 m + (1 - b1) g``; ``v = b2 v + (1 - b2) g^2``
    (AMSGrad: ``v_max = max(v_max, v)`` used in place of v);
    ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`` at step t.

    Parameters
    ----------
    params : iterable of Parameter
    lr : float
    betas : (float, float)
    eps, weight_decay : float
    amsgrad, maximize : bool
    """

    betas: tuple[float, float]
    eps: float
    amsgrad: bool

    def __init__(self, params: Params, lr: float = 1e-3, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False) -> None:
        who = type(self).__name__
        betas = tuple(float(b) for b in betas)
        if len(betas) != 2:
            raise ValueError(f"{who}: betas must be a pair (beta1, beta2), got {betas!r}")
        _check_unit(who, beta1=betas[0], beta2=betas[1])
        _check_nonneg(who, eps=eps, weight_decay=weight_decay)
        super().__init__(params, lr=float(lr), betas=betas, eps=float(eps),
                         weight_decay=float(weight_decay), amsgrad=bool(amsgrad), maximize=bool(maximize))

    def _update(self, p: Tensor, g: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        if not state:
            state["step"] = np.array(0.0)
            state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
            if self.amsgrad:
                state["max_exp_avg_sq"] = np.zeros_like(p.data)
        b1, b2 = self.betas
        state["step"] = state["step"] + 1
        t = float(state["step"])
        x = p.data
        if self._decoupled and self.weight_decay:
            x = x * (1 - self.lr * self.weight_decay)
        m = state["exp_avg"] = b1 * state["exp_avg"] + (1 - b1) * g
        v = state["exp_avg_sq"] = b2 * state["exp_avg_sq"] + (1 - b2) * g * g
        if self.amsgrad:
            v = state["max_exp_avg_sq"] = np.maximum(state["max_exp_avg_sq"], v)
        denom = np.sqrt(v) / math.sqrt(1 - b2 ** t) + self.eps
        return x - self.lr / (1 - b1 ** t) * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    ``p *= 1 - lr * weight_decay`` first, then Adam's step without weight decay in the gradient.
    Parameters as ``Adam``; ``weight_decay`` defaults to 0.01.
    """

    _decoupled = True

    def __init__(self, params: Params, lr: float = 1e-3, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)


# -- clipping -----------------------------------------------------------------------------------

class Recorder:
    """An optimizer that changes nothing and keeps a copy of every gradient it is given.

    Behind a trainer (``bptt.TBPTT``, the estimators of ``bptt.credit``) it records the updates
    the trainer would apply, with the weights frozen: what ``gradient_alignment`` compares.

    Parameters
    ----------
    params : iterable of Parameter, or a Module
    dtype : numpy dtype, optional
        The copies' dtype; each gradient's own when None.

    Attributes
    ----------
    grads : list of list of ndarray
        One list per ``step``, a copy of each parameter's gradient, in ``params`` order.
    """

    def __init__(self, params: Params, dtype: DTypeLike | None = None) -> None:
        self.params = _param_list(params, "Recorder")
        self.dtype = dtype
        self.grads: list[list[np.ndarray]] = []

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        self.grads.append([np.array(p.grad, dtype=self.dtype, copy=True) for p in self.params])


def clip_grad_norm(params: Params, max_norm: float, norm_type: float = 2.0) -> float:
    """Scale the gradients together so that their joint norm is at most ``max_norm``.

    As PyTorch's ``clip_grad_norm_``: the norm is taken over all gradients as one vector, and
    every gradient is multiplied by ``max_norm / (norm + 1e-6)`` when that is below 1 (when
    ``norm > max_norm``, up to the 1e-6 that guards a zero norm).  Gradients are rebound, not
    written in place.  Parameters without a gradient are skipped.

    Parameters
    ----------
    params : iterable of Tensor, or one Tensor
    max_norm : float
    norm_type : float
        The p of the p-norm; ``inf`` for the largest absolute value.

    Returns
    -------
    float
        The total norm before clipping.
    """
    # (below, mypy cannot see that every p.grad of params is set)
    params = [p for p in _param_list(params, "clip_grad_norm") if p.grad is not None]
    max_norm, norm_type = float(max_norm), float(norm_type)
    if not max_norm >= 0:
        raise ValueError(f"clip_grad_norm: max_norm must be >= 0, got {max_norm!r}")
    if not norm_type > 0:
        raise ValueError(f"clip_grad_norm: norm_type must be positive (or inf), got {norm_type!r}")
    if not params:
        return 0.0
    if norm_type == math.inf:
        total = max(float(np.max(np.abs(p.grad))) if p.grad.size else 0.0  # type: ignore[union-attr, arg-type]
                    for p in params)
    elif norm_type == 2.0:
        # np.linalg.norm's own arithmetic (sqrt of a float64 dot) without its per-call overhead,
        # which showed at every TBPTT update
        parts = np.array([math.sqrt(np.dot(g, g))
                          for g in (p.grad.ravel().astype(np.float64) for p in params)])  # type: ignore[union-attr]
        total = math.sqrt(np.dot(parts, parts))
    else:
        parts = [np.linalg.norm(p.grad.ravel().astype(np.float64),  # type: ignore[assignment, union-attr]
                                ord=norm_type) for p in params]
        total = float(np.linalg.norm(parts, ord=norm_type))
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for p in params:
            p.grad = (p.grad * coef).astype(p.grad.dtype, copy=False)  # type: ignore[operator, union-attr]
    return total


def clip_grad_value(params: Params, clip_value: float) -> None:
    """Clip every gradient element to ``[-clip_value, clip_value]`` (PyTorch's ``clip_grad_value_``)."""
    clip_value = float(clip_value)
    if not clip_value >= 0:
        raise ValueError(f"clip_grad_value: clip_value must be >= 0, got {clip_value!r}")
    for p in _param_list(params, "clip_grad_value"):
        if p.grad is not None:
            p.grad = np.clip(p.grad, -clip_value, clip_value)


# -- learning-rate schedules ----------------------------------------------------------------------

class LRScheduler:
    """Base of the schedules: sets ``optimizer.lr`` from the epoch count by a closed form.

    As in PyTorch, constructing one sets epoch 0 (the optimizer's lr becomes ``base_lr``) and
    each ``step()`` advances one epoch; call it after ``optimizer.step()``.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: need a bptt.optim optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)
        self.last_epoch = -1
        self.step()

    def lr_at(self, epoch: int) -> float:
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and set the optimizer's lr."""
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def get_last_lr(self) -> float:
        """The lr set by the last ``step`` (a float; PyTorch returns one per parameter group)."""
        return self.optimizer.lr

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"last_epoch": np.array(self.last_epoch), "base_lr": np.array(self.base_lr)}

    def load_state_dict(self, state_dict: Mapping[str, ArrayLike]) -> None:
        """Restore the epoch count and base lr, and set the optimizer's lr to match."""
        self.last_epoch = int(np.asarray(state_dict["last_epoch"]).item())
        self.base_lr = float(np.asarray(state_dict["base_lr"]).item())
        self.optimizer.lr = self.lr_at(self.last_epoch)


class StepLR(LRScheduler):
    """``lr = base_lr * gamma ** (epoch // step_size)``: decay by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        if not isinstance(step_size, (int, np.integer)) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be a positive integer, got {step_size!r}")
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """``lr = base_lr * gamma ** epoch``."""

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        self.gamma = float(gamma)
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** epoch


class CosineAnnealingLR(LRScheduler):
    """``lr = eta_min + (base_lr - eta_min) (1 + cos(pi epoch / T_max)) / 2`` (Loshchilov & Hutter, 2017,
    without restarts): from ``base_lr`` down to ``eta_min`` over ``T_max`` epochs."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        if not isinstance(T_max, (int, np.integer)) or T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be a positive integer, got {T_max!r}")
        self.T_max, self.eta_min = int(T_max), float(eta_min)
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


# -- scipy bridge -------------------------------------------------------------------------------

def minimize(model: Params, closure: Callable[[], Tensor], method: str = "L-BFGS-B",
             **options: Any) -> OptimizeResult:
    """Train ``model`` full-batch with ``scipy.optimize.minimize``, the tape giving exact gradients.

    The parameters are flattened into one float64 vector; for each point scipy asks about, they
    are set from it, ``closure()`` computes the loss and backward gives the gradient.  Afterwards
    the model holds the result.  Use a float64 model when tight tolerances matter: float32
    losses stall line searches near 1e-7 relative accuracy.

    Parameters
    ----------
    model : Module or iterable of Parameter
    closure : callable
        ``closure() -> scalar Tensor``: the loss of the model's current parameters (no backward).
    method : str
        Any gradient-based method of ``scipy.optimize.minimize`` ('L-BFGS-B', 'BFGS', 'CG', ...).
    **options
        Passed to ``scipy.optimize.minimize`` (``tol``, ``options={'maxiter': ...}``, ``callback``, ...).

    Returns
    -------
    scipy.optimize.OptimizeResult
    """
    params = _param_list(model, "minimize")
    sizes = [p.size for p in params]
    cuts = np.cumsum(sizes)[:-1]

    def load(x: np.ndarray) -> None:
        for p, chunk in zip(params, np.split(x, cuts)):
            p.data = chunk.reshape(p.shape).astype(p.dtype)

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        load(x)
        for p in params:
            p.grad = None
        with enable_grad():
            loss = closure()
        if not isinstance(loss, Tensor) or loss.size != 1:
            raise TypeError(f"minimize: closure must return a scalar Tensor, got "
                            f"{type(loss).__name__} of shape {np.shape(loss)}")
        if loss.requires_grad:
            loss.backward()
        grad = np.concatenate([np.zeros(p.size) if p.grad is None else p.grad.ravel() for p in params])
        return float(loss.item()), grad.astype(np.float64)

    import scipy.optimize

    x0 = np.concatenate([p.data.ravel() for p in params]).astype(np.float64)
    result = scipy.optimize.minimize(fun, x0, method=method, jac=True, **options)
    load(result.x)
    for p in params:
        p.grad = None
    return result
