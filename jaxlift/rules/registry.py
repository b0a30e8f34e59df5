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
from typing import Any, Callable, Sequence

LiveMask = tuple[bool, ...]
Predicate = Callable[[LiveMask], bool]


@dataclasses.dataclass(frozen=True)
class Rule:
    """A DeepLIFT rule.

    ``backward(ctx, out_mults) -> in_mults``: ``out_mults`` has one ``Pair`` (or ``None`` where the
    output receives no multiplier) per output; the result has one ``Pair`` or ``None`` per input.
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


def always(live: LiveMask) -> bool:
    return True


def one_live(live: LiveMask) -> bool:
    return sum(live) == 1


def several_live(live: LiveMask) -> bool:
    return sum(live) >= 2


def register(primitive: str, rule: Rule, when: Predicate = always) -> None:
    """Register ``rule`` for ``primitive`` when ``when(live_mask)`` holds. Later wins ties."""
    _RULES.setdefault(primitive, []).insert(0, (when, rule))


def lookup(primitive: str, live: LiveMask) -> Rule | None:
    """The rule for ``primitive`` with this live mask, or ``None``."""
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
