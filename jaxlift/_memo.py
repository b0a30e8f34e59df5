"""Memoising on a user's function, which may not be hashable."""
from __future__ import annotations

from typing import Any, Callable


def memoized(cached: Callable, *args) -> Any:
    """``cached(*args)`` through its ``functools.lru_cache``, or straight through the wrapped
    function when an argument (a user's ``fn`` or ``target``, say) cannot be hashed."""
    try:
        return cached(*args)
    except TypeError:  # unhashable argument: compute without the cache
        return cached.__wrapped__(*args)
