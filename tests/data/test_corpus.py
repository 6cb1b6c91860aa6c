"""Datasets: the embedded corpus, local files, the split, reference losses."""

import math

import numpy as np
import pytest
import torch

from harness.config.data import DataConfig
from harness.data import load_dataset, reference_losses
from harness.errors import AblateError


def test_pydoc_corpus_records_its_hash_and_python_version():
    import platform

    data = load_dataset(DataConfig())
    assert data.metadata["python_version"] == platform.python_version()
    assert len(data.metadata["sha256"]) == 64
    assert data.metadata["train_tokens"] > 300_000 and data.metadata["val_tokens"] > 30_000


def _split_text(data, split: str) -> str:
    return data.tokenizer.decode(data.tokens[split].head(len(data.tokens[split])))


def test_split_is_deterministic_and_disjoint():
    first, second = load_dataset(DataConfig()), load_dataset(DataConfig(val_fraction=0.1))
    assert np.array_equal(first.tokens["val"].shards[0], second.tokens["val"].shards[0])
    train, val = _split_text(first, "train"), _split_text(first, "val")
    assert val == _split_text(second, "val") and len(val) == pytest.approx(0.1 * (len(train) + len(val)), abs=1)
    from pydoc_data.topics import topics

    assert train + val == "\n\n".join(topics[key] for key in sorted(topics))


def test_token_arrays_are_cached_memory_maps():
    data = load_dataset(DataConfig())
    assert all(isinstance(shard, np.memmap) for shard in data.tokens["train"].shards)


def test_batches_are_shifted_windows_and_reproducible():
    data = load_dataset(DataConfig())
    x1, y1 = data.train_batch(4, 32, torch.Generator().manual_seed(3))
    x2, y2 = data.train_batch(4, 32, torch.Generator().manual_seed(3))
    assert torch.equal(x1, x2) and x1.shape == (4, 32)
    assert torch.equal(x1[:, 1:], y1[:, :-1])
    assert all(torch.equal(a[0], b[0]) for a, b in zip(data.eval_batches(4, 32), data.eval_batches(4, 32)))


@pytest.mark.parametrize("dataset", ["pydoc", {"name": "random", "vocab_size": 300}])
def test_validation_text_is_the_same_whatever_the_batch_size(dataset):
    """An arm (or a tuning trial) with another batch size is judged on the same windows."""
    data = load_dataset(DataConfig(dataset=dataset, val_windows=24))
    small, large = data.eval_batches(4, 32), data.eval_batches(16, 32)
    assert [len(x) for x, _ in small] == [4] * 6 and [len(x) for x, _ in large] == [16, 8]
    assert torch.equal(torch.cat([x for x, _ in small]), torch.cat([x for x, _ in large]))
    assert torch.equal(torch.cat([y for _, y in small]), torch.cat([y for _, y in large]))


def test_text_dataset_reads_a_glob(tmp_path):
    (tmp_path / "a.txt").write_text("hello there " * 200)
    (tmp_path / "b.txt").write_text("general kenobi " * 200)
    data = load_dataset(DataConfig(dataset={"name": "text", "path": str(tmp_path / "*.txt")}))
    assert data.metadata["files"] == 2
    assert _split_text(data, "train").startswith("hello there")


def test_missing_text_file_is_a_user_error(tmp_path):
    with pytest.raises(AblateError, match="no file matches"):
        load_dataset(DataConfig(dataset={"name": "text", "path": str(tmp_path / "missing.txt")}))


def test_url_dataset_offline_names_the_cache_path(monkeypatch, tmp_path):
    monkeypatch.setenv("ABLATE_CACHE_DIR", str(tmp_path))
    cfg = DataConfig(dataset={"name": "url", "url": "http://127.0.0.1:9/corpus.txt", "sha256": "0" * 64})
    with pytest.raises(AblateError) as err:
        load_dataset(cfg)
    assert "put the file at" in str(err.value) and str(tmp_path) in str(err.value)
    # a file put there by hand is checked against its sha256
    path = str(err.value).split("put the file at ")[1]
    open(path, "w").write("some text " * 100)
    with pytest.raises(AblateError, match="expected 0000"):
        load_dataset(cfg)


def test_reference_losses_on_a_hand_computable_sequence():
    # train: 0 1 0 1 ...; add-one smoothing over a vocabulary of 2
    train = np.array([0, 1] * 50)
    losses = reference_losses(train, np.array([0, 1, 0, 1]), vocab_size=2)
    assert losses["unigram_loss"] == pytest.approx(math.log(2))
    # 0 is followed by 1 all 50 times, 1 by 0 in 49 of 49: val pairs 0-1, 1-0, 0-1
    expected = -(2 * math.log(51 / 52) + math.log(50 / 51)) / 3
    assert losses["bigram_loss"] == pytest.approx(expected)


def test_reference_losses_of_pydoc_order_as_expected():
    data = load_dataset(DataConfig())
    losses = data.reference_losses()
    assert losses["bigram_loss"] < losses["unigram_loss"] < math.log(data.vocab_size)


def _nanogpt_char_bin(path, text="hello world, this is a character-level corpus\n" * 50):
    """nanoGPT's shakespeare_char prepare.py: ids < 128 as uint16, which is valid UTF-8 (every
    other byte NUL)."""
    vocabulary = sorted(set(text))
    np.array([vocabulary.index(c) for c in text], dtype=np.uint16).tofile(path)


@pytest.mark.parametrize("make", [
    _nanogpt_char_bin,
    lambda path: path.write_bytes(np.arange(5000, dtype=np.uint32).tobytes()),  # ids of a 32-bit tokenizer
    lambda path: path.write_bytes(b"plain text " * 400 + b"\x00" * 20),  # text with a NUL-padded tail
    lambda path: path.write_bytes(b"\x1b[0m\x07" * 2000),  # a terminal log's escapes and bells
], ids=["nanogpt-uint16-char-bin", "uint32-ids", "nul-padded-text", "control-codes"])
def test_a_binary_file_given_as_text_is_refused_naming_it(tmp_path, make):
    make(tmp_path / "train.bin")
    with pytest.raises(AblateError, match=r"train\.bin is binary, not text"):
        load_dataset(DataConfig(dataset={"name": "text", "path": str(tmp_path / "train.bin")}))


def test_text_with_tabs_form_feeds_and_a_stray_control_byte_is_still_text(tmp_path):
    (tmp_path / "corpus.txt").write_text("col\tcol\r\n\fpage two\x0b\n" * 500 + "one stray \x01 byte\n")
    data = load_dataset(DataConfig(dataset={"name": "text", "path": str(tmp_path / "corpus.txt")}, tokenizer="char",
                                   val_windows=2))
    assert data.vocab_size > 10
