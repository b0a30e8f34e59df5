"""The completeness certificate: every returned DeepLIFT score sums to ``Δt``, or the call says so.

Rules are proven case by case; the certificate checks the promise itself, per pair, inside the
compiled program (docs/design.md §18). For each (input, reference
[, target]) pair the interpreter already has ``Δt = t(x) − t(r)``; with the returned
contributions ``C`` it forms

* ``gap = |ΣC − Δt|``,
* ``τ = rtol·max(Σ|C|, |Δt|) + c·eps·κ̂``, with ``κ̂ = |t(x)| + |t(r)| + Σ_i |m_i|·(|v_i| + |v0_i|)``
  over the scored values ``v`` (the inputs, or the marked layer) and the *frontier* (values
  read by the program beside them: fixed inputs of a cut, §18.1): the size of what rounding
  the evaluation of ``t`` can move ``Δt`` by, read off values the program already has
  (a cheap stand-in for the README's ``κ``, which needs a gradient of ``t``);
* capped at ``(rtol + c·eps)·s``, ``s`` the part of ``κ̂`` that does not grow with the scores:
  ``|t(x)| + |t(r)|`` and the terms of the values the target is reached from linearly. Scores
  that cancel far beyond what the float type resolves (terms of 1e5–1e11 for a ``Δt`` of 0.2,
  as a LayerNorm whose variance is 0 at a constant reference gives) are refused, not returned.
  Where ``s = 0`` (``Δt = 0`` exactly, ``t`` and its linear tail 0 on both sides) there is no
  scale to resolve against: no cap.

A pair with ``gap > τ`` is *refused*: ``attribute`` raises :class:`~jaxlift.errors.CompletenessError`
naming the pairs, the worst gap and its bound, and the likely cause (``check_completeness=
"warn"`` warns and returns, ``"off"`` does not compute it). Inside a caller's own ``jit`` no
error can be raised; a failing pair's scores are NaN there instead of a wrong number.

``rtol`` and ``c`` are calibrated on the fuzz suite (``tests/test_fuzz_exact.py``: float16 to
float64, BatchNorm-like offsets of 1e3, references from equal to 1e4 away), the studies and the
README's examples, with no refusal there; bugs the certificate is meant to catch move ΣC by
1e-3 to 1 of Σ|C|. On an accelerator at ``precision="default"``, float32 dots and convolutions
may run in TF32 (an 11-bit significand), and ``eps`` is TF32's.

What travels with the finite flag (one host read per call) is each pair's ``gap`` and ``bound``;
the host counts the pairs over their bound (``failing``) and finds the worst pair's place,
``ratio`` (``gap/τ``), ``gap`` and ``bound`` (:func:`worst_on_host`).
"""
from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift.errors import CompletenessError, CompletenessWarning, InputValueError

MODES = ("raise", "warn", "off")
RTOL = {jnp.dtype(jnp.float64): 1e-9, jnp.dtype(jnp.float32): 1e-4}
ROUNDING_FACTOR = 64  # c: ulps of κ̂ that rounding of the forward pass may account for
TF32_EPS = 2.0 ** -11


def check_mode(mode) -> str:
    """``"raise"``, ``"warn"`` or ``"off"`` (``True``/``False`` mean ``"raise"``/``"off"``)."""
    if mode is True:
        return "raise"
    if mode is False or mode is None:
        return "off"
    if isinstance(mode, str) and mode in MODES:
        return mode
    raise InputValueError(f"check_completeness must be one of {', '.join(map(repr, MODES))} (or "
                          f"True/False), got {mode!r}")


def tolerances(dtype, precision: str = "default", platform: str | None = None) -> tuple:
    """``(rtol, eps)`` of the bound for differences computed in ``dtype`` (float32 or float64;
    half precision is evaluated in float32). ``eps`` is TF32's for float32 at
    ``precision="default"`` on an accelerator, where dots and convolutions may use it."""
    dtype = jnp.dtype(dtype)
    if dtype not in RTOL:  # complex or other: the real type's
        dtype = jnp.dtype(jnp.finfo(dtype).dtype)
        dtype = dtype if dtype in RTOL else jnp.dtype(jnp.float32)
    eps = float(jnp.finfo(dtype).eps)
    platform = platform or jax.default_backend()
    if dtype == jnp.float32 and precision == "default" and platform != "cpu":
        eps = max(eps, TF32_EPS)
    return RTOL[dtype], eps


def pair_bound(total, size, kappa, dt, dtype, precision: str = "default", scale=None):
    """``(gap, τ)`` of one pair (module doc): ``total = ΣC``, ``size = Σ|C|``, ``kappa = κ̂``,
    ``dt = Δt`` and ``scale = s`` (no cap where ``None``); ``rtol`` and ``eps`` those of
    ``dtype``, the least precise type the program computes ``Δt`` in (``dt``'s own, or float32
    where a float64 program computes some of its operations in float32)."""
    rtol, eps = tolerances(dtype, precision)
    gap = jnp.abs(total - dt)
    bound = rtol * jnp.maximum(size, jnp.abs(dt)) + ROUNDING_FACTOR * eps * kappa
    if scale is not None:
        # s = 0 (t and its linear tail 0 on both sides, so Δt = 0): no scale to resolve against
        cap = jnp.where(scale > 0, (rtol + ROUNDING_FACTOR * eps) * scale, jnp.inf)
        bound = jnp.minimum(bound, cap)
    return jnp.real(gap), jnp.real(bound)


def summarize(gap, bound) -> dict:
    """The certificate's part of a chunk's checks: the per-pair ``gap`` and ``τ`` as computed
    (arrays of one shape, ``(N, K[, T])``). They are read on the host with the finite flag and
    summarized there (:func:`ratios`, :func:`worst_on_host`): an argmax and three gathers in
    the program cost more kernels to compile than the few bytes per pair cost to read."""
    return {"gap": gap, "bound": bound}


def unchecked() -> dict:
    """The certificate's part of the checks of a program that computes none (methods that do
    not promise completeness, or ``check_completeness="off"``): no pairs."""
    return {"gap": jnp.zeros((0,)), "bound": jnp.zeros((0,))}


def ratios(gap, bound) -> tuple[np.ndarray, np.ndarray]:
    """``(gap/τ, failing)`` per pair, flat, on the host: ``failing`` where ``gap > τ`` or the gap
    is NaN (the finite flag names a NaN first); the ratio is ``inf`` there where ``τ = 0`` or
    the gap is NaN, and 0 for a zero gap under a zero bound."""
    gap, bound = np.ravel(np.asarray(gap)), np.ravel(np.asarray(bound))
    failing = _failing(gap, bound)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(bound > 0, gap / np.where(bound > 0, bound, 1),
                         np.where(gap > 0, np.inf, 0))
    return np.where(np.isnan(ratio), np.inf, ratio), failing


def failing_pairs(checks: dict) -> int:
    """How many pairs of one chunk's checks (on the host) fail the certificate (``gap > τ`` or
    a NaN gap; no ratios formed: the one-dispatch path asks this on every call)."""
    return int(np.count_nonzero(_failing(np.asarray(checks["gap"]), np.asarray(checks["bound"]))))


def _failing(gap: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """Over the bound, or a NaN gap (which compares false)."""
    return ~(gap <= bound)


def worst_on_host(summaries: list, starts: list, pairs_per_input: int,
                  n: int | None = None) -> dict:
    """One summary over every chunk (their checks already on the host): ``failing`` pairs
    added up, and the worst pair's ``ratio``, ``gap``, ``bound`` and place, its flat index
    turned into ``(input, rest)`` over the whole call. ``n``: the call's number of inputs — a
    padded last chunk's rows past it (copies of the last input) are not pairs of the call and
    are not counted."""
    summary = {"failing": 0, "input": 0, "rest": 0, "ratio": 0.0, "gap": 0.0, "bound": 0.0}
    worst = -1.0
    for start, s in zip(starts, summaries):
        gap, bound = np.ravel(np.asarray(s["gap"])), np.ravel(np.asarray(s["bound"]))
        if n is not None:
            real = max(0, n - start) * pairs_per_input
            gap, bound = gap[:real], bound[:real]
        ratio, failing = ratios(gap, bound)
        summary["failing"] += int(failing.sum())
        if ratio.size == 0 or ratio.max() <= worst:
            continue
        flat = int(np.argmax(ratio))
        worst = float(ratio[flat])
        summary.update(input=start + flat // pairs_per_input, rest=flat % pairs_per_input,
                       ratio=worst, gap=float(gap[flat]), bound=float(bound[flat]))
    return summary


def poisoned(res: Any, ok):
    """``res`` with the scores of failing pairs replaced by NaN (inside a caller's ``jit``, where
    no error can be raised). ``ok``: a boolean per pair, broadcast over each leaf's trailing
    axes."""
    def leaf(r):
        mask = jnp.reshape(ok, ok.shape + (1,) * (r.ndim - ok.ndim))
        return jnp.where(mask, r, jnp.asarray(np.nan, r.dtype))
    return jax.tree_util.tree_map(leaf, res)


def report(cause: str, summary: dict, mode: str, total_pairs: int) -> None:
    """Raise :class:`~jaxlift.errors.CompletenessError` (``mode="raise"``) or warn
    (:class:`~jaxlift.errors.CompletenessWarning`) about the pairs whose scores do not sum to
    ``Δt`` within their bound: how many, the worst one, its gap and bound, and ``cause``."""
    message = (f"{summary['failing']} of {total_pairs} (input, reference) pair(s) have "
               f"contributions that do not sum to Δt: worst {summary['where']} with |ΣC − Δt| "
               f"= {summary['gap']:.3g} over its bound {summary['bound']:.3g} "
               f"({summary['ratio']:.3g}×). {cause}")
    if mode == "warn":
        warnings.warn(message, CompletenessWarning, stacklevel=4)
        return
    raise CompletenessError(message, pairs=summary["failing"], worst=summary["where_tuple"],
                            gap=summary["gap"], bound=summary["bound"], cause=cause)
