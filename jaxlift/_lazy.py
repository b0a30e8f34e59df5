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
