"""RevealCancel and genomics_default: summation-to-delta properties and the paper's worked
examples (exact values computed by hand in the comments)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxlift
from oracles import assert_sums_to_delta, forward_rounding_scale


pytestmark = pytest.mark.usefixtures("x64")  # float64 throughout (tests/conftest.py)


# ---------------------------------------------------------------------------------------------
# Small random networks (fixed architectures, random weights: one compilation each)

ACTS = {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh,
        "softplus": jax.nn.softplus}


def mlp(p, x):
    h = x @ p["w1"] + p["b1"]
    h = p["bn_a"] * h + p["bn_b"]            # inference BatchNorm: scales of both signs
    h = ACTS[p["act1"]](h)
    h = jax.nn.relu(h @ p["w2"] + p["b2"])
    return jnp.tanh(h) @ p["w3"] + p["b3"]


def cnn(p, x):                                  # x: (B, 8, 8, 2) NHWC
    dn = ("NHWC", "HWIO", "NHWC")
    h = jax.lax.conv_general_dilated(x, p["k1"], (1, 1), "SAME", dimension_numbers=dn)
    h = jax.nn.relu(h + p["c1"])
    h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    h = jax.lax.conv_general_dilated(h, p["k2"], (1, 1), "VALID", dimension_numbers=dn)
    h = jax.nn.sigmoid(h + p["c2"])
    h = jax.lax.reduce_window(h, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 3, 3, 1), "VALID") / 9
    h = h.reshape(h.shape[0], -1)
    h = jax.nn.relu(h @ p["w1"] + p["b1"])
    return h @ p["w2"]


def seq_cnn(p, x):                              # x: (B, 12, 4) one-hot-like
    h = jax.lax.conv_general_dilated(x, p["k"], (1,), "VALID",
                                     dimension_numbers=("NWC", "WIO", "NWC"))
    h = jax.nn.relu(h + p["c"])
    h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 1), (1, 2, 1), "VALID")
    h = h.reshape(h.shape[0], -1)
    h = jax.nn.relu(h @ p["w1"] + p["b1"])
    return h @ p["w2"] + p["b2"]


def _params(arch: str, seed: int, scale: float, act: str):
    rng = np.random.default_rng(seed)
    n = lambda *s: jnp.asarray(rng.normal(0, scale, s))  # noqa: E731
    if arch == "mlp":
        return {"w1": n(6, 7), "b1": n(7), "bn_a": n(7), "bn_b": n(7), "act1": act,
                "w2": n(7, 5), "b2": n(5), "w3": n(5, 3), "b3": n(3)}
    if arch == "cnn":
        return {"k1": n(3, 3, 2, 4), "c1": n(4), "k2": n(2, 2, 4, 3), "c2": n(3),
                "w1": n(3, 6), "b1": n(6), "w2": n(6, 3)}
    return {"k": n(3, 4, 5), "c": n(5), "w1": n(25, 8), "b1": n(8), "w2": n(8, 2), "b2": n(2)}


SHAPES = {"mlp": (6,), "cnn": (8, 8, 2), "seq": (12, 4)}
FNS = {"mlp": mlp, "cnn": cnn, "seq": seq_cnn}


def _static_act(fn, act):
    # the activation name must not be a traced leaf: close over it
    def f(p, x):
        return fn({**p, "act1": act}, x)
    return f


_FN_CACHE: dict = {}


def _fn(arch, act):
    key = (arch, act)
    if key not in _FN_CACHE:
        _FN_CACHE[key] = _static_act(FNS[arch], act)
    return _FN_CACHE[key]


@pytest.mark.slow  # test budget: RevealCancel's MLP/CNN property draws stay in test_core_property
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=st.sampled_from(["mlp", "cnn", "seq"]),
       mode=st.sampled_from(["reveal_cancel", "genomics_default"]),
       act=st.sampled_from(["relu", "tanh"]),
       seed=st.integers(0, 2**31 - 1),
       scale=st.floats(0.3, 2.5),
       per_input=st.booleans(),
       ref_kind=st.sampled_from(["zeros", "random"]))
def test_summation_to_delta_rc_and_genomics(arch, mode, act, seed, scale, per_input, ref_kind):
    params = _params(arch, seed, scale, act)
    params.pop("act1", None)
    fn = _fn(arch, act)
    rng = np.random.default_rng(seed + 1)
    shape = SHAPES[arch]
    n, k = 2, 3
    x = jnp.asarray(rng.normal(size=(n,) + shape))
    rshape = ((n, k) if per_input else (k,)) + shape
    refs = jnp.zeros(rshape) if ref_kind == "zeros" else jnp.asarray(rng.normal(size=rshape))
    c, delta = jaxlift.attribute(fn, params, x, refs, target="all", mode=mode,
                                 return_delta=True)
    # Δt computed independently: f(x) − mean_k f(r_k)
    fx = fn(params, x)
    fr = (jax.vmap(lambda r: fn(params, r))(refs).mean(1) if per_input
          else fn(params, refs).mean(0)[None])
    np.testing.assert_allclose(delta, fx - fr, rtol=1e-10, atol=1e-10)
    assert_sums_to_delta(c, delta)  # the README's float64 bound


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.3, 2.5))
def test_summation_per_reference_rc(seed, scale):
    """Without averaging, every (input, reference) pair sums to its own Δt."""
    params = _params("mlp", seed, scale, "sigmoid")
    params.pop("act1")
    fn = _fn("mlp", "sigmoid")
    rng = np.random.default_rng(seed)
    x, refs = jnp.asarray(rng.normal(size=(2, 6))), jnp.asarray(rng.normal(size=(3, 6)))
    c, delta = jaxlift.attribute(fn, params, x, refs, target=1, mode="reveal_cancel",
                                 average_refs=False, return_delta=True)
    assert c.shape == (2, 3, 6) and delta.shape == (2, 3)
    # the README's bound with its forward-rounding term: a pair whose Δt is ~1e-8 while its
    # activations are ~1 (seed 29090, scale 2.5) sums to 9e-16, within 64·eps·κ but not 1e-10·Δt
    assert_sums_to_delta(c, delta, kappa=lambda: forward_rounding_scale(fn, params, x, refs, 1))


# ---------------------------------------------------------------------------------------------
# Worked examples

def min_net(p, x):
    """min(i1, i2) = i1 − relu(i1 − i2) (paper Fig. 3), the difference by a dense layer."""
    d = x @ jnp.array([[1.0], [-1.0]])
    return x[:, 0] - jax.nn.relu(d[:, 0])


def min_hidden(p, x):
    """The hidden unit h = relu(i1 − i2) of ``min_net``."""
    return jax.nn.relu((x @ jnp.array([[1.0], [-1.0]]))[:, 0])


X_MIN = np.array([[3.0, 1.0]])
R0 = np.zeros((1, 2))


def test_min_function_rescale_vs_reveal_cancel():
    # x = (3, 1), r = (0, 0). Pre-activation z = i1 − i2: z = 2, z0 = 0, Δz = 2,
    # split Δz⁺ = 3 (from i1), Δz⁻ = −1 (from i2). h = relu(z): Δh = 2.
    #
    # Rescale: m = Δh/Δz = 1, so C(i1→h) = 3, C(i2→h) = −1; y = i1 − h:
    #   C(i1→y) = 3 − 3 = 0, C(i2→y) = 0 − (−1) = 1.   (all the blame on i2)
    # RevealCancel:
    #   Δh⁺ = ½[relu(0+3) − relu(0)] + ½[relu(0−1+3) − relu(0−1)] = 1.5 + 1 = 2.5
    #   Δh⁻ = ½[relu(0−1) − relu(0)] + ½[relu(0+3−1) − relu(0+3)] = 0 − 0.5 = −0.5
    #   m⁺ = 2.5/3, m⁻ = −0.5/−1 = 0.5 → C(i1→h) = 2.5, C(i2→h) = −0.5 (the cancelled
    #   positive and negative terms revealed); y = i1 − h: C(i1) = 3 − 2.5 = 0.5, C(i2) = 0.5.
    # Both sum to Δy = min(3, 1) − min(0, 0) = 1.
    rs = jaxlift.attribute(min_net, None, X_MIN, R0, mode="rescale")
    rc = jaxlift.attribute(min_net, None, X_MIN, R0, mode="reveal_cancel")
    np.testing.assert_allclose(rs, [[0.0, 1.0]], atol=1e-12)
    np.testing.assert_allclose(rc, [[0.5, 0.5]], atol=1e-12)
    hs = jaxlift.attribute(min_hidden, None, X_MIN, R0, mode="rescale")
    hc = jaxlift.attribute(min_hidden, None, X_MIN, R0, mode="reveal_cancel")
    np.testing.assert_allclose(hs, [[3.0, -1.0]], atol=1e-12)
    np.testing.assert_allclose(hc, [[2.5, -0.5]], atol=1e-12)
    # genomics_default: the relu is fed by a dense layer → RevealCancel.
    gd = jaxlift.attribute(min_net, None, X_MIN, R0, mode="genomics_default")
    np.testing.assert_allclose(gd, [[0.5, 0.5]], atol=1e-12)


def min_net_conv(p, x):
    """The same min(i1, i2), the difference i1 − i2 computed by a width-2 convolution."""
    k = jnp.array([1.0, -1.0]).reshape(2, 1, 1)
    d = jax.lax.conv_general_dilated(x[:, :, None], k, (1,), "VALID",
                                     dimension_numbers=("NWC", "WIO", "NWC"))
    return x[:, 0] - jax.nn.relu(d[:, 0, 0])


def test_genomics_default_picks_rule_by_layer():
    # genomics_default = RevealCancel after dense layers, Rescale after convolutions: the conv
    # version of the min net gets the Rescale split (0, 1), the dense version RC's (0.5, 0.5).
    conv = jaxlift.attribute(min_net_conv, None, X_MIN, R0, mode="genomics_default")
    np.testing.assert_allclose(conv, [[0.0, 1.0]], atol=1e-12)
    conv_rc = jaxlift.attribute(min_net_conv, None, X_MIN, R0, mode="reveal_cancel")
    np.testing.assert_allclose(conv_rc, [[0.5, 0.5]], atol=1e-12)


def cancel_net(p, x):
    """y = relu(2·i1 − i2 + i3 − 1)."""
    return jax.nn.relu(x @ jnp.array([2.0, -1.0, 1.0]) - 1.0)


def test_fully_cancelled_input_is_revealed():
    # x = (1, 2, 1), r = 0: z = 2 − 2 + 1 − 1 = 0, z0 = −1, Δz = 1, Δy = relu(0) − relu(−1) = 0.
    # Rescale: m = Δy/Δz = 0 → every contribution is 0 (the cancellation hides everything).
    # RevealCancel: Δz⁺ = 2 + 1 = 3 (i1, i3), Δz⁻ = −2 (i2):
    #   Δy⁺ = ½[relu(−1+3) − relu(−1)] + ½[relu(−1−2+3) − relu(−1−2)] = 1 + 0 = 1
    #   Δy⁻ = ½[relu(−1−2) − relu(−1)] + ½[relu(−1+3−2) − relu(−1+3)] = 0 − 1 = −1
    #   m⁺ = 1/3, m⁻ = −1/−2 = ½ → C = (2·⅓, −2·½, 1·⅓) = (⅔, −1, ⅓), summing to 0 = Δy.
    x, r = jnp.array([[1.0, 2.0, 1.0]]), jnp.zeros((1, 3))
    np.testing.assert_allclose(jaxlift.attribute(cancel_net, None, x, r, mode="rescale"),
                               [[0.0, 0.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(jaxlift.attribute(cancel_net, None, x, r, mode="reveal_cancel"),
                               [[2 / 3, -1.0, 1 / 3]], atol=1e-12)


def saturating_net(p, x):
    """y = 1 − relu(1 − i1 − i2) = min(1, i1 + i2) (paper Fig. 1: saturation)."""
    return 1.0 - jax.nn.relu(1.0 - x.sum(-1))


def test_saturation_deeplift_vs_gradients():
    # x = (1, 1), r = 0: y = 1, y0 = 0, Δy = 1, but the gradient at x is 0 (saturated).
    # Rescale: z = 1 − i1 − i2: z = −1, z0 = 1, Δz = −2, Δh = relu(−1) − relu(1) = −1,
    #   m = ½; C(ik→h) = ½·(−1) = −½; y = 1 − h → C = (½, ½).
    # RevealCancel: Δz⁺ = 0, Δz⁻ = −2: Δh⁺ = 0, Δh⁻ = ½[relu(−1) − relu(1)]·2 = −1, m⁻ = ½:
    #   the same (½, ½).
    # Gradient and gradient×input: (0, 0). Integrated gradients along α·(1, 1): ∂y/∂ik = 1 for
    #   α < ½, 0 after → IG = (½, ½); the midpoint rule with an even number of steps is exact.
    x, r = jnp.array([[1.0, 1.0]]), jnp.zeros((1, 2))
    for mode in ("rescale", "reveal_cancel"):
        np.testing.assert_allclose(jaxlift.attribute(saturating_net, None, x, r, mode=mode),
                                   [[0.5, 0.5]], atol=1e-12)
    for mode in ("gradient", "grad_times_input"):
        np.testing.assert_allclose(jaxlift.attribute(saturating_net, None, x, r, mode=mode),
                                   [[0.0, 0.0]], atol=1e-12)
    ig = jaxlift.attribute(saturating_net, None, x, r, mode="integrated_gradients",
                           mode_options={"steps": 10, "method": "riemann_middle"})
    np.testing.assert_allclose(ig, [[0.5, 0.5]], atol=1e-12)


def sigmoid_diff(p, x):
    """y = σ(i1 − i2)."""
    return jax.nn.sigmoid(x[:, 0] - x[:, 1])


def test_sigmoid_split_by_hand():
    # x = (2, 1), r = 0: z0 = 0, Δz = 1, Δz⁺ = 2 (i1), Δz⁻ = −1 (i2).
    # Rescale: m = (σ(1) − σ(0))/1 → C = (2m, −m).
    # RevealCancel: Δy⁺ = ½[σ(2) − σ(0)] + ½[σ(1) − σ(−1)], Δy⁻ = ½[σ(−1) − σ(0)] +
    #   ½[σ(1) − σ(2)]; C(i1) = m⁺·2 = Δy⁺, C(i2) = m⁻·(−1) = Δy⁻.
    s = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    m = s(1) - s(0)
    dyp = 0.5 * (s(2) - s(0)) + 0.5 * (s(1) - s(-1))
    dyn = 0.5 * (s(-1) - s(0)) + 0.5 * (s(1) - s(2))
    x, r = jnp.array([[2.0, 1.0]]), jnp.zeros((1, 2))
    np.testing.assert_allclose(jaxlift.attribute(sigmoid_diff, None, x, r, mode="rescale"),
                               [[2 * m, -m]], rtol=1e-12)
    np.testing.assert_allclose(jaxlift.attribute(sigmoid_diff, None, x, r, mode="reveal_cancel"),
                               [[dyp, dyn]], rtol=1e-12)


def _fast_layer_norm(v):
    """Flax's LayerNorm statistics (``use_fast_variance=True``, its default): the one-pass
    variance ``E[v²] − E[v]²``, clipped at 0 against rounding, under ``rsqrt``."""
    mean = v.mean(-1, keepdims=True)
    var = jnp.maximum(0.0, (v * v).mean(-1, keepdims=True) - mean * mean)
    return (v - mean) * jax.lax.rsqrt(var + 1e-5)


def _two_pass_layer_norm(v):
    c = v - v.mean(-1, keepdims=True)
    return c * jax.lax.rsqrt((c * c).mean(-1, keepdims=True) + 1e-5)


@pytest.mark.parametrize("norm", [_fast_layer_norm,
                                  lambda v: jax.nn.standardize(v, axis=-1, epsilon=1e-5)])
def test_a_point_only_a_clip_keeps_defined_falls_back_to_rescale(x64, norm):
    """RevealCancel splits a one-pass variance's difference into E[v²]'s and E[v]²'s parts,
    whose sum can be negative at x0 + Δx⁻: rsqrt of the clip there is 1/√ε, and the scores,
    exact all the same, were 50× those of the two-pass layer norm (Σ|C| = 839 against 14.6,
    penzai's LayerNorm and Flax's default). The clip keeps rounding out of rsqrt's undefined
    side; where it acts at a hypothetical point but at neither visited one, the element falls
    back to Rescale, as at a NaN (rules.reveal_cancel.domain_guards)."""
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    w = jax.random.normal(k1, (8, 2))
    x = jax.random.normal(k2, (3, 8))
    refs = 0.3 * jax.random.normal(k3, (2, 8))

    def size(fn):
        scores, delta = jaxlift.attribute(lambda p, xb: fn(xb) @ p, w, x, refs, target=0,
                                          mode="reveal_cancel", return_delta=True)
        np.testing.assert_allclose(np.asarray(scores).sum(1), delta, rtol=1e-9)
        return np.abs(np.asarray(scores)).sum(1)
    fast, two_pass = size(norm), size(_two_pass_layer_norm)
    assert (fast <= 1.5 * two_pass).all(), (fast, two_pass)


def test_clamps_alone_are_no_domain_guards():
    """relu, relu6 and a clip followed by linear steps keep RevealCancel's own parts; a clip
    under rsqrt or log (through jnp.clip's call too) is a guard."""
    from jaxlift.program import build_program
    from jaxlift.rules.reveal_cancel import domain_guards
    chains = {"relu": (lambda v: jax.nn.relu(v) * 2 + 1, False),
              "relu6": (jax.nn.relu6, False),
              "clip": (lambda v: jnp.clip(v, 0.0, 3.0) - 1, False),
              "rsqrt": (lambda v: jax.lax.rsqrt(jnp.maximum(v, 0.0) + 1e-5), True),
              "log": (lambda v: jnp.log(jnp.clip(v, 1e-12)), True)}
    for name, (f, guarded) in chains.items():
        program, _ = build_program(lambda p, xs, f=f: f(xs[0]), (),
                                   (jax.ShapeDtypeStruct((4,), jnp.float32),))
        fused = [op for op in program.ops if op.body]
        assert len(fused) == 1, name
        assert bool(domain_guards(fused[0])) == guarded, name


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_a_shift_by_a_stopped_value_keeps_revealcancel_sane(name):
    """jax.nn.softmax, log_softmax and logsumexp subtract stop_gradient(max z) before exp: the
    function does not depend on the shift, but the linear rule's split of z − m gave the largest
    element (Δs = 0) parts ±Δz, which exp turned into opposing parts of e^{|Δz|}: Σ|C| 9× that
    of the same function written without the shift (exact all the same). The shifted sum takes
    its linear rule under the sign split of its net difference (rules.reveal_cancel.NET_SPLIT):
    within 1.5× of the unshifted function's RevealCancel scores, summing to Δt."""
    w = jnp.array([[2.1, 3.6, -5.1], [-0.3, 2.0, 2.7]])
    x = jnp.array([[0.7, 1.5], [-1.2, 0.4], [2.0, -0.3]])
    refs = jnp.zeros((1, 2))
    shifted = {"softmax": lambda z: jax.nn.softmax(z, -1),
               "log_softmax": lambda z: jax.nn.log_softmax(z, -1),
               "logsumexp": lambda z: jax.nn.logsumexp(z, -1, keepdims=True)}[name]
    plain = {"softmax": lambda z: jnp.exp(z) / jnp.exp(z).sum(-1, keepdims=True),
             "log_softmax": lambda z: z - jnp.log(jnp.exp(z).sum(-1, keepdims=True)),
             "logsumexp": lambda z: jnp.log(jnp.exp(z).sum(-1, keepdims=True))}[name]

    def size(f):
        scores, delta = jaxlift.attribute(lambda p, xb: f(xb @ p), w, x, refs, target=0,
                                          mode="reveal_cancel", return_delta=True)
        np.testing.assert_allclose(np.asarray(scores).sum(1), delta, rtol=1e-9, atol=1e-12)
        return np.abs(np.asarray(scores)).sum(1)
    assert (size(shifted) <= 1.5 * size(plain) + 1e-12).all(), (size(shifted), size(plain))
