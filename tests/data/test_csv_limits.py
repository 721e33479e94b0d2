"""Files that are not a CSV of numbers (or not a text): one message naming the file and the line,
given early, with the memory bounded; never a traceback, never the whole file read first."""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from bptt.cli import main
from bptt.data.readers import MAX_LINE, CSVError, read_csv
from bptt.data.tasks.text import BYTES_PER_CHARACTER, text_limit

LONG_FIELD = "a field longer than 131072 characters, far more than a number needs"


def _csv(tmp_path, text, name="s.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def _sparse(tmp_path, head, size, name="sparse.csv"):
    """``head`` then NUL bytes up to ``size`` (a hole on most file systems: no disk used)."""
    path = tmp_path / name
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


# --- long fields and lines ----------------------------------------------------------------------
def test_a_300000_character_field_in_an_unused_column_names_the_file_and_line(tmp_path):
    path = _csv(tmp_path, "note,v\nok,1\n" + "x" * 300_000 + ",2\nok,3\n")
    with pytest.raises(CSVError) as info:
        read_csv(path, ["v"])
    assert str(info.value) == (f"{path}:3: {LONG_FIELD}; check that this is the CSV meant and that "
                               f'no quote (") is left open')
    assert info.value.line == 3


def test_the_same_field_in_the_target_column_is_refused_the_same_way(tmp_path):
    path = _csv(tmp_path, "date,v\n2000,1\n2001," + "7" * 300_000 + "\n")
    with pytest.raises(CSVError, match=rf"^{re.escape(str(path))}:3: {LONG_FIELD}; "):
        read_csv(path, ["date", "v"])


def test_a_quote_left_open_is_refused_at_the_field_limit(tmp_path):
    path = _csv(tmp_path, 'v\n1\n"2\n' + "3\n" * 100_000)
    with pytest.raises(CSVError, match=LONG_FIELD) as info:
        read_csv(path, ["v"])
    assert 3 < info.value.line < 100_000          # where the field passed the limit


def test_a_line_longer_than_max_line_is_refused_before_csv_parses_it(tmp_path):
    path = _csv(tmp_path, "v\n1\n" + "9" * (MAX_LINE + 1) + "\n")
    with pytest.raises(CSVError) as info:
        read_csv(path, ["v"])
    assert str(info.value) == (f"{path}:3: a line longer than {MAX_LINE} characters "
                               f"(bptt.data.readers.MAX_LINE), far more than a row of numbers needs; check "
                               f"that this is the CSV meant and that it has one row per line")


def test_a_line_of_max_line_characters_is_read(tmp_path):
    wide = MAX_LINE // 20                           # fields of 19 characters and a comma
    row = ",".join(["1.2345678901234e+00"] * wide)
    assert len(row) + 1 <= MAX_LINE
    path = _csv(tmp_path, ",".join(f"c{i}" for i in range(wide)) + "\n" + row + "\n")
    assert read_csv(path, ["c0", f"c{wide - 1}"]).tolist() == [[1.2345678901234, 1.2345678901234]]


# --- binary files -----------------------------------------------------------------------------------
@pytest.mark.parametrize("content, line, character", [
    (b"\0\0\0", 1, 1),
    (b"v\n1\n2\x003\n4\n", 3, 2),
    (b'v,n\n1,"a\nb"\n\0', 4, 1),                  # a quoted line break counts as a line
])
def test_a_nul_byte_is_refused_on_its_line(tmp_path, content, line, character):
    path = tmp_path / "b.csv"
    path.write_bytes(content)
    with pytest.raises(CSVError) as info:
        read_csv(path, ["v"])
    assert str(info.value) == (f"{path}:{line}: a NUL byte at character {character}: a binary or "
                               f"zero-filled file, not CSV text; give a CSV text file")


_BOUNDED = textwrap.dedent("""
    import resource, sys
    from bptt.data.readers import read_csv
    from bptt.data.tasks.text import read_text
    with open("/proc/self/status") as f:
        size = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
    # the address space may grow by 64 MiB from here: far less than the file
    resource.setrlimit(resource.RLIMIT_AS, (size + 2 ** 26, resource.RLIM_INFINITY))
    try:
        read_csv(sys.argv[2], ["v"]) if sys.argv[1] == "csv" else read_text(sys.argv[2])
    except ValueError as err:
        print(err)
    else:
        print("read")
""")


def _bounded(kind, path):
    """What reading ``path`` says in a child process whose memory may grow by 64 MiB only."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _BOUNDED, kind, str(path)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr           # a MemoryError: the file was read whole
    return done.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_sparse_csv_of_300_mb_is_refused_on_its_first_line_in_bounded_memory(tmp_path):
    path = _sparse(tmp_path, b"v\n", 300 * 2 ** 20)
    assert _bounded("csv", path) == (f"{path}:2: a NUL byte at character 1: a binary or "
                                     f"zero-filled file, not CSV text; give a CSV text file")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_csv_without_line_breaks_is_refused_in_bounded_memory(tmp_path):
    path = tmp_path / "one.csv"
    with open(path, "w") as f:
        f.write("v\n")
        for _ in range(100):
            f.write("1" * 2 ** 20)                  # 100 MiB on one line
    assert _bounded("csv", path).startswith(f"{path}:2: a line longer than {MAX_LINE} characters")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_zero_filled_text_is_refused_at_its_first_nul_in_bounded_memory(tmp_path):
    path = _sparse(tmp_path, b"abc", 2 ** 28, name="nul.txt")
    assert _bounded("text", path) == f"{path}: a binary file, not text (a NUL byte at offset 3)"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_text_larger_than_memory_holds_is_refused_unread(tmp_path):
    path = _sparse(tmp_path, b"abc", text_limit() + 1, name="big.txt")
    assert _bounded("text", path) == (f"{path}: more than {text_limit()} bytes, more than this "
                                      f"machine's memory holds as a text task (some "
                                      f"{BYTES_PER_CHARACTER} bytes per character); give a shorter text")


# --- normal files are read as before ---------------------------------------------------------------
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_line_endings_and_blank_rows_read_as_before(tmp_path, newline):
    text = newline.join(["a,b", "1,2", "", " , ", '"3",4', "bad,5"]) + newline
    path = _csv(tmp_path, text)
    assert np.array_equal(read_csv(path, ["b"]), [[2.0], [4.0], [5.0]])
    with pytest.raises(CSVError, match=r"s\.csv:6: column 'a': cannot read 'bad' as a number"):
        read_csv(path, ["a"])


# --- the command line -----------------------------------------------------------------------------
@pytest.mark.parametrize("make, line, fragment", [
    (lambda p: _csv(p, "note,v\n" + "x" * 300_000 + ",1\n", name="wide.csv"), 2, LONG_FIELD),
    (lambda p: _sparse(p, b"v\n", 300 * 2 ** 20), 2, "a NUL byte at character 1: a binary or "
                                                     "zero-filled file, not CSV text"),
], ids=["long field", "sparse"])
def test_train_on_such_a_file_is_a_usage_error_naming_file_and_line(tmp_path, make, line, fragment):
    path = make(tmp_path)
    result = CliRunner().invoke(main, ["train", "--data", str(path), "--target", "v", "--steps", "1",
                                       "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    errors = [ln for ln in result.output.splitlines() if "Error" in ln]
    assert len(errors) == 1, result.output
    assert errors[0].startswith(f"Error: Invalid value for '--data': {path}:{line}: {fragment}")
    assert not (tmp_path / "run").exists()
