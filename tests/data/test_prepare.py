"""Corpora prepared ahead and located by machine: `ablate prepare`, $ABLATE_DATA_DIR, and the GPU
profiles of the shipped studies dry-run against a fake FineWeb shard set."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models

from harness.config.study import load_study
from harness.study.plan import expand
from tests import warm

STUDIES = Path(__file__).parents[2] / "studies"
GPT2_VOCAB = 50257


def _ablate(*args, cwd, **env):
    return subprocess.run([*warm.command(), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})


def _llmc_shard(path: Path, tokens: np.ndarray) -> None:
    header = np.zeros(256, dtype=np.int32)
    header[:3] = 20240520, 1, len(tokens)
    path.write_bytes(header.tobytes() + tokens.astype(np.uint16).tobytes())


@pytest.fixture(scope="module")
def fake_fineweb(tmp_path_factory):
    """$ABLATE_DATA_DIR with fineweb10B/ as modded-nanogpt's cached_fineweb10B.py leaves it (two
    small training shards, one validation shard of GPT-2 ids), and a tokenizer.json of GPT-2's
    50,257 ids standing in for tiktoken:gpt2, which needs the network once."""
    root = tmp_path_factory.mktemp("data")
    (root / "fineweb10B").mkdir()
    rng = np.random.default_rng(0)
    for name in ("fineweb_train_000001.bin", "fineweb_train_000002.bin", "fineweb_val_000000.bin"):
        _llmc_shard(root / "fineweb10B" / name, rng.integers(GPT2_VOCAB, size=20_000))
    HFTokenizer(models.WordLevel({f"t{i}": i for i in range(GPT2_VOCAB)}, unk_token="t0")).save(str(root / "gpt2.json"))
    return root


GPU_STUDIES = sorted(path.name for path in STUDIES.glob("*.yaml") if "dataset: {name: llmc" in path.read_text())


def test_every_language_study_has_a_gpu_profile_on_fineweb():
    assert len(GPU_STUDIES) >= 7, GPU_STUDIES


@pytest.mark.parametrize("study", GPU_STUDIES)
def test_the_gpu_profile_dry_runs_against_fake_shards(study, fake_fineweb, tmp_path):
    """No CUDA here: the plan is made and costed from FLOPs (tokens, epochs, tokens per parameter,
    GPU hours), no step is measured, nothing is tracked."""
    done = _ablate("run", str(STUDIES / study), "--profile", "gpu", "--dry-run",
                   "--set", f"data.tokenizer=hf:{fake_fineweb / 'gpt2.json'}", cwd=tmp_path,
                   ABLATE_DATA_DIR=str(fake_fineweb), COLUMNS="250")
    assert done.returncode == 0, done.stderr
    assert "epochs" in done.stdout and "tokens/param" in done.stdout and "H100 bf16 at 40% MFU" in done.stdout
    run = expand(load_study(STUDIES / study, profile="gpu"))[0]
    train, model = run.train, run.model
    tokens = train.steps * train.batch_size * train.grad_accum * model.context_length  # e.g. 5,000 x 32 x 1,024
    assert "GPU hours" in done.stdout and f"{tokens:,}" in done.stdout
    assert not (tmp_path / "mlflow.db").exists()


def test_a_missing_corpus_names_the_data_folder(tmp_path):
    done = _ablate("run", str(STUDIES / "positions.yaml"), "--profile", "gpu", "--dry-run", cwd=tmp_path,
                   ABLATE_DATA_DIR=str(tmp_path / "nowhere"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "fineweb10B/fineweb_train_*.bin" in done.stderr and "ABLATE_DATA_DIR" in done.stderr


def test_a_data_folder_that_is_a_file_is_named_as_such(tmp_path):
    (tmp_path / "corpora").write_text("not a folder")
    done = _ablate("run", str(STUDIES / "positions.yaml"), "--profile", "gpu", "--dry-run", cwd=tmp_path,
                   ABLATE_DATA_DIR=str(tmp_path / "corpora"))
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert f"ABLATE_DATA_DIR={tmp_path / 'corpora'}, which is a file, not a folder" in done.stderr, done.stderr


def test_prepare_tokenizes_each_corpus_once_for_every_profile_asked(tmp_path):
    """`ablate prepare` before workers: a later run opens the prepared token files (a corpus edited
    without changing its size and modification time is not read again, as documented)."""
    (tmp_path / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 3000)
    (tmp_path / "study.yaml").write_text(
        "name: prepared\nbase:\n  model: {n_layer: 1, d_model: 32, n_head: 2, context_length: 32}\n"
        "  train: {steps: 2, batch_size: 4, eval_interval: 2}\ngrid:\n  model.norm: [layernorm, rmsnorm]\n"
        "seeds: 1\ndata: {dataset: {name: text, path: corpus.txt}, val_windows: 4}\n"
        "profiles:\n  bpe:\n    data.tokenizer: {name: bpe, vocab_size: 300}\n")
    cache = tmp_path / "cache"
    done = _ablate("prepare", "study.yaml", "--profile", "-", "--profile", "bpe", cwd=tmp_path,
                   ABLATE_CACHE_DIR=str(cache), COLUMNS="200")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("text") >= 2 and "char" in done.stdout and "bpe" in done.stdout
    prepared = sorted((cache / "tokens").glob("*/meta.json"))
    assert len(prepared) == 2 and all((path.parent / "references.json").exists() for path in prepared)
    stat = (tmp_path / "corpus.txt").stat()
    (tmp_path / "corpus.txt").write_text("THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.\n" * 3000)
    os.utime(tmp_path / "corpus.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    run = _ablate("run", "study.yaml", "--profile", "bpe", cwd=tmp_path, ABLATE_CACHE_DIR=str(cache))
    assert run.returncode == 0, run.stderr
    assert sorted((cache / "tokens").glob("*/meta.json")) == prepared
    verified = _ablate("run", "study.yaml", "--dry-run", cwd=tmp_path, ABLATE_CACHE_DIR=str(cache),
                       ABLATE_VERIFY_DATA="1")
    assert verified.returncode == 0, verified.stderr
    assert len(list((cache / "tokens").glob("*/meta.json"))) == 3  # scanned again: a new corpus, new tokens
