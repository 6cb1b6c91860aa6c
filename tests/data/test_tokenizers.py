"""Tokenizers round-trip text and are rebuilt identically from checkpoints."""


import pytest

from harness.config.data import TokenizerConfig
from harness.data import cache_dir
from harness.data.tokenizers import Tokenizer, bpe_tokenizer, char_tokenizer, tiktoken_tokenizer
from harness.errors import AblateError

TEXT = ("The quick brown fox jumps over the lazy dog. Numbers 12345 and tabs\tand\nnewlines, "
        "unicode: naïve café — “quotes”. ") * 40


def test_char_tokenizer_round_trips_and_refuses_unknown_characters():
    tokenizer = char_tokenizer("".join(sorted(set(TEXT))))
    assert tokenizer.decode(tokenizer.encode(TEXT)) == TEXT
    with pytest.raises(AblateError, match="not in this character vocabulary"):
        tokenizer.encode("€")


def test_bpe_round_trips_any_text_exactly_and_compresses():
    tokenizer = bpe_tokenizer(TEXT, 400, cache_dir())
    for text in (TEXT, "unseen words: zygote Ωmega 🙂 \x00 bytes", ""):
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert len(tokenizer.encode(TEXT)) < len(TEXT.encode()) / 2
    assert 256 < tokenizer.vocab_size <= 400  # training stops early when no pair repeats


def test_bpe_is_trained_once_and_then_read_from_the_cache():
    first = bpe_tokenizer(TEXT, 280, cache_dir())
    files = sorted(cache_dir().glob("bpe-280-*.tiktoken"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    second = bpe_tokenizer(TEXT, 280, cache_dir())
    assert files[0].stat().st_mtime_ns == stamp
    assert second.encode(TEXT) == first.encode(TEXT)


@pytest.mark.parametrize("make", [lambda: char_tokenizer("abc "), lambda: bpe_tokenizer(TEXT, 270, cache_dir())])
def test_tokenizer_state_rebuilds_the_same_tokenizer(make):
    tokenizer = make()
    rebuilt = Tokenizer.from_state(tokenizer.state())
    assert rebuilt.encode("a cab") == tokenizer.encode("a cab") and rebuilt.vocab_size == tokenizer.vocab_size


def test_tokenizer_config_reads_the_short_forms():
    assert TokenizerConfig.model_validate("char").name == "char"
    assert TokenizerConfig.model_validate("tiktoken:cl100k_base").encoding == "cl100k_base"
    assert TokenizerConfig.model_validate({"name": "bpe", "vocab_size": 512}).vocab_size == 512
    with pytest.raises(ValueError):
        TokenizerConfig.model_validate({"name": "bpe", "vocab_size": 10})


def test_tiktoken_encoding_that_needs_the_network_fails_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    try:
        tokenizer = tiktoken_tokenizer("gpt2")
    except AblateError as err:
        assert "not available offline" in str(err) and "TIKTOKEN_CACHE_DIR" in str(err)
    else:  # a machine with network access downloads it: then it must work
        assert tokenizer.decode(tokenizer.encode("hello world")) == "hello world"
    with pytest.raises(AblateError, match="unknown tiktoken encoding"):
        tiktoken_tokenizer("no_such_encoding")
