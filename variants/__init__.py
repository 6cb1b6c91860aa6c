"""Built-in block variants, one file per slot.

Each file registers its variants with :func:`harness.registry.register` and imports nothing
else from the engine. The package reaches the registry through one ``ablate.variants`` entry
point (pyproject.toml), exactly as a third-party plugin does, and imports every module in
it: a new variant is one new file here (with its test under tests/variants/), found
without editing pyproject.toml or reinstalling.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
