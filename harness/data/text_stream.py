"""A text corpus read as a stream: blocks of its decoded text, a scan of it cached by file, and
the chunks it is tokenized in. Nothing here holds the corpus whole.

- `blocks()`: the corpus's text in order, READ_BYTES of a file at a time, files joined by a
  blank line ("\\n\\n").
- `scan()`: its sha256 (of the joined UTF-8 bytes: the same as hashing the whole text), bytes,
  characters and the set of its characters, with each file refused by name when it is binary
  or not UTF-8. A scan of files is kept in the cache under each file's resolved path, size and
  modification time: a re-run, `ablate status` or `--dry-run` reads no text. An edit that keeps
  a file's size and modification time is not seen; `ABLATE_VERIFY_DATA=1` scans again.
- `chunks()`: the text of the train and validation splits (the first (1 - val_fraction) of
  the characters train), in chunks of one to two CHUNK_CHARS, cut after a line break between
  non-spaces ("x\\n|y") or before a space between non-spaces ("x| y"). The pre-tokenisation
  of GPT-2 (r50k) and of cl100k never joins text across such a cut, so a byte-level BPE gives the
  chunks the tokens it gives the whole text; other pre-tokenisers (o200k's joins ".\\n/")
  may differ at a rare cut, the same way on every run. Only a run of MAX_CHUNKS * CHUNK_CHARS
  characters without a space or line break is cut elsewhere.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from harness.data.cache import content_hash
from harness.errors import AblateError
from harness.files import write_text
from harness.registry import TextDocuments, TextFiles, TextSource

READ_BYTES = 1 << 22  # bytes of a file read at a time
CHUNK_CHARS = 1 << 20  # characters tokenized at a time, about
MAX_CHUNKS = 16  # a chunk without a safe place is cut at this many CHUNK_CHARS
# safe places to cut: after a line break between non-spaces ("x\n|y"), before a space between
# non-spaces ("x| y"); a pre-tokeniser of GPT-2's kind starts a piece there whatever follows
SAFE_PLACE = re.compile(r"(?<=\S\n)(?=\S)|(?<=\S)(?= \S)")
SEPARATOR = "\n\n"  # between the files of a corpus
SCAN_VERSION = "1"  # part of a scan's cache key: a change of what a scan holds scans again

# control bytes besides tab, newline, vertical tab, form feed and carriage return: text has
# almost none, binary files (nanoGPT's uint16 train.bin, archives) are full of NUL
CONTROL_BYTES = bytes([*range(0x09), *range(0x0E, 0x20), 0x7F])
MAX_CONTROL_SHARE = 0.001


@dataclass
class TextScan:
    """What one pass over a corpus learns: enough to split it, name it and build a character
    vocabulary without reading it again."""

    sha256: str
    bytes: int
    chars: int
    charset: str  # every distinct character, sorted
    val_chars: int | None = None  # the characters of a validation split the corpus ships

    def well_formed(self) -> bool:
        """Whether a record read back holds values of the right kinds (a damaged one does not)."""
        counts = [self.bytes, self.chars] + ([self.val_chars] if self.val_chars is not None else [])
        return (isinstance(self.sha256, str) and isinstance(self.charset, str)
                and all(type(count) is int and count >= 0 for count in counts))

    def split_at(self, val_fraction: float) -> int:
        """The first character of the validation split: the shipped one's, else the last
        `val_fraction` of the characters."""
        if self.val_chars is not None:
            return self.chars - self.val_chars
        return int(self.chars * (1 - val_fraction))


@dataclass
class TextStream:
    """A corpus from a dataset factory (TextSource, TextFiles or TextDocuments), read in blocks.
    `dataset` names it in messages."""

    source: TextSource | TextFiles | TextDocuments
    dataset: str
    paths: list[Path] = field(init=False)

    def __post_init__(self):
        self.paths = [Path(p) for p in self.source.paths] if isinstance(self.source, TextFiles) else []

    def total_bytes(self) -> int:
        """Bytes on disk (files; a dataset's files, compressed or not), or characters (a text in
        memory): what a progress bar counts."""
        if isinstance(self.source, TextDocuments):
            return sum(Path(f).stat().st_size for f in self.source.files)
        if self.paths:
            return sum(path.stat().st_size for path in self.paths) + len(SEPARATOR) * (len(self.paths) - 1)
        return len(self.source.text)

    def parts(self, check: bool = False, progress=None) -> list[Iterator[str]]:
        """The corpus's blocks in one part, or two where it ships a validation split (the second
        starts with the SEPARATOR between the splits' documents)."""
        if not isinstance(self.source, TextDocuments):
            return [self.blocks(check, progress)]
        parts = [self._document_blocks(self.source.train, progress, first=True)]
        if self.source.val is not None:
            parts.append(self._document_blocks(self.source.val, progress, first=False))
        return parts

    def _document_blocks(self, batches, progress, first: bool) -> Iterator[str]:
        for batch in batches():
            block = SEPARATOR.join(batch)
            if not first:
                block = SEPARATOR + block
            first = False
            if progress:
                progress(len(block))
            yield block

    def blocks(self, check: bool = False, progress=None) -> Iterator[str]:
        """The corpus's text in order. With `check`, a file that is binary or not UTF-8 raises
        AblateError naming it (after it is read: the share of control bytes is the file's).
        `progress(n)` is told of every n bytes read."""
        if isinstance(self.source, TextDocuments):
            for part in self.parts(check, progress):
                yield from part
            return
        if not self.paths:
            text = self.source.text
            for start in range(0, len(text), READ_BYTES):
                if progress:
                    progress(min(READ_BYTES, len(text) - start))
                yield text[start: start + READ_BYTES]
            return
        for index, path in enumerate(self.paths):
            if index:
                yield SEPARATOR
            yield from self._file_blocks(path, check, progress)

    def _file_blocks(self, path: Path, check: bool, progress) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = control = 0
        failure = None
        try:
            with open(path, "rb") as file:
                while data := file.read(READ_BYTES):
                    if progress:
                        progress(len(data))
                    if check:
                        control += len(data) - len(data.translate(None, CONTROL_BYTES))
                    if failure is None:
                        pending = len(decoder.getstate()[0])
                        try:
                            yield decoder.decode(data)
                        except UnicodeDecodeError as err:
                            failure = (offset - pending + err.start, err.reason)
                            if not check:
                                break
                    offset += len(data)
                if failure is None:
                    try:
                        yield decoder.decode(b"", final=True)
                    except UnicodeDecodeError as err:
                        failure = (offset - len(decoder.getstate()[0]) + err.start, err.reason)
        except OSError as err:
            raise AblateError(f"dataset '{self.dataset}': cannot read {path}: {err.strerror or err}") from None
        if check and control > MAX_CONTROL_SHARE * max(offset, 1):
            raise AblateError(f"dataset '{self.dataset}': {path} is binary, not text ({control / offset:.1%} of its "
                              "bytes are control bytes such as NUL); for token ids use dataset 'nanogpt' (train.bin), "
                              "'llmc' (shards) or 'npy'")
        if failure:
            raise AblateError(f"dataset '{self.dataset}': {path} is not UTF-8 text (byte {failure[0]}: {failure[1]}); "
                              "give a text file")

    # ---- the scan -----------------------------------------------------------------------------

    def scan(self, cache: Path, progress=None) -> TextScan:
        """The corpus's TextScan: of files, read from the cache when none of them changed (path,
        size, mtime) unless ABLATE_VERIFY_DATA=1, else one pass over them; of a text, computed.
        Raises AblateError for a file changed while it was read (see `check_unchanged`)."""
        record = self.scan_record(cache)
        scan = self._scan(record, progress)
        self.check_unchanged(record, cache)
        return scan

    def check_unchanged(self, record: Path | None, cache: Path) -> None:
        """Raises AblateError when a file of the corpus changed (size, modification time) since
        `record` (`scan_record`) was named: what was read of it is not the text scanned."""
        if record is not None and self.scan_record(cache) != record:
            files = ", ".join(str(path) for path in self.paths[:3]) or self.source.metadata.get("source", "the corpus")
            raise AblateError(f"dataset '{self.dataset}': {files} changed while it was read; run again once it is "
                              "written whole")

    def _scan(self, record: Path | None, progress) -> TextScan:
        if record and record.exists() and os.environ.get("ABLATE_VERIFY_DATA") != "1":
            try:
                scan = TextScan(**json.loads(record.read_text(encoding="utf-8")))
                if scan.well_formed():
                    return scan
            except (ValueError, TypeError, OSError):
                pass  # a damaged record is scanned again
        digest, size, chars, charset = hashlib.sha256(), 0, [], set()
        for part in self.parts(check=True, progress=progress):
            chars.append(0)
            for block in part:
                encoded = block.encode("utf-8", "surrogatepass")
                digest.update(encoded)
                size += len(encoded)
                chars[-1] += len(block)
                charset.update(block)
        scan = TextScan(digest.hexdigest(), size, sum(chars), "".join(sorted(charset)),
                        chars[1] if len(chars) > 1 else None)
        if not scan.chars or not any(not c.isspace() for c in scan.charset):
            what = self.source.metadata.get("source", "the corpus") if not self.paths else \
                ", ".join(str(p) for p in self.paths[:3])
            empty = ("holds no text: every row's text is empty or missing" if isinstance(self.source, TextDocuments)
                     else "is empty")
            raise AblateError(f"dataset '{self.dataset}': {what} {empty}")
        if record:
            write_text(record, json.dumps(scan.__dict__))
        return scan

    def scan_record(self, cache: Path) -> Path | None:
        """Where the scan of the corpus's files as they are now (paths, sizes, modification
        times) is kept; None for a text that is no file."""
        files = [Path(f) for f in self.source.files] if isinstance(self.source, TextDocuments) else self.paths
        if not files:
            return None
        stats = [json.dumps(self.source.metadata, sort_keys=True, default=str)] * isinstance(self.source, TextDocuments)
        for path in files:
            try:
                stat = path.stat()
            except OSError as err:
                raise AblateError(f"dataset '{self.dataset}': cannot read {path}: {err.strerror or err}") from None
            stats.append(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
        return cache / "text-scans" / f"{content_hash(SCAN_VERSION, *stats)}.json"

    # ---- chunks to tokenize -------------------------------------------------------------------

    def chunks(self, split_at: int, progress=None) -> Iterator[tuple[str, str]]:
        """("train" | "val", text) in corpus order: the split is cut at character `split_at`,
        every other cut is safe (module docstring)."""
        buffer, consumed, split = "", 0, "train"
        for block in self.blocks(progress=progress):
            if split == "train" and consumed + len(block) >= split_at:
                chunks, _ = _take_chunks(buffer + block[: split_at - consumed], final=True)
                yield from (("train", chunk) for chunk in chunks)
                buffer, split = block[split_at - consumed:], "val"
            else:
                buffer += block
            consumed += len(block)
            chunks, buffer = _take_chunks(buffer, final=False)
            yield from ((split, chunk) for chunk in chunks)
        chunks, _ = _take_chunks(buffer, final=True)
        yield from ((split, chunk) for chunk in chunks)


def _take_chunks(text: str, final: bool) -> tuple[list[str], str]:
    """The chunks `text` can give now, and what is left of it (nothing when `final`)."""
    chunks = []
    while cut := _next_cut(text, final):
        chunks.append(text[:cut])
        text = text[cut:]
    return chunks, text


def _next_cut(text: str, final: bool) -> int | None:
    """Where the next chunk of `text` ends: the last safe place in [CHUNK_CHARS, 2 * CHUNK_CHARS),
    else the first one after (a long line or word), else MAX_CHUNKS * CHUNK_CHARS (text without a
    line break or space: the only unsafe cut). None: read on."""
    if len(text) <= CHUNK_CHARS:
        return len(text) if final and text else None
    cut = _last_safe_place(text, CHUNK_CHARS, min(len(text), 2 * CHUNK_CHARS))
    limit = MAX_CHUNKS * CHUNK_CHARS
    if cut is None and (found := SAFE_PLACE.search(text, 2 * CHUNK_CHARS, min(len(text), limit + 2))):
        cut = found.start()
    if cut is None or cut > limit:
        cut = limit if len(text) >= limit else len(text) if final else None
    return cut


def _last_safe_place(text: str, start: int, end: int) -> int | None:
    """The last safe place in [start, end): looked for backwards, in windows that grow, so that a
    chunk's cut costs a few thousand characters of search, not a chunk's."""
    window = 4096
    while end > start:
        low = max(start, end - window)
        places = [match.start() for match in SAFE_PLACE.finditer(text, low, min(len(text), end + 2))
                  if match.start() < end]
        if places:
            return places[-1]
        end, window = low, window * 4
    return None
