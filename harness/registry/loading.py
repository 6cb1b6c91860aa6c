"""How variants reach the registry: entry points of installed packages, and plugin modules.

Built-in variants come through the same ``ablate.variants`` entry points as any installed
plugin, so the engine never imports them by name. Local plugins are imported only when the
user names them (``plugins:`` in a study, ``--plugin`` on the command line).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

from harness.errors import AblateError
from harness.redaction import error_line
from harness.registry import core

ENTRY_POINT_GROUP = "ablate.variants"
_loaded_entry_points = False
_loaded_files: dict[str, str] = {}  # plugin module name -> sha256 of the file it was imported from


def load_installed() -> None:
    """Import every module named by an ``ablate.variants`` entry point (once)."""
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    _loaded_entry_points = True
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        package = entry.dist.name if entry.dist else None
        dist = package or "unknown package"
        # variants are named by their module: one entry point may import many (the built-ins do)
        with _registering_as(core.Origin(f"package {dist}", name_module=True, package=package)):
            try:
                entry.load()
            except (Exception, SystemExit) as err:
                raise AblateError(f"the installed plugin '{entry.value}' (package {dist}) failed to import: "
                                  f"{import_failure(err)}") from err


def load_plugin(reference: str, base_dir: Path | None = None) -> None:
    """Import a plugin given as a module name (``my_pkg.blocks``) or a file (``blocks.py``).

    Relative file paths are taken relative to `base_dir` (a study's folder) first, then to
    the current directory.
    """
    load_installed()
    if reference.endswith(".py") or "/" in reference or "\\" in reference:
        _load_plugin_file(_find_file(reference, base_dir))
        return
    with _registering_as(core.Origin(f"plugin module {reference}")):
        try:
            importlib.import_module(reference)
        except ModuleNotFoundError as err:
            if err.name and reference.startswith(err.name):
                raise AblateError(
                    f"plugin module '{reference}' was not found; give a file path ending in .py "
                    "or install the package that provides it"
                ) from None
            raise AblateError(f"plugin module '{reference}' failed to import: {err}") from err
        except (Exception, SystemExit) as err:
            raise AblateError(f"plugin module '{reference}' failed to import: {import_failure(err)}") from err


def _find_file(reference: str, base_dir: Path | None) -> Path:
    candidates = [Path(reference)]
    if base_dir is not None and not Path(reference).is_absolute():
        candidates.insert(0, base_dir / reference)
    for path in candidates:
        if path.is_file():
            return path.resolve()
    raise AblateError(f"plugin file '{reference}' does not exist (looked at {', '.join(map(str, candidates))})")


def _load_plugin_file(path: Path) -> None:
    # one module name per file: loading the same file again is a no-op unless it was edited
    # meanwhile (in a notebook, say), when it is imported again and its variants replaced
    module_name = f"ablate_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    content = hashlib.sha256(path.read_bytes()).hexdigest()
    if _loaded_files.get(module_name) == content:
        return
    _loaded_files[module_name] = content
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    with _registering_as(core.Origin(f"plugin file {path}")):
        try:
            spec.loader.exec_module(module)
        except AblateError:
            del sys.modules[module_name], _loaded_files[module_name]
            raise
        except (Exception, SystemExit) as err:
            del sys.modules[module_name], _loaded_files[module_name]
            raise AblateError(f"plugin file {path} failed to import: {import_failure(err)}") from err


def import_failure(err: BaseException) -> str:
    """What went wrong importing a plugin, in one line; a plugin that exits the process says so
    instead of ending ablate silently with its code."""
    if isinstance(err, SystemExit):
        return f"it called sys.exit({err.code!r}) while being imported"
    return f"{type(err).__name__}: {error_line(err, 300)}"


class _registering_as:
    """Context in which registrations are attributed to `origin` (shown by `ablate variants`)."""

    def __init__(self, origin: core.Origin):
        self.origin = origin

    def __enter__(self):
        core._origins.append(self.origin)

    def __exit__(self, *exc):
        core._origins.pop()
