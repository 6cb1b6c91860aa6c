"""The house's layers: no import loop between harness's packages nor between its files, the
settings floor imports nothing above it, MLflow is reached through harness.tracking alone, and
every module imports."""

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

HARNESS = Path(__file__).parents[1] / "harness"
# what the settings floor may stand on: the registry (variant names are validated against
# it), the kernels it offers, the settings base and the small shared modules
FLOOR = {"config", "registry", "kernels", "settings", "errors", "names", "redaction"}


def _imports() -> dict[str, set[str]]:
    """Each part of harness (a subpackage or a top-level module) -> the parts it imports,
    counting imports inside functions too: a deferred import is still a dependency."""
    parts: dict[str, set[str]] = {}
    for file in HARNESS.rglob("*.py"):
        relative = file.relative_to(HARNESS).with_suffix("")
        if relative.parts == ("__init__",):
            continue  # harness/__init__ is the public face: it names Study, lazily
        part = relative.parts[0]
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness."):
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.startswith("harness.")]
            else:
                continue
            parts.setdefault(part, set()).update(name.split(".")[1] for name in names)
    for part, used in parts.items():
        used.discard(part)
    return parts


def test_no_import_loop_between_packages():
    imports = _imports()
    try:
        order = list(graphlib.TopologicalSorter(imports).static_order())
    except graphlib.CycleError as err:
        raise AssertionError(f"an import loop between harness packages: {' -> '.join(err.args[1])}") from None
    assert {"config", "data", "model", "training", "tracking", "report", "study"} <= set(order)


def _module_imports() -> dict[str, set[str]]:
    """Each harness module -> the harness modules it imports when it runs (deferred imports
    too; names imported only for type hints, under `if TYPE_CHECKING:`, do not count). A
    module's own packages are left out: their __init__ imports it in turn."""
    modules = {}
    for file in HARNESS.rglob("*.py"):
        parts = ("harness",) + file.relative_to(HARNESS).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    graph = {}
    for module, file in modules.items():
        tree = ast.parse(file.read_text())
        typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and ast.unparse(node.test) == "TYPE_CHECKING" for inner in ast.walk(node)}
        used = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
                used |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                used |= {alias.name for alias in node.names}
        graph[module] = {name for name in used & modules.keys()
                         if name != module and not module.startswith(name + ".")}
    return graph


def test_no_import_circle_between_files():
    try:
        graphlib.TopologicalSorter(_module_imports()).prepare()
    except graphlib.CycleError as err:
        raise AssertionError(f"an import circle between harness files: {' -> '.join(err.args[1])}") from None


def test_the_settings_floor_imports_nothing_above_it():
    above = _imports()["config"] - FLOOR
    assert not above, f"harness.config imports {sorted(above)}"


def test_every_module_imports():
    code = ("import importlib, pkgutil, harness\n"
            "for module in pkgutil.walk_packages(harness.__path__, 'harness.'):\n"
            "    importlib.import_module(module.name)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_only_tracking_touches_mlflow():
    """MLflow stays behind harness.tracking's interface: nothing else imports it or reaches a
    tracker's client."""
    for file in HARNESS.rglob("*.py"):
        if file.relative_to(HARNESS).parts[0] == "tracking":
            continue
        for node in ast.walk(ast.parse(file.read_text())):
            imported = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(name.split(".")[0] == "mlflow" for name in imported), f"{file} imports MLflow"
            assert not (isinstance(node, ast.Attribute) and node.attr == "client"), \
                f"{file}:{node.lineno} reaches a tracker's MLflow client"
