"""Built-in block variants, one file per slot.

Each file registers its variants with :func:`harness.registry.register` and imports nothing
else from the engine; they reach the registry through the ``ablate.variants`` entry points
in pyproject.toml, exactly as a third-party plugin does.
"""
