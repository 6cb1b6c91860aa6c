"""A text corpus tokenized once into token files in the cache, memory-mapped by every run.

    cache/tokens/<key>/train.bin, val.bin   token ids (uint16, or uint32 past 65,536 ids), as
                                            nanoGPT's prepare.py writes them
    cache/tokens/<key>/meta.json            counts, bytes and type; written last: a folder
                                            without it, or whose files do not hold what it
                                            says, is unfinished or damaged and made again

The key is the corpus's sha256, the tokenizer's fingerprint, where the split falls and how
chunks are cut, so the first run of a corpus prepares it (`ablate prepare` does it ahead) and every later
run, worker or `--dry-run` opens the files in milliseconds. Preparing reads the corpus in chunks
(harness.data.text_stream) and tokenizes them on the usable cores, a few chunks in flight: its
memory does not grow with the corpus. A byte-level BPE is trained on a bounded sample of the
training split (BPE_SAMPLE_CHARS, chunks spread evenly over it).
"""

from __future__ import annotations

import json
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from harness.config.data import DataConfig
from harness.data.cache import content_hash
from harness.data.preparing import preparing
from harness.data import text_stream
from harness.data.text_stream import TextScan, TextStream
from harness.data.tokenizers import (GPT2_PATTERN, Tokenizer, bpe_tokenizer, char_tokenizer, tiktoken_tokenizer,
                                     tokenizer_file)
from harness.data.windows import TokenWindows
from harness.environment import process_alive, usable_cores
from harness.errors import AblateError
from harness.files import write_atomically, write_text

BPE_SAMPLE_CHARS = 1 << 25  # 32 M characters of the training split train a BPE, at most
TOKENS_VERSION = "2"  # part of the key: how chunks are cut and files written


class TokenizedCorpus(TokenWindows):
    """Next-token prediction over windows of a text corpus's token files (`meta` as
    `prepared_meta` read it).

    The first (1 - val_fraction) of the corpus's characters train, the rest validate: no window
    spans both."""

    def __init__(self, folder: Path, meta: dict, tokenizer: Tokenizer, val_windows: int, metadata: dict,
                 split_by_fraction: bool = True):
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.vocab_size
        tokens = {split: _memmap(folder / f"{split}.bin", np.dtype(meta["dtype"])) for split in ("train", "val")}
        super().__init__([tokens["train"]], [tokens["val"]], val_windows, references=folder / "references.json",
                         split_by_fraction=split_by_fraction)
        self.metadata = {**metadata, "train_tokens": meta["train_tokens"], "val_tokens": meta["val_tokens"],
                         "val_bytes": meta["val_bytes"]}


def prepared_meta(folder: Path, dtype: np.dtype) -> dict | None:
    """The meta.json of a finished preparation whose token files are the ones it wrote (their
    type, sizes and modification times: the rule of the corpus files themselves); None for a
    folder unfinished, damaged, rewritten since or of another token type: prepared again."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        counts = [meta[f"{split}_{what}"] for split in ("train", "val") for what in ("tokens", "bytes")]
        if meta["dtype"] != dtype.str or not all(type(count) is int and count >= 0 for count in counts):
            return None
        if meta["written"] != _token_file_stats(folder) or any(
                meta["written"][split][0] != meta[f"{split}_tokens"] * dtype.itemsize for split in ("train", "val")):
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _token_file_stats(folder: Path) -> dict[str, list[int]]:
    """[size, modification time in ns] of each split's token file."""
    return {split: [(stat := (folder / f"{split}.bin").stat()).st_size, stat.st_mtime_ns] for split in ("train", "val")}


def _memmap(path: Path, dtype: np.dtype) -> np.ndarray:
    if path.stat().st_size == 0:  # numpy cannot map an empty file
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def tokenized_corpus(stream: TextStream, cfg: DataConfig, tokenizer: Tokenizer | None, cache: Path,
                     metadata: dict) -> TokenizedCorpus:
    """The corpus of `stream` tokenized (by `tokenizer`, else the one `cfg` names), prepared into
    the cache on first use. A corpus whose metadata names an `expected_sha256` is checked
    against it. Raises AblateError for a corpus that cannot be read or tokenized or that is not
    the one expected, FileFault when the cache cannot be written."""
    with preparing(f"reading {stream.dataset}", stream.total_bytes()) as progress:
        scan = stream.scan(cache, progress)
    metadata = dict(metadata)
    expected = metadata.pop("expected_sha256", None)
    if expected and scan.sha256 != expected:
        raise AblateError(f"dataset '{stream.dataset}': {', '.join(map(str, stream.paths)) or 'its text'} has sha256 "
                          f"{scan.sha256}, expected {expected}; delete it to download again")
    tokenizer = tokenizer or build_tokenizer(cfg, stream, scan, cache)
    split_at = scan.split_at(cfg.val_fraction)
    folder = cache / "tokens" / content_hash(TOKENS_VERSION, str(text_stream.CHUNK_CHARS), scan.sha256,
                                             tokenizer.fingerprint(), str(split_at))
    # ABLATE_VERIFY_DATA=1 checks the corpus again: its token files are written again too
    meta = prepared_meta(folder, tokenizer.token_dtype()) if os.environ.get("ABLATE_VERIFY_DATA") != "1" else None
    if meta is None:
        scanned = stream.scan_record(cache)
        try:
            with preparing(f"tokenizing {stream.dataset}", stream.total_bytes()) as progress:
                _write_token_files(folder, stream.chunks(split_at, progress), tokenizer)
        except AblateError:  # a character the vocabulary lacks, say: because the file changed meanwhile?
            stream.check_unchanged(scanned, cache)
            raise
        try:  # tokens of a text that changed while it was read are not the text scanned: never kept
            stream.check_unchanged(scanned, cache)
        except AblateError:
            (folder / "meta.json").unlink(missing_ok=True)
            raise
        meta = prepared_meta(folder, tokenizer.token_dtype())
    return TokenizedCorpus(folder, meta, tokenizer, cfg.val_windows, {**metadata, "sha256": scan.sha256},
                           split_by_fraction=scan.val_chars is None)


def build_tokenizer(cfg: DataConfig, stream: TextStream, scan: TextScan, cache: Path) -> Tokenizer:
    """The tokenizer `cfg.tokenizer` names, for this corpus: its characters, a BPE trained on a
    sample of its training split, a tiktoken encoding or a tokenizer.json."""
    name = cfg.tokenizer.name
    if name == "char":
        return char_tokenizer(scan.charset)
    if name == "hf":
        return tokenizer_file(cfg.tokenizer.path)
    if name != "bpe":
        return tiktoken_tokenizer(cfg.tokenizer.encoding)
    split_at = scan.split_at(cfg.val_fraction)
    key = content_hash(TOKENS_VERSION, str(text_stream.CHUNK_CHARS), scan.sha256, str(split_at),
                       str(cfg.tokenizer.vocab_size), GPT2_PATTERN, str(BPE_SAMPLE_CHARS))

    def sample():
        """The training split's chunks when it fits the sample, else chunks spread evenly over
        it: a chunk is taken while the sample stays within its share of what was read."""
        share, seen, taken = min(1.0, BPE_SAMPLE_CHARS / max(split_at, 1)), 0, 0
        with preparing(f"sampling {stream.dataset} for a BPE", stream.total_bytes()) as progress:
            for split, chunk in stream.chunks(split_at, progress):
                if split != "train":
                    return
                seen += len(chunk)
                if taken + len(chunk) <= share * seen:
                    taken += len(chunk)
                    yield chunk

    return bpe_tokenizer(sample, cfg.tokenizer.vocab_size, cache, key=key)


def _write_token_files(folder: Path, chunks, tokenizer: Tokenizer) -> None:
    """Tokenize ("train" | "val", text) chunks on the usable cores, in order, into
    folder/{train,val}.bin; meta.json last."""
    dtype = tokenizer.token_dtype()
    counts = {"train": 0, "val": 0}
    sizes = {"train": 0, "val": 0}

    def encode(text: str) -> tuple[np.ndarray, int]:
        return tokenizer.encode_array(text).astype(dtype, copy=False), len(text.encode("utf-8", "surrogatepass"))

    def write(train_path: Path, val_path: Path) -> None:
        files = {"train": open(train_path, "wb"), "val": open(val_path, "wb")}
        workers = usable_cores()
        try:
            with ThreadPoolExecutor(workers) as pool:
                in_flight = deque()
                for split, text in chunks:
                    in_flight.append((split, pool.submit(encode, text)))
                    while len(in_flight) > workers + 1:  # each worker busy, one chunk waiting: bounded memory
                        _write_chunk(files, counts, sizes, *in_flight.popleft())
                while in_flight:
                    _write_chunk(files, counts, sizes, *in_flight.popleft())
        finally:
            for file in files.values():
                file.close()

    folder.mkdir(parents=True, exist_ok=True)
    for private in folder.glob(".*.tmp"):  # left by a preparation killed before it could remove them
        pid = private.name.split(".")[-2]
        if not (pid.isdigit() and process_alive(int(pid))):
            private.unlink(missing_ok=True)
    (folder / "meta.json").unlink(missing_ok=True)  # a damaged one: written again last
    write_atomically(folder / "train.bin", lambda train: write_atomically(folder / "val.bin",
                                                                          lambda val: write(train, val)))
    write_text(folder / "meta.json", json.dumps({"dtype": dtype.str, "train_tokens": counts["train"],
                                                 "val_tokens": counts["val"], "train_bytes": sizes["train"],
                                                 "val_bytes": sizes["val"], "written": _token_file_stats(folder)}))


def _write_chunk(files, counts, sizes, split: str, future) -> None:
    tokens, size = future.result()
    files[split].write(memoryview(tokens))  # not ndarray.tofile: its full-disk error has no errno
    counts[split] += len(tokens)
    sizes[split] += size
