"""The tolerance for comparing two code paths that compute the same numbers in different orders.

Identical bits are asserted only where the same operations run in the same order: one path run
twice, a resumed or replayed run.  Two paths that sum the same terms in different orders (GEMMs
of other shapes or blockings, a product gate by gate or in one GEMM, a fused kernel against the
reference built from small ops, chunks against the whole sequence) round differently, and how
depends on the BLAS kernels the CPU gets (OpenBLAS picks them at run time), so those are
compared within ``summation_tol`` of each other.

The bound.  A sum (or dot product) of n terms computed in floating point is off by at most about
n u sum|a_i| (u = eps / 2 the unit roundoff; Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed. 2002, chapters 3 and 4), but that worst case needs every rounding error to
have the same sign.  Modelled as independent and of mean zero, as they behave, the rounding
errors give at most about lambda sqrt(n) u sum|a_i|, except with a probability that falls as
exp(-lambda^2 / 2) (Higham & Mary, "A new approach to probabilistic rounding error analysis",
SIAM J. Sci. Comput. 41, 2019).  Two orders of the same sum differ by at most twice that; with
lambda = 4 that is ``4 sqrt(n) eps`` times the terms' scale, ``summation_tol``'s default.

``n`` counts the rounded terms that reach an entry: the length of its dot products, times the
number of steps chained through a recurrence (in a recurrence that does not amplify errors, as
the tested ones with weights of order 1/sqrt(H) do not, the errors of successive steps add up
like those of one longer sum).  The terms' scale is the largest entry of the expected array
(``scale``), so that an entry that a sum cancels to near zero is allowed the rounding of the
terms it came from, not of itself.  For terms of random sign that is less than sum|a_i|, by up
to sqrt(n); lambda = 4 covers it in practice: with OpenBLAS's Haswell kernels the largest
differences in ``test_kernels`` and ``test_checkpoint`` are below a tenth of the tolerance (its
Sandybridge kernels give equal bits in ``test_kernels``).

What it still catches: in float32 with n in the thousands the tolerance is a few 1e-5 of the
array's scale, in float64 a few 1e-14; a permuted gate, a wrong formula or a relative
perturbation of 1e-3 moves entries by more (checked by breaking the kernels on purpose).
"""

import math

import numpy as np

__all__ = ["summation_tol", "assert_close_sums"]

#: lambda = 4 in the probabilistic bound, two orders compared: 2 * 4 * sqrt(n) * u = 4 sqrt(n) eps
C = 4.0


def summation_tol(dtype, n, c=C):
    """The relative difference allowed between two evaluations of sums of ``n`` terms (per
    entry, the steps chained through a recurrence included) in ``dtype``, added in different
    orders: ``c * sqrt(n) * eps(dtype)``."""
    if n < 1:
        raise ValueError(f"summation_tol: need n >= 1 terms, got {n}")
    return c * math.sqrt(n) * float(np.finfo(dtype).eps)


def assert_close_sums(got, want, n, dtype=None, scale=None, c=C, err_msg=""):
    """``got`` equals ``want`` up to the rounding of sums of ``n`` terms added in another order:
    every entry within ``tol * (scale + |want entry|)``, ``tol = summation_tol(dtype, n, c)``.

    ``dtype`` defaults to ``want``'s (the lower precision of the two arrays, if they differ);
    ``scale``, the size of the terms summed, defaults to the largest entry of ``want`` (1 when
    ``want`` is all zeros)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{err_msg}: shape {got.shape} != {want.shape}"
    if dtype is None:
        dtype = want.dtype if want.dtype.itemsize <= got.dtype.itemsize else got.dtype
    tol = summation_tol(dtype, n, c)
    if scale is None:
        scale = float(np.abs(want).max()) if want.size else 1.0
        scale = scale if scale > 0 else 1.0
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale,
                               err_msg=f"{err_msg} (n = {n} terms, {np.dtype(dtype).name}: tol {tol:.2g})")
