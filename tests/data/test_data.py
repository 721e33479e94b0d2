import numpy as np
import pytest

from bptt.data.readers import CSVError, Scaler, batches, chronological_split, read_csv, windows


# --- batches ------------------------------------------------------------------------------------
def test_batches_cover_every_example_once_in_aligned_slices(rng):
    x = np.arange(10)
    y = np.arange(10) * 10
    got = list(batches([x, y], batch_size=4, rng=rng))
    assert [len(b[0]) for b in got] == [4, 4, 2]
    xs = np.concatenate([b[0] for b in got])
    assert sorted(xs) == list(range(10))
    assert all(np.array_equal(b[1], b[0] * 10) for b in got)


def test_batches_full_batch_unshuffled_and_time_major_axis():
    x = np.arange(24).reshape(3, 8)        # (T, N)
    (only,) = list(batches([x], batch_size=None, shuffle=False, axis=1))
    assert np.array_equal(only[0], x)
    singles = list(batches([x], batch_size=1, shuffle=False, axis=1))
    assert len(singles) == 8 and np.array_equal(singles[5][0], x[:, 5:6])


def test_batches_same_generator_seed_same_order():
    a = [b[0].tolist() for b in batches([np.arange(9)], 3, rng=np.random.default_rng(5))]
    b = [b[0].tolist() for b in batches([np.arange(9)], 3, rng=np.random.default_rng(5))]
    assert a == b and a != [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_batches_rejects_bad_input():
    with pytest.raises(ValueError, match="different numbers of examples"):
        list(batches([np.zeros(3), np.zeros(4)]))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        list(batches([np.zeros(3)], batch_size=0))
    with pytest.raises(ValueError, match="at least one array"):
        list(batches([]))


# --- read_csv -------------------------------------------------------------------------------------
def _write(tmp_path, text, name="s.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_read_csv_reads_the_asked_columns_in_order_and_skips_blank_lines(tmp_path):
    p = _write(tmp_path, '\ufeff"date",a,b\n2000-01,1,2.5\n\n2000-02,3,-4e1\n')
    v = read_csv(p, ["b", "a"])
    assert v.dtype == np.float64
    assert np.array_equal(v, [[2.5, 1.0], [-40.0, 3.0]])


@pytest.mark.parametrize("text, columns, match", [
    ("a,b\n1,2\n3,x7\n", ["b"], r"s\.csv:3: column 'b': cannot read 'x7' as a number"),
    ("a,b\n1,2\n3,\n", ["b"], r"s\.csv:3: column 'b': missing value"),
    ("a,b\n1,nan\n", ["b"], r"s\.csv:2: column 'b': 'nan' is not a finite number"),
    ("a,b\n1,2\n3,4,5\n", ["a"], r"s\.csv:3: row has 3 fields, the header has 2"),
    ("a,b\n1,2\n3\n", ["a"], r"s\.csv:3: row has 1 fields"),
    ("a,b\n1,2\n", ["c", "a"], r"s\.csv: no column 'c'; the header has a, b"),
    ("", ["a"], r"s\.csv: empty file"),
    ("a,b\n", ["a"], r"s\.csv: no data rows"),
    ("a,a\n1,2\n", ["a"], r"s\.csv:1: header repeats column names \['a'\]"),
    ("a,,c\n1,2,3\n", ["a"], r"s\.csv:1: header has a blank column name"),
])
def test_read_csv_rejects_malformed_files_with_file_and_line(tmp_path, text, columns, match):
    p = _write(tmp_path, text)
    with pytest.raises(CSVError, match=match) as info:
        read_csv(p, columns)
    assert info.value.path == str(p)


def test_read_csv_line_numbers_count_blank_lines(tmp_path):
    p = _write(tmp_path, "a\n1\n\n\n2\nbad\n")
    with pytest.raises(CSVError, match=r":6: ") as info:
        read_csv(p, ["a"])
    assert info.value.line == 6


def test_read_csv_missing_file_and_binary_file(tmp_path):
    with pytest.raises(CSVError, match="nope.csv: cannot read the file"):
        read_csv(tmp_path / "nope.csv", ["a"])
    p = tmp_path / "bin.csv"
    p.write_bytes(b"a\n\xff\xfe\x00\n")
    with pytest.raises(CSVError, match="not UTF-8"):
        read_csv(p, ["a"])


# --- splits, scaling, windows -----------------------------------------------------------------------
def test_chronological_split_counts_and_fractions():
    assert chronological_split(288, 35, 67) == (slice(0, 186), slice(186, 221), slice(221, 288))
    assert chronological_split(100, 0.15, 0.2) == (slice(0, 65), slice(65, 80), slice(80, 100))
    assert chronological_split(10, 0, 3) == (slice(0, 7), slice(7, 7), slice(7, 10))


@pytest.mark.parametrize("args, err, match", [
    ((10, 5, 5), ValueError, "leave no training part"),
    ((10, 1.0, 0.1), ValueError, r"validation fraction must be in \[0, 1\)"),
    ((10, -1, 2), ValueError, "validation size must be >= 0"),
    ((10, 2, "3"), TypeError, "test must be a count or a fraction"),
])
def test_chronological_split_rejects(args, err, match):
    with pytest.raises(err, match=match):
        chronological_split(*args)


def test_scaler_fits_on_the_given_part_only_and_inverts(rng):
    a = rng.normal(3, 2, size=(50, 2))
    a[40:] += 100                        # a shifted "test" part must not move the statistics
    s = Scaler().fit(a[:40])
    z = s.transform(a)
    assert np.allclose(z[:40].mean(axis=0), 0) and np.allclose(z[:40].std(axis=0), 1)
    assert np.all(z[40:] > 10)
    assert np.allclose(s.inverse(z), a)


def test_scaler_log():
    a = np.array([1.0, np.e, np.e ** 2])
    s = Scaler(log=True).fit(a)
    assert np.allclose(s.transform(a), [-np.sqrt(1.5), 0, np.sqrt(1.5)])
    assert np.allclose(s.inverse(s.transform(a)), a)
    with pytest.raises(ValueError, match="log=True needs positive data, min is 0.0"):
        s.transform(np.array([0.0]))


def test_scaler_rejects_constant_columns_and_use_before_fit():
    with pytest.raises(ValueError, match=r"column\(s\) \[1\] are constant"):
        Scaler().fit(np.array([[1.0, 2.0], [3.0, 2.0]]))
    with pytest.raises(ValueError, match="call fit on the training part first"):
        Scaler().transform(np.zeros(3))


def test_windows_are_time_major_slices():
    a = np.arange(20).reshape(10, 2)
    w = windows(a, [0, 3, 6], 4)
    assert w.shape == (4, 3, 2)
    for b, s in enumerate([0, 3, 6]):
        assert np.array_equal(w[:, b], a[s:s + 4])
    with pytest.raises(ValueError, match=r"starts must lie in \[0, 6\] for length 4"):
        windows(a, [7], 4)
