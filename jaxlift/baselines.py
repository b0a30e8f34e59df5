"""Gradient and perturbation baselines, through the same ``jaxlift.attribute`` call.

``jaxlift.attribute(fn, params, x, refs, mode=MODE, mode_options={...})`` with ``MODE`` one of
:data:`MODES` dispatches here. ``fn``, ``params``, ``x``, ``refs``, ``target``, ``average_refs``,
``batch_size``, ``key``, ``progress`` and ``return_delta`` mean what they mean for the DeepLIFT
modes; results have the same shapes (``(N, *S)``, ``(N, K, *S)`` with ``average_refs=False``,
with a target axis T after N (and K) for ``target="all"``). ``return_delta`` always returns
``Δt = t(x) − t(r)`` (averaged like the result), so the completeness gap of a method is
``Σ_i attr_i − Δt`` (:func:`completeness_gap`).

Modes (``t`` the target's scalar, ``x`` an input, ``r`` a reference, ``Δx = x − r``):

* ``gradient`` — saliency ``∂t/∂x`` at ``x``. Needs no reference: ``refs`` may be ``None``
  (the result is then ``(N, *S)``); when given they only shape the result (a K axis with
  ``average_refs=False``, identical copies) and define ``Δt`` for ``return_delta``.
* ``grad_times_input`` — the classic ``x · ∂t/∂x`` (not ``Δx · ∂t/∂x``; for a reference-relative
  variant use ``multipliers(mode="gradient") * (x − r)``, which equals ``Δt`` only for linear
  ``t``). References as for ``gradient``.
* ``guided_backprop`` — the gradient with every relu-like step passing only positive
  multipliers where its forward input is positive (:mod:`jaxlift.rules.guided`); max-pooling
  routes to the argmax of ``x``. References as for ``gradient``.
* ``integrated_gradients`` — ``IG_i = Δx_i · Σ_k w_k ∂t/∂x_i(r + α_k Δx)`` for each
  (input, reference) pair. Options ``steps`` (default 50) and ``method`` (Captum's names):
  ``riemann_left`` (``α_k = k/n``), ``riemann_right`` (``(k+1)/n``), ``riemann_middle``
  (``(k+½)/n``), all with ``w_k = 1/n``; ``riemann_trapezoid`` (``α_k = k/(n−1)``, weights
  ``1/(n−1)`` halved at both ends — a true trapezoid rule; Captum's weights are ``1/n`` halved
  at the ends, i.e. ``(n−1)/n`` times ours); ``gausslegendre`` (default, as Captum).
  Completeness ``Σ IG = Δt`` holds as ``steps → ∞``.
* ``occlusion`` — for each position of a box-shaped window sliding over the example's axes,
  replace the box by the reference and record ``t(x) − t(x with the box occluded)``; each
  feature gets the mean over the windows covering it. Options ``window`` (int or tuple, one per
  axis of the example, required), ``stride`` (default 1), ``perturbations_per_eval``. Windows
  start at ``0, s, 2s, …, ⌈(S−w)/s⌉·s``; the last one is clipped at the edge (as Captum).
* ``shapley_sampling`` — Castro et al.: for ``num_permutations`` random orders of the feature
  groups (default 25, drawn from ``key``, the same orders for every pair), add the groups'
  input values to the reference one at a time and credit each group with the change of ``t``;
  average over orders. ``feature_mask`` (integers, the example's shape) groups features; every
  feature of a group gets the group's value (as Captum). Per pair, the group values sum to
  ``Δt`` exactly, whatever the orders.

``multipliers(..., mode=...)``: the gradient for ``gradient``/``grad_times_input``, the guided
gradient for ``guided_backprop``, the path-averaged gradient ``Σ_k w_k ∇t(r + α_kΔx)`` for
``integrated_gradients`` (so that ``IG = m·Δx``), and ``attr/Δx`` (0 where ``Δx = 0``) for the
perturbation modes.

Summation-to-delta (per pair): ``integrated_gradients`` in the limit of ``steps``;
``shapley_sampling`` summed over groups; ``occlusion`` and the gradient modes do not.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift._memo import memoized
from jaxlift.validation import check_examples_independent
from jaxlift._ops import mean_axis

MODES = ("gradient", "grad_times_input", "guided_backprop", "integrated_gradients",
         "occlusion", "shapley_sampling")
REFERENCE_FREE = ("gradient", "grad_times_input", "guided_backprop")
IG_METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid",
              "gausslegendre")

_REQUIRED = object()
_OPTIONS: dict[str, dict[str, Any]] = {
    "gradient": {},
    "grad_times_input": {},
    "guided_backprop": {},
    "integrated_gradients": {"steps": 50, "method": "gausslegendre"},
    "occlusion": {"window": _REQUIRED, "stride": 1, "perturbations_per_eval": None},
    "shapley_sampling": {"num_permutations": 25, "feature_mask": None,
                         "perturbations_per_eval": None},
}


# ---------------------------------------------------------------------------------------------
# Options

def check_mode_options(mode: str, options: dict | None) -> dict:
    """Validate ``mode_options`` for ``mode`` and fill in defaults.

    Raises ``ValueError`` naming an unknown option, a missing required one, or a bad value.
    """
    if mode not in _OPTIONS:
        raise ValueError(f"unknown baseline mode {mode!r}; choose one of {', '.join(MODES)}")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise TypeError(f"mode_options must be a dict or None, got {type(options).__name__}")
    allowed = _OPTIONS[mode]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        known = ", ".join(allowed) or "none"
        raise ValueError(f"unknown mode_options {unknown} for mode {mode!r} (it takes: {known})")
    opts = {**allowed, **options}
    missing = [k for k, v in opts.items() if v is _REQUIRED]
    if missing:
        raise ValueError(f"mode {mode!r} needs mode_options {missing}, e.g. "
                         "mode_options={'window': (3, 3, 1)}")
    if mode == "integrated_gradients":
        steps, method = opts["steps"], opts["method"]
        if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"integrated_gradients steps must be a positive int, got {steps!r}")
        if method not in IG_METHODS:
            raise ValueError(f"unknown integrated_gradients method {method!r}; choose one of "
                             f"{', '.join(IG_METHODS)}")
        if method == "riemann_trapezoid" and steps < 2:
            raise ValueError("riemann_trapezoid needs steps >= 2")
        opts["steps"] = int(steps)
    if mode == "shapley_sampling":
        p = opts["num_permutations"]
        if not isinstance(p, (int, np.integer)) or isinstance(p, bool) or p < 1:
            raise ValueError(f"shapley_sampling num_permutations must be a positive int, got {p!r}")
        opts["num_permutations"] = int(p)
    for name in ("window", "stride"):
        if name in opts and isinstance(opts[name], list):
            opts[name] = tuple(opts[name])
    ppe = opts.get("perturbations_per_eval")
    if ppe is not None and (not isinstance(ppe, (int, np.integer)) or ppe < 1):
        raise ValueError(f"perturbations_per_eval must be a positive int or None, got {ppe!r}")
    return opts


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, weights)`` of an integration rule on ``[0, 1]`` (float64, shape ``(steps,)``)."""
    n = steps
    if method == "riemann_left":
        return np.arange(n) / n, np.full(n, 1 / n)
    if method == "riemann_right":
        return np.arange(1, n + 1) / n, np.full(n, 1 / n)
    if method == "riemann_middle":
        return (np.arange(n) + 0.5) / n, np.full(n, 1 / n)
    if method == "riemann_trapezoid":
        w = np.full(n, 1 / (n - 1))
        w[0] = w[-1] = 0.5 / (n - 1)
        return np.linspace(0.0, 1.0, n), w
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return 0.5 * (nodes + 1), 0.5 * weights
    raise ValueError(f"unknown integration method {method!r}; choose one of "
                     f"{', '.join(IG_METHODS)}")


def _tuple_of(name: str, v, ndim: int) -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (int(v),) * ndim
    try:
        t = tuple(int(i) for i in v)
    except TypeError:
        raise TypeError(f"occlusion {name} must be an int or a tuple of ints, got {v!r}") from None
    if len(t) != ndim:
        raise ValueError(f"occlusion {name} {t} must have one entry per axis of an example "
                         f"({ndim} axes)")
    if any(i < 1 for i in t):
        raise ValueError(f"occlusion {name} {t} must be positive")
    return t


def occlusion_grid(shape: tuple[int, ...], window, stride) -> tuple[tuple, tuple, tuple]:
    """``(window, stride, counts)``: validated window/stride and the number of window positions
    per axis, ``⌈(S − w)/s⌉ + 1`` (Captum's count; the last window is clipped at the edge)."""
    ndim = len(shape)
    w = _tuple_of("window", window, ndim)
    s = _tuple_of("stride", stride, ndim)
    for d, (n, wd, sd) in enumerate(zip(shape, w, s)):
        if wd > n:
            raise ValueError(f"occlusion window {w} is larger than the example {shape} on axis {d}")
    counts = tuple(math.ceil((n - wd) / sd) + 1 for n, wd, sd in zip(shape, w, s))
    return w, s, counts


def completeness_gap(attributions, delta, n_target_axes: int = 0):
    """``Σ_i attr_i − Δt`` per (input[, reference][, target]): summed over the example axes of
    every leaf. ``delta`` is what ``return_delta=True`` returns; its rank says how many leading
    axes to keep."""
    delta = jnp.asarray(delta)
    keep = delta.ndim
    total = sum(jnp.sum(a, axis=tuple(range(keep, a.ndim)))
                for a in jax.tree_util.tree_leaves(attributions))
    return total - delta


def flag_gaps(attributions, delta, threshold: float = 1e-3):
    """The relative completeness gap of each pair, and the pairs over ``threshold``.

    ``gap = |Σ_i C_i − Δt| / max(Σ_i |C_i|, |Δt|)`` per (input[, reference][, target]), from
    the scores and ``Δt`` of ``attribute(..., return_delta=True)`` (``average_refs=False`` for
    one gap per pair); ``0`` where every score and ``Δt`` vanish. In the DeepLIFT modes a gap
    above ``1e-2`` is a bug; ``1e-5``–``1e-3`` is float rounding (float32 convolutions in TF32
    on a GPU at ``precision="default"``: ~3e-5 on an H200), ~1e-7 at exact float32.

    Returns ``(gap, flagged)``: float arrays shaped like ``delta`` and a boolean mask
    ``gap > threshold``. Computed in at least float32 (float64 under ``jax_enable_x64``).
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) \
            or not threshold >= 0:
        raise ValueError(f"threshold must be a non-negative number, got {threshold!r}")
    delta = jnp.asarray(delta)
    dtype = jnp.promote_types(delta.dtype, jnp.float32)
    delta = delta.astype(dtype)
    keep = delta.ndim
    leaves = jax.tree_util.tree_leaves(attributions)
    if not leaves:
        raise ValueError("attributions is empty: pass the scores returned by attribute")
    total = jnp.zeros(delta.shape, dtype)
    size = jnp.zeros(delta.shape, dtype)
    for a in leaves:
        a = jnp.asarray(a)
        if a.shape[:keep] != delta.shape:
            raise ValueError(
                f"scores of shape {a.shape} do not start with delta's shape {delta.shape}: pass "
                "the scores and delta of the same attribute(..., return_delta=True) call")
        axes = tuple(range(keep, a.ndim))
        a = a.astype(jnp.promote_types(a.dtype, dtype))
        total = total + jnp.sum(a, axis=axes)
        size = size + jnp.sum(jnp.abs(a), axis=axes)
    scale = jnp.maximum(size, jnp.abs(delta))
    gap = jnp.where(scale > 0, jnp.abs(total - delta) / jnp.where(scale > 0, scale, 1), 0)
    return gap, gap > threshold


# ---------------------------------------------------------------------------------------------
# Per-example kernels. ``f(params, x_example) -> t`` (a scalar, or (T,) for target="all").

def _grad(f: Callable, params, x):
    """``∂t/∂x`` per leaf: ``(*S)``, or ``(T, *S)`` for a vector ``t`` (rows via VJPs)."""
    return jax.jacrev(f, argnums=1)(params, x)


def _gradient_kernel(f, mode, params, x):
    g = _grad(f, params, x)
    if mode == "grad_times_input":
        return jax.tree_util.tree_map(lambda gl, xl: gl * xl, g, x), g
    return g, g


def _ig_pair(f, alphas, weights, params, x, r):
    """Integrated gradients of one pair: ``(attr, path-averaged gradient)`` per leaf."""
    dx = jax.tree_util.tree_map(jnp.subtract, x, r)

    def grad_at(a):
        point = jax.tree_util.tree_map(lambda rl, dl: rl + a.astype(dl.dtype) * dl, r, dx)
        return _grad(f, params, point)

    gs = jax.vmap(grad_at)(alphas)
    mult = jax.tree_util.tree_map(
        lambda g: jnp.tensordot(weights.astype(g.dtype), g, axes=1), gs)
    attr = jax.tree_util.tree_map(lambda m, d: m * d, mult, dx)
    return attr, mult


def _map(fun, xs, batch_size):
    """``vmap`` of ``fun`` over the leading axis, or ``lax.map`` in batches of ``batch_size``."""
    if batch_size is None:
        return jax.vmap(fun)(xs)
    return jax.lax.map(fun, xs, batch_size=int(batch_size))


def _box_mask(shape, start, window):
    """Boolean mask of the box ``[start, start + window)`` (clipped) in an array of ``shape``."""
    mask = jnp.ones(shape, dtype=bool)
    for d, (n, w) in enumerate(zip(shape, window)):
        idx = jax.lax.broadcasted_iota(jnp.int32, shape, d)
        mask = mask & (idx >= start[d]) & (idx < start[d] + w)
    return mask


def _occlusion_pair(f, window, stride, counts, ppe, params, x, r):
    """Occlusion of one pair (single-array example): ``attr`` of shape ``([T,] *S)``."""
    shape = x.shape
    grid = np.stack(np.meshgrid(*[np.arange(c) * s for c, s in zip(counts, stride)],
                                indexing="ij"), -1).reshape(-1, len(shape))
    t_x = f(params, x)

    def occluded(start):
        return t_x - f(params, jnp.where(_box_mask(shape, start, window), r, x))

    diffs = _map(occluded, jnp.asarray(grid, jnp.int32), ppe)      # (P, [T])
    diffs = jnp.moveaxis(diffs.reshape(counts + diffs.shape[1:]), tuple(range(len(counts))),
                         tuple(range(diffs.ndim - 1, diffs.ndim - 1 + len(counts))))
    # Σ_p diff_p · box_p is the transpose of "sum over each window" (a VALID window sum over
    # the example padded so that the clipped last windows are whole).
    padded = tuple((c - 1) * s + w for c, s, w in zip(counts, stride, window))

    def window_sum(a):
        return jax.lax.reduce_window(a, np.array(0, a.dtype), jax.lax.add, window, stride,
                                     "VALID")

    zeros = jnp.zeros(padded, x.dtype)
    _, pull = jax.vjp(window_sum, zeros)

    def spread(d):
        (tot,) = pull(d.astype(x.dtype))
        return tot[tuple(slice(0, n) for n in shape)]

    cover = spread(jnp.ones(counts, x.dtype))
    total = spread(diffs) if diffs.ndim == len(counts) else jax.vmap(spread)(diffs)
    return total / cover


def _shapley_pair(f, labels, n_groups, perms, ppe, params, x, r):
    """Shapley value sampling of one pair: per-feature values ``([T,] *S)``."""
    ranks = jnp.argsort(perms, axis=1)                                # (P, G)
    js = jnp.arange(n_groups + 1)

    def t_of(rank, j):
        on = rank[labels] < j
        return f(params, jnp.where(on, x, r))

    def per_perm(rank):
        ts = jax.vmap(lambda j: t_of(rank, j))(js)                     # (G+1, [T])
        return ts[rank + 1] - ts[rank]                                 # (G, [T])

    phi = _map(per_perm, ranks, ppe).mean(axis=0)                     # (G, [T])
    vals = phi[labels]                                                 # (*S, [T])
    if vals.ndim > labels.ndim:
        vals = jnp.moveaxis(vals, -1, 0)
    return vals


# ---------------------------------------------------------------------------------------------
# Batched computations

def _vmap_pairs(pair, per_input_refs: bool):
    """``pair(x_example, r_example)`` over N inputs × K references."""
    inner = jax.vmap(pair, in_axes=(None, 0))
    return jax.vmap(inner, in_axes=(0, 0 if per_input_refs else None))


def _delta(f, params, x, refs, per_input_refs):
    """``t(x) − t(r)`` of every pair, ``(N, K[, T])``."""
    t_x = jax.vmap(lambda xe: f(params, xe))(x)
    if per_input_refs:
        t_r = jax.vmap(jax.vmap(lambda re: f(params, re)))(refs)
        return t_x[:, None] - t_r
    t_r = jax.vmap(lambda re: f(params, re))(refs)
    return t_x[:, None] - t_r[None]


def _finish(res, delta, what, x, refs, per_input_refs, average, pair_level):
    """Turn per-pair (or per-input) results into the API's shapes."""
    if what == "multipliers" and pair_level == "perturbation":
        def to_mult(a, xl, rl):
            d = (xl[:, None] - rl) if per_input_refs else (xl[:, None] - rl[None])
            d = d.reshape(d.shape[:2] + (1,) * (a.ndim - d.ndim) + d.shape[2:])
            safe = jnp.where(d == 0, jnp.ones_like(d), d)
            return jnp.where(d == 0, jnp.zeros_like(a), a / safe)
        res = jax.tree_util.tree_map(to_mult, res, x, refs)
    if average:
        res = jax.tree_util.tree_map(lambda a: mean_axis(a, 1), res)
        delta = mean_axis(delta, 1)
    return res, delta


def _compute(params, x, refs, arrays, *, fn, target, mode, opts, what, per_input_refs, average):
    from jaxlift.api import _per_example  # late import: api dispatches here
    f = _per_example(fn, target)
    x_leaves, tree = jax.tree_util.tree_flatten(x)
    delta = _delta(f, params, x, refs, per_input_refs)
    k = delta.shape[1]
    if mode in ("gradient", "grad_times_input"):
        attr, mult = jax.vmap(lambda xe: _gradient_kernel(f, mode, params, xe))(x)
        res = mult if what == "multipliers" else attr
        res = jax.tree_util.tree_map(
            lambda a: jnp.broadcast_to(a[:, None], (a.shape[0], k) + a.shape[1:]), res)
        return _finish(res, delta, what, x, refs, per_input_refs, average, "input")
    if mode == "guided_backprop":
        res = _guided(fn, target, params, x)
        res = jax.tree_util.tree_map(
            lambda a: jnp.broadcast_to(a[:, None], (a.shape[0], k) + a.shape[1:]), res)
        return _finish(res, delta, what, x, refs, per_input_refs, average, "input")
    if mode == "integrated_gradients":
        a, w = quadrature(opts["method"], opts["steps"])
        alphas, weights = jnp.asarray(a), jnp.asarray(w)
        pair = lambda xe, re: _ig_pair(f, alphas, weights, params, xe, re)  # noqa: E731
        attr, mult = _vmap_pairs(pair, per_input_refs)(x, refs)
        res = mult if what == "multipliers" else attr
        return _finish(res, delta, what, x, refs, per_input_refs, average, "pair")
    if len(x_leaves) != 1:
        raise TypeError(f"mode {mode!r} needs x to be a single array, not a pytree of "
                        f"{len(x_leaves)} arrays")
    if mode == "occlusion":
        window, stride, counts = occlusion_grid(tuple(x_leaves[0].shape[1:]), opts["window"],
                                                opts["stride"])
        pair = lambda xe, re: _occlusion_pair(  # noqa: E731
            f, window, stride, counts, opts["perturbations_per_eval"], params, xe, re)
    else:
        labels, perms = arrays["labels"], arrays["perms"]
        pair = lambda xe, re: _shapley_pair(  # noqa: E731
            f, labels, perms.shape[1], perms, opts["perturbations_per_eval"], params, xe, re)
    res = _vmap_pairs(pair, per_input_refs)(x, refs)
    return _finish(res, delta, what, x, refs, per_input_refs, average, "perturbation")


@functools.lru_cache(maxsize=128)
def _cached(fn, target, mode, opts_key, what, per_input_refs, average):
    return jax.jit(functools.partial(
        _compute, fn=fn, target=target, mode=mode, opts=dict(opts_key), what=what,
        per_input_refs=per_input_refs, average=average))


def _compiled(fn, target, mode, opts, what, per_input_refs, average):
    static = tuple(sorted((k, v) for k, v in opts.items() if k != "feature_mask"))
    return memoized(_cached, fn, target, mode, static, what, per_input_refs, average)


# ---------------------------------------------------------------------------------------------
# Entry point

def run(what: str, fn: Callable, params: Any, x: Any, refs: Any, *, target, mode: str,
        mode_options: dict | None, average_refs: bool, batch_size: int | str | None,
        layer_name: str | None, key, progress: bool, return_delta: bool,
        check_finite: bool):
    """Compute ``what`` (``"contributions"`` or ``"multipliers"``) for a baseline ``mode``;
    called by :func:`jaxlift.attribute` / :func:`jaxlift.multipliers` (see the module doc)."""
    from jaxlift import api
    opts = check_mode_options(mode, mode_options)
    if layer_name is not None:
        raise ValueError(f"layer= is supported by the DeepLIFT modes only, not mode {mode!r}")
    x = jax.tree_util.tree_map(jnp.asarray, x)
    for leaf in jax.tree_util.tree_leaves(x):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(f"mode {mode!r} needs floating-point inputs, got dtype {leaf.dtype}")
    key = jax.random.PRNGKey(0) if key is None else key
    no_refs = refs is None
    if no_refs:
        if mode not in REFERENCE_FREE:
            raise ValueError(f"mode {mode!r} needs references (refs=None given); pass refs of "
                             "shape (K, *S) or (N, K, *S)")
        if return_delta:
            raise ValueError("return_delta=True needs refs (Δt = t(x) − t(r))")
        refs = jax.tree_util.tree_map(lambda l: l[:1], x)
        average_refs = True
    elif callable(refs):
        refs = refs(x, key)
    refs = jax.tree_util.tree_map(jnp.asarray, refs)
    n, k, per_input = api._validate(x, refs)
    if check_finite and api._is_concrete((params, x, refs)):
        api._check_finite("x", x)
        api._check_finite("refs", refs)
        api._check_finite("params", params)
    if api._is_concrete((params, x, refs)):
        check_examples_independent(fn, params, x, refs, n=n, per_input_refs=per_input)
    arrays = _arrays(mode, opts, x, jax.random.fold_in(key, 1))
    jitted = _compiled(fn, target, mode, opts, what, per_input, average_refs)
    runner = lambda p, xc, rc: jitted(p, xc, rc, arrays)  # noqa: E731
    ig = mode == "integrated_gradients"  # "auto" sizes IG's chunks, its steps counted as pairs
    chunk = api._inputs_per_chunk(None if batch_size == "auto" and not ig else batch_size, fn,
                                  target, params, x, n, k, None,
                                  rows_per_pair=opts["steps"] if ig else 1)
    if chunk >= n:
        res, delta = runner(params, x, refs)
    else:
        res, delta = api._run_chunked(runner, params, x, refs, n, chunk, per_input, progress)
    return (res, delta) if return_delta else res


def _arrays(mode, opts, x, perm_key) -> dict:
    """Arrays a mode needs beyond ``(params, x, refs)`` (validating its options on x's shape)."""
    shape = tuple(jax.tree_util.tree_leaves(x)[0].shape[1:])
    if mode == "occlusion":
        occlusion_grid(shape, opts["window"], opts["stride"])
    if mode == "shapley_sampling":
        labels, n_groups = feature_groups(shape, opts["feature_mask"])
        perms = jax.vmap(lambda kk: jax.random.permutation(kk, n_groups))(
            jax.random.split(perm_key, opts["num_permutations"]))
        return {"labels": labels, "perms": perms}
    return {}


def feature_groups(shape: tuple[int, ...], feature_mask) -> tuple[jax.Array, int]:
    """``(labels, G)``: each feature's group index in ``0..G−1`` (every feature its own group
    when ``feature_mask`` is None; otherwise the mask's distinct values, in increasing order)."""
    size = int(np.prod(shape, dtype=np.int64))
    if feature_mask is None:
        return jnp.arange(size, dtype=jnp.int32).reshape(shape), size
    try:
        mask = np.asarray(feature_mask)
    except Exception:  # a tracer
        raise TypeError("feature_mask must be a concrete integer array") from None
    if mask.shape != shape:
        raise ValueError(f"feature_mask of shape {mask.shape} must have the example's shape "
                         f"{shape}")
    if mask.dtype.kind not in "iub":
        raise TypeError(f"feature_mask must hold integers, got dtype {mask.dtype}")
    values, labels = np.unique(mask, return_inverse=True)
    return jnp.asarray(labels.reshape(shape), jnp.int32), int(values.size)


def _guided(fn, target, params, x):
    """Guided gradients of every input ``(N, [T,] *S)``: the interpreter in mode
    ``guided_backprop`` with the reference equal to the input (see module doc)."""
    from jaxlift import api
    from jaxlift.interpreter import Config
    from jaxlift.program import build_program
    prog, _ = build_program(api._per_example(fn, target), params, api._example_structs(x, True))
    all_targets = isinstance(target, str) and target == "all"
    pair = api._pair_fn(prog, Config(mode="guided_backprop", max_mode="gradient"),
                        "multipliers", None, all_targets)
    fixed = jax.tree_util.tree_leaves(params)
    res, _ = jax.vmap(lambda xl: pair(fixed, xl, xl))(jax.tree_util.tree_leaves(x))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(x), res)
