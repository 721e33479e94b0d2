"""Reading and writing files: written atomically, ``.npz`` read without pickle."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any, Union

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from typing_extensions import TypeAlias

__all__ = ["atomic_open", "save_npz", "load_npz", "save_json", "TEMP_PREFIX"]

#: Name prefix of the temporary files ``atomic_open`` writes; a kill -9 mid-write leaves one.
TEMP_PREFIX = ".tmp-"

#: A file name: a ``str`` or a ``pathlib.Path`` (any ``os.PathLike``).
StrPath: TypeAlias = Union[str, "os.PathLike[str]"]


def _umask() -> int:
    # os.umask can only be read by setting it; /proc reports it without that (Linux >= 4.7)
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: StrPath, mode: str = "wb", **options: Any) -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary file beside it, renamed over it on success.

    A crash or an exception mid-write leaves the previous file intact, never a truncated one.
    The file gets the permissions a plain ``open`` would (0666 less the umask).  ``options``
    go to ``open`` (``newline``, ``encoding``).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **options) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_npz(path: StrPath, arrays: Mapping[str, ArrayLike]) -> None:
    """Write ``{name: array}`` to ``path`` as ``.npz``, atomically."""
    with atomic_open(path, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]  # numpy's stub


def save_json(path: StrPath, obj: Any) -> None:
    """Write ``obj`` to ``path`` as indented JSON, atomically."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def load_npz(path: StrPath) -> dict[str, np.ndarray]:
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
