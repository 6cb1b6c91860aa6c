"""Hugging Face `datasets` as text corpora, read in batches of rows (never loaded whole):

    data: {dataset: {name: hf_dataset, path: data/tinystories}}                 # save_to_disk folder
    data: {dataset: {name: hf_dataset, path: "fineweb-edu/*.parquet", text_column: text}}
    data: {dataset: {name: hf_dataset, path: roneneldan/TinyStories}}           # from the local cache

`path` is a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk` (memory-
mapped), local data files (a glob of .parquet, .jsonl, .json, .arrow or .csv) or a folder of
them with splits in their names (train-*.parquet, validation-*.parquet), or a dataset id of the
Hugging Face hub whose files are in the local cache (`huggingface-cli download --repo-type
dataset ID` where there is network); the network is never used. Files are streamed, never
copied into the datasets cache; parquet files (FineWeb's, the hub's own conversions) are read
with pyarrow's ParquetFile, because the scanner `datasets` streams them with can abort the
interpreter at exit after a successful read (apache/arrow#45214, huggingface/datasets#7566:
"terminate called without an active exception", measured 6 in 60 processes here). The rows'
`text_column` are the documents, joined by a blank line like the files of a `text` corpus. A
dataset that ships `val_split` (default `validation`) validates on it; otherwise the last
`val_fraction` of `train_split` does. Needs `pip install 'ablate[hf]'`.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Iterator

from pydantic import Field

from harness.data.cache import data_path, data_root
from harness.errors import AblateError
from harness.redaction import error_line
from harness.registry import Options, TextDocuments, register

BATCH_ROWS = 1000  # rows read at a time
DATA_FILES = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".arrow": "arrow", ".csv": "csv"}


class HFDatasetOptions(Options):
    path: str = Field(description="a save_to_disk folder, a glob of .parquet/.jsonl/.json/.arrow/.csv files, or a "
                                  "hub dataset id read from the local Hugging Face cache")
    config: str | None = Field(None, description="the dataset's configuration (subset) name, for a hub id")
    text_column: str = Field("text", description="the column that holds each row's text")
    train_split: str = Field("train", description="the split to train on")
    val_split: str | None = Field("validation", description="the split to validate on: 'validation' where the "
                                                            "dataset has it (else the last val_fraction of "
                                                            "train_split); another name must exist")


@register("dataset", "hf_dataset", HFDatasetOptions)
def hf_dataset(cfg, options: HFDatasetOptions, cache_dir: Path) -> TextDocuments:
    """A Hugging Face dataset's text column, read in batches of BATCH_ROWS rows."""
    try:
        import datasets
    except ImportError:
        raise AblateError("dataset 'hf_dataset' needs the datasets package: pip install 'ablate[hf]'") from None
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its failures reach the user as our one line
    datasets.disable_progress_bars()
    splits, files = _splits(datasets, options)
    if options.train_split not in splits:
        raise AblateError(f"dataset 'hf_dataset': {options.path} has no split '{options.train_split}'; its splits: "
                          f"{', '.join(splits)} (set train_split)")
    default_val = HFDatasetOptions.model_fields["val_split"].default  # absent: validate on the last val_fraction
    if options.val_split not in (None, default_val) and options.val_split not in splits:
        raise AblateError(f"dataset 'hf_dataset': {options.path} has no split '{options.val_split}'; its splits: "
                          f"{', '.join(splits)} (set val_split, or leave it out to validate on the last val_fraction "
                          "of the training split)")
    val = options.val_split if options.val_split in splits else None
    for split in filter(None, (options.train_split, val)):
        columns = splits[split].column_names
        if columns is not None and options.text_column not in columns:
            raise AblateError(f"dataset 'hf_dataset': split '{split}' of {options.path} has no column "
                              f"'{options.text_column}'; its columns: {', '.join(columns)} (set text_column)")
    return TextDocuments(
        train=lambda: _documents(splits[options.train_split], options),
        val=(lambda: _documents(splits[val], options)) if val else None,
        files=files,
        metadata={"source": options.path, "splits": ",".join(filter(None, (options.train_split, val))),
                  "text_column": options.text_column, "files": len(files)})


def _splits(datasets, options: HFDatasetOptions) -> tuple[dict, list[Path]]:
    """{split: dataset} and the files they are read from: a save_to_disk folder memory-mapped,
    anything else streamed (nothing copied into the datasets cache)."""
    local = Path(data_path(options.path))
    try:
        if local.is_dir() and any((local / name).exists() for name in ("dataset_dict.json", "state.json")):
            loaded = datasets.load_from_disk(str(local))
            splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {options.train_split: loaded}
            return splits, [Path(f["filename"]) for split in splits.values() for f in split.cache_files]
        if local.is_dir():
            files = [f for f in sorted(local.rglob("*")) if f.is_file() and f.suffix in DATA_FILES]
            if files and all(f.suffix == ".parquet" for f in files):
                resolved = datasets.load_dataset_builder(str(local), options.config).config.data_files
                return {str(split): ParquetSplit([Path(f) for f in found], options.text_column) for split, found in resolved.items()}, files
            return dict(datasets.load_dataset(str(local), options.config, streaming=True)), files
        if glob.has_magic(str(local)) or local.is_file():
            files = [Path(f) for f in sorted(glob.glob(str(local), recursive=True)) if Path(f).is_file()]
            if not files:
                raise AblateError(f"dataset 'hf_dataset': no file matches '{options.path}' (relative to {data_root()})")
            builders = {DATA_FILES.get(f.suffix) for f in files}
            if None in builders or len(builders) > 1:
                raise AblateError(f"dataset 'hf_dataset': '{options.path}' must match files of one kind: "
                                  f"{', '.join(DATA_FILES)}")
            if all(f.stat().st_size == 0 for f in files):
                raise AblateError(f"dataset 'hf_dataset': '{options.path}' is empty (its files hold no rows)")
            builder = builders.pop()
            if builder == "parquet":
                return {options.train_split: ParquetSplit(files, options.text_column)}, files
            stream = datasets.load_dataset(builder, data_files={options.train_split: [str(f) for f in files]},
                                           streaming=True)
            return dict(stream), files
        return _splits(datasets, options.model_copy(update={"path": _hub_snapshot(options.path)}))
    except AblateError:
        raise
    except Exception as err:  # the datasets library's own errors: unreadable, malformed, unknown config
        raise AblateError(f"dataset 'hf_dataset': cannot read '{options.path}' ({error_line(err)})") from None


class ParquetSplit:
    """A split of parquet files read in order, batch by batch: the two members of a streamed
    `datasets` split that reading uses (`column_names`, `iter`)."""

    def __init__(self, files: list[Path], text_column: str):
        import pyarrow.parquet as pq

        self.files, self.text_column = files, text_column
        with pq.ParquetFile(files[0]) as first:
            self.column_names = first.schema_arrow.names

    def iter(self, batch_size: int) -> Iterator[dict[str, list]]:
        """{column: values} of up to `batch_size` rows at a time, file after file; only the text
        column where a file has it (FineWeb's rows hold a dozen others)."""
        import pyarrow.parquet as pq

        for path in self.files:
            with pq.ParquetFile(path) as file:
                columns = [self.text_column] if self.text_column in file.schema_arrow.names else None
                for batch in file.iter_batches(batch_size=batch_size, columns=columns, use_threads=False):
                    yield batch.to_pydict()


def _hub_snapshot(dataset_id: str) -> str:
    """The local folder of a hub dataset's files, from the Hugging Face cache only."""
    from huggingface_hub import constants, snapshot_download

    try:
        return snapshot_download(dataset_id, repo_type="dataset", local_files_only=True)
    except Exception:  # not in the cache (or not a dataset id at all)
        raise AblateError(f"dataset 'hf_dataset': '{dataset_id}' is no folder or file here (relative to {data_root()}) "
                          f"and no dataset in the Hugging Face cache {constants.HF_HUB_CACHE}; download it once where "
                          f"there is network (huggingface-cli download --repo-type dataset {dataset_id}), or give a "
                          "save_to_disk folder or data files") from None


def _documents(split, options: HFDatasetOptions) -> Iterator[list[str]]:
    """The split's text column, BATCH_ROWS rows at a time; a row whose text is missing (None) is
    an empty document. Raises AblateError for rows that cannot be read or a column of non-text."""
    rows = split.iter(batch_size=BATCH_ROWS)
    while True:
        try:
            batch = next(rows)
        except StopIteration:
            return
        except Exception as err:  # the library's own: a malformed file, an empty table
            raise AblateError(f"dataset 'hf_dataset': cannot read the rows of {options.path} ({error_line(err)})") from None
        if options.text_column not in batch:
            raise AblateError(f"dataset 'hf_dataset': {options.path} has no column '{options.text_column}'; its "
                              f"columns: {', '.join(batch)} (set text_column)")
        texts = batch[options.text_column]
        wrong = next((text for text in texts if text is not None and not isinstance(text, str)), None)
        if wrong is not None:
            raise AblateError(f"dataset 'hf_dataset': column '{options.text_column}' of {options.path} holds "
                              f"{type(wrong).__name__} values, not text; name the column of text (text_column)")
        yield [text or "" for text in texts]
