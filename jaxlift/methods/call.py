"""What a method family receives: one typed call, validated once (docs/design.md §2).

The pipeline (:mod:`jaxlift.pipeline`) turns ``attribute(...)``'s arguments into a frozen
:class:`Call` (what the user asked) and an :class:`Inputs` (the data, validated and laid out),
and hands both to the method's family — :mod:`jaxlift.methods.interpreted` for DeepLIFT,
:mod:`jaxlift.methods.kernels` for methods defined by a kernel of one pair or one input. A
family is a module with three functions (the :class:`Family` protocol):

* ``runner(call, inputs, chunked) -> run``, where ``run(params, x, refs, start) -> (scores,
  Δt, checks)`` computes one chunk of inputs (the first being global input ``start``) in one
  compiled program; ``checks`` is a dict of device arrays read once per call (the finite flag,
  the completeness certificate's summary);
* ``refuse(call, inputs, i)``: raise the error that names why input ``i``'s scores are NaN/Inf;
* ``explain_gap(call, inputs, summary) -> str``: the likely cause of a failed certificate.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

from jaxlift.methods.base import Method
from jaxlift.rules.composites import Composite

RunChunk = Callable[[Any, Any, Any, int], tuple]


@dataclasses.dataclass(frozen=True, eq=False)
class Call:
    """One call of ``attribute``/``multipliers``, validated.

    ``what``: ``"contributions"`` or ``"multipliers"``; ``fn`` the model (``functools.partial``s
    made canonical: equal partials are one object); ``method`` and its checked ``opts``;
    ``composite``: which rule where (DeepLIFT methods; ``None`` for kernel methods);
    ``target``: the static target (an index, a tuple, a callable, ``"all"``, or a
    :class:`~jaxlift.targets.PerInput` whose seeds travel in :attr:`Inputs.seeds`); ``layer``
    and ``layer_bypass`` (cuts); ``average_refs``; ``batch_size``; ``precision``;
    ``check_completeness`` (``"raise" | "warn" | "off"``); ``check_finite``; ``return_delta``;
    ``progress``; ``key`` (PRNG key or ``None``); ``mesh``."""

    what: str
    fn: Callable
    method: Method
    opts: dict
    composite: Composite | None
    target: Any
    layer: str | None = None
    layer_bypass: str = "refuse"
    average_refs: bool = True
    batch_size: Any = "auto"
    precision: str = "default"
    check_completeness: str = "raise"
    check_finite: bool = True
    return_delta: bool = False
    progress: bool | None = None
    key: Any = None
    mesh: Any = None

    @property
    def all_targets(self) -> bool:
        return isinstance(self.target, str) and self.target == "all"


@dataclasses.dataclass(frozen=True, eq=False)
class Inputs:
    """The data of a call, validated: ``params``; ``x`` ``(N, *S)`` per leaf; ``refs``
    ``(K, *S)`` shared or ``(N, K, *S)`` per input (``per_input``); ``seeds`` ``(N, T)``
    target weights per input, or ``None``; ``concrete`` (no tracer among them: the checks can
    be read on the host); ``check_inputs`` (the inputs' NaN/Inf check runs in the program);
    ``held``: a flag per leaf of ``x``, the integer leaves equal to their references in every
    pair (:func:`jaxlift.references.held_leaves`), which the program reads as fixed."""

    params: Any
    x: Any
    refs: Any
    n: int
    k: int
    per_input: bool
    seeds: Any = None
    concrete: bool = True
    check_inputs: bool = False
    held: tuple = ()


class Family(Protocol):
    """What the pipeline calls on a method family (module doc)."""

    def runner(self, call: Call, inputs: Inputs, chunked: bool) -> RunChunk: ...

    def refuse(self, call: Call, inputs: Inputs, i: int) -> None: ...

    def explain_gap(self, call: Call, inputs: Inputs, summary: dict) -> str: ...


__all__ = ["Call", "Family", "Inputs", "RunChunk"]
