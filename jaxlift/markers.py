"""Layer markers: ``jaxlift.layer(value, name)`` and how the program builder reads them.

A marker is an identity ``jit`` named ``jaxlift_layer__<name>`` (``@<tree>`` appended for a
pytree), applied to *all* leaves of the marked value at once: one equation per marked site,
whose operands are the leaves in ``jax.tree_util`` order. Scores for ``layer=name`` are given
at every site of that name together — several sites, or a pytree at one site, form **one cut**
(docs/design.md §16): the contributions of all of them add up to ``Δt``.

The pytree structure of a marked value is interned here (``tree_token`` ↔ ``tree_of``), so that
a site's scores come back in the structure that was marked. The table only grows by the
structures a program marks; each entry is immutable.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax

from jaxlift.errors import InputValueError

MARKER_PREFIX = "jaxlift_layer__"
_TREE_SEP = "@"
_TREES: dict[str, Any] = {}  # token -> PyTreeDef (interned structures of marked pytrees)


def tree_token(treedef) -> str:
    """A short name for ``treedef``, the same for equal structures."""
    return _intern(treedef)


@functools.lru_cache(maxsize=None)
def _intern(treedef) -> str:
    token = str(len(_TREES))
    _TREES[token] = treedef
    return token


def tree_of(token: str | None):
    """The structure behind :func:`tree_token` (``None`` for a single array)."""
    return None if token is None else _TREES[token]


@functools.lru_cache(maxsize=None)
def _marker(name: str, token: str | None) -> Callable:
    def identity(*leaves):
        return leaves
    identity.__name__ = MARKER_PREFIX + name + ("" if token is None else _TREE_SEP + token)
    return jax.jit(identity)


def layer(x, name: str):
    """Mark an intermediate value so that ``attribute(..., layer=name)`` scores it.

    ``x`` is an array or a pytree of arrays (a dict of embeddings …): a marked pytree, and every
    site marked with the same ``name``, form one cut whose scores together sum to ``Δt``.
    Identity in value (and under ``jit``, ``vmap`` and ``grad``). Returns ``x``.
    """
    if not isinstance(name, str) or not name:
        raise InputValueError(f"layer name must be a non-empty string, got {name!r}")
    if _TREE_SEP in name:
        raise InputValueError(f"layer name {name!r} must not contain {_TREE_SEP!r}")
    leaves, treedef = jax.tree_util.tree_flatten(x)
    if not leaves:
        raise InputValueError(f"jaxlift.layer({name!r}): the marked value has no arrays")
    single = treedef == jax.tree_util.tree_structure(0)
    marked = _marker(name, None if single else tree_token(treedef))(*leaves)
    return marked[0] if single else jax.tree_util.tree_unflatten(treedef, marked)


def marker_of(eqn) -> tuple[str, str | None] | None:
    """``(name, tree token or None)`` of a marker equation, else ``None``."""
    if eqn.primitive.name not in ("jit", "pjit"):
        return None
    full = str(eqn.params.get("name", ""))
    if not full.startswith(MARKER_PREFIX):
        return None
    name, _, token = full[len(MARKER_PREFIX):].partition(_TREE_SEP)
    return name, (token or None)
