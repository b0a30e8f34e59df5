"""Walking a jaxpr along its live values (shared by the program builder and the rules)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

from jax.extend import core as jcore


def live_equations(jaxpr, live_in: Sequence[bool]) -> Iterator[tuple[object, list[bool]]]:
    """``(eqn, live_mask)`` for each equation of ``jaxpr`` with at least one live operand, in
    order; ``live_mask[i]`` says whether operand i is live. The live values start as the
    invars flagged in ``live_in`` and grow by the outputs of every yielded equation."""
    live = {v for v, flag in zip(jaxpr.invars, live_in) if flag}
    for eqn in jaxpr.eqns:
        mask = [not isinstance(v, jcore.Literal) and v in live for v in eqn.invars]
        if not any(mask):
            continue
        yield eqn, mask
        live.update(eqn.outvars)


def scan_layout(params) -> tuple[int, int]:
    """``(number of loop constants, number of carries)`` of a ``scan`` equation: its operands
    are the constants, then the initial carries, then the xs. jax 0.10 names the counts
    (``num_consts``, ``num_carry``); jax 0.11 groups the operands (``ft_in``: constants,
    carries, xs) and moves carries the body never changes out of the loop."""
    if "num_consts" in params:
        return params["num_consts"], params["num_carry"]
    consts, carries, _ = params["ft_in"].unpack()  # a jax FlatTree of three groups
    return len(list(consts.vals)), len(list(carries.vals))
