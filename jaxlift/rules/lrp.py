"""The ε-LRP rule for a nonlinearity (Bach et al. 2015, as DeepExplain defines it).

At a fused elementwise nonlinearity ``y = g(z)`` of one live input the relevance passes as
``m = m_y · g(z)/(z + ε·sign(z))`` (``sign(0) = +1``), with ``z`` the activation's own input
(the chain's value before its first non-linear step: bias included; the multiplier of the
chain's source is that times ``dz/dx``), evaluated at the input (the method
runs the interpreter with the reference equal to the input, so linear operations pass
multipliers by their weights, as the gradient does); the score is ``x · m_x``. Where the
stabilised denominator is 0 (``z = 0`` with ``ε = 0``) the multiplier is 0. On a bias-free ReLU
network with ``ε = 0`` this is the gradient, so ε-LRP equals gradient × input there. Not
summation-to-delta: relevance absorbed by biases and by ``ε`` is lost.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxlift.rules._util import wide
from jaxlift.rules.registry import Rule


def lrp_ratio(z, y, epsilon: float):
    """``y/(z + ε·sign(z))`` with ``sign(0) = +1``, and 0 where that denominator is 0."""
    z, y = wide(z), wide(y)
    denom = z + epsilon * jnp.where(z >= 0, 1, -1).astype(z.dtype)
    zero = denom == 0
    return jnp.where(zero, 0, y / jnp.where(zero, jnp.ones_like(denom), denom))


@functools.lru_cache(maxsize=None)
def lrp_epsilon_rule(epsilon: float) -> Rule:
    """The rule for one ``ε`` (memoized: one object per value, so that it keys the cache)."""
    def backward(ctx, m_out) -> list:
        (m,) = m_out
        x = ctx.xs[0]
        # z and dz/dx along the chain's linear prefix (a scaling before the activation counts)
        z, slope = jax.jvp(ctx.pre_activation, (x,), (jnp.ones_like(x),))
        ratio = lrp_ratio(z, ctx.ys[0], epsilon) * wide(slope)
        return [m.map(lambda v: v * ratio)]
    return Rule(f"lrp_epsilon({epsilon:g})", backward=backward, exact=False)
