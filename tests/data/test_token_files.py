"""Corpora already tokenized: nanoGPT's .bin files, llm.c shards, numpy arrays. Each gives the
tokens the file holds, draws windows inside its shards, trains, and refuses what it cannot read."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from harness.config.data import DataConfig
from harness.data import load_dataset
from harness.errors import AblateError
from tests import warm

TEXT = "\n\n".join(f"Section {i}: the quick brown fox jumps over the lazy dog, {i * 7} times." for i in range(2000))


def _llmc_shard(path, tokens, magic=20240520, version=1, count=None):
    """A shard as llm.c's dev/data/data_common.py write_datafile writes it."""
    header = np.zeros(256, dtype=np.int32)
    header[:3] = magic, version, len(tokens) if count is None else count
    with open(path, "wb") as file:
        file.write(header.tobytes())
        file.write(np.asarray(tokens, dtype=np.uint16).tobytes())


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    """A byte-level BPE of 300 ids saved as a Hugging Face tokenizer.json, and TEXT in its ids."""
    folder = tmp_path_factory.mktemp("bpe")
    tokenizer = HFTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json", np.array(tokenizer.encode(TEXT).ids)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, bpe):
    """The same ids in each format: nanoGPT (characters, with meta.pkl), llm.c shards and npy (BPE)."""
    folder = tmp_path_factory.mktemp("token-files")
    chars = sorted(set(TEXT))
    ids = np.array([chars.index(c) for c in TEXT], dtype=np.uint16)
    (folder / "char").mkdir()
    ids[:-3000].tofile(folder / "char" / "train.bin")
    ids[-3000:].tofile(folder / "char" / "val.bin")
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": {c: i for i, c in enumerate(chars)}}
    (folder / "char" / "meta.pkl").write_bytes(pickle.dumps(meta))
    _, bpe_ids = bpe
    (folder / "fineweb").mkdir()
    for index, part in enumerate(np.array_split(bpe_ids[:-2000], 3)):
        _llmc_shard(folder / "fineweb" / f"fineweb_train_{index:06d}.bin", part)
    _llmc_shard(folder / "fineweb" / "fineweb_val_000000.bin", bpe_ids[-2000:])
    np.save(folder / "train.npy", bpe_ids[:-2000].astype(np.int32))
    np.save(folder / "val.npy", bpe_ids[-2000:].astype(np.int64))
    return folder


def _data(corpora, bpe, name):
    tokenizer = f"hf:{bpe[0]}"
    return {"nanogpt": {"dataset": {"name": "nanogpt", "path": str(corpora / "char")}},
            "llmc": {"dataset": {"name": "llmc", "train": str(corpora / "fineweb" / "fineweb_train_*.bin"),
                                 "val": str(corpora / "fineweb" / "fineweb_val_*.bin")}, "tokenizer": tokenizer},
            "npy": {"dataset": {"name": "npy", "train": str(corpora / "train.npy"), "val": str(corpora / "val.npy")},
                    "tokenizer": tokenizer}}[name]


def _by_hand(corpora, name, split):
    """The split's ids read from its files without ablate."""
    if name == "nanogpt":
        return np.fromfile(corpora / "char" / f"{split}.bin", dtype=np.uint16)
    if name == "npy":
        return np.load(corpora / f"{split}.npy")
    shards = sorted((corpora / "fineweb").glob(f"fineweb_{split}_*.bin"))
    return np.concatenate([np.fromfile(shard, dtype=np.uint16, offset=1024) for shard in shards])


@pytest.mark.parametrize("name", ["nanogpt", "llmc", "npy"])
def test_each_format_gives_the_tokens_of_its_files_and_windows_inside_a_shard(corpora, bpe, name):
    data = load_dataset(DataConfig.model_validate(_data(corpora, bpe, name)))
    for split in ("train", "val"):
        by_hand = _by_hand(corpora, name, split)
        assert len(data.tokens[split]) == len(by_hand) == data.metadata[f"{split}_tokens"]
        assert np.array_equal(data.tokens[split].head(len(by_hand)), by_hand)
    shards = [np.asarray(shard, dtype=np.int64) for shard in data.tokens["train"].shards]
    x, y = data.train_batch(64, 32, torch.Generator().manual_seed(0))
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row in torch.cat([x, y[:, -1:]], dim=1).numpy():  # every window is a run of one shard's tokens
        assert any(np.array_equal(shard[s: s + 33], row) for shard in shards
                   for s in np.flatnonzero(shard[: len(shard) - 32] == row[0]))
    assert data.tokenizer.decode(_by_hand(corpora, name, "val")[:200].tolist()) in TEXT


@pytest.mark.parametrize("name", ["nanogpt", "llmc", "npy"])
def test_each_format_trains_and_samples(tmp_path, corpora, bpe, name):
    import yaml

    run = {"name": f"on_{name}",
           "base": {"model": {"n_layer": 1, "d_model": 32, "n_head": 2, "context_length": 32},
                    "train": {"steps": 6, "batch_size": 4, "eval_interval": 3}},
           "data": {**_data(corpora, bpe, name), "val_windows": 8}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    trained = subprocess.run([*warm.command(), "train", "run.yaml"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert "finished after 6 steps" in trained.stdout


def test_a_token_id_outside_the_vocabulary_is_refused(tmp_path, bpe):
    np.save(tmp_path / "train.npy", np.array([1, 2, 3] * 100 + [300], dtype=np.int32))
    np.save(tmp_path / "val.npy", np.array([1, 2, 3] * 100, dtype=np.int32))
    config = {"dataset": {"name": "npy", "train": str(tmp_path / "train.npy"), "val": str(tmp_path / "val.npy")},
              "tokenizer": f"hf:{bpe[0]}"}
    with pytest.raises(AblateError, match=r"train\.npy holds token id 300, outside the vocabulary .* \(300 ids\)"):
        load_dataset(DataConfig.model_validate(config))


def test_a_scan_is_reused_until_the_file_changes_or_verification_is_asked(tmp_path, bpe):
    train, val = tmp_path / "train.npy", tmp_path / "val.npy"
    np.save(train, np.arange(200, dtype=np.int32))
    np.save(val, np.arange(200, dtype=np.int32))
    config = DataConfig.model_validate({"dataset": {"name": "npy", "train": str(train), "val": str(val)},
                                        "tokenizer": f"hf:{bpe[0]}"})
    load_dataset(config)
    stat = train.stat()
    with open(train, "r+b") as file:  # an id out of range written in place: same size, same mtime
        file.seek(-4, os.SEEK_END)
        file.write(np.int32(299 + 7).tobytes())
    os.utime(train, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    load_dataset(config)  # the cached scan is trusted: the tokens are not read again
    os.environ["ABLATE_VERIFY_DATA"] = "1"
    try:
        with pytest.raises(AblateError, match="holds token id 306"):
            load_dataset(config)
    finally:
        del os.environ["ABLATE_VERIFY_DATA"]
    os.utime(train)  # touched: scanned again
    with pytest.raises(AblateError, match="holds token id 306"):
        load_dataset(config)


def test_shards_that_are_not_llmc_shards_are_refused(tmp_path, bpe):
    config = DataConfig.model_validate({"dataset": {"name": "llmc", "train": str(tmp_path / "train_*.bin"),
                                                    "val": str(tmp_path / "val_*.bin")}, "tokenizer": f"hf:{bpe[0]}"})
    _llmc_shard(tmp_path / "val_0.bin", range(100))
    for shard, message in [(dict(magic=20240801), "is not an llm.c shard"), (dict(version=2), "is version 2"),
                           (dict(count=500), "holds 100 tokens but its header says 500")]:
        _llmc_shard(tmp_path / "train_0.bin", range(100), **shard)
        with pytest.raises(AblateError, match=message):
            load_dataset(config)
    with pytest.raises(AblateError, match="no training file matches"):
        load_dataset(DataConfig.model_validate({"dataset": {"name": "llmc", "train": str(tmp_path / "none_*.bin"),
                                                            "val": str(tmp_path / "val_*.bin")},
                                                "tokenizer": f"hf:{bpe[0]}"}))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_meta_pkl_that_would_run_code_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "data" / "train.bin")
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "data" / "val.bin")
    (tmp_path / "data" / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": 1, "itos": _Exploit()}))
    with pytest.raises(AblateError, match=r"meta\.pkl refers to posix\.system; it may only hold plain data"):
        load_dataset(DataConfig.model_validate({"dataset": {"name": "nanogpt", "path": "data"}}))
    assert not (tmp_path / "pwned").exists()


def test_tokens_without_a_vocabulary_need_a_declared_tokenizer(tmp_path, bpe):
    (tmp_path / "data").mkdir()
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "data" / "train.bin")
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "data" / "val.bin")
    with pytest.raises(AblateError, match="data.tokenizer must name the one they were made with.*no meta.pkl"):
        load_dataset(DataConfig.model_validate({"dataset": {"name": "nanogpt", "path": str(tmp_path / "data")}}))
    with pytest.raises(AblateError, match="not a whole number of uint32 tokens"):
        (tmp_path / "data" / "train.bin").write_bytes(b"\0" * 202)
        load_dataset(DataConfig.model_validate({"dataset": {"name": "nanogpt", "path": str(tmp_path / "data"),
                                                            "dtype": "uint32"}, "tokenizer": f"hf:{bpe[0]}"}))


def test_the_same_file_read_as_another_type_is_scanned_again(tmp_path, bpe):
    """A scan is of the tokens as read: train.bin as uint32 holds other ids than as uint16."""
    for split in ("train", "val"):
        np.arange(1, 201, dtype=np.uint16).tofile(tmp_path / f"{split}.bin")
    as_uint16 = {"dataset": {"name": "nanogpt", "path": str(tmp_path)}, "tokenizer": f"hf:{bpe[0]}"}
    load_dataset(DataConfig.model_validate(as_uint16))
    as_uint32 = {**as_uint16, "dataset": {**as_uint16["dataset"], "dtype": "uint32"}}
    with pytest.raises(AblateError, match=r"train\.bin holds token id \d+, outside the vocabulary"):
        load_dataset(DataConfig.model_validate(as_uint32))


@pytest.mark.parametrize("meta,message", [
    ({"vocab_size": 5, "itos": list("abc")}, "IndexError"),
    ({"vocab_size": 3, "itos": {0: "ab", 1: "c", 2: "d"}}, "one character, no character twice"),
    ({"vocab_size": 2, "itos": {0: "a", 1: "a"}}, "one character, no character twice"),
    (b"\x80\x04\x8d" + (2 ** 40).to_bytes(8, "little"), "is not nanoGPT's meta.pkl"),
    ({"vocab_size": 2, "itos": {0: "a", 1: "\udc80"}}, "one character, no character twice"),  # a lone surrogate
    (b"\x80\x04P1\n.", "is not nanoGPT's meta.pkl"),  # a persistent id: an error of two lines
])
def test_a_meta_pkl_that_is_no_character_vocabulary_is_refused(tmp_path, meta, message):
    (tmp_path / "data").mkdir()
    for split in ("train", "val"):
        np.zeros(100, dtype=np.uint16).tofile(tmp_path / "data" / f"{split}.bin")
    (tmp_path / "data" / "meta.pkl").write_bytes(meta if isinstance(meta, bytes) else pickle.dumps(meta))
    with pytest.raises(AblateError, match=message) as refused:
        load_dataset(DataConfig.model_validate({"dataset": {"name": "nanogpt", "path": str(tmp_path / "data")}}))
    assert "\n" not in str(refused.value)


def test_files_that_are_no_token_arrays_are_refused_by_name(tmp_path, bpe):
    val = tmp_path / "val.npy"
    np.save(val, np.arange(100, dtype=np.int32))
    (tmp_path / "empty.npy").write_bytes(b"")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    os.mkfifo(tmp_path / "pipe.npy")  # would never end if read
    for name, message in [("empty.npy", r"empty\.npy is not a numpy array of token ids"),
                          ("objects.npy", "it holds Python objects"), ("pipe.npy", "is not a regular file")]:
        config = {"dataset": {"name": "npy", "train": str(tmp_path / name), "val": str(val)}, "tokenizer": f"hf:{bpe[0]}"}
        with pytest.raises(AblateError, match=message):
            load_dataset(DataConfig.model_validate(config))


def test_a_split_too_short_suggests_only_what_applies(tmp_path, corpora):
    """Token files ship their splits: no val_fraction to change there, unlike a text corpus."""
    short = tmp_path / "short"
    short.mkdir()
    for name in ("train.bin", "meta.pkl"):
        (short / name).write_bytes((corpora / "char" / name).read_bytes())
    np.arange(10, dtype=np.uint16).tofile(short / "val.bin")
    with pytest.raises(ValueError, match=r"the val split has 10 tokens, .*a larger corpus or a smaller context$"):
        load_dataset(DataConfig(dataset={"name": "nanogpt", "path": str(short)})).check_context(32)
    (tmp_path / "text.txt").write_text("the quick brown fox jumps over the lazy dog. " * 6)
    text = load_dataset(DataConfig(dataset={"name": "text", "path": str(tmp_path / "text.txt")}))
    with pytest.raises(ValueError, match=r"the val split has \d+ tokens, .*another val_fraction$"):
        text.check_context(32)


@pytest.mark.parametrize("hard", ["soft", "hard"])
def test_more_shards_than_the_soft_limit_of_open_files_load(tmp_path, bpe, hard):
    """Each memory-mapped shard holds its file open: a corpus of more shards than the common soft
    limit (1024; 300 here) loads, the limit raised towards the hard one; under a hard limit too
    low the message says what to do."""
    _, ids = bpe
    for index in range(400):
        _llmc_shard(tmp_path / f"train_{index:04d}.bin", ids[index * 10: index * 10 + 200])
    _llmc_shard(tmp_path / "val_0000.bin", ids[-2000:])
    child = f"""
import resource
from harness.config.data import DataConfig
from harness.data import load_dataset
from harness.errors import AblateError
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300 if {hard!r} == "hard" else hard))
try:
    data = load_dataset(DataConfig(dataset={{"name": "llmc", "train": {str(tmp_path / "train_*.bin")!r},
                        "val": {str(tmp_path / "val_*.bin")!r}}}, tokenizer="hf:{bpe[0]}"))
    print(len(data.tokens["train"].shards), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
except AblateError as err:
    print(err)
"""
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ABLATE_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    if hard == "soft":
        shards, limit = map(int, done.stdout.split())
        assert shards == 400 and limit > 300
    else:
        assert "its 400 training files would be open at once" in done.stdout and "ulimit -n" in done.stdout, done.stdout
