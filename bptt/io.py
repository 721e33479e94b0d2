"""Reading and writing arrays: ``.npz`` files written atomically and read without pickle."""

from __future__ import annotations

import os
import tempfile
import zipfile

import numpy as np

__all__ = ["save_npz", "load_npz"]


def save_npz(path, arrays):
    """Write ``{name: array}`` to ``path`` as ``.npz`` atomically.

    The file is written beside ``path`` under a temporary name and renamed over it, so a crash
    mid-write leaves the previous file intact, never a truncated one.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_npz(path):
    """Read an ``.npz`` file into ``{name: array}``; object (pickled) arrays are refused."""
    path = os.fspath(path)
    if os.path.exists(path) and not zipfile.is_zipfile(path):
        # checked first: np.load would take any non-zip file for a pickle
        raise ValueError(f"{path}: not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except ValueError as err:   # numpy's message for a pickled (object) array
        raise ValueError(f"{path}: holds an object array, which bptt never unpickles ({err})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from None
