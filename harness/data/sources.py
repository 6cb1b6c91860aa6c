"""Built-in corpora: the documentation every Python ships, local text files of any size,
downloads. Files are read in chunks by harness.data.text_stream, never whole."""

from __future__ import annotations

import glob
import hashlib
import os
import platform
import urllib.request
from pathlib import Path

from pydantic import Field, model_validator

from harness.data.cache import data_path, data_root
from harness.errors import AblateError
from harness.files import write_atomically
from harness.redaction import redact
from harness.registry import NoOptions, Options, TextFiles, TextSource, register


@register("dataset", "pydoc", NoOptions)
def pydoc_topics(cfg, options, cache_dir: Path) -> TextSource:
    """The English documentation shipped with every Python in pydoc_data.topics (~465 KB, offline).

    Its text depends on the Python release, so the hash and version are recorded.
    """
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))
    return TextSource(text, {"source": "pydoc_data.topics", "python_version": platform.python_version(),
                             "sha256": hashlib.sha256(text.encode()).hexdigest()})


class TextFileOptions(Options):
    path: str = Field(description="a file, or a glob such as 'corpus/*.txt' (files joined in name order); relative "
                                  "to $ABLATE_DATA_DIR when set")


@register("dataset", "text", TextFileOptions)
def text_files(cfg, options: TextFileOptions, cache_dir: Path) -> TextFiles:
    """Local UTF-8 text of any size: one file or every file matching a glob, each once (folders
    left out, a file reached through links read once). Raises AblateError for no match or a
    match that is no regular file."""
    paths, seen = [], set()
    for match in sorted(glob.glob(data_path(options.path), recursive=True)):
        path = Path(match)
        if path.is_dir() or path.resolve() in seen:  # a file reached twice (a link, a loop under **) counts once
            continue
        if not path.is_file():
            raise AblateError(f"dataset 'text': {path} is not a regular file (a pipe, a device or a broken link "
                              "would be read for ever or not at all); leave it out of the path")
        seen.add(path.resolve())
        paths.append(path)
    if not paths and os.path.isdir(data_path(options.path)):
        raise AblateError(f"dataset 'text': '{options.path}' is a folder; name its files, e.g. "
                          f"'{os.path.join(options.path, '*.txt')}' (or '**/*.txt' for its subfolders too)")
    if not paths:
        raise AblateError(f"dataset 'text': no file matches '{options.path}' (relative to {data_root()}; set "
                          "ABLATE_DATA_DIR to the folder that holds your corpora)")
    return TextFiles(paths, {"source": options.path, "files": len(paths)})


PRESETS = {
    "tinyshakespeare": (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    ),
}


class URLOptions(Options):
    url: str | None = Field(None, description="address of a UTF-8 text file")
    sha256: str | None = Field(None, description="expected checksum of the file")
    preset: str | None = Field(None, description=f"a known corpus: {', '.join(PRESETS)}")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.url is None) == (self.preset is None):
            raise ValueError("give either url (with sha256) or preset")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset '{self.preset}'; presets: {', '.join(PRESETS)}")
        return self


@register("dataset", "url", URLOptions)
def downloaded_text(cfg, options: URLOptions, cache_dir: Path) -> TextFiles:
    """A text file downloaded once into the cache (in blocks, never whole in memory) and
    checked against its sha256 when it is read."""
    url, sha256 = PRESETS[options.preset] if options.preset else (options.url, options.sha256)
    name = options.preset or Path(url).name or "download"
    path = cache_dir / "downloads" / f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:8]}.txt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)  # where to put the file by hand, offline
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                write_atomically(path, lambda private: _copy(response, private))
        except OSError as err:
            raise AblateError(
                f"dataset 'url': cannot download {redact(url)} ({err}); without network, put the file at {path}") from None
    return TextFiles([path], {"source": url, "cache_path": str(path), "expected_sha256": sha256})


def _copy(response, path: Path) -> None:
    with open(path, "wb") as file:
        while block := response.read(1 << 22):
            file.write(block)
