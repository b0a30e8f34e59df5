"""Layers by name: ``attribute(..., layer="word_embeddings")`` on a model whose code marks nothing.

When ``layer=`` names no ``jaxlift.layer`` marker of ``fn``, :func:`resolve` looks for modules
of that name that ``fn`` calls and returns a copy of ``fn`` in which their outputs are marked
``jaxlift.layer(out, layer)``; the model's code is not edited:

* **Flax linen** (``model.apply``, :func:`jaxlift.from_linen`, Hugging Face's Flax models, the
  modules of :func:`jaxlift.load_keras`) and **Haiku**: the output of ``__call__`` of each
  matching module is marked through ``flax.linen.intercept_methods`` (``hk.intercept_methods``
  when Haiku has been imported) while ``fn`` runs. A module's path is linen's ``module.path``
  joined by ``/`` (``bert/embeddings/word_embeddings``) or Haiku's ``module_name``
  (``mlp/~/linear_0``); the candidates are the modules whose ``__call__`` ``fn`` calls (the
  outermost linen module, whose output is ``fn``'s, is none). ``fn`` must call the model
  itself: a ``jax.jit``-compiled copy called inside ``fn`` may reuse a trace made without the
  interception.
* **Flax NNX** (:func:`jaxlift.from_nnx`) and **Equinox** (:func:`jaxlift.from_equinox`): the
  adapters' ``fn.map_module(transform)`` computes ``fn`` with ``transform(module)`` in place of
  the module; the transform swaps each matching submodule for one whose call marks its output.
  A path is the attribute names and list indices from the root (``blocks/0/attn``); the
  candidates are every submodule.

Matching ``layer`` against the candidate paths, component by component (``/`` separates them):

1. a candidate equal to ``layer`` is the one (a full path);
2. otherwise the candidates that **end with** ``layer``'s components (``word_embeddings``,
   ``embeddings/word_embeddings``); a name without wildcards must match exactly one module —
   several are refused, listing them;
3. components may hold shell wildcards (``*``, ``?``, ``[...]``, matched within one component
   by ``fnmatch``): ``"layer/*/attention"`` marks every match, and all of them together form
   one cut (their scores sum to ``Δt``, as for several ``jaxlift.layer`` sites of one name).
   A pattern matching a module and one inside it is refused (one's output feeds the other's).

A module called several times (a shared embedding) is marked at every call: the sites form one
cut. No match is a ``ValueError`` listing the candidates (and the closest names).

The copy of ``fn`` is made once per ``(fn, layer)`` and kept (like the pipeline's compiled
programs, which are cached per ``fn`` object), so repeated calls reuse one compiled program
(docs/design.md §16, "Layers by name").
This module imports its model libraries only when a name is resolved, and nothing of jaxlift's
interpreter.
"""
from __future__ import annotations

import contextlib
import difflib
import fnmatch
import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from jaxlift.errors import InputValueError
from jaxlift.jaxpr_walk import nested_jaxprs
from jaxlift.markers import layer as mark, marker_of
from jaxlift.program import at_one_trace

__all__ = ["resolve", "module_paths", "match", "mark_module"]

_WILDCARDS = "*?["
_SHOWN = 60  # candidates listed in an error


# ---------------------------------------------------------------------------------------------
# Matching

def match(layer: str, paths: Sequence[str], marked: Sequence[str] = ()) -> list[str]:
    """The candidate ``paths`` that ``layer`` names (see the module docstring), in their order;
    raises ``ValueError`` (listing candidates, and the ``marked`` layer names) when there is
    none, when a name without wildcards names several, or when a pattern names a module and
    one inside it."""
    if not isinstance(layer, str) or not layer.strip("/"):
        raise InputValueError(f"layer must be a non-empty string, got {layer!r}")
    paths = list(dict.fromkeys(paths))
    if layer in paths:
        return [layer]
    want = layer.strip("/").split("/")
    found = [p for p in paths if _ends_with(p.split("/"), want)]
    pattern = any(c in layer for c in _WILDCARDS)
    if not found:
        raise InputValueError(f"no layer named {layer!r} in fn (marked layers: "
                              f"{', '.join(sorted(marked)) or 'none'}): fn marks no value of that "
                              f"name with jaxlift.layer and calls no module of that name"
                              + _closest(layer, paths) + _listing("modules fn calls", paths))
    if len(found) > 1 and not pattern:
        raise InputValueError(f"layer {layer!r} is ambiguous: it names {len(found)} modules"
                              + _listing("", found) + "\nGive a longer path (one of these), or a "
                              "pattern with wildcards (e.g. " + repr(_pattern_for(found)) + ") to "
                              "score all of them as one cut")
    nested = [(a, b) for a in found for b in found if b.startswith(a + "/")]
    if nested:
        a, b = nested[0]
        raise InputValueError(f"layer pattern {layer!r} names a module and one inside it ({a!r} "
                              f"and {b!r}): the inner module's output feeds the outer's, so they "
                              "are not one cut; narrow the pattern")
    return found


def _ends_with(parts: list[str], want: list[str]) -> bool:
    return (len(parts) >= len(want)
            and all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts[-len(want):], want)))


def _closest(layer: str, paths: list[str]) -> str:
    names = {p.rsplit("/", 1)[-1]: p for p in paths}
    near = difflib.get_close_matches(layer.rsplit("/", 1)[-1], list(names), n=3, cutoff=0.6)
    return (" (did you mean " + " or ".join(repr(names[n]) for n in near) + "?)") if near else ""


def _listing(what: str, paths: list[str]) -> str:
    if not paths:
        return (f". {what[0].upper() + what[1:]}: none — mark the value inside fn with "
                "jaxlift.layer(value, name), or call a Flax linen or Haiku module, or a model "
                "from jaxlift.from_nnx or jaxlift.from_equinox")
    head = "\n  ".join(paths[:_SHOWN])
    more = f"\n  … and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else ""
    return (f". {what[0].upper() + what[1:]}:" if what else ":") + "\n  " + head + more


def _pattern_for(found: list[str]) -> str:
    """A wildcard pattern matching ``found``: their common components, ``*`` where they
    differ (aligned from the end)."""
    split = [p.split("/") for p in found]
    n = min(len(s) for s in split)
    tails = [s[-n:] for s in split]
    parts = [c[0] if len(set(c)) == 1 else "*" for c in zip(*tails)]
    return "/".join(parts if "*" in parts else ["*"] + parts)


# ---------------------------------------------------------------------------------------------
# Resolving ``layer=`` for ``fn``

def resolve(fn: Callable, layer: str | None, params: Any, x: Any) -> Callable:
    """``fn`` itself when ``layer`` is ``None`` or names a ``jaxlift.layer`` marker of ``fn``;
    otherwise a copy of ``fn`` marking the outputs of the modules ``layer`` names (the same
    object for every call with the same ``(fn, layer)``). ``params`` and ``x`` (a batch) give
    the shapes at which ``fn`` is traced once to list its modules. ``fn`` that cannot be traced
    here is returned unchanged (the pipeline then names the problem)."""
    if layer is None:
        return fn
    if not isinstance(layer, str) or not layer.strip("/"):
        raise InputValueError(f"layer must be a non-empty string — the name of a jaxlift.layer "
                              f"marker or the path of a module — got {layer!r}")
    try:
        cell = _cell(fn, layer)
    except TypeError:  # an unhashable fn: no memo
        cell = []
    if cell:
        return cell[0]
    paths, marked = _survey_at_one(fn, params, x)
    if paths is None and layer not in marked:
        try:
            paths, marked = _survey(fn, params, jax.tree_util.tree_map(_struct, x))
        except Exception:  # noqa: BLE001 — fn does not trace here: the pipeline will say why
            return fn
    resolved = fn if layer in marked else _marking(fn, layer, tuple(match(layer, paths, marked)))
    cell.append(resolved)
    return resolved


def module_paths(fn: Callable, params: Any, x: Any) -> list[str]:
    """The paths of the modules ``fn(params, x)`` calls (Flax linen) or holds (a model from
    :func:`jaxlift.from_nnx` / :func:`jaxlift.from_equinox`): the names ``layer=`` accepts,
    beside the values ``fn`` marks with ``jaxlift.layer``. ``x`` is a batch (or its shapes)."""
    return _survey(fn, params, jax.tree_util.tree_map(_struct, x))[0]


@functools.lru_cache(maxsize=256)
def _cell(fn, layer: str) -> list:
    """One slot per ``(fn, layer)`` holding the resolved function."""
    return []


def _struct(leaf):
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return leaf
    dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
    return jax.ShapeDtypeStruct(np.shape(leaf), jax.dtypes.canonicalize_dtype(dtype))


def _survey_at_one(fn: Callable, params: Any, x: Any) -> tuple[list[str] | None, set[str]]:
    """:func:`_survey` of ``fn``'s trace at one example — the trace the interpreter's program is
    built from (:func:`jaxlift.program.at_one_trace`, which JAX makes once per shapes), so that
    naming a marker or a module costs no trace of its own. The module paths are ``None`` where
    that trace was made before (JAX keeps it, and fn's modules do not run again), for a model
    that holds its modules (``map_module``: they are listed from a copy of it), or where ``fn``
    does not trace here."""
    if hasattr(fn, "map_module"):
        return None, set()
    one = jax.tree_util.tree_map(
        lambda l: jax.ShapeDtypeStruct((1, *np.shape(l)[1:]), _struct(l).dtype), x)
    try:
        paths, marked = _survey(fn, params, one, traced=at_one_trace(fn))
    except Exception:  # noqa: BLE001 — resolve surveys fn as before
        return None, set()
    return paths or None, marked


def _survey(fn, params, structs, traced: Callable | None = None) -> tuple[list[str], set[str]]:
    """``(module paths, names of jaxlift.layer markers)`` of one trace of ``fn`` (of ``traced``,
    a function that calls ``fn``, where given: its modules are listed only if JAX traces it
    here rather than reusing a trace it keeps)."""
    seen: list[str] = []
    # A fresh function per trace: jax caches traces per function object, and a trace of fn
    # made earlier (without the interception) would not call the modules again.
    if hasattr(fn, "map_module"):
        def record(module):
            seen.extend(p for p, _ in _submodules(module))
            return module
        recording = fn.map_module(record)
        jaxpr = jax.make_jaxpr(lambda p, xb: recording(p, xb))(params, structs)
    else:
        with _interception(lambda path, out: seen.append(path) or out):
            jaxpr = jax.make_jaxpr(traced or (lambda p, xb: fn(p, xb)))(params, structs)
    return list(dict.fromkeys(seen)), set(_marker_names(jaxpr.jaxpr))


def _marker_names(jaxpr) -> Iterator[str]:
    for eqn in jaxpr.eqns:
        found = marker_of(eqn)
        if found is not None:
            yield found[0]
        for sub, _ in nested_jaxprs(eqn.params):
            yield from _marker_names(sub)


def _marking(fn: Callable, layer: str, paths: tuple[str, ...]) -> Callable:
    """``fn`` with the outputs of the modules at ``paths`` marked ``jaxlift.layer(·, layer)``."""
    if hasattr(fn, "map_module"):
        return fn.map_module(lambda module: mark_module(module, paths, layer))
    wanted = frozenset(paths)

    def marked(params, xb):
        with _interception(lambda path, out: mark(out, layer) if path in wanted else out):
            return fn(params, xb)

    marked.__name__ = f"{getattr(fn, '__name__', 'fn')}[layer={layer}]"
    marked.__doc__ = (f"{getattr(fn, '__name__', 'fn')} with the outputs of {list(paths)} "
                      f"marked jaxlift.layer(·, {layer!r}).")
    return marked


# ---------------------------------------------------------------------------------------------
# Flax linen and Haiku: intercepting ``__call__``

class _interception:
    """While active, every ``__call__`` of a bound Flax linen module (but the outermost) and of
    a Haiku module returns ``on_output(path, out)``, ``path`` being the linen module's path
    joined by ``/`` or the Haiku module's ``module_name`` (``mlp/~/linear_0``). Haiku is
    intercepted only when it has been imported (by the model's code)."""

    def __init__(self, on_output: Callable[[str, Any], Any]):
        self.on_output = on_output
        self.stack = contextlib.ExitStack()

    def __enter__(self):
        import flax.linen as nn

        def linen(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name != "__call__":
                return out
            try:
                path = "/".join(str(p) for p in context.module.path)
            except Exception:  # noqa: BLE001 — an unbound module has no path
                return out
            return self.on_output(path, out) if path else out

        def haiku(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name != "__call__":
                return out
            return self.on_output(context.module.module_name, out)

        self.stack.enter_context(nn.intercept_methods(linen))
        if "haiku" in sys.modules:
            self.stack.enter_context(sys.modules["haiku"].intercept_methods(haiku))
        return self

    def __exit__(self, *exc):
        return self.stack.__exit__(*exc)


# ---------------------------------------------------------------------------------------------
# Flax NNX and Equinox: swapping submodules

def mark_module(module: Any, paths: Sequence[str], layer: str) -> Any:
    """``module`` (Flax NNX or Equinox) with the submodules at ``paths`` (as
    :func:`module_paths` writes them) replaced by ones whose ``__call__`` returns
    ``jaxlift.layer(out, layer)``. NNX: the module is changed in place (the adapters' ``fn``
    merges a fresh one per call) and returned; Equinox: a new module (``eqx.tree_at``)."""
    wanted = set(paths)
    subs = [(p, m) for p, m in _submodules(module) if p in wanted]
    missing = wanted - {p for p, _ in subs}
    if missing:
        raise InputValueError(f"mark_module: no submodule at {sorted(missing)}")
    if _is_equinox(module):
        import equinox as eqx
        return eqx.tree_at(lambda m: [_get(m, p) for p, _ in subs], module,
                           [_equinox_marked()(s, layer) for _, s in subs])
    for _, sub in subs:
        object.__setattr__(sub, "__class__", _nnx_marked(type(sub), layer))
    return module


def _submodules(module) -> list[tuple[str, Any]]:
    """``(path, submodule)`` of every submodule of an NNX or Equinox module (not the root)."""
    if _is_equinox(module):
        return list(_equinox_walk(module, ()))
    from flax import nnx
    return [("/".join(str(k) for k in path), node) for path, node in nnx.iter_graph(module)
            if path and isinstance(node, nnx.Module) and callable(node)]


def _is_equinox(module) -> bool:
    try:
        import equinox as eqx
    except ImportError:
        return False
    return isinstance(module, eqx.Module)


def _equinox_walk(node, path: tuple) -> Iterator[tuple[str, Any]]:
    import dataclasses

    import equinox as eqx
    if isinstance(node, eqx.Module):
        if path:
            yield "/".join(str(p) for p in path), node
        children = [(f.name, getattr(node, f.name, None)) for f in dataclasses.fields(node)]
    elif isinstance(node, (list, tuple)):
        children = list(enumerate(node))
    elif isinstance(node, dict):
        children = list(node.items())
    else:
        return
    for key, child in children:
        yield from _equinox_walk(child, path + (key,))


def _get(module, path: str):
    node = module
    for part in path.split("/"):
        if isinstance(node, (list, tuple)):
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node[next(k for k in node if str(k) == part)]
        else:
            node = getattr(node, part)
    return node


@functools.lru_cache(maxsize=None)
def _nnx_marked(cls: type, layer: str) -> type:
    """A subclass of the NNX module class ``cls`` whose ``__call__`` marks its output."""
    def __call__(self, *args, **kwargs):
        return mark(cls.__call__(self, *args, **kwargs), layer)
    return type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})


@functools.lru_cache(maxsize=None)
def _equinox_marked() -> type:
    """An Equinox module wrapping another and marking its output (made once, on first use)."""
    import equinox as eqx

    class Marked(eqx.Module):
        inner: Any
        name: str = eqx.field(static=True)

        def __call__(self, *args, **kwargs):
            return mark(self.inner(*args, **kwargs), self.name)

    return Marked
