"""``smoothgrad`` (issue 17): no noise gives the base method, the three variants against hand
computations on the same noisy copies, a base that takes references, and option checks.

The bases here are small :class:`Method` values built in this file (a gradient and a
straight-line integrated gradient), so these tests do not depend on the rest of the table."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlift.methods import base, lime, smoothgrad

SG = smoothgrad.METHOD


def _grad_kernel(f, params, x, r, *, opts, arrays, key):
    """∂t/∂x (``(T, *S)`` for a vector target), with the gradient as multiplier."""
    g = jax.jacrev(lambda v: f(params, v))(x)           # jacrev puts the T axis first
    return g, g


GRAD = base.Method(name="grad_for_test", summary="gradient", scope="input",
                   kernel=_grad_kernel, needs_refs=False)


def _ig_kernel(f, params, x, r, *, opts, arrays, key):
    """Midpoint-rule integrated gradients with ``steps`` points."""
    n = opts["steps"]
    alphas = (jnp.arange(n) + 0.5) / n
    g = jax.vmap(lambda a: jax.grad(lambda v: f(params, v))(r + a * (x - r)))(alphas).mean(0)
    return g * (x - r), g


IG = base.Method(name="ig_for_test", summary="IG", scope="pair", kernel=_ig_kernel,
                 options=(base.Option("steps", 8, "points",
                                      base.positive_int("ig_for_test", "steps")),),
                 rows_per_pair=lambda o: o["steps"])

C = np.array([1.0, -2.0, 0.5], np.float32)
X = np.array([[0.3, -1.2, 2.0], [1.5, 0.1, -0.4]], np.float32)
R = np.array([[0.0, 0.5, -0.5], [1.0, 1.0, 1.0]], np.float32)


def quadratic(p, x):                       # t = ½ Σ c x², ∂t/∂x = c·x
    return 0.5 * jnp.sum(p * x * x)


def run_many(option_sets, f=quadratic, params=C, xs=X, rs=R):
    """The kernel on pairs ``(xs[i], rs[i])`` for each option set, in one compilation."""
    methods = [(SG.check_options(o),) for o in option_sets]
    arrays = [SG.prepare(o, xs.shape[1:], jax.random.PRNGKey(0)) for (o,) in methods]
    keys = jax.random.split(jax.random.PRNGKey(1), xs.shape[0])

    @jax.jit
    def go(xs, rs, keys, arrays):
        return [jax.vmap(lambda x, r, k, o=o, a=a: SG.kernel(f, params, x, r, opts=o, arrays=a, key=k))(
            xs, rs, keys) for (o,), a in zip(methods, arrays)]
    return go(xs, rs, keys, arrays), keys


def run(options, **kw):
    (out,), keys = run_many([options], **kw)
    return out, keys


@jax.jit
def _noise(key, x, level):
    (copies,), _ = smoothgrad.noisy_copies(x, jax.random.split(key)[0], 16, level)
    return copies


def noise(key, x, samples, level):
    """The copies the kernel draws (documented: the first half of ``split(key)``); normal
    draws of a prefix of the samples are not a prefix of more samples, so always 16."""
    assert samples == 16
    return np.asarray(_noise(key, x, level), np.float64)


def test_no_noise_gives_the_base():
    outs, _ = run_many([{"base": GRAD, "samples": 4, "noise_level": 0.0, "variant": v}
                        for v in smoothgrad.VARIANTS])
    for variant, (attr, mult) in zip(smoothgrad.VARIANTS, outs):
        grad = C * X
        want = {"smoothgrad": grad, "smoothgrad_sq": grad ** 2,
                "vargrad": np.zeros_like(grad)}[variant]
        np.testing.assert_allclose(attr, want, rtol=1e-6, atol=1e-7)
        if variant == "smoothgrad":
            np.testing.assert_allclose(mult, grad, rtol=1e-6)
        else:
            assert mult is None                     # the pipeline derives attr/Δx


def test_variants_match_a_hand_computation():
    n, level = 16, 0.2
    res, keys = run_many([{"base": GRAD, "samples": n, "noise_level": level, "variant": v}
                          for v in smoothgrad.VARIANTS])
    outs = dict(zip(smoothgrad.VARIANTS, res))
    for i in range(2):
        copies = noise(keys[i], X[i], n, level)                     # (n, 3)
        sigma = level * (X[i].max() - X[i].min())
        np.testing.assert_allclose((copies - X[i]).std(), sigma, rtol=0.5)   # it is noise of that size
        grads = C * copies                                       # the base on each copy
        np.testing.assert_allclose(outs["smoothgrad"][0][i], grads.mean(0), rtol=1e-5)
        np.testing.assert_allclose(outs["smoothgrad_sq"][0][i], (grads ** 2).mean(0),
                                   rtol=1e-5)
        np.testing.assert_allclose(outs["vargrad"][0][i], grads.var(0), rtol=1e-4)
        assert np.all(grads.var(0) > 0)


def test_base_with_references_and_options():
    def cubic(p, x):
        return jnp.sum(p * x ** 3)
    opts = {"base": IG, "base_options": {"steps": 4}, "samples": 16, "noise_level": 0.1}
    (attr, _), keys = run(opts, f=cubic)
    for i in range(2):
        copies = noise(keys[i], X[i], 16, 0.1)
        # midpoint IG of Σ c x³ from r to each noisy copy, 4 points, averaged over the copies
        a = (np.arange(4) + 0.5) / 4
        want = np.mean([(3 * C * (R[i] + a[:, None] * (xc - R[i])) ** 2).mean(0)
                        * (xc - R[i]) for xc in copies], axis=0)
        np.testing.assert_allclose(attr[i], want, rtol=1e-5)
    assert SG.rows_per_pair(SG.check_options(opts)) == 64


def test_base_with_prepared_arrays():
    # lime's coalitions and projection come through smoothgrad's prepare; no noise: lime itself
    lin = lambda p, x: x @ p  # noqa: E731
    w = np.array([1.0, -2.0, 0.5], np.float32)
    opts = {"base": lime.METHOD, "base_options": {"n_samples": 8, "alpha": 0.0},
            "samples": 2, "noise_level": 0.0}
    (attr, _), _ = run(opts, f=lin, params=w)
    np.testing.assert_allclose(attr, w * (X - R), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("options,match", [
    ({"base": GRAD, "samples": 0}, "samples must be a positive int"),
    ({"base": GRAD, "noise_level": -0.1}, "noise_level must be a finite non-negative"),
    ({"base": GRAD, "noise_level": float("inf")}, "noise_level must be a finite"),
    ({"base": GRAD, "variant": "var"}, "unknown smoothgrad variant 'var'"),
    ({"base": "no_such_method"}, "unknown smoothgrad base 'no_such_method'"),
    ({"base": 3}, "base must be a method name or a Method"),
    ({"base": SG}, "cannot be smoothgrad itself"),
    ({"base": base.Method(name="interp", summary="", scope="interpreter", composite=object())},
     "is an interpreter method"),
    ({"base": GRAD, "base_options": [1, 2]}, "base_options must be a dict"),
    ({"base": GRAD, "base_options": {"mask": np.zeros(3)}}, r"base_options \['mask'\] are not"),
    ({"base": GRAD, "sigma": 1.0}, "unknown mode_options"),
])
def test_bad_options_are_refused(options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        SG.check_options(options)


def test_base_options_are_checked_by_the_base():
    opts = SG.check_options({"base": IG, "base_options": {"stepz": 4}})
    with pytest.raises(ValueError, match=r"unknown mode_options \['stepz'\] for mode "
                                         "'ig_for_test'"):
        SG.prepare(opts, (3,), jax.random.PRNGKey(0))
    opts = SG.check_options({"base": IG, "base_options": {"steps": 0}})
    with pytest.raises(ValueError, match="steps must be a positive int"):
        SG.prepare(opts, (3,), jax.random.PRNGKey(0))
