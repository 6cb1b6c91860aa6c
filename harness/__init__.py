"""ablate's engine: registry, configuration, model assembly, and the command line.

The engine knows slots and the registry, never a concrete variant by name: built-in
variants reach it through the ``ablate.variants`` entry points, like any plugin.
"""

__version__ = "0.1.0"
