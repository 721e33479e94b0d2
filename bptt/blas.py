"""How many threads the BLAS behind numpy's matrix products may use.

OpenBLAS starts one thread per core and splits every product large enough among them; its
threads spin while they wait for work.  A recurrent network multiplies small matrices once per
step, so the threads gain little there, and when another process holds a core a thread that
waits for it stalls every product: training runs several times slower on a busy machine.  The
commands therefore choose the count from the size of the work (``default_threads``, one thread
below ``PARALLEL_MACS``), and ``threads`` fixes it for a block of code, through threadpoolctl,
which sets the count of every BLAS library loaded (OpenBLAS, MKL, BLIS): numpy's, and scipy's,
which is loaded first so that the limit reaches it too.

A count the user fixed is respected: an environment variable of ``ENVIRONMENT`` set when the
process started, or a ``threads`` block around the call.

>>> import bptt, numpy as np
>>> with bptt.threads(1):
...     _ = np.ones((256, 256)) @ np.ones((256, 256))
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

__all__ = ["threads", "default_threads", "limit", "cores", "PARALLEL_MACS", "ENVIRONMENT"]

#: Variables by which a user fixes the BLAS threads before numpy loads its library.
ENVIRONMENT = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")

#: Multiply-adds of the largest product of one step (B x G*H x H for a cell of G gate blocks)
#: from which more threads pay on an idle machine; below it one thread is as fast idle and much
#: faster beside a busy core.  ``scripts/bench_threads.py`` measures it (docs/threads.md): from
#: here on two threads were faster at every per-step shape timed idle, in most runs by more than
#: the script's 10 % (one gate-by-gate shape at 7 % moves its strict crossover up in some runs).
PARALLEL_MACS = 2 ** 22

_fixed: contextvars.ContextVar[int | None] = contextvars.ContextVar("bptt_blas_threads", default=None)


def cores() -> int:
    """The CPUs this process may run on (its affinity mask, where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:      # macOS and Windows have no affinity call
        return os.cpu_count() or 1


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the block with the BLAS libraries limited to ``n`` threads.

    Parameters
    ----------
    n : int
        Threads, at least 1; more than ``cores()`` is allowed but rarely pays.

    Raises
    ------
    ValueError
        If ``n`` is not a positive integer.

    Notes
    -----
    Inside the block the commands' own choice (``limit``) leaves the count alone.  Results can
    differ in their last bits between thread counts (a product's sums may be split differently);
    one count run twice gives the same bits.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads: need a positive integer number of threads, got {n!r}")
    import scipy.linalg     # noqa: F401  (loads scipy's own BLAS now, so that the limit covers it)
    from threadpoolctl import threadpool_limits

    token = _fixed.set(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        _fixed.reset(token)


def default_threads(macs: float) -> int:
    """The threads for work whose largest per-step product has ``macs`` multiply-adds: one below
    ``PARALLEL_MACS``, else every core this process may use."""
    return 1 if macs < PARALLEL_MACS else cores()


def user_fixed() -> bool:
    """Whether the user fixed the count: an ``ENVIRONMENT`` variable or an enclosing ``threads``."""
    return _fixed.get() is not None or any(os.environ.get(v) for v in ENVIRONMENT)


def limit(n: int | None, macs: float) -> contextlib.AbstractContextManager[None]:
    """The thread count a command runs with: ``n`` when given; otherwise the user's own, when
    fixed (``user_fixed``); otherwise ``default_threads(macs)``.

    Parameters
    ----------
    n : int or None
        The count asked for (``--threads``), or None to choose.
    macs : float
        Multiply-adds of the work's largest per-step product.
    """
    if n is not None:
        return threads(n)
    if user_fixed():
        return contextlib.nullcontext()
    return threads(default_threads(macs))
