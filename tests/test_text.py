"""The text_lm task: corpus reading, the LLM's own tokenizer and embeddings (offline), windows and
next-token labels, perplexity, and one-line errors for a bad corpus."""

import math

import pytest
import torch

from mamba4net.core.errors import DataError
from mamba4net.plugins.text.config import TextLMParams
from mamba4net.plugins.text.corpus import read_corpus
from mamba4net.plugins.text.modules import LMHead, TokenEmbedding, Unigram
from mamba4net.plugins.text.task import TextLMTask, TokenWindows


def test_windows_hold_next_token_labels():
    w = TokenWindows(torch.arange(20), seq_len=4)
    assert len(w) == 4  # (20 - 1) // 4 whole windows
    b = w.batch(torch.tensor([0, 3]))
    assert b["input_ids"].tolist() == [[0, 1, 2, 3], [12, 13, 14, 15]]
    assert b["labels"].tolist() == [[1, 2, 3, 4], [13, 14, 15, 16]]


def test_corpus_sources_and_errors(tmp_path):
    text, source = read_corpus(None)
    assert len(text) > 100_000 and "pydoc" in source
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    assert read_corpus(str(tmp_path))[0] == "first\n\nsecond"
    with pytest.raises(DataError, match=r"missing: no such corpus file or folder \(task\.corpus\)"):
        read_corpus(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty: no \.txt files"):
        read_corpus(str(empty))
    (tmp_path / "c.txt").write_bytes(b"\xff\xfe bad")
    with pytest.raises(DataError, match=r"c\.txt: not UTF-8 text"):
        read_corpus(str(tmp_path))


def test_task_on_a_small_corpus_with_the_teachers_tokenizer(tmp_path):
    (tmp_path / "t.txt").write_text("The quick brown fox jumps over the lazy dog. " * 200)
    task = TextLMTask(TextLMParams(corpus=str(tmp_path), seq_len=16, valid_fraction=0.1, test_fraction=0.1))
    assert task.vocab_size == 49152 and len(task.data("train")) > len(task.data("valid")) > 0
    emb_in, emb_out = task.embeddings
    assert emb_in.shape == (49152, 576)
    enc, head = TokenEmbedding(emb_in, 576, freeze=True), LMHead(emb_out, 576, freeze=True)
    batch = task.data("test").batch(torch.arange(2))
    logits = head(enc(batch), batch)
    assert logits.shape == (2, 16, 49152) and not enc.embed.weight.requires_grad
    narrow = TokenEmbedding(emb_in, 64, freeze=True)
    assert narrow(batch).shape == (2, 16, 64)
    uni = Unigram()
    uni.fit(task)
    scores = task.evaluate(uni, "test")
    assert scores["n_tokens"] == len(task.data("test")) * 16 and math.isclose(scores["perplexity"], math.exp(scores["nll"]))
    assert 1 < scores["perplexity"] < 49152


def test_too_small_a_corpus_is_named(tmp_path):
    (tmp_path / "t.txt").write_text("tiny")
    with pytest.raises(DataError, match=r"leave no window of 16 tokens for"):
        TextLMTask(TextLMParams(corpus=str(tmp_path), seq_len=16))
