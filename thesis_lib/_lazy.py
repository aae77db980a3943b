"""Lazy re-exports for the wings' packages (PEP 562).

``from thesis_lib import book`` then ``book.trained_model(...)`` reads well in
a chapter, but importing every module of a wing up front would pull torch and
scipy into ``python -m thesis_lib --help``. A wing's ``__init__`` therefore
names where each public name lives, and the module is imported on first use.
"""

from __future__ import annotations

from importlib import import_module


def lazy_exports(package: str, modules: dict[str, tuple[str, ...]]):
    """``__getattr__`` and ``__dir__`` for ``package`` re-exporting ``modules``' names (and the modules)."""
    where = {name: mod for mod, names in modules.items() for name in names}

    def __getattr__(name: str):
        if name in where:
            return getattr(import_module(f"{package}.{where[name]}"), name)
        if name in modules:
            return import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(where) | set(modules))

    return __getattr__, __dir__, sorted(where)
