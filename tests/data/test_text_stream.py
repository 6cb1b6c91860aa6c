"""Text corpora of any size: read in chunks, tokenized into token files in the cache, the same
tokens as the whole text, no corpus work when nothing changed, nothing half-written trusted."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import regex
import torch

import harness.data.text_stream as text_stream
from harness.config.data import DataConfig
from harness.data import cache_dir, load_dataset
from harness.data.text_stream import TextStream
from harness.data.tokenizers import GPT2_PATTERN, bpe_tokenizer, char_tokenizer
from harness.errors import AblateError, FileFault
from harness.registry import TextFiles

# text that tries the cuts: paragraphs, single and CRLF line breaks, punctuation before a line
# break, numbers, contractions, non-ASCII, runs of spaces, a long line without spaces
PARTS = ["The quick brown fox.\nIt's 12,345 o'clock;\r\nnaïve café — “quotes”.\n\n", "  indented line\n",
         "x" * 700 + "\n", "word " * 60 + "\n", "tabs\tand\fform feeds\n", "end,\nnext: 42\n\n\n"]
# tiktoken's pre-tokenisation of r50k (GPT-2) and cl100k (which joins punctuation with the line
# breaks after it), as tiktoken_ext/openai_public.py writes them
R50K_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
CL100K_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|"""
                  r"""\s++$|\s*[\r\n]|\s+(?!\S)|\s""")


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of ~200 characters read in 512-byte blocks: a small corpus is cut many times."""
    monkeypatch.setattr(text_stream, "CHUNK_CHARS", 200)
    monkeypatch.setattr(text_stream, "READ_BYTES", 512)


def _corpus(tmp_path, copies=40, seed=0):
    rng = np.random.default_rng(seed)
    text = "".join(PARTS[i] for i in rng.integers(len(PARTS), size=copies))
    (tmp_path / "a.txt").write_text(text[: len(text) // 2], encoding="utf-8", newline="")
    (tmp_path / "b.txt").write_text(text[len(text) // 2:], encoding="utf-8", newline="")
    return text[: len(text) // 2] + "\n\n" + text[len(text) // 2:]


def _tokens(data, split):
    return np.asarray(data.tokens[split].head(len(data.tokens[split])))


@pytest.mark.parametrize("tokenizer", ["char", {"name": "bpe", "vocab_size": 300}])
def test_chunked_tokens_are_the_whole_texts_tokens(tmp_path, small_chunks, tokenizer):
    text = _corpus(tmp_path)
    data = load_dataset(DataConfig(dataset={"name": "text", "path": str(tmp_path / "*.txt")}, tokenizer=tokenizer,
                                   val_fraction=0.2, val_windows=2))
    split_at = int(len(text) * 0.8)
    whole = data.tokenizer  # built from the corpus: its characters, or a BPE trained on the chunks
    if tokenizer != "char":  # the BPE trained on the whole training text, in one piece, is the same
        assert dict(bpe_tokenizer(text[:split_at], 300, cache_dir()).state()["ranks"]) == dict(whole.state()["ranks"])
    assert _tokens(data, "train").tolist() == whole.encode(text[:split_at])
    assert _tokens(data, "val").tolist() == whole.encode(text[split_at:])
    assert data.metadata["val_bytes"] == len(text[split_at:].encode())


def test_cuts_are_safe_for_the_pre_tokenisation_of_gpt2_and_cl100k(tmp_path, small_chunks):
    """Each chunk split into pieces alone gives the whole text's pieces (a BPE encodes each piece
    on its own, so equal pieces are equal tokens)."""
    text = _corpus(tmp_path, copies=80, seed=1)
    chunks = [chunk for _, chunk in TextStream(TextFiles([tmp_path / "a.txt", tmp_path / "b.txt"], {}), "text")
              .chunks(split_at=len(text) + 1)]
    assert "".join(chunks) == text and len(chunks) > 10
    for pattern in (GPT2_PATTERN, R50K_PATTERN, CL100K_PATTERN):
        assert [piece for chunk in chunks for piece in regex.findall(pattern, chunk)] == regex.findall(pattern, text)


def test_a_warm_cache_reads_no_text_and_a_change_is_seen(tmp_path, monkeypatch):
    _corpus(tmp_path)
    cfg = DataConfig(dataset={"name": "text", "path": str(tmp_path / "*.txt")}, val_windows=2)
    first = load_dataset(cfg)

    def no_reading(*args, **kwargs):
        raise AssertionError("the corpus was read again")

    monkeypatch.setattr(TextStream, "blocks", no_reading)
    again = load_dataset(cfg)  # the scan and the token files come from the cache
    assert again.metadata == first.metadata and np.array_equal(_tokens(again, "train"), _tokens(first, "train"))
    monkeypatch.setenv("ABLATE_VERIFY_DATA", "1")
    with pytest.raises(AssertionError, match="read again"):
        load_dataset(cfg)
    monkeypatch.undo()
    with open(tmp_path / "b.txt", "a", encoding="utf-8") as file:  # a changed file is scanned again
        file.write("one more line\n")
    changed = load_dataset(cfg)
    assert changed.metadata["sha256"] != first.metadata["sha256"]


def test_a_killed_preparation_leaves_nothing_a_later_run_trusts(tmp_path, small_chunks, monkeypatch):
    """SIGKILL in the middle of writing the token files; the next load prepares them whole."""
    _corpus(tmp_path, copies=400)
    child = textwrap.dedent(f"""
        import os, signal
        import harness.data.corpus as corpus
        import harness.data.text_stream as text_stream
        from harness.config.data import DataConfig
        from harness.data import load_dataset
        text_stream.CHUNK_CHARS, text_stream.READ_BYTES = 200, 512
        written = corpus._write_chunk
        def write_then_die(files, counts, *rest):
            written(files, counts, *rest)
            if counts["train"] > 2000:
                files["train"].flush()
                os.kill(os.getpid(), signal.SIGKILL)
        corpus._write_chunk = write_then_die
        load_dataset(DataConfig(dataset={{"name": "text", "path": {str(tmp_path / "*.txt")!r}}}, val_windows=2))
    """)
    killed = subprocess.run([sys.executable, "-c", child], env={**os.environ, "ABLATE_CACHE_DIR": str(tmp_path / "c")},
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    folders = list((tmp_path / "c" / "tokens").iterdir())
    assert len(folders) == 1 and not (folders[0] / "meta.json").exists()
    assert not (folders[0] / "train.bin").exists()  # only a private file, never the name a run opens
    monkeypatch.setenv("ABLATE_CACHE_DIR", str(tmp_path / "c"))
    data = load_dataset(DataConfig(dataset={"name": "text", "path": str(tmp_path / "*.txt")}, val_windows=2))
    text = (tmp_path / "a.txt").read_bytes().decode() + "\n\n" + (tmp_path / "b.txt").read_bytes().decode()
    split_at = int(len(text) * 0.9)
    assert data.tokenizer.decode(_tokens(data, "train")) == text[:split_at]


@pytest.mark.parametrize("content, message", [
    (b"plain text\n" * 100 + b"\xff\xfe broken", r"b\.txt is not UTF-8 text \(byte 1100"),
    (np.arange(5000, dtype=np.uint16).tobytes(), r"b\.txt is binary, not text"),
    (b"", None),
])
def test_each_file_is_checked_by_name(tmp_path, small_chunks, content, message):
    (tmp_path / "a.txt").write_text("fine text\n" * 100)
    (tmp_path / "b.txt").write_bytes(content)
    cfg = DataConfig(dataset={"name": "text", "path": str(tmp_path / "*.txt")}, val_windows=2)
    if message is None:  # an empty file among others is nothing
        assert load_dataset(cfg).metadata["files"] == 2
        return
    with pytest.raises(AblateError, match=message):
        load_dataset(cfg)


def test_a_folder_given_as_the_path_is_named_with_the_glob_to_write(tmp_path):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("fine text\n" * 100)
    with pytest.raises(AblateError, match=r"'.*texts' is a folder; name its files, e\.g\. '.*texts/\*\.txt'"):
        load_dataset(DataConfig(dataset={"name": "text", "path": str(tmp_path / "texts")}))


def test_an_empty_corpus_is_refused(tmp_path):
    (tmp_path / "a.txt").write_text("\n \n")
    with pytest.raises(AblateError, match="is empty"):
        load_dataset(DataConfig(dataset={"name": "text", "path": str(tmp_path / "a.txt")}))


def test_the_character_tokenizer_encodes_with_numpy_and_refuses_the_unknown():
    tokenizer = char_tokenizer("abc é")
    assert tokenizer.encode_array("cab é").tolist() == tokenizer.encode("cab é") == [2, 0, 1, 3, 4]
    assert tokenizer.encode_array("").dtype == np.uint16
    with pytest.raises(AblateError, match="'z' is not in this character vocabulary"):
        tokenizer.encode_array("abz")
    with pytest.raises(AblateError, match="not in this character vocabulary"):
        tokenizer.encode_array("🙂")  # past the table's last code point


def test_a_corpus_larger_than_the_memory_allowed_prepares_and_trains(tmp_path):
    """A 400 MB corpus in a process allowed 300 MB of memory beyond its imports (RLIMIT_DATA:
    heap and anonymous maps; the memory-mapped token files are the page cache's): it is
    scanned, tokenized, trained on and given its reference losses."""
    block = "".join(f"line {i} of the corpus, with words and a number {i * 37}.\n" for i in range(20_000))
    with open(tmp_path / "big.txt", "w", encoding="utf-8") as file:
        for _ in range(400_000_000 // len(block) + 1):
            file.write(block)
    child = textwrap.dedent("""
        import re, resource
        import torch
        from harness.config.run import RunSpec
        from harness.training.build import build_run
        data_kb = int(re.search(r"VmData:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
        limit = data_kb * 1024 + (300 << 20)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        parts = build_run(RunSpec(model=dict(n_layer=1, d_model=32, n_head=2, context_length=32),
                                  train=dict(batch_size=4, device="cpu", compile=False),
                                  data={"dataset": {"name": "text", "path": "big.txt"}, "val_windows": 4}))
        x, y = parts.dataset.train_batch(4, 32, torch.Generator().manual_seed(0))
        parts.forward_backward(x, y)
        parts.optimizer_step(1e-3)
        print(parts.dataset.metadata["train_tokens"], parts.dataset.reference_losses()["bigram_loss"])
    """)
    done = subprocess.run([sys.executable, "-c", child], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "ABLATE_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-2000:]
    tokens, bigram = done.stdout.split()
    assert int(tokens) > 0.9 * 0.9 * 400_000_000 and 0 < float(bigram) < 3


@pytest.mark.parametrize("damage", [
    lambda folder: (folder / "meta.json").write_text('{"dtype": "<u2"'),  # truncated
    lambda folder: (folder / "meta.json").write_text("{}"),
    lambda folder: (folder / "meta.json").write_bytes(b"\xff\xfe"),
    lambda folder: (folder / "meta.json").write_text((folder / "meta.json").read_text().replace("<u2", "|u1")),
    lambda folder: os.truncate(folder / "train.bin", 1000),
    lambda folder: os.truncate(folder / "train.bin", 1001),
    lambda folder: os.truncate(folder / "val.bin", 0),
    lambda folder: (folder / "train.bin").write_bytes(b"\xff" * (folder / "train.bin").stat().st_size),
    lambda folder: (folder / "train.bin").write_bytes(b"\0" * (folder / "train.bin").stat().st_size),
    lambda folder: (folder / "references.json").write_text('{"unigram_loss": "x", "bigram_loss": 1.0}'),
    lambda folder: (folder / "references.json").write_text("[1, 2]"),
], ids=["meta-truncated", "meta-empty", "meta-not-utf8", "meta-other-type", "train-truncated", "train-odd-size",
        "val-emptied", "train-overwritten-same-size", "train-zeroed-same-size", "references-wrong-type",
        "references-a-list"])
def test_a_damaged_cache_is_prepared_again_not_trusted(tmp_path, damage):
    _corpus(tmp_path)
    cfg = DataConfig(dataset={"name": "text", "path": str(tmp_path / "*.txt")}, val_windows=2)
    first = load_dataset(cfg)
    expected = first.reference_losses()
    train, val = _tokens(first, "train").copy(), _tokens(first, "val").copy()  # before its files are damaged
    [folder] = {path.parent for path in cache_dir().glob("tokens/*/meta.json")
                if np.array_equal(np.fromfile(path.parent / "train.bin", dtype="<u2"), train)}
    del first  # its memory maps: a file truncated under a map faults on reading it
    damage(folder)
    again = load_dataset(cfg)
    assert np.array_equal(_tokens(again, "train"), train) and np.array_equal(_tokens(again, "val"), val)
    assert again.metadata["train_tokens"] == len(train) and again.reference_losses() == expected


def test_token_files_damaged_without_a_trace_stop_the_run_naming_them(tmp_path, monkeypatch):
    """Damage that keeps a token file's size and modification time passes the cheap check: the
    first batch holding an id outside the vocabulary stops, naming the files, never indexes
    outside the embedding; ABLATE_VERIFY_DATA=1 prepares them again."""
    _corpus(tmp_path)
    monkeypatch.setenv("ABLATE_CACHE_DIR", str(tmp_path / "cache"))
    cfg = DataConfig(dataset={"name": "text", "path": str(tmp_path / "*.txt")}, val_windows=2)
    first = load_dataset(cfg)
    train = _tokens(first, "train").copy()
    [folder] = {path.parent for path in cache_dir().glob("tokens/*/meta.json")}
    del first
    stat = (folder / "train.bin").stat()
    (folder / "train.bin").write_bytes(b"\xff" * stat.st_size)
    os.utime(folder / "train.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    damaged = load_dataset(cfg)
    with pytest.raises(FileFault, match=r"the train tokens \(.*train\.bin\) hold ids outside the vocabulary"):
        damaged.train_batch(4, 16, torch.Generator().manual_seed(0))
    del damaged
    monkeypatch.setenv("ABLATE_VERIFY_DATA", "1")
    assert np.array_equal(_tokens(load_dataset(cfg), "train"), train)


def test_a_file_changed_while_it_is_tokenized_is_never_kept(tmp_path, small_chunks, monkeypatch):
    """Lines appended to a corpus file while it is tokenized: the tokens are not the text
    scanned, so the preparation stops saying so and keeps nothing; the next run prepares the
    file as it now is."""
    _corpus(tmp_path, copies=200)
    monkeypatch.setenv("ABLATE_CACHE_DIR", str(tmp_path / "cache"))
    chunks = TextStream.chunks

    def append_midway(self, split_at, progress=None):
        for index, chunk in enumerate(chunks(self, split_at, progress)):
            if index == 3:
                with open(tmp_path / "b.txt", "a", encoding="utf-8") as file:
                    file.write("appended while it was read\n" * 50)
            yield chunk

    monkeypatch.setattr(TextStream, "chunks", append_midway)
    cfg = DataConfig(dataset={"name": "text", "path": str(tmp_path / "*.txt")}, val_windows=2)
    with pytest.raises(AblateError, match=r"b\.txt changed while it was read; run again once it is written whole"):
        load_dataset(cfg)
    assert not list(cache_dir().glob("tokens/*/meta.json")), "no token files of a changed text are kept"
    monkeypatch.setattr(TextStream, "chunks", chunks)
    again = load_dataset(cfg)
    text = (tmp_path / "a.txt").read_bytes().decode() + "\n\n" + (tmp_path / "b.txt").read_bytes().decode()
    assert again.tokenizer.decode(_tokens(again, "train")) + again.tokenizer.decode(_tokens(again, "val")) == text


@pytest.mark.parametrize("record", ['{"sha256": 1, "bytes": 1, "chars": "87963", "charset": "ab"}',
                                    '{"sha256": "ab", "bytes": 1, "chars": 5, "charset": null}', '{"sha'])
def test_a_damaged_scan_record_is_scanned_again(tmp_path, record):
    _corpus(tmp_path)
    cfg = DataConfig(dataset={"name": "text", "path": str(tmp_path / "*.txt")}, val_windows=2)
    first = load_dataset(cfg)
    for path in cache_dir().glob("text-scans/*.json"):
        path.write_text(record)
    assert load_dataset(cfg).metadata == first.metadata


def test_a_file_reached_twice_counts_once_and_a_pipe_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("some text of the corpus\n" * 200)
    (tmp_path / "d" / "loop").symlink_to("..")  # ** follows it: d/loop/d/a.txt, d/loop/d/loop/d/a.txt, ...
    (tmp_path / "d" / "same.txt").symlink_to(tmp_path / "d" / "a.txt")
    data = load_dataset(DataConfig(dataset={"name": "text", "path": str(tmp_path / "d" / "**" / "*.txt")},
                                   val_windows=2))
    assert data.metadata["files"] == 1
    assert data.metadata["train_tokens"] + data.metadata["val_tokens"] == len("some text of the corpus\n" * 200)
    os.mkfifo(tmp_path / "d" / "b.fifo")
    with pytest.raises(AblateError, match=r"b\.fifo is not a regular file"):
        load_dataset(DataConfig(dataset={"name": "text", "path": str(tmp_path / "d" / "*")}, val_windows=2))


def test_a_bpe_on_text_without_spaces_is_trained_in_bounded_words(tmp_path):
    """One 2M-character word: the trainer sees it in LONG_WORD pieces (whole, it would take
    minutes and gigabytes)."""
    (tmp_path / "a.txt").write_text("abcdefgh" * 250_000)
    data = load_dataset(DataConfig(dataset={"name": "text", "path": str(tmp_path / "a.txt")},
                                   tokenizer={"name": "bpe", "vocab_size": 300}, val_windows=2))
    assert 256 < data.vocab_size <= 300 and data.metadata["train_tokens"] < 2_000_000 / 4
