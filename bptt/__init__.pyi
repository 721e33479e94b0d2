# The names of ``import bptt``, each imported on first use (lazy_loader reads this stub at run
# time; type checkers read it as the package's interface).
from . import credit, data, diagnostics, nn, optim, runs
from .credit import TBPTT
from .data import tasks
from .blas import threads
from .forward import jvp
from .functional import (abs, add, astype, clip, concat, div, exp, linear, log, log_softmax, matmul,
                         max, maximum, mean, minimum, mul, neg, pow, relu, reshape, sigmoid, softmax,
                         softplus, split, sqrt, stack, sub, sum, tanh, transpose, where)
from .gradcheck import GradcheckError, gradcheck
from .functional import Tensor  # the Tensor with its operators and methods (functional binds them)
from .rng import seed
from .runs.load import load_run
from .tape import enable_grad, get_default_dtype, is_grad_enabled, no_grad, set_default_dtype, vjp

__version__: str

# what `from bptt import *` and type checkers take as exported: every name above
__all__ = [
    "GradcheckError", "TBPTT", "Tensor", "abs", "add", "astype", "clip", "concat", "credit",
    "data", "diagnostics", "div", "enable_grad", "exp", "get_default_dtype", "gradcheck",
    "is_grad_enabled", "jvp", "linear", "load_run", "log", "log_softmax", "matmul", "max",
    "maximum", "mean", "minimum", "mul", "neg", "nn", "no_grad", "optim", "pow", "relu",
    "reshape", "runs", "seed", "set_default_dtype", "sigmoid", "softmax", "softplus", "split",
    "sqrt", "stack", "sub", "sum", "tanh", "tasks", "threads", "transpose", "vjp", "where",
]
