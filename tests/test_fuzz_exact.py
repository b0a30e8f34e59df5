"""Exact or refused, on programs the developers did not write (issue "Exact or refused").

A seeded generator draws program structures from a grammar of blocks — dense layers with every
activation, BatchNorm-like affines at large offsets, residuals, gating products, ``jnp.where`` and
``lax.cond`` with live predicates, maxima of live values, rounding and integer casts, kinks under
the near-zero guard, powers of two live operands, ``all``/``any`` of live predicates, products of
many live factors, convolutions with max/average pooling, and integer paths that must be
refused — a dtype (float64, float32, float16, bfloat16), a mode, and how far references are from
inputs (equal, 1e-30 … 1e4 apart, or independent). Each drawn structure is run on
``PROGRAMS_PER_EXAMPLE`` random programs at once (weights, inputs and references drawn per program,
``jax.vmap`` over ``attribute``), so one compilation serves them all.

For every (input, reference) pair the outcome must be one of:

* finite scores with ``|ΣC − Δt| ≤ rtol·max(ΣC|, |Δt|) + 64·eps·κ``, where ``rtol`` is 1e-10
  (float64) or 1e-5 (float32; half-precision programs are evaluated in float32) and ``κ`` bounds
  what rounding of the forward pass itself can move ``t`` by (``|t| + Σ|∂t/∂θ·θ| + Σ|∂t/∂x·x|``
  at input and reference: no method can resolve a difference below the rounding of ``t``);
* a jaxlift error naming the primitive and this file's line.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift.errors import JaxliftError
from oracles import forward_rounding_scale

PROGRAMS_PER_EXAMPLE = 192
CASES = 12  # × 192 programs ≈ 2,300 random programs per run
# Each case costs one compilation (~1 s of runtime for its 192 programs, a few s to compile):
# the default run takes the first 9, whose 23 blocks deal every one of the 22 block kinds and
# cycle through every dtype, mode, head and gap; the other 3 run in CI's slow step (-m slow).
DEFAULT_CASES = 9
WIDTH = 4
N, K = 2, 2
MODES = ("rescale", "reveal_cancel", "genomics_default")
DTYPES = ("float64", "float32", "float16", "bfloat16")
RTOL = {"float64": 1e-10, "float32": 1e-5, "float16": 1e-5, "bfloat16": 1e-5}
EPS = {"float64": 2.2e-16, "float32": 1.2e-7, "float16": 1.2e-7, "bfloat16": 1.2e-7}

ACTS = {
    "relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus, "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "elu": jax.nn.elu, "leaky": jax.nn.leaky_relu, "abs": jnp.abs, "square": jnp.square,
}
DENSE_BLOCKS = tuple(f"dense_{a}" for a in ACTS)
BLOCKS = DENSE_BLOCKS + ("batchnorm_relu", "residual", "gate", "where", "cond", "max", "round",
                         "int_cast", "kink", "quotient", "power", "all_any", "product")
REFUSED_BLOCKS = ("argmax_gather",)
OFFSET = 1e3  # BatchNorm-like mean and kink position: far from zero, exact in every dtype


def _block(kind: str, p: dict, h):
    dense = lambda name: h @ p[name + "_w"] + p[name + "_b"]  # noqa: E731
    if kind.startswith("dense_"):
        return ACTS[kind[6:]](dense("a"))
    if kind == "batchnorm_relu":  # inference BatchNorm of a layer whose mean sits at OFFSET
        return jax.nn.relu((dense("a") + OFFSET - p["mu"]) / p["sigma"])
    if kind == "residual":
        return h + jnp.tanh(dense("a"))
    if kind == "gate":
        return jnp.tanh(dense("a")) * jax.nn.sigmoid(dense("b"))
    if kind == "where":  # predicate from one tensor, values from two others
        return jnp.where(dense("a") > 0, dense("b"), jnp.tanh(h))
    if kind == "cond":
        return jax.vmap(lambda v, u: jax.lax.cond(v.sum() > 0, jnp.tanh, jnp.sin, u))(
            dense("a"), dense("b"))
    if kind == "max":
        return jnp.maximum(dense("a"), dense("b"))
    if kind == "round":
        return jnp.round(2 * dense("a")) / 2 + dense("b")
    if kind == "int_cast":
        return dense("a").astype(jnp.int32).astype(h.dtype) + h
    if kind == "kink":  # a relu kink at OFFSET: input and reference straddle it closely
        return jax.nn.relu(dense("a") * 1e-3 + h + OFFSET - p["mu"]) + h
    if kind == "quotient":
        return dense("a") / (1 + jnp.square(dense("b")))
    if kind == "power":  # two live operands: the two-player split
        return jnp.power(1.5 + jnp.tanh(dense("a")), jnp.tanh(dense("b"))) + h
    if kind == "all_any":  # reduce_and / reduce_or of live predicates, into selects
        every = jnp.all(dense("a") > 0, axis=-1, keepdims=True)
        some = jnp.any(dense("b") > 0.5, axis=-1, keepdims=True)
        return jnp.where(every, h, jnp.tanh(h)) + jnp.where(some, dense("b"), 0.0)
    if kind == "product":  # a product of many live factors
        return jnp.prod(1 + 0.3 * jnp.tanh(dense("a")), axis=-1, keepdims=True) + h
    if kind == "argmax_gather":
        return jnp.take_along_axis(dense("a"), jnp.argmax(dense("b"), 1)[:, None], 1) + h
    raise ValueError(kind)


def _conv_features(p, xb, pool: str):
    z = jax.lax.conv_general_dilated(xb, p["k"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    z = jax.nn.relu(z + p["kb"])
    if pool == "max":
        z = jax.lax.reduce_window(z, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    elif pool == "max_overlap":
        z = jax.lax.reduce_window(z, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 1, 1, 1), "VALID")
    else:
        z = jax.lax.reduce_window(z, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4
    return z.reshape(z.shape[0], -1) @ p["proj"]


@functools.lru_cache(maxsize=None)
def build(structure: tuple):
    """``fn(params, xb)`` of a structure ``(input kind, block kinds…)`` — one function object
    per structure, so its compilation is shared by every program drawn for it."""
    head, blocks = structure[0], structure[1:]

    def fn(p, xb):
        h = _conv_features(p, xb, head[5:]) if head.startswith("conv_") else xb
        for i, kind in enumerate(blocks):
            h = _block(kind, {k[len(f"{i}_"):]: v for k, v in p.items()
                              if k.startswith(f"{i}_")}, h)
        return h @ p["out_w"] + p["out_b"]

    return fn


def x_shape(structure) -> tuple:
    return (5, 5, 1) if structure[0].startswith("conv_") else (WIDTH,)


def random_params(structure, rng) -> dict:
    w = WIDTH
    p = {"out_w": rng.normal(size=(w, 2)) / np.sqrt(w), "out_b": rng.normal(size=2)}
    if structure[0].startswith("conv_"):
        p["k"] = rng.normal(size=(3, 3, 1, 2)) / 3
        p["kb"] = rng.normal(size=2) * 0.3
        feats = 2 * (16 if structure[0] == "conv_max_overlap" else 4)
        p["proj"] = rng.normal(size=(feats, w)) / np.sqrt(feats)
    for i, _ in enumerate(structure[1:]):
        for name in ("a", "b"):
            p[f"{i}_{name}_w"] = rng.normal(size=(w, w)) / np.sqrt(w)
            p[f"{i}_{name}_b"] = rng.normal(size=w) * 0.5
        p[f"{i}_mu"] = OFFSET + rng.normal(size=w) * 0.1
        p[f"{i}_sigma"] = np.exp(rng.normal(size=w) * 0.5)
    return p


def random_pairs(shape, rng, gap: float | None, scale: float):
    """``N`` inputs and ``K`` references: independent, or each reference within ``gap`` of
    input 0 (``gap = 0``: equal to it)."""
    x = rng.normal(size=(N,) + shape) * scale
    if gap is None:
        r = rng.normal(size=(K,) + shape) * scale
    else:
        r = x[:1] + gap * rng.normal(size=(K,) + shape)
        r[0] = x[0] if gap == 0 else r[0]
    return x, r


GAPS = (None, 0.0, 1e-30, 1e-9, 1e-4, 1e-2, 1.0, 1e4)
HEADS = ("dense", "dense", "conv_max", "conv_avg", "conv_max_overlap")


def fuzz_cases(count: int, seed: int = 2017) -> list:
    """``count`` structures drawn at random, dealt so that every block, dtype, mode, input
    kind and reference gap occurs (hypothesis's own draws, shrinking towards small programs,
    left most blocks untried in a short run); one more case carries an integer path."""
    rng = np.random.default_rng(seed)
    deck = list(rng.permutation(BLOCKS)) + list(rng.permutation(BLOCKS))
    deck.reverse()  # pop() deals the first permutation first: every block within 22 cards
    cases = []
    for i in range(count):
        depth = 2 + i % 2
        blocks = tuple(str(deck.pop() if deck else rng.choice(BLOCKS)) for _ in range(depth))
        cases.append(dict(structure=(HEADS[i % len(HEADS)],) + blocks,
                          dtype=DTYPES[i % len(DTYPES)], mode=MODES[i % len(MODES)],
                          gap=GAPS[i % len(GAPS)], scale=(1e-2, 1.0, 30.0)[i % 3],
                          seed=int(rng.integers(2**31))))
    cases.append(dict(structure=("dense", "dense_tanh") + REFUSED_BLOCKS, dtype="float32",
                      mode="rescale", gap=None, scale=1.0, seed=int(rng.integers(2**31))))
    return cases


def _draw_programs(case):
    rng = np.random.default_rng(case["seed"])
    shape = x_shape(case["structure"])
    programs = []
    for _ in range(PROGRAMS_PER_EXAMPLE):
        params = random_params(case["structure"], rng)
        x, r = random_pairs(shape, rng, case["gap"], case["scale"])
        programs.append((params, x, r))
    stack = lambda *a: np.stack(a)  # noqa: E731
    params = jax.tree_util.tree_map(stack, *[p for p, _, _ in programs])
    return params, np.stack([x for _, x, _ in programs]), np.stack([r for _, _, r in programs])


def _check_refused(exc: Exception) -> None:
    assert isinstance(exc, JaxliftError), repr(exc)
    msg = str(exc)
    assert "test_fuzz_exact.py:" in msg and "'" in msg, msg


def _marked(cases: list) -> list:
    """The first ``DEFAULT_CASES`` structures (already every block, dtype, mode, input kind and
    gap) and the refused one run by default; the rest of the deal runs with ``-m slow``."""
    return [c if i < DEFAULT_CASES or i == len(cases) - 1
            else pytest.param(c, marks=pytest.mark.slow) for i, c in enumerate(cases)]


@pytest.mark.parametrize("case", _marked(fuzz_cases(CASES)), ids=lambda c: "-".join(
    (*c["structure"], c["dtype"], c["mode"], f"gap{c['gap']}")))
def test_exact_or_refused_on_random_programs(case):
    fn = build(case["structure"])
    params, x, r = _draw_programs(case)
    dtype = case["dtype"]
    with jax.enable_x64(True):
        cast = lambda a: jnp.asarray(a, dtype)  # noqa: E731
        p_t, x_t, r_t = jax.tree_util.tree_map(cast, (params, x, r))

        def explain(p, xs, rs):
            return jaxlift.attribute(fn, p, xs, rs, target=0, mode=case["mode"],
                                     average_refs=False, return_delta=True)

        try:
            c, d = jax.jit(jax.vmap(explain))(p_t, x_t, r_t)
        except JaxliftError as exc:
            _check_refused(exc)
            assert "argmax_gather" in case["structure"], str(exc)
            return
        assert "argmax_gather" not in case["structure"], "an integer path was not refused"
        c = np.asarray(c, np.float64)
        d = np.asarray(d, np.float64)
        total = c.reshape(c.shape[:3] + (-1,)).sum(-1)
        size = np.abs(c).reshape(c.shape[:3] + (-1,)).sum(-1)
        finite = np.isfinite(c).reshape(c.shape[:3] + (-1,)).all(-1) & np.isfinite(d)
        tol = RTOL[dtype] * np.maximum(size, np.abs(d))
        if not np.all(finite & (np.abs(total - d) <= tol)):
            # add the forward-rounding floor (κ of the programs as jaxlift evaluated them:
            # half precision runs in float32); computed only where the plain bound is missed
            wide = "float64" if dtype == "float64" else "float32"
            p_w, x_w, r_w = jax.tree_util.tree_map(
                lambda a: jnp.asarray(a, dtype).astype(wide), (params, x, r))
            kappa = np.asarray(jax.jit(jax.vmap(
                lambda p, xs, rs: forward_rounding_scale(fn, p, xs, rs, 0)))(p_w, x_w, r_w))
            tol = tol + 64 * EPS[dtype] * kappa
        bad = ~(finite & (np.abs(total - d) <= tol))
        for b in np.unique(np.nonzero(bad)[0]):
            # not exact: the same program called on its own must be refused, by name
            one = jax.tree_util.tree_map(lambda a, b=b: a[b], (p_t, x_t, r_t))
            try:
                explain(*one)
            except JaxliftError as exc:
                _check_refused(exc)
                continue
            i, j = np.argwhere(bad[b])[0]
            pytest.fail(f"silently inexact: program {b} pair ({i}, {j}) of {case}: "
                        f"ΣC = {total[b, i, j]!r}, Δt = {d[b, i, j]!r}, "
                        f"tol = {tol[b, i, j]!r}, finite = {bool(finite[b, i, j])}")
