"""The `ablate` command line.

User mistakes raise AblateError anywhere below; :func:`main` turns them into one message
on stderr and exit code 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from harness.errors import AblateError
from harness import registry

app = typer.Typer(help="Ablation studies of GPT blocks, tracked in MLflow.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

PluginOption = Annotated[Optional[list[str]], typer.Option(
    "--plugin", help="module name or .py file registering variants (repeatable)")]


def load_plugins(plugins: list[str] | None) -> None:
    for plugin in plugins or []:
        registry.load_plugin(plugin)


@app.command()
def variants(
    as_json: Annotated[bool, typer.Option("--json", help="print {slot: [names...]}")] = False,
    plugin: PluginOption = None,
):
    """List every registered variant: slot, name, options with defaults, and origin."""
    load_plugins(plugin)
    found = registry.variants()
    if as_json:
        names = {slot: [v.name for v in found if v.slot == slot] for slot in registry.SLOTS}
        typer.echo(json.dumps(names, indent=2))
        return
    table = Table(title="registered variants")
    for column in ("slot", "name", "options (default)", "from", "what it is"):
        table.add_column(column, overflow="fold")
    for variant in found:
        options = ", ".join(
            f"{name}={'required' if field.is_required() else field.default}"
            for name, field in variant.options.model_fields.items()
        )
        table.add_row(variant.slot, variant.name, options or "-", variant.source, variant.summary)
    Console(width=200).print(table)


@app.callback()
def _group() -> None:
    """ablate: does this block change actually help?"""


def main() -> None:
    # typer reports usage errors itself (exit 2); our own user errors arrive here
    try:
        app()
    except AblateError as err:
        typer.echo(f"ablate: error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
