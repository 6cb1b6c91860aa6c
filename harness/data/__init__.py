"""Data for a run (configured by harness.config.data): a registered dataset, tokenized into token
files in the cache once, split, and served in batches.

    text_stream.py  a text corpus read in chunks: its scan (sha256, size, characters), cut safely
    corpus.py       a text corpus tokenized into token files in the cache (TokenizedCorpus)
    token_files.py  corpora already tokenized: nanoGPT .bin, llm.c shards, numpy arrays
    windows.py      next-token windows drawn from token shards; reference losses, kept
    tokenizers.py   characters, a BPE trained here, tiktoken, a tokenizer.json
    sources.py      the built-in text corpora: pydoc, text files and globs, downloads
    hf_datasets.py  Hugging Face datasets: save_to_disk folders, parquet/jsonl files, the hub cache
    preparing.py    the progress bar of long corpus work
"""

from __future__ import annotations

from harness.config.data import DataConfig
from harness.data.cache import cache_dir
from harness.data.corpus import tokenized_corpus
from harness.data.reference import reference_losses
from harness.data.text_stream import TextStream
from harness.data.tokenizers import Tokenizer
from harness.registry import TextDocuments, TextFiles, TextSource, lookup


def load_dataset(cfg: DataConfig, tokenizer: Tokenizer | None = None):
    """The dataset `cfg` describes; a given tokenizer (from a checkpoint) replaces the configured
    one. A text corpus is tokenized into the cache on first use (harness.data.corpus)."""
    variant = lookup("dataset", cfg.dataset.name)
    cache = cache_dir()
    made = variant.factory(cfg, variant.parse_options(cfg.dataset.options), cache_dir=cache)
    if not isinstance(made, (TextSource, TextFiles, TextDocuments)):
        return made
    return tokenized_corpus(TextStream(made, cfg.dataset.name), cfg, tokenizer, cache, made.metadata)


__all__ = ["Tokenizer", "load_dataset", "reference_losses", "cache_dir"]
