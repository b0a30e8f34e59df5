"""Elementwise functions of two live operands beyond products and quotients (``pow``,
``atan2``, ``rem``, ``igamma``: the two-player Shapley split), one-operand special functions
(Bessel, incomplete gamma), and complex numbers built from two real values or conjugated
(``lax.complex``, ``conj``: linear), and products of many live factors (``jnp.prod``). Each
was refused for want of a rule.

The two-player split is checked element by element against the Shapley values written out
(``C_a = ½[f(a, b0) − f(a0, b0) + f(a, b) − f(a0, b)]``): the split, not only the sum.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.special as special
import numpy as np
import pytest

import jaxlift

RNG = np.random.default_rng(11)
W = RNG.normal(size=(8, 8))

TWO_OPERANDS = {
    "pow": lambda a, b: jnp.power(1.5 + jnp.tanh(a), b),
    "atan2": jnp.arctan2,
    "rem": lambda a, b: jnp.fmod(3 * a, 0.5 + jnp.abs(b)),
    "igamma": lambda a, b: special.gammainc(1.0 + jnp.abs(a), jnp.abs(b)),
}


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_two_live_operands_take_the_shapley_split(x64, mode):
    # every function side by side, each on its own 8 features (a on 4, b on the next 4)
    def fn(p, xb):
        return sum(f(xb[:, 8 * k:8 * k + 4], xb[:, 8 * k + 4:8 * k + 8]).sum(1, keepdims=True)
                   for k, f in enumerate(TWO_OPERANDS.values()))
    x = jnp.asarray(RNG.normal(size=(3, 8 * len(TWO_OPERANDS))))
    r = jnp.asarray(RNG.normal(size=(2, 8 * len(TWO_OPERANDS))))
    c = np.asarray(jaxlift.attribute(fn, None, x, r, mode=mode, average_refs=False))
    for k, (name, f) in enumerate(TWO_OPERANDS.items()):
        a, b = np.asarray(x[:, None, 8 * k:8 * k + 4]), np.asarray(x[:, None, 8 * k + 4:8 * k + 8])
        a0, b0 = np.asarray(r[None, :, 8 * k:8 * k + 4]), np.asarray(r[None, :, 8 * k + 4:8 * k + 8])
        y, y0 = f(a, b), f(a0, b0)
        y_a, y_b = f(a, b0 + 0 * a), f(a0 + 0 * b, b)  # one operand moved
        want_a = ((y_a - y0) + (y - y_b)) / 2
        want_b = ((y_b - y0) + (y - y_a)) / 2
        np.testing.assert_allclose(c[..., 8 * k:8 * k + 4], want_a, rtol=1e-9, atol=1e-12,
                                   err_msg=name)
        np.testing.assert_allclose(c[..., 8 * k + 4:8 * k + 8], want_b, rtol=1e-9, atol=1e-12,
                                   err_msg=name)
        assert np.abs(want_a).max() > 1e-2 and np.abs(want_b).max() > 1e-2, name


ONE_OPERAND_AND_COMPLEX = {
    "bessel": lambda h: special.i0e(h) + special.i1e(h),
    "incomplete_gamma": lambda h: special.gammainc(2.0, jnp.abs(h)) + special.gammaincc(1.5, h * h),
    "complex": lambda h: jnp.abs(jax.lax.complex(h, jnp.tanh(h[:, ::-1]))),
    "conj": lambda h: (jnp.conj(h * (1 + 2j)) * (2 + 1j)).real,
    "angle": lambda h: jnp.angle(jax.lax.complex(h, 1.0 + 0 * h)),
}


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_special_functions_and_complex_values_sum_to_delta(x64, mode):
    def fn(p, xb):
        h = xb @ W
        return sum(jax.nn.relu(g(h) + 0.1).sum(1, keepdims=True) * (k + 1)
                   for k, g in enumerate(ONE_OPERAND_AND_COMPLEX.values()))
    x = jnp.asarray(RNG.normal(size=(3, 8)))
    r = jnp.asarray(RNG.normal(size=(2, 8)) * 0.3)
    c, d = jaxlift.attribute(fn, None, x, r, mode=mode, average_refs=False, return_delta=True)
    own = fn(None, x)[:, None, 0] - fn(None, r)[None, :, 0]
    np.testing.assert_allclose(np.asarray(d), np.asarray(own), rtol=1e-12, atol=1e-12)
    assert float(jnp.abs(d).min()) > 1e-3
    np.testing.assert_allclose(np.asarray(c.sum(-1)), np.asarray(d), rtol=1e-10, atol=1e-12)
    for name, g in ONE_OPERAND_AND_COMPLEX.items():  # each has something to explain
        moved = jax.nn.relu(g(x @ W) + 0.1).sum(1)[:, None] - jax.nn.relu(g(r @ W) + 0.1).sum(1)
        assert float(jnp.abs(moved).max()) > 1e-2, name


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_a_product_of_many_live_factors_is_split_by_its_two_orders(x64, mode):
    """``jnp.prod`` (``reduce_prod``) of live factors, once over a middle axis: factor k gets
    ``½[Π_{i<k} a_i·Π_{i>k} a0_i + Π_{i<k} a0_i·Π_{i>k} a_i]·Δa_k`` (each order telescopes
    to ``Π a − Π a0``), written out here; it was refused."""
    def fn(p, xb):
        return jnp.prod(xb.reshape(-1, 5, 2), axis=1).sum(1, keepdims=True)
    x = jnp.asarray(RNG.normal(size=(3, 10)))
    r = jnp.asarray(RNG.normal(size=(2, 10)))
    c = np.asarray(jaxlift.attribute(fn, None, x, r, mode=mode, average_refs=False))
    a = np.asarray(x).reshape(3, 1, 5, 2)
    a0 = np.broadcast_to(np.asarray(r).reshape(1, 2, 5, 2), (3, 2, 5, 2))
    a = np.broadcast_to(a, a0.shape)
    want = np.zeros(a.shape)
    for k in range(5):
        forward = np.prod(a[:, :, :k], 2) * np.prod(a0[:, :, k + 1:], 2)
        backward = np.prod(a0[:, :, :k], 2) * np.prod(a[:, :, k + 1:], 2)
        want[:, :, k] = (forward + backward) / 2 * (a[:, :, k] - a0[:, :, k])
    np.testing.assert_allclose(c, want.reshape(3, 2, 10), rtol=1e-9, atol=1e-12)
    assert np.abs(want).max() > 1e-2


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_running_products_and_log_sum_exps_are_their_associative_scans(x64, mode):
    """``cumprod`` and ``cumlogsumexp`` of live values are explained as
    ``lax.associative_scan`` of ``multiply`` / ``logaddexp`` (``registry.register_expansion``):
    the same scores, element by element, as the scan written out, and they sum. Both were
    refused ("no DeepLIFT rule")."""
    rng = np.random.default_rng(21)
    x = jnp.asarray(rng.uniform(0.5, 1.5, size=(3, 7)))
    r = jnp.asarray(rng.uniform(0.5, 1.5, size=(2, 7)))
    w = jnp.asarray(rng.normal(size=(7, 2)))
    pairs = [
        (lambda xb: jnp.cumprod(xb, 1),
         lambda xb: jax.lax.associative_scan(jnp.multiply, xb, axis=1)),
        (lambda xb: jax.lax.cumprod(xb, axis=1, reverse=True),
         lambda xb: jax.lax.associative_scan(jnp.multiply, xb, axis=1, reverse=True)),
        (lambda xb: jax.lax.cumlogsumexp(xb, axis=1),
         lambda xb: jax.lax.associative_scan(jnp.logaddexp, xb, axis=1))]
    for primitive, written in pairs:
        c, d = jaxlift.attribute(lambda p, xb, f=primitive: f(xb) @ w, None, x, r, target=1,
                                 mode=mode, return_delta=True, average_refs=False)
        same = jaxlift.attribute(lambda p, xb, f=written: f(xb) @ w, None, x, r, target=1,
                                 mode=mode, average_refs=False)
        np.testing.assert_allclose(c, same, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(c.sum(-1), d, rtol=1e-10)


def test_a_running_product_and_log_sum_exp_in_one_model_equal_their_scans(x64):
    """The default run's share of the test above: one model with both, one mode."""
    rng = np.random.default_rng(22)
    x = jnp.asarray(rng.uniform(0.5, 1.5, size=(2, 5)))
    r = jnp.asarray(rng.uniform(0.5, 1.5, size=(1, 5)))

    def model(cumprod, cumlogsumexp):
        return lambda p, xb: jnp.stack([cumprod(xb)[:, -1], cumlogsumexp(xb)[:, -2]], 1)
    fn = model(lambda v: jnp.cumprod(v, 1), lambda v: jax.lax.cumlogsumexp(v, axis=1))
    written = model(lambda v: jax.lax.associative_scan(jnp.multiply, v, axis=1),
                    lambda v: jax.lax.associative_scan(jnp.logaddexp, v, axis=1))
    c, d = jaxlift.attribute(fn, None, x, r, target="all", return_delta=True)
    np.testing.assert_allclose(c, jaxlift.attribute(written, None, x, r, target="all"),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c.sum(-1), d, rtol=1e-10)
