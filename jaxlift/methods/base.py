"""A method is a value: :class:`Method` (what it computes, its typed options, what it needs).

``jaxlift.attribute(fn, params, x, refs, mode=M)`` looks ``M`` up in the table of
:mod:`jaxlift.methods` (or takes a :class:`Method` the user built) and hands it to the pipeline
(:mod:`jaxlift.pipeline`), which does everything every method shares: validation, references,
finite checks, ``Δt``, chunking, averaging, multipliers. A method supplies only its kernel:

* ``scope="interpreter"``: DeepLIFT; the interpreter runs the method's ``composite`` (which
  rule at which primitive, :mod:`jaxlift.rules.composites`) on every (input, reference) pair
  (reference-free methods on the interpreter, guided backprop and ε-LRP, are ``"input"``
  kernels calling :func:`jaxlift.methods.interpreted.multipliers_at_input`);
* ``scope="pair"``: ``kernel(f, params, x, r, opts=, arrays=, key=)`` on one (input, reference)
  pair;
* ``scope="input"``: ``kernel(f, params, x, None, opts=, arrays=, key=)`` on one input; the
  references only shape the result (a K axis of copies) and define ``Δt``.

In a kernel ``f(params, x_example)`` is the target of one example (a scalar, or ``(T,)`` for
``target="all"``), ``x``/``r`` are one example (a pytree like ``x`` without its leading axis),
``opts`` the validated options (a dict), ``arrays`` what ``prepare`` made once per call (masks,
permutations, samples; shared by all pairs), and ``key`` a PRNG key for this *input*
(``fold_in(key, global input index)``: results do not depend on chunking). It returns
``(attr, mult)`` shaped like the example (with a leading ``T`` axis for ``target="all"``);
``mult=None`` means ``attr/Δx`` (0 where ``Δx = 0``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from jaxlift.errors import InputTypeError, InputValueError

SCOPES = ("interpreter", "pair", "input")
COMPLETENESS = ("exact", "limit", "none")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()  # an Option's default when the user must give it


@dataclasses.dataclass(frozen=True)
class Option:
    """One typed option of a method: its ``default`` (or :data:`REQUIRED`), a ``check`` that
    returns the normalized value or raises ``ValueError``/``TypeError`` naming the problem, and
    a one-line ``doc``. ``static`` options key the compilation (they must be hashable after
    ``check``); non-static ones (arrays such as a ``feature_mask``) are only read by
    ``prepare``."""

    name: str
    default: Any
    doc: str = ""
    check: Callable[[Any], Any] | None = None
    static: bool = True


@dataclasses.dataclass(frozen=True)
class Method:
    """An attribution method (see the module doc).

    ``completeness`` says whether scores sum to ``Δt = t(x) − t(r)`` per pair: ``"exact"``,
    ``"limit"`` (as a parameter goes to infinity, e.g. integrated gradients' steps) or
    ``"none"``. ``carries_split``: the interpreter carries ``Δv = Δv⁺ + Δv⁻`` (RevealCancel).
    ``needs_refs`` may be a function of the options (a wrapper needs references when its base
    does), and ``scope_of(opts)`` may narrow a ``"pair"`` kernel to ``"input"``.
    ``rows_per_pair(opts)``: forward passes of ``fn`` per pair, so that ``batch_size="auto"`` sizes
    chunks from memory (``None``: run every pair at once under ``"auto"``). ``single_array``: ``x``
    must be one array, not a pytree.
    ``prepare(opts, example_shape, key) -> dict`` makes the per-call arrays (host side).
    ``cost``: one line on what a call costs, for the README's table of modes
    (:func:`jaxlift.methods.table.modes_table`).
    """

    name: str
    summary: str
    scope: str
    kernel: Callable | None = None
    composite: Any = None
    options: tuple[Option, ...] = ()
    needs_refs: "bool | Callable[[dict], bool]" = True
    carries_split: bool = False
    completeness: str = "none"
    prepare: Callable | None = None
    rows_per_pair: Callable[[dict], int] | None = None
    single_array: bool = False
    scope_of: Callable[[dict], str] | None = None
    cost: str = ""

    def __post_init__(self):
        if self.scope not in SCOPES:
            raise InputValueError(f"method {self.name!r}: scope must be one of {SCOPES}, got "
                                  f"{self.scope!r}")
        if self.completeness not in COMPLETENESS:
            raise InputValueError(f"method {self.name!r}: completeness must be one of "
                                  f"{COMPLETENESS}, got {self.completeness!r}")
        if (self.scope == "interpreter") != (self.kernel is None):
            raise InputValueError(f"method {self.name!r}: an interpreter method has a composite and "
                                  "no kernel; a pair or input method has a kernel")

    def check_options(self, options: dict | None) -> dict:
        """Validate ``mode_options`` and fill in defaults: an unknown name, a missing required
        option or a bad value raises an error naming the method and the option."""
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise InputTypeError(f"mode_options must be a dict or None, got "
                                 f"{type(options).__name__}")
        known = {o.name: o for o in self.options}
        unknown = sorted(set(options) - set(known))
        if unknown and not known:
            raise InputValueError(f"mode {self.name!r} takes no mode_options (got {unknown})")
        if unknown:
            takes = ", ".join(known) or "none"
            raise InputValueError(f"unknown mode_options {unknown} for mode {self.name!r} (it takes: "
                                  f"{takes})")
        out = {}
        for name, opt in known.items():
            value = options.get(name, opt.default)
            if value is REQUIRED:
                raise InputValueError(f"mode {self.name!r} needs mode_options [{name!r}] ({opt.doc})")
            out[name] = opt.check(value) if opt.check is not None else value
        return out

    def scope_for(self, opts: dict) -> str:
        """``scope``, or ``scope_of(opts)`` for a wrapper whose kernel is per input or per pair
        as its base is (SmoothGrad over the gradient runs once per input, not per pair)."""
        return self.scope if self.scope_of is None else self.scope_of(opts)

    def requires_refs(self, opts: dict) -> bool:
        """Whether a call with these (checked) options needs references: ``needs_refs``, or
        ``needs_refs(opts)`` for a method whose answer depends on them (a wrapper's base)."""
        return bool(self.needs_refs(opts) if callable(self.needs_refs) else self.needs_refs)

    def static_options(self, opts: dict) -> tuple:
        """The options that key the compilation, as a hashable tuple."""
        return tuple((o.name, opts[o.name]) for o in self.options if o.static)


# ---------------------------------------------------------------------------------------------
# Checks for options (each returns the normalized value)

def positive_int(method: str, name: str) -> Callable[[Any], int]:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) and not hasattr(v, "__index__"):
            raise InputValueError(f"{method} {name} must be a positive int, got {v!r}")
        v = int(v)
        if v < 1:
            raise InputValueError(f"{method} {name} must be a positive int, got {v!r}")
        return v
    return check


def optional_positive_int(method: str, name: str) -> Callable[[Any], int | None]:
    inner = positive_int(method, name)
    return lambda v: None if v is None else inner(v)


def non_negative_float(method: str, name: str) -> Callable[[Any], float]:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "__float__"):
            raise InputValueError(f"{method} {name} must be a non-negative number, got {v!r}")
        f = float(v)
        if not f >= 0 or f == float("inf"):
            raise InputValueError(f"{method} {name} must be a finite non-negative number, got {v!r}")
        return f
    return check


def one_of(method: str, name: str, choices: tuple) -> Callable[[Any], Any]:
    def check(v):
        if v not in choices:
            raise InputValueError(f"unknown {method} {name} {v!r}; choose one of "
                                  f"{', '.join(map(str, choices))}")
        return v
    return check
