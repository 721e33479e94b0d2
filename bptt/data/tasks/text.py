"""Character-level language modelling: any UTF-8 text, and the shipped works of Shakespeare.

A text is read whole, decoded as UTF-8, and split in order into training, validation and test
parts (90 / 5 / 5 by default).  The vocabulary is the set of characters of the training part,
sorted by code point, after one reserved *unknown* symbol (index 0) that stands for every
character of the other parts that the training part lacks; those are counted (``unknown``).
The model reads character t and predicts character t + 1; the loss is cross-entropy and the
metric **bits per character** (bpc, the cross-entropy in base 2; the per-character perplexity is
``2 ** bpc``).  The baselines are n-gram models counted on the training part with add-one
(Laplace) smoothing over the whole vocabulary, unknown symbol included: unigram, bigram and
trigram, each scoring every character of the test part with the characters before it as context.

Training batches are random windows of the training part (``batch``), and the fixed validation
and test sets are each part cut into consecutive windows, each scored from a zero state.  Training
with carried state over the whole text, and scoring each part as one stream, is ``bptt.runs.streams``'s
job (``bptt train --stateful``); ``stream(part)`` gives it the part as one long sequence.
"""

from __future__ import annotations

import importlib.resources
import math
import os
from pathlib import Path

import numpy as np

from bptt.data.readers import chronological_split
from bptt.data.tasks.base import Task

__all__ = ["TextTask", "text", "shakespeare", "read_text", "ngram_bits", "UNKNOWN", "BYTES_PER_CHARACTER",
           "text_limit"]

#: How the reserved unknown symbol (index 0) is shown when a text is decoded.
UNKNOWN = "\N{REPLACEMENT CHARACTER}"

#: Bytes of arrays a text task holds per character of its text at its peak (measured).
BYTES_PER_CHARACTER = 30

_CHUNK = 2 ** 20


def text_limit():
    """The largest text file ``read_text`` reads, in bytes: what this machine's memory holds as
    a text task (``BYTES_PER_CHARACTER`` per character; some 800 MB on 24 GiB)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // BYTES_PER_CHARACTER


def read_text(path):
    """The contents of ``path`` as a ``str``, or a ValueError naming the file and the offset.

    A NUL byte marks a binary file; bytes that are not UTF-8 are reported with their offset.  The
    file is read in chunks of 1 MiB, each checked for a NUL byte before the next is read, and a
    file of more than ``text_limit()`` bytes is refused before any is read, so a binary,
    zero-filled or huge file is refused early, without being read whole.
    """
    path = os.fspath(path)
    limit = text_limit()
    too_big = (f"{path}: more than {limit} bytes, more than this machine's memory holds as a text "
               f"task (some {BYTES_PER_CHARACTER} bytes per character); give a shorter text")
    raw = bytearray()
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size > limit:
            raise ValueError(too_big)
        while chunk := f.read(_CHUNK):
            nul = chunk.find(b"\0")
            if nul >= 0:
                raise ValueError(f"{path}: a binary file, not text (a NUL byte at offset "
                                 f"{len(raw) + nul})")
            raw += chunk
            if len(raw) > limit:                    # a file that grows, a pipe or a device
                raise ValueError(too_big)
    if not raw:
        raise ValueError(f"{path}: the file is empty; a text task needs some text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text: byte 0x{raw[err.start]:02x} at offset "
                         f"{err.start} ({err.reason})") from None


def _codepoints(s):
    return np.frombuffer(s.encode("utf-32-le"), dtype=np.uint32)


def ngram_bits(train, scored, history, order, vocab_size):
    """Bits per symbol of an add-one-smoothed n-gram model on ``scored``.

    ``P(c | context) = (N(context c) + 1) / (N(context) + V)``, with the counts N taken over the
    n-grams of ``train`` (for order 1, the context is empty and N(context) is ``len(train)``).

    Parameters
    ----------
    train : np.ndarray of int
        The symbols the counts come from.
    scored : np.ndarray of int
        The symbols to score.
    history : np.ndarray of int
        At least ``order - 1`` symbols that precede ``scored``: the context of its first ones.
    order : int
        1 (unigram), 2 (bigram), 3 (trigram), ...
    vocab_size : int
        V.

    Returns
    -------
    float
        The mean of ``-log2 P`` over ``scored``.
    """
    if len(history) < order - 1:
        raise ValueError(f"ngram_bits: an order-{order} model needs {order - 1} symbols of history, "
                         f"got {len(history)}")
    seq = np.concatenate([np.asarray(history[len(history) - (order - 1):] if order > 1 else [],
                                     dtype=np.int64), np.asarray(scored, dtype=np.int64)])
    train = np.asarray(train, dtype=np.int64)

    def keys(a, k):
        # every k-gram of a as one integer in base V (V**3 < 2**63 for any Unicode alphabet)
        out = np.zeros(len(a) - k + 1, dtype=np.int64)
        for j in range(k):
            out = out * vocab_size + a[j:len(a) - k + 1 + j]
        return out

    def counts(table, wanted):
        values, n = table
        if not len(values):
            return np.zeros(len(wanted))
        at = np.minimum(np.searchsorted(values, wanted), len(values) - 1)
        return np.where(values[at] == wanted, n[at], 0)

    grams = np.unique(keys(train, order), return_counts=True)
    hits = counts(grams, keys(seq, order))
    if order == 1:
        context = np.full(len(hits), len(train))
    else:
        context = counts(np.unique(keys(train[:len(train) - 1], order - 1), return_counts=True),
                         keys(seq[:len(seq) - 1], order - 1))
    p = (hits + 1.0) / (context + float(vocab_size))
    return float(-np.mean(np.log2(p)))


class TextTask(Task):
    """Predict the next character of a text.

    Parameters
    ----------
    text : str
        The whole text.
    name : str
    source : str, optional
        Where the text came from (a path), for messages and ``describe``.
    level : {'char'}
        The unit of prediction.
    seq_len : int
        T: the length of a training window and of the fixed validation/test windows.
    validation, test : int or float
        Sizes of the last two parts, as counts of characters or shares of the text.

    Attributes
    ----------
    vocabulary : list of str
        V symbols: ``UNKNOWN`` at 0, then the training part's characters by code point.
    ids : np.ndarray of int64
        The whole text as vocabulary indices.
    parts : dict of slice
        'train', 'validation', 'test', into ``ids``.
    unknown : dict
        Per part, how many characters fell outside the vocabulary, and which ones.

    Shapes
    ------
    batch: x (T, B) int64, y (T, B) int64 (the next characters), mask (T,) all ones.
    validation_set / test_set: x (T, n) int64, y (T, n), mask (T,), n consecutive windows.
    """

    kind = "text"
    loss = "cross_entropy"
    metric = "bpc"

    def __init__(self, text, name="text", source=None, level="char", seq_len=100, validation=0.05,
                 test=0.05, seed=0):
        self.name, self.source = name, source or name
        where = self.source
        if level != "char":
            raise ValueError(f"task {name!r}: level must be 'char', got {level!r}")
        if isinstance(seq_len, bool) or int(seq_len) != seq_len or seq_len < 1:
            raise ValueError(f"task {name!r}: seq_len must be a positive integer, got {seq_len!r}")
        if not text:
            raise ValueError(f"{where}: the text is empty")
        self.level, self.seq_len, self.seed = level, int(seq_len), int(seed)
        n = len(text)
        self.parts = dict(zip(("train", "validation", "test"), chronological_split(n, validation, test)))
        for part, s in self.parts.items():
            if s.stop == s.start:
                raise ValueError(f"{where}: {n} characters leave the {part} part empty; give a "
                                 f"longer text or other validation/test sizes")
        n_train = self.parts["train"].stop
        if n_train < self.seq_len + 1:
            raise ValueError(f"{where}: the training part has {n_train} characters, fewer than "
                             f"seq_len + 1 = {self.seq_len + 1}; shorten --seq-len or give a longer text")
        codes = _codepoints(text)
        alphabet = np.unique(codes[:n_train])
        self.vocabulary = [UNKNOWN] + [chr(c) for c in alphabet]
        at = np.clip(np.searchsorted(alphabet, codes), 0, len(alphabet) - 1)
        known = alphabet[at] == codes
        self.ids = np.where(known, at + 1, 0).astype(np.int64)
        self.unknown = {}
        for part in ("validation", "test"):
            s = self.parts[part]
            missing = codes[s][~known[s]]
            self.unknown[part] = {"count": int(missing.size),
                                  "characters": "".join(chr(c) for c in np.unique(missing))}
        self.input_size = self.output_size = len(self.vocabulary)
        self.validation_size = self.parts["validation"].stop - self.parts["validation"].start
        self.test_size = self.parts["test"].stop - self.parts["test"].start
        self.description = f"next character of {Path(self.source).name}, bits per character"
        self._index = {c: i for i, c in enumerate(self.vocabulary) if i}
        self._fixed = {}

    # --- text <-> indices ---------------------------------------------------------------------
    def encode(self, s, what="the text"):
        """``s`` as vocabulary indices; a ValueError names the first character outside it."""
        out = np.empty(len(s), dtype=np.int64)
        for k, c in enumerate(s):
            if c not in self._index:
                raise ValueError(f"the character {c!r} at position {k} of {what} is not in the "
                                 f"vocabulary of {self.source}, which has {len(self.vocabulary) - 1} "
                                 f"characters: {''.join(self.vocabulary[1:])!r}")
            out[k] = self._index[c]
        return out

    def decode(self, ids):
        """Indices back to text (the unknown symbol as ``UNKNOWN``)."""
        return "".join(self.vocabulary[i] for i in np.asarray(ids).reshape(-1))

    # --- data ---------------------------------------------------------------------------------
    def _generate(self, n, rng):
        T = self.seq_len
        starts = rng.integers(0, self.parts["train"].stop - T, size=n)
        return self._windows(starts, T)

    def _windows(self, starts, T):
        idx = starts[None, :] + np.arange(T)[:, None]             # (T, n)
        return self.ids[idx], self.ids[idx + 1], np.ones(T, dtype=np.float32)

    def _fixed_set(self, part, stream, size):
        if part not in self._fixed:
            s = self.parts[part]
            # the first window's first input is the character before the part: every character
            # of the part is a target once (but for a remainder shorter than a window)
            T = min(self.seq_len, s.stop - s.start)
            starts = np.arange(s.start - 1, s.stop - T, T)
            self._fixed[part] = self._windows(starts, T)
        return self._fixed[part]

    def stream(self, part):
        """One part as one sequence ``(x, y, mask)``: x its characters shifted back by one (the
        first input is the character before the part), y every character of the part.

        Shapes: x (N,) int64, y (N,) int64, mask (N,) ones, N the part's length.
        """
        s = self.parts[part]
        start = max(s.start - 1, 0)
        x = self.ids[start:s.stop - 1]
        y = self.ids[start + 1:s.stop]
        return x, y, np.ones(len(x), dtype=np.float32)

    # --- scoring ------------------------------------------------------------------------------
    def score(self, pred, y, mask):
        """Bits per character of logits ``pred`` (T, B, V) against ``y`` (T, B) where ``mask``."""
        return super().score(pred, y, mask) / math.log(2)

    def baselines(self):
        """``{name: bpc}`` of add-one unigram, bigram and trigram models on the test part."""
        if "baselines" not in self._fixed:
            train, s = self.ids[self.parts["train"]], self.parts["test"]
            self._fixed["baselines"] = {
                name: ngram_bits(train, self.ids[s], self.ids[s.start - 2:s.start], order,
                                 len(self.vocabulary))
                for order, name in ((1, "unigram"), (2, "bigram"), (3, "trigram"))}
        return dict(self._fixed["baselines"])

    def sizes(self):
        """Characters in each part, and the vocabulary's size."""
        out = {k: s.stop - s.start for k, s in self.parts.items()}
        out["vocabulary"] = len(self.vocabulary)
        return out

    def describe(self):
        d = super().describe()
        d.update(source=self.source, level=self.level, unknown=self.unknown)
        return d


def text(path, level="char", seq_len=100, validation=0.05, test=0.05, name=None):
    """A character-level language-modelling task from any UTF-8 text file.

    Parameters
    ----------
    path : str or os.PathLike
    level : {'char'}
    seq_len : int
        T.
    validation, test : int or float
        Counts of characters or shares of the text (5% each by default); the training part is
        the rest, at the start.
    name : str, optional
        Defaults to the file's stem.

    Returns
    -------
    TextTask

    Raises
    ------
    ValueError
        A binary, non-UTF-8, empty or too short file, naming the file (and the offset).
    """
    return TextTask(read_text(path), name=name or Path(path).stem, source=os.fspath(path),
                    level=level, seq_len=seq_len, validation=validation, test=test)


def shakespeare(seq_len=100, validation=0.05, test=0.05):
    """The works of Shakespeare as used by char-rnn (``data/tinyshakespeare.txt``, 1.1 MB)."""
    from bptt.data.tasks.forecasting import DATA_DIR      # the shipped data, installed or in a checkout

    with importlib.resources.as_file(DATA_DIR / "tinyshakespeare.txt") as path:
        return text(path, seq_len=seq_len, validation=validation, test=test, name="shakespeare")
