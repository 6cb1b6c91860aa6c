"""Tokenizers: characters, a byte-level BPE trained here, any tiktoken encoding, or the
tokenizer a Hugging Face model comes with.

Every tokenizer is a ``tiktoken.Encoding``, a character table or a Hugging Face
``tokenizers`` tokenizer, and can be saved into a
checkpoint (:meth:`Tokenizer.state`) so that sampling and fine-tuning use exactly the
vocabulary the model was trained with.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import tiktoken
from tiktoken.load import load_tiktoken_bpe

from harness.data.cache import content_hash, data_path
from harness.errors import AblateError
from harness.files import write_text

# GPT-2's pre-tokenisation: words, numbers, punctuation runs and whitespace split apart
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class Tokenizer:
    def __init__(self, kind: str, encode, decode, vocab_size: int, state: dict,
                 encode_array: Callable[[str], np.ndarray] | None = None,
                 byte_lengths: Callable[[], np.ndarray] | None = None):
        self.kind = kind
        self._encode = encode
        self._encode_array = encode_array
        self._decode = decode
        self.vocab_size = vocab_size
        self._state = state
        self._byte_lengths = byte_lengths
        self._token_bytes: np.ndarray | None = None
        # the id that ends a document (GPT-2's <|endoftext|>), where the vocabulary has one
        self.end_of_text: int | None = None

    def encode(self, text: str) -> list[int]:
        return self._encode(text)

    def encode_array(self, text: str) -> np.ndarray:
        """The token ids of `text` as a 1-D array of the smallest unsigned type that holds this
        vocabulary (uint16 up to 65,536 ids, else uint32): what token files store."""
        if self._encode_array is not None:
            return self._encode_array(text)
        return np.asarray(self._encode(text), dtype=self.token_dtype())

    def token_bytes(self) -> np.ndarray:
        """(vocab_size,) int64: how many UTF-8 bytes of text each token id stands for, 0 for ids
        that stand for none (special tokens, unused ids). What bits per byte divides by
        (harness.training.evaluation)."""
        if self._token_bytes is None:
            self._token_bytes = self._byte_lengths()
        return self._token_bytes

    def token_dtype(self) -> np.dtype:
        return np.dtype(np.uint16 if self.vocab_size <= 2 ** 16 else np.uint32)

    def decode(self, tokens) -> str:
        return self._decode(list(tokens))

    def state(self) -> dict:
        """Everything needed to rebuild this tokenizer (stored in checkpoints)."""
        return self._state

    def fingerprint(self) -> str:
        """A hash of the vocabulary: two tokenizers with the same fingerprint encode alike."""
        return content_hash(repr(sorted(self._state.items())))

    @staticmethod
    def from_state(state: dict) -> "Tokenizer":
        if state["kind"] == "char":
            return char_tokenizer(state["chars"])
        if state["kind"] == "bpe":
            ranks = {base64.b64decode(token): rank for token, rank in state["ranks"]}
            return _bpe_tokenizer(ranks, state["name"])
        if state["kind"] == "hf":
            return hf_tokenizer(state["json"])
        return tiktoken_tokenizer(state["encoding"])


def char_tokenizer(chars: str) -> Tokenizer:
    """One token per distinct character of the corpus (nanoGPT's shakespeare_char)."""
    # ids by code point, -1 for characters outside the vocabulary: a text is encoded with numpy,
    # not one Python int per character
    table = np.full(max(map(ord, chars), default=0) + 2, -1, dtype=np.int32)
    table[[ord(c) for c in chars]] = np.arange(len(chars))
    dtype = np.uint16 if len(chars) <= 2 ** 16 else np.uint32

    def encode_array(text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        ids = table[np.minimum(codes, len(table) - 1)]
        if len(ids) and ids.min() < 0:
            unknown = text[int(np.argmax(ids < 0))]
            raise AblateError(f"character {unknown!r} is not in this character vocabulary; "
                              "use a bpe tokenizer to cover any text")
        return ids.astype(dtype)

    def decode(tokens) -> str:
        return "".join(chars[t] for t in tokens)

    def byte_lengths() -> np.ndarray:
        return np.array([len(c.encode("utf-8", "surrogatepass")) for c in chars], dtype=np.int64)

    return Tokenizer("char", lambda text: encode_array(text).tolist(), decode, len(chars),
                     {"kind": "char", "chars": chars}, encode_array, byte_lengths)


def tiktoken_tokenizer(encoding: str) -> Tokenizer:
    try:
        enc = tiktoken.get_encoding(encoding)
    except ValueError as err:
        raise AblateError(f"unknown tiktoken encoding '{encoding}': {err}") from None
    except Exception as err:  # the encoding's file is downloaded on first use
        raise AblateError(
            f"tiktoken encoding '{encoding}' is not available offline ({type(err).__name__}); "
            "run once with network access, or set TIKTOKEN_CACHE_DIR to a folder holding its file, "
            "or use tokenizer 'bpe' to train one locally") from None
    tokenizer = Tokenizer("tiktoken", enc.encode_ordinary, enc.decode, enc.n_vocab,
                          {"kind": "tiktoken", "encoding": encoding}, byte_lengths=lambda: _encoding_byte_lengths(enc))
    tokenizer.end_of_text = enc.encode_single_token("<|endoftext|>") if "<|endoftext|>" in enc.special_tokens_set else None
    return tokenizer


def hf_tokenizer(json_text: str) -> Tokenizer:
    """A Hugging Face model's own tokenizer (its tokenizer.json), encoding text as a stream:
    no special tokens added."""
    from tokenizers import Tokenizer as HFTokenizer

    tokenizer = HFTokenizer.from_str(json_text)
    made = Tokenizer("hf", lambda text: tokenizer.encode(text, add_special_tokens=False).ids,
                     lambda tokens: tokenizer.decode(tokens, skip_special_tokens=False),
                     tokenizer.get_vocab_size(), {"kind": "hf", "json": json_text},
                     byte_lengths=lambda: _hf_byte_lengths(tokenizer, json_text))
    special = {token.content: index for index, token in tokenizer.get_added_tokens_decoder().items() if token.special}
    made.end_of_text = next((special[name] for name in END_OF_TEXT if name in special), None)
    return made


# what Hugging Face tokenizers call the token that ends a document (GPT-2, Llama 2, Gemma, Llama 3)
END_OF_TEXT = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>")


BYTE_FALLBACK = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def _hf_byte_lengths(tokenizer, json_text: str) -> np.ndarray:
    """The bytes of each id of a Hugging Face tokenizer, read from its vocabulary: a byte-level
    vocabulary (GPT-2, Llama 3) spells each byte as one character (`_bytes_to_unicode`); a
    SentencePiece one (Llama 2, T5) spells a space as "▁" and a byte it has no piece for as
    "<0xNN>"; a WordPiece one marks a word's continuation with "##". Special tokens are 0."""
    import json

    decoder = json.dumps(json.loads(json_text).get("decoder"))
    byte_level = '"ByteLevel"' in decoder
    stand_ins = set(_bytes_to_unicode().values())
    lengths = np.zeros(tokenizer.get_vocab_size(), dtype=np.int64)
    special = {index for index, token in tokenizer.get_added_tokens_decoder().items() if token.special}
    for piece, index in tokenizer.get_vocab(with_added_tokens=True).items():
        if index in special or index >= len(lengths):
            continue
        if byte_level and all(c in stand_ins for c in piece):
            lengths[index] = len(piece)
        elif BYTE_FALLBACK.fullmatch(piece):
            lengths[index] = 1
        else:
            lengths[index] = len(piece.removeprefix("##").replace("\u2581", " ").encode("utf-8"))
    return lengths


def _bpe_tokenizer(ranks: dict[bytes, int], name: str) -> Tokenizer:
    enc = tiktoken.Encoding(name=name, pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})
    state = {"kind": "bpe", "name": name,
             "ranks": [(base64.b64encode(token).decode(), rank) for token, rank in ranks.items()]}
    return Tokenizer("bpe", enc.encode_ordinary, enc.decode, enc.n_vocab, state,
                     byte_lengths=lambda: _encoding_byte_lengths(enc))


def _encoding_byte_lengths(enc: tiktoken.Encoding) -> np.ndarray:
    """The bytes of each id of a tiktoken encoding; 0 for its special tokens and the ids it
    leaves unused (o200k has gaps)."""
    lengths = np.zeros(enc.n_vocab, dtype=np.int64)
    special = {enc.encode_single_token(token) for token in enc.special_tokens_set}
    for token in range(enc.n_vocab):
        if token not in special:
            try:
                lengths[token] = len(enc.decode_single_token_bytes(token))
            except KeyError:
                pass
    return lengths


def bpe_tokenizer(train_text: str | Callable[[], Iterable[str]], vocab_size: int, cache: Path,
                  key: str | None = None) -> Tokenizer:
    """A byte-level BPE trained on `train_text` (a text, or a function that yields its chunks;
    then `key` names it), cached as a .tiktoken file under the key."""
    key = key or content_hash(train_text, str(vocab_size), GPT2_PATTERN)
    path = cache / f"bpe-{vocab_size}-{key}.tiktoken"
    if not path.exists():
        ranks = train_bpe([train_text] if isinstance(train_text, str) else train_text(), vocab_size)
        write_text(path, "".join(f"{base64.b64encode(t).decode()} {r}\n"
                                 for t, r in sorted(ranks.items(), key=lambda x: x[1])))
    return _bpe_tokenizer(load_tiktoken_bpe(str(path)), f"bpe-{vocab_size}-{key}")


def train_bpe(texts: Iterable[str], vocab_size: int) -> dict[bytes, int]:
    """Merge ranks of a byte-level BPE, trained by the `tokenizers` library (fast, Rust) on the
    texts as they come (an iterator: only the counts of their words are kept).

    Ranks are token ids: the 256 bytes first, then merges in the order they were learned,
    which is the order tiktoken applies them.
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers, trainers

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[], show_progress=False)
    hf.train_from_iterator(_short_words(texts), trainer=trainer)
    byte_of = {char: byte for byte, char in _bytes_to_unicode().items()}
    return {bytes(byte_of[c] for c in token): rank for token, rank in hf.get_vocab().items()}


# BPE training is quadratic in a word's length: a run of non-space characters longer than this
# (a line of base64, a corpus without spaces) is cut into words of this length before training
LONG_WORD = 256
_LONG_RUN = re.compile(r"\S{%d,}" % LONG_WORD)


def _short_words(texts: Iterable[str]) -> Iterator[str]:
    """The texts, a long run of non-spaces in them cut into LONG_WORD pieces, each its own text
    (a trainer never joins two texts); text without such runs passes unchanged."""
    for text in texts:
        start = 0
        for run in _LONG_RUN.finditer(text):
            yield text[start: run.start()]
            yield from (run.group()[i: i + LONG_WORD] for i in range(0, len(run.group()), LONG_WORD))
            start = run.end()
        yield text[start:] if start else text


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's printable stand-ins for the 256 byte values, used by byte-level BPE vocabularies
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    stand_ins = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            stand_ins.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, stand_ins)))


def tokenizer_file(path: str) -> Tokenizer:
    """The tokenizer of a Hugging Face tokenizer.json, or of the model folder holding one; a
    relative path is taken under $ABLATE_DATA_DIR like the data it tokenizes (harness.data.cache)."""
    found = Path(data_path(path))
    file = found / "tokenizer.json" if found.is_dir() else found
    try:
        text = file.read_text(encoding="utf-8")
        return hf_tokenizer(text)
    except OSError as err:
        raise AblateError(f"tokenizer hf:{path}: cannot read {file} ({err.strerror or err})") from None
    except Exception as err:  # the tokenizers library's own parse error
        raise AblateError(f"tokenizer hf:{path}: {file} is not a Hugging Face tokenizer.json "
                          f"({type(err).__name__}: {str(err)[:200]})") from None
