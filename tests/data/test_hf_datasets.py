"""Hugging Face datasets as corpora: a save_to_disk folder, parquet and jsonl files, a folder of
split files, the hub cache offline. Each gives the tokens of its documents joined by a blank
line, validates on the split it ships, and refuses what it cannot read in one message."""

import json
import os
import subprocess
import sys

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.config.data import DataConfig
from harness.data import load_dataset
from harness.errors import AblateError

TRAIN = [f"Story {i}: the fox met {i % 7} owls by the river, and they talked until night." for i in range(400)]
VAL = [f"Held out {i}: an owl counted {i} stars." for i in range(60)]


def _load(path, **options):
    return load_dataset(DataConfig(dataset={"name": "hf_dataset", "path": str(path), **options}, val_windows=2))


def _text(data, split):
    return data.tokenizer.decode(np.asarray(data.tokens[split].head(len(data.tokens[split]))))


def _check(data, train=TRAIN, val=VAL):
    assert _text(data, "train") == "\n\n".join(train)
    assert _text(data, "val") == "\n\n" + "\n\n".join(val)  # the blank line between the splits' documents


def test_a_save_to_disk_folder_with_its_validation_split(tmp_path):
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": TRAIN, "id": list(range(len(TRAIN)))}),
                          "validation": datasets.Dataset.from_dict({"text": VAL})}).save_to_disk(tmp_path / "saved")
    data = _load(tmp_path / "saved")
    _check(data)
    assert data.metadata["splits"] == "train,validation" and len(data.metadata["sha256"]) == 64


def test_parquet_files_stream_and_the_last_val_fraction_validates(tmp_path):
    for part in range(2):
        pq.write_table(pa.table({"content": TRAIN[part * 200:(part + 1) * 200]}), tmp_path / f"part-{part}.parquet")
    data = _load(tmp_path / "*.parquet", text_column="content")
    whole = "\n\n".join(TRAIN)
    assert _text(data, "train") + _text(data, "val") == whole
    assert len(_text(data, "val")) == len(whole) - int(len(whole) * 0.9)


def test_a_folder_of_split_files_and_jsonl(tmp_path):
    folder = tmp_path / "hub-layout"
    (folder / "data").mkdir(parents=True)
    for split, rows in (("train", TRAIN), ("validation", VAL)):
        (folder / "data" / f"{split}-00000-of-00001.jsonl").write_text("".join(json.dumps({"text": r}) + "\n"
                                                                               for r in rows))
    _check(_load(folder))


def test_a_hub_id_is_read_from_the_hugging_face_cache(tmp_path):
    """The layout huggingface_hub leaves (refs/main naming a snapshot), read in a process whose
    HF_HUB_CACHE points there (the library reads it when imported)."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "datasets--ablate-tests--stories"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision / "data"
    snapshot.mkdir(parents=True)
    for split, rows in (("train", TRAIN), ("validation", VAL)):
        pq.write_table(pa.table({"text": rows}), snapshot / f"{split}-00000-of-00001.parquet")
    code = ("from harness.config.data import DataConfig; from harness.data import load_dataset\n"
            "data = load_dataset(DataConfig(dataset={'name': 'hf_dataset', 'path': 'ablate-tests/stories'}, "
            "val_windows=2))\nprint(data.metadata['splits'], data.metadata['train_tokens'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["train,validation", str(len("\n\n".join(TRAIN)))]


def test_a_hub_id_not_in_the_cache_is_refused_without_the_network():
    with pytest.raises(AblateError, match=r"no dataset in the Hugging Face cache .*huggingface-cli download "
                                          r"--repo-type dataset ablate-tests/never-downloaded"):
        _load("ablate-tests/never-downloaded")


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet split files"])
@pytest.mark.parametrize("options, message", [
    ({"text_column": "body"}, r"no column 'body'; its columns: text, id \(set text_column\)"),
    ({"train_split": "training"}, r"no split 'training'; its splits: train, validation"),
    ({"val_split": "valid"}, r"no split 'valid'; its splits: train, validation \(set val_split, or leave it out"),
])
def test_a_wrong_column_or_split_is_named_with_what_there_is(tmp_path, options, message, layout):
    splits = {"train": {"text": TRAIN, "id": list(range(len(TRAIN)))}, "validation": {"text": VAL, "id": list(range(len(VAL)))}}
    if layout == "save_to_disk":
        datasets.DatasetDict({split: datasets.Dataset.from_dict(rows) for split, rows in splits.items()}
                             ).save_to_disk(tmp_path / "saved")
    else:
        (tmp_path / "saved" / "data").mkdir(parents=True)
        for split, rows in splits.items():
            pq.write_table(pa.table(rows), tmp_path / "saved" / "data" / f"{split}-00000-of-00001.parquet")
    with pytest.raises(AblateError, match=message):
        _load(tmp_path / "saved", **options)


def test_files_of_mixed_kinds_and_unreadable_files_are_refused(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "b.txt").write_text("text")
    with pytest.raises(AblateError, match="must match files of one kind"):
        _load(tmp_path / "*")
    with pytest.raises(AblateError, match=r"dataset 'hf_dataset': cannot read"):
        _load(tmp_path / "a.parquet")


def test_rows_that_cannot_be_read_or_hold_no_text_are_one_message(tmp_path):
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": \n')
    pq.write_table(pa.table({"text": list(range(100))}), tmp_path / "ints.parquet")
    (tmp_path / "nones.jsonl").write_text('{"text": null}\n' * 100)
    (tmp_path / "empty.jsonl").write_text("")
    for path, message in ((tmp_path / "empty.parquet", "holds no text|cannot read the rows"),
                          (tmp_path / "nones.jsonl", "holds no text: every row's text is empty or missing"),
                          (tmp_path / "empty.jsonl", r"empty\.jsonl' is empty \(its files hold no rows\)"),
                          (tmp_path / "bad.jsonl", "cannot read the rows of"),
                          (tmp_path / "ints.parquet", "holds int values, not text")):
        with pytest.raises(AblateError, match=message):
            _load(path)
