"""Packages whose names are imported on first use (PEP 562 module ``__getattr__``)."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_attributes(package: str, namespace: dict, exports: dict[str, str],
                    submodules: tuple[str, ...] = ()) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package`` (its module ``namespace``): a name of
    ``exports`` (name → the module that defines it) or of ``submodules`` is imported the first
    time it is read, then cached in ``namespace``; any other name is an ``AttributeError``."""
    def getattr_(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
        elif name in submodules:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(exports) | set(submodules))

    return getattr_, dir_


def renamed_attributes(module: str, namespace: dict, renamed: dict[str, str]) -> Callable:
    """A module ``__getattr__`` for public names that were renamed (old name → new name): the
    old name still reads the new object, with a ``DeprecationWarning`` saying the new name; any
    other name is an ``AttributeError``. The old names are in neither ``__all__`` nor ``dir``."""
    def getattr_(name: str) -> Any:
        if name in renamed:
            import warnings
            new = renamed[name]
            warnings.warn(f"{module}.{name} is now {module}.{new} (the old name meant "
                          "something else elsewhere in jaxlift)", DeprecationWarning, stacklevel=2)
            return namespace[new]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return getattr_
