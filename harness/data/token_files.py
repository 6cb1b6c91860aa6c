"""Corpora already tokenized, memory-mapped where they lie: nothing is read whole or copied.

    data: {dataset: nanogpt, path: data/openwebtext, tokenizer: tiktoken:gpt2}
    data: {dataset: llmc, train: "fineweb10B/fineweb_train_*.bin", val: "fineweb10B/fineweb_val_*.bin",
           tokenizer: tiktoken:gpt2}
    data: {dataset: npy, train: tokens/train.npy, val: tokens/val.npy, tokenizer: tiktoken:gpt2}

- `nanogpt`: nanoGPT's `prepare.py` output, train.bin and val.bin (uint16, or uint32 for
  vocabularies over 65,536 ids), and meta.pkl where the vocabulary is characters
  (data/shakespeare_char): its characters are then the tokenizer.
- `llmc`: llm.c's and modded-nanogpt's shards (dev/data/fineweb.py): a header of 256 int32
  (magic 20240520, version 1, token count), then uint16 GPT-2 tokens; globs of train and
  val shards, taken in name order.
- `npy`: one-dimensional integer numpy arrays (np.save).

A relative path or glob is taken under $ABLATE_DATA_DIR when it is set (else the current
directory), so a study names its corpus alike on every machine. Each ships its validation split, which is used as is (`val_fraction` does not apply). The
tokens carry no vocabulary, so the study declares the tokenizer they were made with
(`tiktoken:gpt2`, `hf:tokenizer.json`, or nanoGPT's meta.pkl); it decodes samples and is
saved in checkpoints, and a token id outside its vocabulary is refused.

A file is scanned once (its sha256, token count and id range, in chunks of bounded size)
and the scan is cached under its path, size and modification time: a re-run, `--dry-run` or
a worker reads none of the tokens again. `ABLATE_VERIFY_DATA=1` scans again.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from harness.data.cache import content_hash, data_path, data_root
from harness.data.tokenizers import Tokenizer, char_tokenizer, tiktoken_tokenizer, tokenizer_file
from harness.data.windows import TokenWindows
from harness.environment import allow_open_files
from harness.errors import AblateError
from harness.files import write_text
from harness.redaction import error_line
from harness.registry import Options, register

LLMC_MAGIC, LLMC_VERSION, LLMC_HEADER_INTS = 20240520, 1, 256
SCAN_CHUNK = 1 << 24  # tokens read at a time while scanning a file


class TokenFiles(TokenWindows):
    """Train and validation shards of token ids, and the tokenizer that decodes them."""

    def __init__(self, dataset: str, train: list[Path], val: list[Path], load, tokenizer: Tokenizer, val_windows: int,
                 cache: Path):
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.vocab_size
        scans = {}
        shards = {}
        for split, paths in (("train", train), ("val", val)):
            shards[split] = [load(path) for path in paths]
            for path, tokens in zip(paths, shards[split]):
                scans[path] = _scan(path, tokens, cache)
                if scans[path]["min"] < 0:
                    raise AblateError(f"dataset '{dataset}': {path} holds negative token ids ({scans[path]['min']})")
                if scans[path]["max"] >= self.vocab_size:
                    raise AblateError(f"dataset '{dataset}': {path} holds token id {scans[path]['max']}, outside the "
                                      f"vocabulary of tokenizer {tokenizer.kind} ({self.vocab_size} ids); declare the "
                                      "tokenizer the tokens were made with (data.tokenizer)")
        super().__init__(shards["train"], shards["val"], val_windows)
        fingerprint = hashlib.sha256("".join(f"{p.name}:{scans[p]['sha256']}\n" for p in train + val).encode())
        self.metadata = {"source": dataset, "files": len(train) + len(val), "path": str(train[0].parent),
                         "sha256": fingerprint.hexdigest(), "train_tokens": len(self.tokens["train"]),
                         "val_tokens": len(self.tokens["val"])}
        self.references = cache / "references" / f"{content_hash(fingerprint.hexdigest(), tokenizer.fingerprint())}.json"


def _scan(path: Path, tokens: np.ndarray, cache: Path) -> dict:
    """sha256 of the file, its token count, smallest and largest id: cached under path, size,
    mtime and how the tokens are read (their type and count: the same bytes read as uint32
    hold other ids)."""
    stat = path.stat()
    key = content_hash(str(path.resolve()), str(stat.st_size), str(stat.st_mtime_ns), tokens.dtype.str, str(len(tokens)))
    record = cache / "token-files" / f"{key}.json"
    if record.exists() and os.environ.get("ABLATE_VERIFY_DATA") != "1":
        try:
            scan = json.loads(record.read_text(encoding="utf-8"))
            if isinstance(scan["sha256"], str) and all(type(scan[k]) is int for k in ("tokens", "min", "max")):
                return scan
        except (OSError, ValueError, KeyError, TypeError):
            pass  # damaged: scanned again
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 24):
            digest.update(block)
    chunks = [tokens[i: i + SCAN_CHUNK] for i in range(0, len(tokens), SCAN_CHUNK)]
    scan = {"sha256": digest.hexdigest(), "tokens": len(tokens), "min": min((int(c.min()) for c in chunks), default=0),
            "max": max((int(c.max()) for c in chunks), default=0)}
    write_text(record, json.dumps(scan))
    return scan


def _declared_tokenizer(cfg, dataset: str, vocabulary: Path | None = None) -> Tokenizer:
    """The tokenizer the study declares for tokens that carry none: tiktoken, a tokenizer.json,
    or the characters of a nanoGPT meta.pkl."""
    if cfg.tokenizer.name == "tiktoken":
        return tiktoken_tokenizer(cfg.tokenizer.encoding)
    if cfg.tokenizer.name == "hf":
        return tokenizer_file(cfg.tokenizer.path)
    if cfg.tokenizer.name == "char" and vocabulary is not None and vocabulary.exists():
        return char_tokenizer(_meta_characters(vocabulary))
    raise AblateError(f"dataset '{dataset}': its tokens carry no vocabulary, so data.tokenizer must name the one "
                      f"they were made with (tiktoken:gpt2 for GPT-2 tokens, or hf:tokenizer.json); '{cfg.tokenizer.name}' "
                      "would need the text" + (", and there is no meta.pkl beside them" if vocabulary else ""))


class _PlainData(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numbers only: a meta.pkl that names any class or
    function (code run on load) is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"meta.pkl refers to {module}.{name}; it may only hold plain data")


def _meta_characters(path: Path) -> str:
    """The characters of a nanoGPT meta.pkl ({vocab_size, itos, stoi}), in id order."""
    try:
        with open(path, "rb") as file:
            meta = _PlainData(file).load()
        itos = meta["itos"]
        characters = [itos[i] for i in range(meta["vocab_size"])]
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, IndexError, TypeError, ValueError,
            MemoryError) as err:
        raise AblateError(f"dataset 'nanogpt': {path} is not nanoGPT's meta.pkl of a character vocabulary "
                          f"({type(err).__name__}: {error_line(err, 200)})") from None
    # a lone surrogate (half of a UTF-16 pair) is no character: text made of it cannot be written
    if not all(isinstance(c, str) and len(c) == 1 and not "\ud800" <= c <= "\udfff" for c in characters) \
            or len(set(characters)) != len(characters):
        raise AblateError(f"dataset 'nanogpt': {path} is not a character vocabulary: its itos must map each id below "
                          "vocab_size to one character, no character twice")
    return "".join(characters)


def _files(dataset: str, pattern: str, what: str) -> list[Path]:
    paths = [Path(p) for p in sorted(glob.glob(data_path(pattern), recursive=True))]
    if not paths:
        raise AblateError(f"dataset '{dataset}': no {what} file matches '{pattern}' (relative to {data_root()}; "
                          "set ABLATE_DATA_DIR to the folder that holds your corpora)")
    for path in paths:
        _regular_file(dataset, path)
    if not allow_open_files(len(paths)):  # each memory-mapped shard holds its file open
        raise AblateError(f"dataset '{dataset}': its {len(paths)} {what} files would be open at once, more than this "
                          "system's limit of open files allows; raise it (ulimit -n) or join the shards into fewer files")
    return paths


def _regular_file(dataset: str, path: Path) -> None:
    """A file to map: not a folder, a pipe or a device (which would never end)."""
    if not path.is_file():
        raise AblateError(f"dataset '{dataset}': {path} " + ("is not a regular file" if path.exists() or path.is_symlink()
                                                             else "does not exist"))


def _memmap(dataset: str, dtype, offset: int = 0):
    def load(path: Path) -> np.ndarray:
        size = path.stat().st_size - offset
        if size < 0 or size % np.dtype(dtype).itemsize:
            raise AblateError(f"dataset '{dataset}': {path} is {path.stat().st_size} bytes, not a whole number of "
                              f"{np.dtype(dtype).name} tokens" + (f" after a {offset}-byte header" if offset else ""))
        return np.memmap(path, dtype=dtype, mode="r", offset=offset) if size else np.zeros(0, dtype)
    return load


class NanoGPTOptions(Options):
    path: str = Field(description="the folder holding train.bin and val.bin (and meta.pkl for characters)")
    dtype: Literal["uint16", "uint32"] = Field("uint16", description="the token type prepare.py wrote")


@register("dataset", "nanogpt", NanoGPTOptions)
def nanogpt_bins(cfg, options: NanoGPTOptions, cache_dir: Path) -> TokenFiles:
    """nanoGPT's train.bin and val.bin, memory-mapped."""
    folder = Path(data_path(options.path))
    train, val = folder / "train.bin", folder / "val.bin"
    if not folder.is_dir():
        raise AblateError(f"dataset 'nanogpt': {folder} is not a folder; `path` is the folder nanoGPT's prepare.py "
                          "wrote train.bin and val.bin into")
    for path in (train, val):
        _regular_file("nanogpt", path)
    tokenizer = _declared_tokenizer(cfg, "nanogpt", folder / "meta.pkl")
    return TokenFiles("nanogpt", [train], [val], _memmap("nanogpt", options.dtype), tokenizer, cfg.val_windows,
                      cache_dir)


class LLMCOptions(Options):
    train: str = Field(description="glob of the training shards, e.g. 'fineweb10B/fineweb_train_*.bin'")
    val: str = Field(description="glob of the validation shards, e.g. 'fineweb10B/fineweb_val_*.bin'")


def _llmc_shard(path: Path) -> np.ndarray:
    """The uint16 tokens of one llm.c shard, its header checked."""
    try:
        header = np.fromfile(path, dtype="<i4", count=LLMC_HEADER_INTS)
    except OSError as err:
        raise AblateError(f"dataset 'llmc': cannot read {path}: {err.strerror or err}") from None
    if len(header) < LLMC_HEADER_INTS or header[0] != LLMC_MAGIC:
        raise AblateError(f"dataset 'llmc': {path} is not an llm.c shard (no header with magic {LLMC_MAGIC})")
    if header[1] != LLMC_VERSION:
        raise AblateError(f"dataset 'llmc': {path} is version {header[1]}; version {LLMC_VERSION} (uint16 GPT-2 "
                          "tokens) is read")
    tokens = _memmap("llmc", "<u2", offset=4 * LLMC_HEADER_INTS)(path)
    if len(tokens) != header[2]:
        raise AblateError(f"dataset 'llmc': {path} holds {len(tokens)} tokens but its header says {header[2]}: "
                          "the shard is truncated or still being written")
    return tokens


@register("dataset", "llmc", LLMCOptions)
def llmc_shards(cfg, options: LLMCOptions, cache_dir: Path) -> TokenFiles:
    """llm.c / modded-nanogpt token shards (FineWeb as dev/data/fineweb.py writes it)."""
    train, val = _files("llmc", options.train, "training"), _files("llmc", options.val, "validation")
    return TokenFiles("llmc", train, val, _llmc_shard, _declared_tokenizer(cfg, "llmc"), cfg.val_windows, cache_dir)


class NumpyOptions(Options):
    train: str = Field(description="a .npy file of training token ids (one dimension, integers)")
    val: str = Field(description="a .npy file of validation token ids")


def _npy(path: Path) -> np.ndarray:
    try:
        tokens = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:  # pickled arrays are refused: loading them runs code
        reason = "it holds Python objects" if "allow_pickle" in str(err) or "objects" in str(err) else f"{type(err).__name__}: {str(err)[:200]}"
        raise AblateError(f"dataset 'npy': {path} is not a numpy array of token ids ({reason})") from None
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise AblateError(f"dataset 'npy': {path} holds a {tokens.dtype} array of shape {tokens.shape}; token ids "
                          "are one-dimensional integers")
    return tokens


@register("dataset", "npy", NumpyOptions)
def numpy_tokens(cfg, options: NumpyOptions, cache_dir: Path) -> TokenFiles:
    """Token ids saved with np.save, memory-mapped."""
    train, val = _files("npy", options.train, "training"), _files("npy", options.val, "validation")
    return TokenFiles("npy", train, val, _npy, _declared_tokenizer(cfg, "npy"), cfg.val_windows, cache_dir)
