"""Data plumbing: batching, validated CSV reading, chronological splits, scaling and windows.

Everything here works on plain numpy arrays; ``bptt.data.tasks`` builds the forecasting tasks from it.
A series is split in time order (train, then validation, then test), its scaler is fitted on the
training part alone, and windows are cut time-major, ``(T, B, ...)``, like every other sequence in
the package.
"""

from __future__ import annotations

import collections
import csv
import functools
import math
import os
from collections.abc import Iterable, Iterator

import numpy as np
from numpy.typing import ArrayLike

from bptt.errors import integer
from bptt.rng import generator

__all__ = ["batches", "CSVError", "MAX_LINE", "read_csv", "chronological_split", "Scaler", "windows"]

#: The longest line ``read_csv`` accepts, in characters (its line break included).  A row of
#: numbers is far shorter (1 MiB holds some 50,000 fields), so a longer line means a file that is
#: not a CSV of numbers (binary, zero-filled, or without line breaks); it is refused once this
#: much is read, never read whole.
MAX_LINE = 2 ** 20


def batches(arrays: Iterable[np.ndarray] | Iterable[ArrayLike], batch_size: int | None = None, shuffle: bool = True,
            rng: np.random.Generator | None = None, axis: int = 0) -> Iterator[tuple[np.ndarray, ...]]:
    """Yield aligned slices of ``arrays`` along ``axis``, one tuple per (mini-)batch.

    ``batch_size=None`` gives the whole set (batch gradient descent), ``1`` single examples
    (stochastic), anything between mini-batches; the last batch may be smaller.

    Parameters
    ----------
    arrays : sequence of np.ndarray
        Examples along ``axis`` (0 for (N, ...) data, 1 for time-major (T, N, ...) sequences).
    batch_size : int or None
    shuffle : bool
        Visit examples in a new random order each call.
    rng : numpy.random.Generator, optional
        The package-wide generator when None.
    """
    arrays = [np.asarray(a) for a in arrays]
    if not arrays:
        raise ValueError("batches: need at least one array")
    sizes = {a.shape[axis] for a in arrays}
    if len(sizes) != 1:
        raise ValueError(f"batches: arrays hold different numbers of examples along axis {axis}: "
                         f"shapes {[a.shape for a in arrays]}")
    n = sizes.pop()
    size = n if batch_size is None else integer(batch_size, "batch_size", "batches")
    order = generator(rng).permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, size):
        idx = order[start:start + size]
        yield tuple(np.take(a, idx, axis=axis) for a in arrays)


class CSVError(ValueError):
    """A CSV file that cannot be used; the message starts with ``path:line:`` where a line is at fault.

    Attributes
    ----------
    path : str
    line : int or None
        1-based line number of the offending row (the header is line 1), None for whole-file errors.
    """

    def __init__(self, path: str | os.PathLike[str], line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")


def read_csv(path: str | os.PathLike[str], columns: Iterable[str]) -> np.ndarray:
    """Read numeric ``columns`` of a CSV file with a header line, checking every row.

    Blank lines are skipped; every other row must have as many fields as the header, and every
    requested field must be a finite number.  Columns not asked for are not parsed (a date column
    may hold anything), but every field must be shorter than ``csv.field_size_limit()`` (131072
    characters unless changed) and every line at most ``MAX_LINE`` characters long, without a NUL
    byte: a line is read at most ``MAX_LINE + 1`` characters at a time, so a binary or huge
    one-line file is refused at its first bad line without being read whole.

    Parameters
    ----------
    path : str or os.PathLike
    columns : sequence of str
        Header names to read, in the order wanted.

    Returns
    -------
    np.ndarray
        float64 of shape (N, len(columns)), N the number of data rows.

    Raises
    ------
    CSVError
        Missing or unreadable file, not UTF-8, empty file, blank or repeated header names, a
        requested column that is not in the header, a NUL byte, a line longer than ``MAX_LINE``, a
        field longer than the csv module's limit, a ragged row, a field that is not a finite
        number, or no data rows.
    """
    columns = list(columns)
    if not columns:
        raise ValueError("read_csv: columns must name at least one column")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(_lines(f, path))
            header = next(reader, None)
            if header is None:
                raise CSVError(path, None, "empty file; need a header line with column names")
            header = [h.strip() for h in header]
            if any(not h for h in header):
                raise CSVError(path, 1, f"header has a blank column name: {header}")
            repeated = sorted(h for h, n in collections.Counter(header).items() if n > 1)
            if repeated:
                raise CSVError(path, 1, f"header repeats column names {repeated}")
            missing = [c for c in columns if c not in header]
            if missing:
                raise CSVError(path, None, f"no column {', '.join(map(repr, missing))}; "
                               f"the header has {', '.join(header)}")
            where = [header.index(c) for c in columns]
            rows = []
            for row in reader:
                if not "".join(row).strip():            # blank: no field but whitespace
                    continue
                if len(row) != len(header):
                    raise CSVError(path, reader.line_num, f"row has {len(row)} fields, the header "
                                   f"has {len(header)} ({', '.join(header)})")
                rows.append([_number(path, reader.line_num, columns[k], row[i])
                             for k, i in enumerate(where)])
    except csv.Error as e:
        what = (f"a field longer than {csv.field_size_limit()} characters, far more than a number "
                f"needs; check that this is the CSV meant and that no quote (\") is left open"
                if str(e).startswith("field larger than field limit") else f"not readable as CSV ({e})")
        raise CSVError(path, reader.line_num, what) from None
    except OSError as e:
        raise CSVError(path, None, f"cannot read the file ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise CSVError(path, None, f"not UTF-8 text ({e.reason})") from e
    if not rows:
        raise CSVError(path, None, "no data rows after the header")
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(columns))


def _lines(f, path):
    # The lines of text file f for csv.reader, each read at most MAX_LINE + 1 characters at a
    # time and checked before csv sees it: the count is csv.reader's line_num.
    for line_num, line in enumerate(iter(functools.partial(f.readline, MAX_LINE + 1), ""), 1):
        if "\0" in line:
            raise CSVError(path, line_num, f"a NUL byte at character {line.index(chr(0)) + 1}: a "
                           f"binary or zero-filled file, not CSV text; give a CSV text file")
        if len(line) > MAX_LINE:
            raise CSVError(path, line_num, f"a line longer than {MAX_LINE} characters "
                           f"(bptt.data.readers.MAX_LINE), far more than a row of numbers needs; check that "
                           f"this is the CSV meant and that it has one row per line")
        yield line


def _number(path, line, column, field):
    text = field.strip()
    try:
        value = float(text)
    except ValueError:
        what = "missing value (empty field)" if not text else f"cannot read {text!r} as a number"
        raise CSVError(path, line, f"column {column!r}: {what}") from None
    if not math.isfinite(value):
        raise CSVError(path, line, f"column {column!r}: {text!r} is not a finite number")
    return value


def chronological_split(n: int, validation: float, test: float) -> tuple[slice, slice, slice]:
    """Split ``n`` time points, in order, into training, validation and test slices.

    Parameters
    ----------
    n : int
        Length of the series.
    validation, test : int or float
        Size of each part: a count (int >= 0) or a share of ``n`` (float in [0, 1), rounded to the
        nearest count).  The test part is the last, the validation part just before it.

    Returns
    -------
    (slice, slice, slice)
        train, validation, test.
    """
    sizes = []
    for label, size in (("validation", validation), ("test", test)):
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, float, np.integer,
                                                                        np.floating)):
            raise TypeError(f"chronological_split: {label} must be a count or a fraction, "
                            f"got {size!r}")
        if isinstance(size, (float, np.floating)):
            if not 0 <= size < 1:
                raise ValueError(f"chronological_split: {label} fraction must be in [0, 1), "
                                 f"got {size}")
            size = int(round(size * n))
        if size < 0:
            raise ValueError(f"chronological_split: {label} size must be >= 0, got {size}")
        sizes.append(int(size))
    n_val, n_test = sizes
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"chronological_split: {n} points leave no training part after "
                         f"{n_val} validation and {n_test} test points")
    return slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, n)


class Scaler:
    """Per-column standardisation, optionally of the logarithm, fitted on one part of the data.

    ``transform(a) = (f(a) - mean) / std`` with ``f = log`` when ``log=True`` (else the identity),
    mean and std taken over the rows given to ``fit`` (the training part, so nothing about the
    validation or test parts leaks into the inputs).

    Parameters
    ----------
    log : bool
        Take logs first (positive data with a multiplicative trend or seasonality).
    """

    def __init__(self, log: bool = False) -> None:
        self.log = bool(log)
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, a: ArrayLike) -> Scaler:
        """Fit on ``a`` of shape (N, C) (or (N,)); returns self."""
        f = self._forward(np.asarray(a, dtype=np.float64), "fit")
        if f.shape[0] < 2:
            raise ValueError(f"Scaler.fit: need at least 2 rows to estimate a spread, got {f.shape[0]}")
        self.mean = f.mean(axis=0)
        self.std = f.std(axis=0)
        flat = np.flatnonzero(np.atleast_1d(self.std) == 0)
        if flat.size:
            raise ValueError(f"Scaler.fit: column(s) {flat.tolist()} are constant on the fitting "
                             f"part; nothing to learn from them")
        return self

    def transform(self, a: ArrayLike) -> np.ndarray:
        """Scaled copy of ``a`` (float64, same shape)."""
        self._check_fitted("transform")
        return (self._forward(np.asarray(a, dtype=np.float64), "transform") - self.mean) / self.std

    def inverse(self, a: ArrayLike) -> np.ndarray:
        """Undo ``transform``: back to the original scale (float64)."""
        self._check_fitted("inverse")
        f = np.asarray(a, dtype=np.float64) * self.std + self.mean  # type: ignore[operator]  # std is set: _check_fitted
        return np.exp(f) if self.log else f

    def _forward(self, a, who):
        if not self.log:
            return a
        if np.any(a <= 0):
            raise ValueError(f"Scaler.{who}: log=True needs positive data, min is {a.min()}")
        return np.log(a)

    def _check_fitted(self, who):
        if self.mean is None:
            raise ValueError(f"Scaler.{who}: call fit on the training part first")


def windows(a: ArrayLike, starts: ArrayLike, length: int) -> np.ndarray:
    """Cut windows ``a[s : s + length]`` for each start ``s``, stacked time-major.

    Parameters
    ----------
    a : np.ndarray
        A series of shape (N, ...).
    starts : sequence of int
        Window starts, each in ``[0, N - length]``.
    length : int

    Returns
    -------
    np.ndarray
        Shape (length, len(starts), ...): ``out[t, b] = a[starts[b] + t]``.
    """
    a = np.asarray(a)
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    length = integer(length, "length", "windows")
    if starts.size and (starts.min() < 0 or starts.max() + length > len(a)):
        raise ValueError(f"windows: starts must lie in [0, {len(a) - length}] for length {length} "
                         f"over {len(a)} points, got [{starts.min()}, {starts.max()}]")
    return a[starts[None, :] + np.arange(length)[:, None]]
