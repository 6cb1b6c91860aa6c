"""val_bpb is the validation loss in bits per UTF-8 byte of the target text: by hand (nats x
tokens / bytes / ln 2, the bytes counted by decoding each validation row) it is the same for
characters, a BPE, a tiktoken encoding with special tokens and a Hugging Face byte-level BPE;
a study that compares tokenizers is refused on val_loss and judged on val_bpb."""

import math
import subprocess

import numpy as np
import pytest
import tiktoken
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from harness.config.data import DataConfig
from harness.config.model import ModelConfig
from harness.config.run import RunSpec
from harness.config.train import TrainConfig
from harness.data.tokenizers import _encoding_byte_lengths, bpe_tokenizer, hf_tokenizer
from harness.data import cache_dir
from harness.training.build import build_run
from harness.training.evaluation import metric_names
from tests import warm

# ASCII, so that a row's decoded text has exactly its tokens' bytes whatever the tokenizer;
# the character tokenizer also gets text with 2-, 3- and 4-byte characters
ASCII = "".join(f"Line {i}: the quick brown fox {i * 7 % 13} jumps over the lazy dog.\n" for i in range(400))
WIDE = "".join(f"naïve café {i} — “quotes” and 🙂 {i % 7}\n" for i in range(600))


def _parts(tmp_path, text: str, tokenizer):
    (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
    spec = RunSpec(study="bpb", model=ModelConfig(n_layer=1, d_model=32, n_head=2, context_length=24),
                   train=TrainConfig(steps=1, batch_size=4),
                   data=DataConfig(dataset={"name": "text", "path": str(tmp_path / "corpus.txt")}, tokenizer=tokenizer,
                                   val_windows=10, val_fraction=0.3))
    return build_run(spec)


def _hand_bpb(parts, metrics) -> float:
    tokenizer = parts.dataset.tokenizer
    targets = sum(y.numel() for _, y in parts.evaluation.batches)
    text_bytes = sum(len(tokenizer.decode(row.tolist()).encode("utf-8")) for _, y in parts.evaluation.batches for row in y)
    return metrics["val_loss"] * targets / text_bytes / math.log(2)


@pytest.mark.parametrize("text, tokenizer", [(ASCII, "char"), (WIDE, "char"),
                                             (ASCII, {"name": "bpe", "vocab_size": 300})])
def test_val_bpb_is_nats_per_token_times_tokens_over_bytes(tmp_path, text, tokenizer):
    parts = _parts(tmp_path, text, tokenizer)
    metrics = parts.evaluate()
    assert metrics["val_bpb"] == pytest.approx(_hand_bpb(parts, metrics), rel=1e-6)
    if text is WIDE:  # characters of several bytes: bits per byte is well below bits per token
        assert metrics["val_bpb"] < 0.8 * metrics["val_loss"] / math.log(2)


def test_val_bpb_of_a_hugging_face_byte_level_bpe(tmp_path):
    tokenizer = HFTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator([ASCII, WIDE], trainers.BpeTrainer(
        vocab_size=400, show_progress=False, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    parts = _parts(tmp_path, ASCII, f"hf:{tmp_path / 'tokenizer.json'}")
    metrics = parts.evaluate()
    assert metrics["val_bpb"] == pytest.approx(_hand_bpb(parts, metrics), rel=1e-6)
    # every id's bytes, from its vocabulary entry, are the bytes it decodes to; the special token stands for none
    lengths = hf_tokenizer(tokenizer.to_str()).token_bytes()
    special = tokenizer.token_to_id("<|endoftext|>")
    assert lengths[special] == 0
    assert all(lengths[i] == len(tokenizer.decode([i]).encode()) for i in range(tokenizer.get_vocab_size())
               if i != special and "\ufffd" not in tokenizer.decode([i]))


def test_token_bytes_of_a_tiktoken_encoding_leave_out_special_tokens():
    ranks = {bytes([b]): b for b in range(256)} | {b"the": 256, b" the": 257, "é".encode(): 258}
    encoding = tiktoken.Encoding("toy", pat_str=r"\S+|\s+", mergeable_ranks=ranks,
                                 special_tokens={"<|endoftext|>": 260})
    lengths = _encoding_byte_lengths(encoding)
    assert len(lengths) == 261 and lengths[256] == 3 and lengths[257] == 4 and lengths[258] == 2
    assert lengths[260] == 0 and lengths[259] == 0, "a special token and an unused id stand for no text"
    assert (lengths[:256] == 1).all()


def test_bpe_token_bytes_add_up_to_the_text():
    tokenizer = bpe_tokenizer(WIDE, 320, cache_dir())
    ids = np.array(tokenizer.encode(WIDE))
    assert tokenizer.token_bytes()[ids].sum() == len(WIDE.encode("utf-8"))


def test_only_datasets_of_text_log_bits_per_byte():
    from harness.data import load_dataset

    assert "val_bpb" in metric_names(load_dataset(DataConfig()))
    assert "val_bpb" not in metric_names(load_dataset(DataConfig(dataset="random")))
    assert metric_names(load_dataset(DataConfig(dataset="addition")))[-1] == "val_exact_match"


STUDY = """
name: tokenizers
base:
  model: {n_layer: 1, d_model: 16, n_head: 2, context_length: 16}
  train: {steps: 10, batch_size: 4, eval_interval: 10}
data: {val_windows: 4}
arms:
  - {name: char, set: {data.tokenizer: char}}
  - {name: bpe, set: {data.tokenizer: {name: bpe, vocab_size: 300}}}
"""


def _ablate(folder, *args):
    return subprocess.run([*warm.command(), *args], cwd=folder, capture_output=True, text=True, timeout=600)


def test_a_study_of_tokenizers_is_refused_on_val_loss_and_judged_on_val_bpb(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY)
    refused = _ablate(tmp_path, "run", "study.yaml")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "different tokenizers" in refused.stderr and "val_bpb" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert not (tmp_path / "mlflow.db").exists(), "refused before any store was made"

    misspelt = _ablate(tmp_path, "run", "study.yaml", "--set", "report.metric=val_bpc")
    assert misspelt.returncode == 2 and "does not log 'val_bpc'" in misspelt.stderr and "val_bpb" in misspelt.stderr

    judged = _ablate(tmp_path, "run", "study.yaml", "--set", "report.metric=val_bpb")
    assert judged.returncode == 0, judged.stderr
    report = (tmp_path / "reports" / "tokenizers" / "report.md").read_text()
    assert "Metric: final `val_bpb`" in report and "**bpe vs char**" in report
    # losses per token are in different units here: never a secondary metric, never in the SNR table
    assert "val_loss and train_loss are left out: the arms tokenize differently" in report
    assert "### `val_loss`" not in report and "| val_loss " not in report.split("## Which metric can decide")[1]
    assert "tokenizer `differs by arm`" in report
