"""How far each estimator's gradient is from the exact one: ``gradient_alignment``.

Full BPTT's gradient of a sequence is the reference; truncated BPTT (fixed or adaptive k2),
RTRL and UORO each run over the same sequence with the weights frozen, and their gradients are
compared with it by cosine and relative error, whole and per parameter.

Shapes: x (T, B, I), y (T, B, ...), mask (T,).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import numpy as np

from bptt import rng as _rng
from bptt.credit.checks import check_stream
from bptt.credit.rtrl import RTRL
from bptt.credit.tbptt import TBPTT
from bptt.credit.truncation import measured_k2
from bptt.credit.uoro import UORO
from bptt.optim import Recorder

__all__ = ["gradient_alignment", "parse_estimator"]


def parse_estimator(spec: str) -> tuple[str, dict]:
    """An estimator named as ``gradient_alignment`` and ``bptt credit`` take it, parsed.

    Parameters
    ----------
    spec : str
        ``"tbptt:k"``, ``"tbptt:k1,k2"``, ``"rtrl"``, ``"uoro"`` or ``"auto:max_bias"``.

    Returns
    -------
    kind : str
        'tbptt', 'rtrl', 'uoro' or 'auto'.
    options : dict
        ``{"k1", "k2"}`` for tbptt, ``{"max_bias"}`` for auto, empty otherwise.

    Raises
    ------
    ValueError
        Naming the bad spec and the forms allowed.
    """
    kind, _, arg = str(spec).strip().partition(":")
    forms = "tbptt:K, tbptt:K1,K2, rtrl, uoro, auto:MAX_BIAS (e.g. auto:0.1)"
    try:
        if kind == "tbptt":
            ks = [int(a) for a in arg.split(",")]
            if len(ks) not in (1, 2) or min(ks) < 1 or ks[-1] < ks[0]:
                raise ValueError
            return kind, {"k1": ks[0], "k2": ks[-1]}
        if kind in ("rtrl", "uoro") and not arg:
            return kind, {}
        if kind == "auto" and 0 < float(arg) < 1:
            return kind, {"max_bias": float(arg)}
    except ValueError:
        pass
    raise ValueError(f"estimator {spec!r}: not one of {forms} (with 1 <= K1 <= K2 and "
                     "0 < MAX_BIAS < 1)")


def _cosine(g, ref):
    ng, nr = np.linalg.norm(g), np.linalg.norm(ref)
    if nr == 0:
        return math.nan
    return 0.0 if ng == 0 else float(np.dot(g, ref) / (ng * nr))


def _relative_error(g, ref):
    nr = np.linalg.norm(ref)
    return math.nan if nr == 0 else float(np.linalg.norm(g - ref) / nr)


def _compare(draws, exact, slices):
    """Alignment of gradient draws (n, N) with ``exact`` (N,): whole and per parameter."""
    def stats(a, e):
        cos = np.array([_cosine(d, e) for d in a])
        err = np.array([_relative_error(d, e) for d in a])
        mean = a.mean(axis=0)
        return {"cosine": float(cos.mean()), "cosine_std": float(cos.std()),
                "relative_error": float(err.mean()), "relative_error_std": float(err.std()),
                "cosine_of_mean": _cosine(mean, e), "relative_error_of_mean": _relative_error(mean, e)}

    record = stats(draws, exact)
    record["samples"] = len(draws)
    record["parameters"] = {name: stats(draws[:, s], exact[s]) for name, s in slices.items()}
    return record


def gradient_alignment(model: Any, x: Any, y: Any, loss_fn: Callable, estimators: Iterable[str],
                       mask: Any = None, samples: int = 100, rng: Any = None) -> dict:
    """How well each estimator's gradient aligns with the exact one, the weights frozen.

    The exact gradient is full BPTT's of the sequence's loss
    ``sum_t m_t L_t / max(1, sum_t m_t)``; each estimator runs over the same sequence from
    ``model.initial_state`` with the weights left as they are, and its updates' gradients are
    combined into its estimate of that same gradient.

    Parameters
    ----------
    model : Module
        With ``step(x_t, state) -> (y_t, state)`` and ``initial_state(B)``.
    x, y, mask :
        One sequence, as ``TBPTT.run`` takes it.
    loss_fn : callable
        ``loss_fn(y_pred_t, y_t)`` -> scalar Tensor.
    estimators : iterable of str
        ``"tbptt:k"`` (k1 = k2 = k), ``"tbptt:k1,k2"``, ``"rtrl"``, ``"uoro"`` and
        ``"auto:max_bias"``: truncated BPTT with k1 = 1 and the k2 that ``adaptive_k2`` picks
        from ||dL/dh_t|| of a loss at the last step (``bptt.diagnostics.hidden_grad_norms``).
    samples : int
        Draws of each stochastic estimator (UORO).
    rng : numpy.random.Generator, optional
        For UORO's signs; the package-wide generator when None.

    Returns
    -------
    dict
        ``{spec: record}``.  A record has ``cosine`` and ``relative_error``
        (``||g - g*|| / ||g*||``) of the whole gradient, with ``_std`` over the draws (0 for a
        deterministic estimator), ``cosine_of_mean`` and ``relative_error_of_mean`` of the
        draws' mean (where unbiasedness shows), ``samples``, ``parameters`` (the same per
        parameter name), and for ``auto`` the ``k2`` chosen.

    Shapes
    ------
    x (T, B, I), y (T, B, ...), mask (T,)
    """
    specs = [(spec, *parse_estimator(spec)) for spec in estimators]
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ValueError(f"gradient_alignment: samples must be a positive integer, got {samples!r}")
    x, mask = check_stream(x, y, mask, "gradient_alignment")
    T = len(x)
    rng = _rng.generator(rng)
    params = model.parameters()
    names = [name for name, _ in model.named_parameters()]
    sizes = np.cumsum([0] + [p.size for p in params])
    slices = {n: slice(a, b) for n, a, b in zip(names, sizes[:-1], sizes[1:])}
    den = max(1.0, float(mask.sum()))

    def flat(grads):
        return np.concatenate([g.ravel() for g in grads])

    def run(make, windows=None):
        """The estimate of the sequence's gradient from an estimator's updates over x."""
        recorder = Recorder(params, dtype=np.float64)
        estimator = make(recorder)
        estimator.run(x, y, mask)
        estimator.finish()
        weights = [1.0] if windows is None else [max(1.0, float(mask[a:a + windows].sum())) / den
                                                 for a in range(0, T, windows)]
        return sum(w * flat(g) for w, g in zip(weights, recorder.grads))

    exact = run(lambda opt: TBPTT(model, loss_fn, opt, k1=T))
    out = {}
    for spec, kind, opts in specs:
        extra = {}
        if kind == "tbptt":
            draws = [run(lambda opt: TBPTT(model, loss_fn, opt, **opts), windows=opts["k1"])]
        elif kind == "auto":
            k2 = measured_k2(model, x, y, loss_fn, opts["max_bias"])
            draws = [run(lambda opt: TBPTT(model, loss_fn, opt, k1=1, k2=k2), windows=1)]
            extra["k2"] = k2
        elif kind == "rtrl":
            draws = [run(lambda opt: RTRL(model, loss_fn, opt, k1=T))]
        else:
            draws = [run(lambda opt: UORO(model, loss_fn, opt, k1=T, rng=rng))
                     for _ in range(samples)]
        out[spec] = {**_compare(np.array(draws), exact, slices), **extra}
    model.zero_grad()
    return out
