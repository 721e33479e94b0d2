"""Temporal credit assignment: truncated BPTT over streams, and the online estimators (RTRL,
UORO, KF-RTRL) with their alignment against the exact gradient."""

from bptt.credit.online import KFRTRL, RTRL, UORO, adaptive_k2, gradient_alignment, measured_k2, parse_estimator
from bptt.credit.tbptt import TBPTT, WindowSchedule

__all__ = ["TBPTT", "WindowSchedule", "RTRL", "UORO", "KFRTRL", "adaptive_k2", "measured_k2",
           "gradient_alignment", "parse_estimator"]
