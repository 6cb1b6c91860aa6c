"""`python_cloze`: a multiple-choice task shipped with ablate, built from the docstrings of the
standard library every Python carries (the `.py` files of its Lib folder, read with `ast`, not
imported), so that CPU studies and tests have a downstream metric with no download.

Each item is a sentence of a docstring without its last word; the choices are that word and
three last words of other sentences, in an order fixed by a seed; only sentences written in
characters of the `pydoc` corpus are used, so that a character model trained on it reads them. A model is right when it
gives the true word the highest log-likelihood (`acc`), or per byte (`acc_norm`), as in
LAMBADA-style cloze and HellaSwag-style multiple choice. Chance is 25%. The docstrings are not
the reference documentation of the `pydoc` corpus that CPU studies train on, though they are
its kind of text.

The items are written once, as JSON lines, into the cache (harness.data.cache), named by a
hash of the docstrings and characters they come from (which change with the Python version).
"""

from __future__ import annotations

import ast
import json
import random
import re
import sysconfig
from pathlib import Path

from harness.data.cache import cache_dir, content_hash
from harness.files import write_text

PYTHON_CLOZE = "python_cloze"
ITEMS = 1000
CHOICES = 4
SENTENCE_END = re.compile(r"(?<=[a-z][.!?])\s+|\n\s*\n")
LAST_WORD = re.compile(r"^(?P<context>.*\S)\s+(?P<word>[A-Za-z]{4,})\.$", re.DOTALL)


def docstrings() -> list[str]:
    """The docstrings of the standard library's top-level modules (their modules, classes and
    functions), in file and source order."""
    found = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):  # a file of another Python's syntax
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append(ast.get_docstring(node) or "")
    return [text for text in found if text]


def pydoc_characters() -> set[str]:
    """The characters of the pydoc corpus: a character model trained on it reads no others."""
    from pydoc_data.topics import topics

    return set("".join(topics.values()))


def cloze_items(texts: list[str], count: int = ITEMS, seed: int = 0, alphabet: set[str] | None = None) -> list[dict]:
    """Up to `count` items, {"context", "choices", "gold"}, from the sentences of `texts` of 8
    to 40 words that end in a word of four letters or more (and, given an `alphabet`, hold no
    other characters)."""
    sentences = []
    for text in texts:
        for sentence in SENTENCE_END.split(text):
            sentence = " ".join(sentence.split())
            found = LAST_WORD.match(sentence)
            if found and 8 <= len(sentence.split()) <= 40 and (alphabet is None or set(sentence) <= alphabet):
                sentences.append((found["context"], found["word"]))
    rng = random.Random(seed)
    words = sorted({word for _, word in sentences})
    rng.shuffle(sentences)
    items = []
    for context, word in sentences[:count]:
        choices = [word, *rng.sample([w for w in words if w != word], CHOICES - 1)]
        rng.shuffle(choices)
        items.append({"context": context, "choices": [f"{choice}." for choice in choices],
                      "gold": choices.index(word)})
    return items


def python_cloze_task() -> dict:
    """The task as an lm-eval task config, its items in a JSON lines file in the cache."""
    texts, alphabet = docstrings(), pydoc_characters()  # CPU studies' character models read every item
    path = cache_dir() / "tasks" / f"{PYTHON_CLOZE}-{content_hash(*texts, ''.join(sorted(alphabet)), str(ITEMS))}.jsonl"
    if not path.exists():
        items = cloze_items(texts, alphabet=alphabet)
        write_text(path, "".join(json.dumps(item) + "\n" for item in items))
    return {
        "task": PYTHON_CLOZE,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(path)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{context}}",
        "doc_to_choice": "choices",
        "doc_to_target": "gold",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
    }
