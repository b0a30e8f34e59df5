"""Reading and evaluating jaxprs: helpers every layer needs (the program builder, the
interpreter, the rules, targets), with no knowledge of DeepLIFT.

* walking a jaxpr along its live values (:func:`live_equations`), a ``scan``'s operand layout;
* the body of a call-like equation (:func:`call_body`), binding one equation — in float32 for
  half-precision programs (:func:`bind_eqn`, :func:`eval_jaxpr_wide`);
* the user's source line of an equation (:class:`Where`, :func:`where_of`).
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import jax.numpy as jnp
from jax.extend import core as jcore
from jax.extend import source_info_util


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


# Call-like primitives whose body the interpreter looks into, and the param holding the body.
VIEWS = frozenset(("broadcast_in_dim", "reshape", "squeeze", "expand_dims", "slice", "transpose",
                   "convert_element_type", "copy", "copy_p"))
"""Primitives that only reshape, broadcast, slice or cast their operand."""

CALL_BODY_PARAM = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "remat": "jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
}



class Where(str):
    """The user's source line of an equation, e.g. ``model.py:12:4 (__call__)`` — JAX's own
    summary: the innermost frame outside JAX, which may be inside a library (Flax's
    ``Embed.__call__``). :attr:`in_user_code` walks out to the first frame outside installed
    packages and jaxlift: the line of the user's own code that led there."""

    source: Any = None

    def __new__(cls, text: str, source=None):
        self = super().__new__(cls, text)
        self.source = source
        return self

    @property
    def in_user_code(self) -> str:
        """The innermost frame that is not in ``site-packages``/``dist-packages`` nor jaxlift's
        own files (``self`` where there is none, or it is that frame already)."""
        if self.source is None:
            return str(self)
        try:
            frames = source_info_util.summarize(self.source, num_frames=64).splitlines()
        except Exception:  # pragma: no cover - depends on JAX internals
            return str(self)
        for frame in reversed(frames):  # innermost first
            path = frame.split(":", 1)[0]
            if not any(part in path for part in _LIBRARY_PATHS):
                return frame
        return str(self)

    def described(self) -> str:
        """``self``, with the user's own line after it when the two differ."""
        user = self.in_user_code
        return str(self) if user == str(self) else f"{self}, called from {user}"


_LIBRARY_PATHS = ("site-packages", "dist-packages", os.path.dirname(os.path.abspath(__file__)))


def where_of(eqn) -> Where:
    """The user's source line of an equation (:class:`Where`)."""
    try:
        return Where(source_info_util.summarize(eqn.source_info), eqn.source_info)
    except Exception:  # pragma: no cover - depends on JAX internals
        return Where("<unknown source>")


_HALF = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


def is_half(value) -> bool:
    """Whether ``value`` (an array or a dtype) is float16 or bfloat16."""
    dtype = getattr(value, "dtype", None)
    try:
        return jnp.dtype(dtype if dtype is not None else value) in _HALF
    except TypeError:
        return False


def _narrower(dtype, to) -> bool:
    """Whether ``dtype`` is a real float type with fewer bits than the float type ``to``."""
    dtype = jnp.dtype(dtype)
    return (jnp.issubdtype(dtype, jnp.floating)
            and jnp.finfo(dtype).bits < jnp.finfo(to).bits)


def _widened(value, to=jnp.float32):
    if isinstance(value, jnp.dtype) or isinstance(value, type) and issubclass(value, jnp.generic):
        return jnp.dtype(to) if _narrower(value, to) else value
    if type(value) in (tuple, list):
        return type(value)(_widened(v, to) for v in value)
    return value


def bind_eqn(eqn, invals: Sequence[Any], wide: bool = False, to=None) -> list:
    """Evaluate one equation on concrete or traced values; always returns a list of results.

    ``wide``: float16/bfloat16 operands and dtype parameters (``preferred_element_type``,
    ``new_dtype`` …) become float32, so that a linear map of differences or multipliers of a
    half-precision layer neither overflows nor rounds them to 3 digits (docs/design.md §19.1).
    ``to`` (a float type, with ``wide``): every narrower float operand and dtype parameter
    becomes ``to`` instead — a float32 linear map of float64 multipliers, transposed in float64
    (:func:`jaxlift.rules._util.vjp_live`)."""
    if wide:
        to = jnp.dtype(jnp.float32 if to is None else to)
        invals = [v.astype(to) if hasattr(v, "astype") and _narrower(v.dtype, to) else v
                  for v in invals]
        body = call_body(eqn)
        if body is not None and any(_narrower(v.aval.dtype, to)
                                    for v in (*eqn.invars, *eqn.outvars)
                                    if hasattr(v.aval, "dtype")):
            return eval_jaxpr_wide(body[0], body[1], invals, to)
    params = eqn.primitive.get_bind_params(eqn.params)
    if wide:
        params = {k: _widened(v, to) for k, v in params.items()}
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def eval_jaxpr_wide(jaxpr, consts, args, to=jnp.float32) -> list:
    """Evaluate ``jaxpr`` with every narrower float value and dtype in ``to`` (float32 for
    half precision; see :func:`bind_eqn`); a nested body typed narrower cannot be bound as it
    is."""
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = c
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    for eqn in jaxpr.eqns:
        for v, out in zip(eqn.outvars, bind_eqn(eqn, [read(v) for v in eqn.invars], wide=True,
                                                to=to)):
            env[v] = out
    return [read(v) for v in jaxpr.outvars]


def nested_jaxprs(params: dict) -> Iterator[tuple[Any, list]]:
    """``(jaxpr, consts)`` of every jaxpr an equation's ``params`` hold — a call's, a loop's
    body, each ``cond`` branch — with the constants a closed one closes over (``[]`` for an
    open one)."""
    for value in params.values():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if hasattr(item, "jaxpr") and hasattr(item, "consts"):  # a ClosedJaxpr
                yield item.jaxpr, list(item.consts)
            elif hasattr(item, "eqns") and hasattr(item, "invars"):  # a Jaxpr
                yield item, []


def call_body(eqn):
    """``(jaxpr, consts)`` of a call-like equation, or ``None``."""
    key = CALL_BODY_PARAM.get(eqn.primitive.name)
    if key is None or key not in eqn.params:
        return None
    body = eqn.params[key]
    if isinstance(body, jcore.ClosedJaxpr):
        return body.jaxpr, list(body.consts)
    if isinstance(body, jcore.Jaxpr):
        return body, []
    return None
