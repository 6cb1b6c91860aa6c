"""Built-in corpora: the documentation every Python ships, local text files, downloads."""

from __future__ import annotations

import glob
import hashlib
import platform
import urllib.request
from pathlib import Path

from pydantic import Field, model_validator

from harness.errors import AblateError
from harness.files import write_atomically
from harness.redaction import redact
from harness.registry import NoOptions, Options, TextSource, register


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
    path: str = Field(description="a file, or a glob such as 'corpus/*.txt' (files joined in name order)")


@register("dataset", "text", TextFileOptions)
def text_files(cfg, options: TextFileOptions, cache_dir: Path) -> TextSource:
    """Local text: one file or every file matching a glob."""
    paths = sorted(glob.glob(options.path, recursive=True))
    if not paths:
        raise AblateError(f"dataset 'text': no file matches '{options.path}' (relative to {Path.cwd()})")
    text = "\n\n".join(_utf8_text(Path(p).read_bytes, p, "text") for p in paths)
    if not text.strip():
        raise AblateError(f"dataset 'text': '{options.path}' is empty")
    return TextSource(text, {"source": options.path, "files": len(paths),
                             "sha256": hashlib.sha256(text.encode()).hexdigest()})


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
def downloaded_text(cfg, options: URLOptions, cache_dir: Path) -> TextSource:
    """A text file downloaded once into the cache and checked against its sha256."""
    url, sha256 = PRESETS[options.preset] if options.preset else (options.url, options.sha256)
    name = options.preset or Path(url).name or "download"
    path = cache_dir / "downloads" / f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:8]}.txt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                data = response.read()
        except OSError as err:
            raise AblateError(
                f"dataset 'url': cannot download {redact(url)} ({err}); without network, put the file at {path}") from None
        write_atomically(path, lambda private: private.write_bytes(data))
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if sha256 and actual != sha256:
        raise AblateError(f"dataset 'url': {path} has sha256 {actual}, expected {sha256}; delete it to download again")
    return TextSource(_utf8_text(lambda: data, redact(url), "url"), {"source": url, "sha256": actual,
                                                                      "cache_path": str(path)})


# control bytes besides tab, newline, vertical tab, form feed and carriage return: text has
# almost none, binary files (nanoGPT's uint16 train.bin, archives) are full of NUL
CONTROL_BYTES = bytes([*range(0x09), *range(0x0E, 0x20), 0x7F])
MAX_CONTROL_SHARE = 0.001


def _utf8_text(read, name: str, dataset: str) -> str:
    """The text of a file, or one message saying why there is none (not UTF-8, binary, unreadable)."""
    try:
        data = read()
        control = len(data) - len(data.translate(None, CONTROL_BYTES))
        if control > MAX_CONTROL_SHARE * len(data):
            raise AblateError(f"dataset '{dataset}': {name} is binary, not text ({control / len(data):.1%} of its bytes "
                              f"are control bytes such as NUL); for token ids use dataset 'nanogpt' (train.bin), "
                              "'llmc' (shards) or 'npy'")
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise AblateError(f"dataset '{dataset}': {name} is not UTF-8 text (byte {err.start}: {err.reason}); "
                          "give a text file") from None
    except OSError as err:
        raise AblateError(f"dataset '{dataset}': cannot read {name}: {err.strerror or err}") from None
