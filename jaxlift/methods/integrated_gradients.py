"""``integrated_gradients`` (Sundararajan et al. 2017): for each (input, reference) pair
``IG_i = Δx_i · Σ_k w_k ∂t/∂x_i(r + α_k Δx)``.

Options ``steps`` (default 50) and ``method`` (Captum's names): ``riemann_left``
(``α_k = k/n``), ``riemann_right`` (``(k+1)/n``), ``riemann_middle`` (``(k+½)/n``), all with
``w_k = 1/n``; ``riemann_trapezoid`` (``α_k = k/(n−1)``, weights ``1/(n−1)`` halved at both
ends — a true trapezoid rule; Captum's weights are ``1/n`` halved at the ends, i.e. ``(n−1)/n``
times ours); ``gausslegendre`` (default, as Captum). Completeness ``Σ IG = Δt`` holds as
``steps → ∞``. Multipliers are the path-averaged gradient (``IG = m·Δx``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift.errors import InputValueError
from jaxlift.methods.base import Method, Option, one_of, positive_int
from jaxlift.methods.gradient import gradient_of

IG_METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid",
              "gausslegendre")


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
        if n < 2:
            raise InputValueError("riemann_trapezoid needs steps >= 2")
        w = np.full(n, 1 / (n - 1))
        w[0] = w[-1] = 0.5 / (n - 1)
        return np.linspace(0.0, 1.0, n), w
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return 0.5 * (nodes + 1), 0.5 * weights
    raise InputValueError(f"unknown integration method {method!r}; choose one of "
                          f"{', '.join(IG_METHODS)}")


def kernel(f, params, x, r, *, opts, arrays, key):
    """Integrated gradients of one pair: ``(attr, path-averaged gradient)`` per leaf."""
    a, w = quadrature(opts["method"], opts["steps"])
    alphas, weights = jnp.asarray(a), jnp.asarray(w)
    dx = jax.tree_util.tree_map(jnp.subtract, x, r)

    def grad_at(alpha):
        point = jax.tree_util.tree_map(lambda rl, dl: rl + alpha.astype(dl.dtype) * dl, r, dx)
        return gradient_of(f, params, point)

    gs = jax.vmap(grad_at)(alphas)
    mult = jax.tree_util.tree_map(
        lambda g: jnp.tensordot(weights.astype(g.dtype), g, axes=1), gs)
    attr = jax.tree_util.tree_map(lambda m, d: m * d, mult, dx)
    return attr, mult


def _checked_rule(opts) -> dict:
    """Refuse a rule the step count cannot build (a trapezoid of one point); no arrays."""
    quadrature(opts["method"], opts["steps"])
    return {}


def _check_method(v):
    return one_of("integrated_gradients", "method", IG_METHODS)(v)


METHOD = Method(
    name="integrated_gradients",
    summary="integrated gradients: Δx times the gradient averaged on the path from r to x "
            "(`steps`, `method` as in Captum)",
    cost="`steps` gradients per pair",
    scope="pair", kernel=kernel, completeness="limit",
    options=(Option("steps", 50, "points on the path", positive_int("integrated_gradients",
                                                                    "steps")),
             Option("method", "gausslegendre", "quadrature rule", _check_method)),
    prepare=lambda opts, shape, key: _checked_rule(opts),
    rows_per_pair=lambda opts: opts["steps"])
