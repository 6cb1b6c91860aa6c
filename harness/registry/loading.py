"""How variants reach the registry: entry points of installed packages, and plugin modules.

Built-in variants come through the same ``ablate.variants`` entry points as any installed
plugin, so the engine never imports them by name. Local plugins are imported only when the
user names them (``plugins:`` in a study, ``--plugin`` on the command line).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

from harness.errors import AblateError
from harness.redaction import error_line
from harness.registry import core, global_state

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
        with _registering_as(core.Origin(f"package {dist}", name_module=True, package=package)), \
                _leaves_global_state(f"the installed plugin '{entry.value}' (package {dist})"):
            try:
                entry.load()
            except (Exception, SystemExit) as err:
                raise AblateError(f"the installed plugin '{entry.value}' (package {dist}) failed to import: "
                                  f"{import_failure(err)}") from err


def load_plugin(reference: str, base_dir: Path | None = None) -> tuple[str, str]:
    """Import a plugin given as a module name (``my_pkg.blocks``) or a file (``blocks.py``).

    Relative file paths are taken relative to `base_dir` (a study's folder) first, then to
    the current directory. Returns (name, code): what names the plugin in a run's identity
    (its file's or module's name) and what identifies its code (a sha256 of its file, or its
    package's version). Raises AblateError when it cannot be imported or when its import
    changes PyTorch's global state (harness.registry.global_state).
    """
    load_installed()
    if reference.endswith(".py") or "/" in reference or "\\" in reference:
        path = _find_file(reference, base_dir)
        return path.name, "sha256:" + _load_plugin_file(path)[:16]
    _load_plugin_module(reference)
    return reference, _module_code(reference)


def _module_code(name: str) -> str:
    """A module's package and version where an installed package provides it, else its file's sha256."""
    top = name.split(".")[0]
    for dist in importlib.metadata.packages_distributions().get(top, []):
        return f"{dist} {importlib.metadata.version(dist)}"
    file = getattr(sys.modules.get(name), "__file__", None)
    return "sha256:" + hashlib.sha256(Path(file).read_bytes()).hexdigest()[:16] if file else "unknown"


@contextlib.contextmanager
def _leaves_global_state(plugin: str):
    """Refuse a plugin whose import changed PyTorch's process-wide state (see
    harness.registry.global_state), which would change every run's numbers behind its key; the
    change is undone."""
    before = global_state.Snapshot()
    yield
    changed = before.changes()
    if changed:
        before.restore()
        raise AblateError(f"{plugin} changed PyTorch's global state when imported ({'; '.join(changed)}); that would "
                          "change the numbers of every run without changing its run key. A plugin must leave it as "
                          "it found it: make the setting a variant option, or a training setting")


def _load_plugin_module(reference: str) -> None:
    try:
        with _registering_as(core.Origin(f"plugin module {reference}")), \
                _leaves_global_state(f"plugin module '{reference}'"):
            importlib.import_module(reference)
    except AblateError:
        sys.modules.pop(reference, None)  # imported (and checked) again if loaded again
        raise
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
    if not reference.endswith(".py"):  # Python imports a file by its name's suffix
        raise AblateError(f"plugin file '{reference}' is not a Python file: give a path ending in .py, or a module "
                          "name")
    candidates = [Path(reference)]
    if base_dir is not None and not Path(reference).is_absolute():
        candidates.insert(0, base_dir / reference)
    for path in candidates:
        if path.is_file():
            return path.resolve()
    raise AblateError(f"plugin file '{reference}' does not exist (looked at {', '.join(map(str, candidates))})")


def _load_plugin_file(path: Path) -> str:
    """Import a plugin file; returns its content's sha256."""
    # one module name per file: loading the same file again is a no-op unless it was edited
    # meanwhile (in a notebook, say), when it is imported again and its variants replaced
    module_name = f"ablate_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    content = hashlib.sha256(path.read_bytes()).hexdigest()
    if _loaded_files.get(module_name) == content:
        return content
    _loaded_files[module_name] = content
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        with _registering_as(core.Origin(f"plugin file {path}")), _leaves_global_state(f"plugin file {path}"):
            spec.loader.exec_module(module)
    except BaseException as err:
        # forgotten, so that loading it again imports (and checks) it again
        del sys.modules[module_name], _loaded_files[module_name]
        if isinstance(err, AblateError) or not isinstance(err, (Exception, SystemExit)):
            raise
        raise AblateError(f"plugin file {path} failed to import: {import_failure(err)}") from err
    return content


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
