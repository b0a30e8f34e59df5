"""The rule registry: the only global mutable state of jaxlift.

A *rule* maps output multipliers of one equation (or one fused elementwise nonlinearity) to
multipliers of its live inputs, and in RevealCancel mode also splits each output difference into
its positive and negative parts. The interpreter looks rules up here by primitive name and by
which operands are live; it knows no rule by name.

Besides rules, the registry records two properties of primitives that the program builder needs:

* ``elementwise``: the primitive maps equal-shaped operands to an equal-shaped result, element by
  element (``y_i = f(a_i, b_i, ...)``). Chains of such equations fed by one live tensor are fused
  into a single nonlinearity (docs/design.md §5.4).
* ``linear``: a predicate on the live mask telling whether the equation is linear in its live
  operands (a bias ``add``, a ``mul`` by a fixed operand, ``neg`` ...). A fused chain made only of
  linear equations is left to the linear rules.
"""
from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Any, Callable, Sequence

from jaxlift.errors import InputValueError

LiveMask = tuple[bool, ...]
Predicate = Callable[[LiveMask], bool]


@dataclasses.dataclass(frozen=True)
class Rule:
    """A DeepLIFT rule.

    ``backward(ctx, out_mults) -> in_mults``: ``out_mults`` has one ``SplitMultipliers``
    ``(m⁺, m⁻)`` (or ``None`` where the output receives no multiplier) per output; the result has
    one ``SplitMultipliers`` or ``None`` per input.
    ``split(ctx) -> [(pos, neg), ...]``: the RevealCancel split ``Δy = Δy⁺ + Δy⁻`` of each
    output. ``None`` means the interpreter's generic sign split (``Δy⁺ = max(Δy, 0)``) is used,
    and output multipliers are collapsed with it before ``backward`` (see ``interpreter``).
    ``numeric_operands``: the rule reads live boolean and integer operands as numbers (a boolean
    as 0/1) and gives them multipliers; any other rule is refused where such an operand is live,
    since it would silently drop its share of the difference (docs/design.md §12).
    ``forward(ctx) -> (outs_x, outs_r, stash)``: evaluate the operation on both sides at once
    and keep ``stash`` for ``split``/``backward`` (``ctx.stash``); ``None`` evaluates it with
    ``bind``, once per side. A loop uses it to run its body once and keep every step.
    ``exact``: the rule promises ``Σ m_in·Δin = Σ m_out·Δout`` (summation-to-delta). Rules that
    do not (the original's max-pooling route, gate-as-weight, guided backprop, ε-LRP) say so,
    and a composite using one is not held to the completeness certificate.
    """

    name: str
    backward: Callable[..., Sequence[Any]]
    split: Callable[..., Sequence[tuple[Any, Any]]] | None = None
    numeric_operands: bool = False
    forward: Callable[..., tuple] | None = None
    exact: bool = True


_RULES: dict[str, list[tuple[Predicate, Rule]]] = {}
_ELEMENTWISE: set[str] = set()
_LINEAR: dict[str, Predicate] = {}
_EXPANSIONS: dict[str, Callable] = {}
_RECORD: list[Registration] = []

# Live masks on which predicates are compared: every mask of 1..MAX_CHECKED_OPERANDS operands
# with at least one live operand (a select_n of up to five cases, a concatenate of six, …).
MAX_CHECKED_OPERANDS = 6


@dataclasses.dataclass(frozen=True)
class Registration:
    """One ``register`` call: ``primitive``, the rule's name, the module that made the call, and
    how it stands to the primitive's other rules — ``"owner"`` (the one undeclared
    registration), ``"shared"`` (declared ``shared=True``: never applies where another does) or
    ``"overrides"`` (declared ``overrides=rule``: wins over that rule where both apply)."""

    primitive: str
    rule: str
    module: str
    relation: str
    overridden: str | None = None


def always(live: LiveMask) -> bool:
    return True


def one_live(live: LiveMask) -> bool:
    return sum(live) == 1


def several_live(live: LiveMask) -> bool:
    return sum(live) >= 2


@functools.lru_cache(maxsize=None)
def _masks() -> tuple[LiveMask, ...]:
    return tuple(tuple(bool(k >> i & 1) for i in range(n))
                 for n in range(1, MAX_CHECKED_OPERANDS + 1) for k in range(1, 2 ** n))


def _overlap(a: Predicate, b: Predicate) -> LiveMask | None:
    """A live mask on which both predicates hold, or ``None``."""
    return next((m for m in _masks() if a(m) and b(m)), None)


def register(primitive: str, rule: Rule, when: Predicate = always, *, shared: bool = False,
             overrides: Rule | None = None) -> None:
    """Register ``rule`` for ``primitive`` when ``when(live_mask)`` holds.

    One registration of each primitive is its owner's (its rule family's file); any other must
    say how it stands to the rules already there, and the registry checks it, so that the
    answer of :func:`lookup` never depends on the order in which the rule files are imported:

    * ``shared=True``: another file's rules cover other live masks of the same primitive
      (``mul`` with one live operand is linear, with two a product); ``when`` must not hold on
      any mask where an existing rule's predicate does (checked on every mask of up to
      ``MAX_CHECKED_OPERANDS`` operands).
    * ``overrides=other``: ``rule`` replaces ``other`` (registered before, for ``primitive``)
      where both predicates hold; it must not overlap any rule but ``other``.

    A second undeclared registration of a primitive raises ``InputValueError``, as does a
    declaration that does not hold."""
    if shared and overrides is not None:
        raise InputValueError(f"register({primitive!r}, {rule.name!r}): give shared=True or "
                              "overrides=, not both")
    caller = sys._getframe(1).f_globals.get("__name__", "?")
    existing = _RULES.get(primitive, [])
    others = existing
    if overrides is not None:
        if not any(r is overrides for _, r in existing):
            raise InputValueError(
                f"register({primitive!r}, {rule.name!r}, overrides={overrides.name!r}): that "
                f"rule is not registered for {primitive!r} (import its file first)")
        others = [(w, r) for w, r in existing if r is not overrides]
    elif not shared:
        owner = next((e for e in _RECORD if e.primitive == primitive and e.relation == "owner"),
                     None)
        if owner is not None:
            raise InputValueError(
                f"register({primitive!r}, {rule.name!r}) from {caller}: {primitive!r} already "
                f"has its rule {owner.rule!r} from {owner.module}; say shared=True (the rules "
                "apply to different live masks) or overrides=<that rule> (this one wins)")
    for w, r in others:
        mask = _overlap(when, w)
        if mask is not None:
            raise InputValueError(
                f"register({primitive!r}, {rule.name!r}) from {caller}: both it and rule "
                f"{r.name!r} apply to live mask {mask}; say which wins with overrides={r.name}")
    relation = "overrides" if overrides is not None else "shared" if shared else "owner"
    _RECORD.append(Registration(primitive, rule.name, caller, relation,
                                overrides.name if overrides is not None else None))
    _RULES.setdefault(primitive, []).insert(0, (when, rule))  # an override is tried first


def registrations() -> tuple[Registration, ...]:
    """Every ``register`` call so far, in order (which file registered which primitive, and
    how)."""
    return tuple(_RECORD)


def lookup(primitive: str, live: LiveMask) -> Rule | None:
    """The rule for ``primitive`` with this live mask, or ``None``. At most one rule's predicate
    holds, unless an override was declared; then the override is the one returned."""
    for when, rule in _RULES.get(primitive, ()):
        if when(live):
            return rule
    return None


def mark_elementwise(*primitives: str) -> None:
    _ELEMENTWISE.update(primitives)


def is_elementwise(primitive: str) -> bool:
    return primitive in _ELEMENTWISE


def mark_linear(primitive: str, when: Predicate = always) -> None:
    _LINEAR[primitive] = when


def is_linear(primitive: str, live: LiveMask) -> bool:
    pred = _LINEAR.get(primitive)
    return pred is not None and pred(live)


def register_expansion(primitive: str, expand: Callable) -> None:
    """Explain ``primitive`` as the operations ``expand(params)`` is written with: a function of
    the primitive's operands, traced in its place when an operand is live, whose own primitives
    have rules (a running product as the pairwise products of ``lax.associative_scan``)."""
    _EXPANSIONS[primitive] = expand


def expansion(primitive: str) -> Callable | None:
    """The function registered by :func:`register_expansion` for ``primitive``, or ``None``."""
    return _EXPANSIONS.get(primitive)
