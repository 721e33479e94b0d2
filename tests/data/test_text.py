"""The text task: reading, vocabulary, splits, bits per character, n-gram baselines, the language
model, sampling, and the errors a bad file or prime gives."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

import bptt
from bptt.data import tasks
from bptt.cli import main
from bptt.data.tasks.text import UNKNOWN, TextTask, ngram_bits


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def write(tmp_path, content, name="corpus.txt"):
    path = tmp_path / name
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


# -- reading and errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"abc\x00def", "a binary file, not text (a NUL byte at offset 3)"),
    ("héllo".encode("latin-1") + b" world", "not UTF-8 text: byte 0xe9 at offset 1"),
])
def test_bad_files_name_the_file_and_offset(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(ValueError, match=f"{path}: {message}".replace("(", r"\(").replace(")", r"\)")):
        tasks.text(path)
    result = invoke("train", "--task", "text", "--data", path, "--no-progress")
    assert result.exit_code == 2 and message in result.output and str(path) in result.output


def test_too_short_for_the_streams_is_a_usage_error(tmp_path):
    path = write(tmp_path, "abcdefghij" * 10)          # 90 training characters
    result = invoke("train", "--task", "text", "--data", path, "--seq-len", "10", "--batch", "9",
                    "--stateful", "--no-progress")
    assert result.exit_code == 2
    assert (f"{path}: the training part has 90 characters, fewer than batch x (seq_len + 1) = 9 x 11 "
            f"= 99 for 9 streams" in result.output)
    short = invoke("train", "--task", "text", "--data", path, "--seq-len", "95", "--no-progress")
    assert short.exit_code == 2 and "fewer than seq_len + 1 = 96" in short.output


def test_text_task_needs_data():
    result = invoke("train", "--task", "text", "--no-progress")
    assert result.exit_code == 2 and "--task text reads a UTF-8 text file: give it with --data" in result.output


# -- vocabulary, splits, windows -----------------------------------------------------------------------
def test_vocabulary_from_the_training_part_and_unknowns_counted():
    text = "ab" * 45 + "abcxyz" + "c" * 4        # 100 characters: 90 / 5 / 5
    task = TextTask(text, seq_len=4)
    assert {k: (s.start, s.stop) for k, s in task.parts.items()} == {
        "train": (0, 90), "validation": (90, 95), "test": (95, 100)}
    assert task.vocabulary == [UNKNOWN, "a", "b"] and task.input_size == task.output_size == 3
    assert task.unknown == {"validation": {"count": 3, "characters": "cxy"},
                            "test": {"count": 5, "characters": "cz"}}
    assert task.decode(task.ids[88:]) == "abab" + UNKNOWN * 8
    assert task.encode("ba").tolist() == [2, 1]


def test_windows_pair_each_character_with_the_next():
    text = "".join(chr(ord("a") + i % 26) for i in range(400))
    task = TextTask(text, seq_len=7)
    x, y, mask = task.batch(5, np.random.default_rng(0))
    assert x.shape == y.shape == (7, 5) and x.dtype == np.int64 and mask.tolist() == [1.0] * 7
    np.testing.assert_array_equal(y[:-1], x[1:])
    xs, ys, _ = task.validation_set()
    s = task.parts["validation"]
    # consecutive windows: every character of the part is a target once (20 = 2 x 7 + 6 dropped)
    assert xs.shape == (7, 2)
    np.testing.assert_array_equal(ys.T.reshape(-1), task.ids[s.start:s.start + 14])
    assert xs[0, 0] == task.ids[s.start - 1]
    sx, sy, smask = task.stream("test")
    np.testing.assert_array_equal(sy, task.ids[task.parts["test"]])
    np.testing.assert_array_equal(sx, task.ids[task.parts["test"].start - 1:-1])


def test_score_is_bits_per_character():
    task = TextTask("abcd" * 30, seq_len=4)
    V = task.output_size
    y = np.array([[1, 2], [3, 4]])
    # uniform logits: log2 V bits for every character
    assert task.score(np.zeros((2, 2, V)), y, np.ones(2)) == pytest.approx(math.log2(V), rel=1e-12)
    logits = np.full((2, 2, V), -30.0)
    np.put_along_axis(logits, y[..., None], 30.0, axis=-1)
    assert task.score(logits, y, np.ones(2)) < 1e-20


# -- n-gram baselines ----------------------------------------------------------------------------------
def test_ngram_bits_by_hand():
    train = np.array([0, 1, 1, 0, 1])   # V = 3; unigram counts 2, 3, 0 of 5
    scored = np.array([1, 2])
    unigram = -(math.log2(4 / 8) + math.log2(1 / 8)) / 2
    assert ngram_bits(train, scored, np.array([]), 1, 3) == pytest.approx(unigram, rel=1e-12)
    # bigrams 01, 11, 10, 01: P(1 | 0) = (2 + 1) / (2 + 3), P(2 | 1) = (0 + 1) / (2 + 3)
    bigram = -(math.log2(3 / 5) + math.log2(1 / 5)) / 2
    assert ngram_bits(train, scored, np.array([0]), 2, 3) == pytest.approx(bigram, rel=1e-12)
    # trigrams 011, 110, 101, contexts 01, 11, 10 once each: P(1 | 1 0) = (1 + 1) / (1 + 3),
    # P(2 | 0 1) = (0 + 1) / (1 + 3)
    trigram = -(math.log2(2 / 4) + math.log2(1 / 4)) / 2
    assert ngram_bits(train, scored, np.array([1, 0]), 3, 3) == pytest.approx(trigram, rel=1e-12)
    with pytest.raises(ValueError, match="an order-3 model needs 2 symbols of history, got 1"):
        ngram_bits(train, scored, np.array([0]), 3, 3)


def test_baselines_score_the_test_part_and_context_helps():
    rng = np.random.default_rng(0)
    # a text with strong local structure: each word repeated, so a trigram knows much more
    text = " ".join(rng.choice(["alpha", "beta", "gamma", "delta"], size=600))
    task = TextTask(text, seq_len=10)
    base = task.baselines()
    assert list(base) == ["unigram", "bigram", "trigram"]
    assert base["unigram"] > base["bigram"] > base["trigram"] > 0
    s = task.parts["test"]
    assert base["bigram"] == ngram_bits(task.ids[task.parts["train"]], task.ids[s],
                                        task.ids[s.start - 1:s.start], 2, task.output_size)


def test_shakespeare_is_shipped_and_registered():
    task = tasks.get("shakespeare")
    sizes = task.sizes()
    assert sizes["train"] + sizes["validation"] + sizes["test"] == 1115394
    assert sizes["vocabulary"] == 66 and task.unknown["test"]["count"] == 0
    assert task.decode(task.ids[:14]) == "First Citizen:"
    assert "shakespeare" in tasks.names()


# -- the language model, training and sampling --------------------------------------------------------
def test_language_model_step_equals_forward_and_diagnostics_take_tokens():
    model = bptt.nn.LanguageModel("gru", 11, 5, 8, num_layers=2, dtype=np.float64,
                                  rng=np.random.default_rng(0))
    assert [n for n, _ in model.named_parameters()][-1] == "embedding.weight"
    x = np.random.default_rng(1).integers(0, 11, size=(6, 3))
    y, state = model(x)
    assert y.shape == (6, 3, 11)
    s = model.initial_state(3)
    for t in range(6):
        y_t, s = model.step(x[t], s)
        np.testing.assert_allclose(y_t.data, y.data[t], rtol=1e-10, atol=1e-12)
    norms = bptt.diagnostics.hidden_grad_norms(model, x, x, bptt.nn.cross_entropy)
    assert norms.shape == (2, 6) and (norms > 0).all()


def test_text_training_and_sampling(tmp_path):
    rng = np.random.default_rng(0)
    path = write(tmp_path, " ".join(rng.choice(["to be", "or not", "that is"], size=500)))
    out = tmp_path / "run"
    result = invoke("train", "--task", "text", "--data", path, "--stateful", "--seq-len", "20",
                    "--batch", "4", "--hidden", "16", "--epochs", "1", "--val-every", "10",
                    "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "corpus T=20 lstm: test bpc" in result.output and "trigram" in result.output
    stored = json.loads((out / "result.json").read_text())
    assert stored["perplexity"] == pytest.approx(2 ** stored["test"], rel=1e-12)
    # evaluate re-scores the test part as the run did: one stream, the state carried
    assert json.loads(invoke("evaluate", out, "--json").output)["test"] == stored["test"]
    a = invoke("sample", out, "--length", "40", "--prime", "to ", "--seed", "3")
    b = invoke("sample", out, "--length", "40", "--prime", "to ", "--seed", "3")
    assert a.exit_code == 0 and a.output == b.output
    assert a.output.startswith("to ") and len(a.output) == 3 + 40 + 1
    greedy = [invoke("sample", out, "--length", "30", "--temperature", "0", "--seed", s).output
              for s in (0, 1)]
    assert greedy[0] == greedy[1]          # no draws: the seed changes nothing
    bad = invoke("sample", out, "--prime", "toQ")
    assert bad.exit_code == 2
    assert "the character 'Q' at position 2 of the prime is not in the vocabulary" in bad.output


def test_sample_needs_a_text_run(tmp_path):
    out = tmp_path / "run"
    assert invoke("train", "--task", "adding", "--seq-len", "5", "--hidden", "4", "--batch", "4",
                  "--steps", "1", "--out", out, "--no-progress").exit_code == 0
    result = invoke("sample", out)
    assert result.exit_code == 2 and "is a run of task 'adding'; sampling needs a text task" in result.output
