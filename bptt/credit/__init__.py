"""Temporal credit assignment: truncated BPTT over streams (``tbptt``, its windows and the choice
of k2 in ``truncation``), the online estimators (``rtrl``, ``uoro``, ``kfrtrl``, on the base of
``online``) and their alignment against the exact gradient (``alignment``)."""

from bptt.credit.alignment import gradient_alignment, parse_estimator
from bptt.credit.kfrtrl import KFRTRL
from bptt.credit.rtrl import RTRL
from bptt.credit.tbptt import TBPTT
from bptt.credit.truncation import WindowSchedule, adaptive_k2, measured_k2
from bptt.credit.uoro import UORO

__all__ = ["TBPTT", "WindowSchedule", "RTRL", "UORO", "KFRTRL", "adaptive_k2", "measured_k2",
           "gradient_alignment", "parse_estimator"]
