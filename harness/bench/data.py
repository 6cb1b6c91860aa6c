"""`ablate bench data`: the text data path at three corpus sizes, measured in one run.

For each size of synthetic English-like text (Zipf-distributed words in lines and paragraphs)
and each tokenizer (characters, a byte-level BPE of 4,096 ids), in a fresh process each:
- preparation with an empty cache: seconds, MB/s and the process's peak RSS, and the peak's
  growth against the smallest size;
- the tokenizing pass alone against the tokenizer library's own batch encode of the same text
  on the same cores (tiktoken's `encode_ordinary_batch`, alternately, best of two each; the
  character tokenizer has no library);
- time to the first training step with a warm cache (open the corpus, build the run, one step),
  the fastest of three fresh processes, against the smallest size.
Then, at the main study's shape, the time to draw one batch against one training step.

Each measurement runs in its own process so that its peak RSS is its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.environment import usable_cores
from harness.errors import AblateError

SIZES_MB = (50, 200, 1000)
TOKENIZERS = {"char": "char", "bpe": {"name": "bpe", "vocab_size": 4096}}
MAIN_STUDY = Path(__file__).parents[2] / "studies" / "norm_placement.yaml"


def synthetic_text(path: Path, megabytes: float, seed: int = 0) -> None:
    """`megabytes` (10^6 bytes) of English-like text: 20,000 made-up words drawn by Zipf's law,
    12 to a line, paragraphs of 33,000 lines. Written in blocks: memory does not grow with it."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    words = np.array(["".join(rng.choice(letters, size=rng.integers(1, 10))) for _ in range(20_000)])
    weights = 1 / np.arange(1, len(words) + 1)
    weights /= weights.sum()
    size, written = int(megabytes * 1e6), 0
    with open(path, "w", encoding="utf-8") as file:
        while written < size:
            drawn = words[rng.choice(len(words), size=400_000, p=weights)]
            lines = [" ".join(drawn[i: i + 12]) + ("." if rng.random() < 0.5 else ",") for i in range(0, len(drawn), 12)]
            block = "\n".join(lines)[: size - written] + "\n\n"
            file.write(block)
            written += len(block)


def _child(task: str, corpus: str, tokenizer: str) -> dict:
    """One measurement, in this (fresh) process; returns what it measured and its peak RSS."""
    import resource

    from harness.config.data import DataConfig
    from harness.data import load_dataset
    from harness.data.cache import cache_dir
    from harness.data.corpus import build_tokenizer
    from harness.data.text_stream import TextStream
    from harness.registry import TextFiles

    cfg = DataConfig(dataset={"name": "text", "path": corpus}, tokenizer=TOKENIZERS[tokenizer], val_windows=8)
    result = {}
    start = time.perf_counter()
    if task == "prepare":
        stream = TextStream(TextFiles([Path(corpus)], {}), "text")
        scan = stream.scan(cache_dir())
        result["scan_s"] = time.perf_counter() - start
        build_tokenizer(cfg, stream, scan, cache_dir())
        result["tokenizer_s"] = time.perf_counter() - start - result["scan_s"]
        before = time.perf_counter()
        load_dataset(cfg)
        result["tokenize_s"] = time.perf_counter() - before
        result["seconds"] = time.perf_counter() - start
    elif task == "tokenize":
        result["ours_s"], result["library_s"] = _tokenize_against_library(cfg, corpus)
    elif task == "first_step":
        import torch

        from harness.config.run import RunSpec
        from harness.training.build import build_run

        spec = RunSpec(model=dict(n_layer=2, d_model=64, n_head=2, context_length=64),
                       train=dict(batch_size=8, device="cpu", compile=False), data=cfg.model_dump())
        parts = build_run(spec)
        x, y = parts.dataset.train_batch(8, 64, torch.Generator().manual_seed(0))
        parts.forward_backward(x, y)
        parts.optimizer_step(spec.train.lr)
        result["seconds"] = time.perf_counter() - start
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _tokenize_against_library(cfg, corpus: str, repeats: int = 2) -> tuple[float, float]:
    """Seconds of ablate's tokenizing pass (harness.data.corpus, into a scratch folder) and of
    tiktoken's own `encode_ordinary_batch` (1 MB texts, 8 at a time, on the usable cores) over
    the corpus with the BPE the preparation trained, alternately, the best of `repeats` each: a
    busy moment of the machine falls on either."""
    import base64
    import shutil
    import tempfile

    import tiktoken

    from harness.data.cache import cache_dir
    from harness.data.corpus import _write_token_files, build_tokenizer
    from harness.data.text_stream import TextStream
    from harness.data.tokenizers import GPT2_PATTERN
    from harness.registry import TextFiles

    stream = TextStream(TextFiles([Path(corpus)], {}), "text")
    scan = stream.scan(cache_dir())
    tokenizer = build_tokenizer(cfg, stream, scan, cache_dir())
    ranks = {base64.b64decode(token): rank for token, rank in tokenizer.state()["ranks"]}
    encoding = tiktoken.Encoding(name="bench", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})

    def library():
        with open(corpus, encoding="utf-8") as file:
            while block := file.read(1 << 23):
                encoding.encode_ordinary_batch([block[i: i + (1 << 20)] for i in range(0, len(block), 1 << 20)],
                                               num_threads=usable_cores())

    def ours():
        with tempfile.TemporaryDirectory(dir=cache_dir()) as scratch:
            _write_token_files(Path(scratch), stream.chunks(scan.split_at(cfg.val_fraction)), tokenizer)

    best = {ours: float("inf"), library: float("inf")}
    for _ in range(repeats):
        for run in best:
            start = time.perf_counter()
            run()
            best[run] = min(best[run], time.perf_counter() - start)
    return best[ours], best[library]


def _measure(task: str, corpus: Path, tokenizer: str, cache: Path) -> dict:
    code = f"import json; from harness.bench.data import _child; print(json.dumps(_child({task!r}, {str(corpus)!r}, {tokenizer!r})))"
    env = {**os.environ, "ABLATE_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if done.returncode:  # its last line is the error (a full disk, say)
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise AblateError(f"bench data: measuring {task} ({tokenizer}, {corpus.name}) failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@dataclass
class DataReport:
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = []
        for title, table in self.tables.items():  # a ratio that does not apply (no library) is blank
            table = table.astype(object).where(table.notna(), None)
            lines += [title, table.to_markdown(index=False, floatfmt=".3g", missingval="-"), ""]
        return "\n".join(lines + [f"note: {note}" for note in self.notes])


def data_bench(folder: Path, sizes_mb=SIZES_MB, repeats: int = 3) -> DataReport:
    """The tables of the module docstring, for corpora of `sizes_mb` written under `folder`; the
    warm first step is the fastest of `repeats` fresh processes (the first may meet a cold page
    cache)."""
    folder = Path(folder)
    rows = []
    for megabytes in sizes_mb:
        corpus = folder / f"synthetic-{megabytes:g}MB.txt"
        synthetic_text(corpus, megabytes)
        for name in TOKENIZERS:
            cache = folder / f"cache-{megabytes:g}MB-{name}"
            prepared = _measure("prepare", corpus, name, cache)
            tokenize = _measure("tokenize", corpus, name, cache) if name == "bpe" else \
                {"ours_s": prepared["tokenize_s"], "library_s": float("nan")}
            warm = min((_measure("first_step", corpus, name, cache) for _ in range(repeats)),
                       key=lambda measured: measured["seconds"])
            rows.append({"size MB": f"{megabytes:g}", "tokenizer": name, "prepare s": prepared["seconds"],
                         "prepare MB/s": megabytes / prepared["seconds"], "peak RSS MB": prepared["peak_rss_mb"],
                         "tokenize MB/s": megabytes / tokenize["ours_s"],
                         "library MB/s": megabytes / tokenize["library_s"], "warm first step s": warm["seconds"]})
        corpus.unlink()
    table = pd.DataFrame(rows)
    smallest = table[table["size MB"] == f"{min(sizes_mb):g}"].set_index("tokenizer")
    table["RSS / smallest"] = table["peak RSS MB"] / table["tokenizer"].map(smallest["peak RSS MB"])
    table["tokenize / library"] = table["tokenize MB/s"] / table["library MB/s"]
    table["first step / smallest"] = table["warm first step s"] / table["tokenizer"].map(smallest["warm first step s"])
    report = DataReport()
    report.tables["preparing synthetic text (fresh process each; empty cache, then warm)"] = table
    report.tables["drawing a batch against a training step (the main study's shape, pydoc)"] = _draw_against_step()
    report.notes += [f"{usable_cores()} usable cores; a BPE of 4,096 ids trained on at most 32 M characters",
                     "peak RSS includes the imports (torch, numpy) of the process"]
    return report


def _draw_against_step() -> pd.DataFrame:
    """Milliseconds to draw one training batch and to take one training step, at the first run
    of the main study (norm_placement), over 20 of each."""
    import torch

    from harness.study.study import Study
    from harness.training.build import build_run

    spec = Study.load(MAIN_STUDY).runs[0]
    parts = build_run(spec)
    generator = torch.Generator().manual_seed(0)
    cfg = spec.train

    def draw():
        return parts.dataset.train_batch(cfg.batch_size, spec.model.context_length, generator)

    start = time.perf_counter()
    for _ in range(20):
        draw()
    draw_ms = (time.perf_counter() - start) / 20 * 1000
    x, y = draw()
    parts.forward_backward(x, y)  # a first step, untimed
    start = time.perf_counter()
    for _ in range(20):
        parts.forward_backward(x, y)
        parts.optimizer_step(cfg.lr)
    step_ms = (time.perf_counter() - start) / 20 * 1000
    return pd.DataFrame([{"batch": f"{cfg.batch_size} x {spec.model.context_length}", "draw ms": draw_ms,
                          "step ms": step_ms, "draw / step": draw_ms / step_ms}])
