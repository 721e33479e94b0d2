"""bptt: backpropagation through time on one reverse-mode tape, with gradient-flow diagnostics."""

from bptt.tape import (Tensor, no_grad, enable_grad, is_grad_enabled, set_default_dtype,
                       get_default_dtype)
from bptt.functional import (add, sub, mul, div, neg, pow, matmul, exp, log, sqrt, abs, tanh,
                             sigmoid, relu, maximum, minimum, where, clip, sum, mean, max, reshape,
                             transpose, concat, stack, split, softmax, log_softmax, astype,
                             linear, softplus)
from bptt.gradcheck import gradcheck, GradcheckError
from bptt.tape import vjp
from bptt.rng import seed
from bptt import nn
from bptt import optim
from bptt.tbptt import TBPTT
from bptt.forward import jvp
from bptt import tasks, diagnostics

__version__ = "0.1.0"
