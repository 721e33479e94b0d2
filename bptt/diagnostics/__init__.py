"""Gradient-flow measurements as arrays: per-step ||dL/dh_t||, Jacobian spectra, decay fits,
parameter-gradient flow and fixed-point gradients.  Their figures are in
``bptt.diagnostics.plots``, the one module that imports matplotlib (imported on use)."""

from bptt.diagnostics.measure import *  # noqa: F401,F403
from bptt.diagnostics.measure import __all__
