"""``jaxlift.rules._conv.strided_input_transpose`` against ``jax.vjp`` of the convolution.

Every case builds the conv's jaxpr equation and calls the function with its ``params``, as a
rule would; shapes are small so that the file runs in seconds.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxlift.rules._conv import strided_input_transpose

_LETTERS = {1: "W", 2: "HW", 3: "DHW"}


@dataclass(frozen=True)
class Conv:
    """One configuration; sizes per spatial dim in the order of the specs' spatial letters."""
    inputs: tuple
    kernel: tuple
    strides: tuple
    padding: object  # (lo, hi) pairs or a padding string
    specs: tuple = ()  # (lhs, rhs, out) strings; channels-last by default
    batch: int = 2
    c_in: int = 2  # few channels: XLA:CPU compiles a float64 conv in time ~ c_in·c_out
    c_out: int = 3

    def dimension_numbers(self) -> lax.ConvDimensionNumbers:
        n = len(self.inputs)
        specs = self.specs or ("N" + _LETTERS[n] + "C", _LETTERS[n] + "IO", "N" + _LETTERS[n] + "C")
        return lax.conv_dimension_numbers((1,) * (n + 2), (1,) * (n + 2), specs)

    def shapes(self) -> tuple:
        lhs_spec, rhs_spec, _ = self.dimension_numbers()
        x, w = [0] * (len(self.inputs) + 2), [0] * (len(self.inputs) + 2)
        x[lhs_spec[0]], x[lhs_spec[1]] = self.batch, self.c_in
        w[rhs_spec[0]], w[rhs_spec[1]] = self.c_out, self.c_in
        for d, (n, k) in enumerate(zip(self.inputs, self.kernel)):
            x[lhs_spec[2 + d]], w[rhs_spec[2 + d]] = n, k
        return tuple(x), tuple(w)


def _arrays(conv: Conv, dtype, seed: int = 0):
    """Input, kernel, the forward function, its equation's params and a cotangent."""
    xs, ws = conv.shapes()
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(xs), dtype)
    w = jnp.asarray(rng.standard_normal(ws), dtype)
    dn = conv.dimension_numbers()

    def forward(v, w):
        return lax.conv_general_dilated(v, w, conv.strides, conv.padding, dimension_numbers=dn)

    (eqn,) = jax.make_jaxpr(forward)(x, w).eqns
    m = jnp.asarray(rng.standard_normal(jax.eval_shape(forward, x, w).shape), dtype)
    return x, w, forward, dict(eqn.params), m


def _both(conv: Conv, dtype):
    """(this module's transpose, ``jax.vjp``'s), in one jitted program (compiling dominates)."""
    x, w, forward, params, m = _arrays(conv, dtype)

    def both(m, w):
        ours = strided_input_transpose(m, w, lhs_shape=x.shape, **params)
        return ours, jax.vjp(lambda v: forward(v, w), x)[1](m)[0]
    return jax.jit(both)(m, w)


def _assert_close(got, want, rtol):
    """``|got − want| ≤ rtol · max |want|`` (in NumPy: eager jnp ops would compile per shape)."""
    assert got.shape == want.shape and got.dtype == want.dtype
    got, want = np.asarray(got), np.asarray(want)
    scale = np.max(np.abs(want), initial=0)
    if scale == 0:  # a conv whose windows read padding only
        assert not np.any(got)
        return
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale)


NAMED = {
    "mnist_conv1": Conv((28, 28), (4, 4), (2, 2), "VALID", c_in=1, c_out=5),
    "mnist_conv2": Conv((13, 13), (4, 4), (2, 2), "VALID"),
    "same_3x3_s2": Conv((9, 8), (3, 3), (2, 2), "SAME"),
    "nchw_oihw": Conv((11, 9), (3, 5), (2, 3), "SAME", ("NCHW", "OIHW", "NCHW")),
    "mixed_specs": Conv((13, 11), (3, 3), (3, 2), ((2, 5), (0, 1)), ("NHWC", "OIHW", "NCHW")),
    "odd_orders": Conv((10, 7), (4, 2), (2, 3), ((1, 2), (3, 0)), ("HCWN", "WOHI", "CWNH")),
    "nwc_1d": Conv((13,), (3,), (3,), ((2, 5),)),
    "ncw_1d": Conv((12,), (5,), (2,), "SAME", ("NCW", "OIW", "NCW")),
    "3d": Conv((7, 6, 5), (3, 2, 3), (2, 1, 3), ((1, 0), (0, 2), (3, 3))),
    "3d_ncdhw": Conv((6, 5, 7), (2, 3, 2), (2, 2, 2), "SAME", ("NCDHW", "OIDHW", "NCDHW")),
    "stride_1_and_2": Conv((9, 9), (3, 3), (2, 1), "SAME"),
    "kernel_below_stride": Conv((11, 10), (1, 2), (3, 3), "VALID"),
    "kernel_equals_stride": Conv((12, 9), (3, 3), (3, 3), "VALID"),
    "kernel_not_multiple": Conv((13, 13), (5, 5), (2, 3), ((1, 1), (2, 2))),
    "kernel_above_input": Conv((3, 4), (6, 5), (2, 2), ((2, 2), (1, 3))),
    "padding_above_kernel": Conv((5, 6), (2, 3), (2, 2), ((4, 7), (6, 3))),
    "input_not_divisible": Conv((7, 11), (2, 2), (2, 2), "VALID"),
    "output_size_one": Conv((5, 5), (5, 5), (2, 3), "VALID"),
    "negative_padding": Conv((12, 10), (3, 3), (2, 2), ((-2, 1), (-1, -3))),
    "windows_in_padding_only": Conv((1, 5), (1, 2), (2, 2), ((1, 0), (0, 0))),
    "one_channel": Conv((10, 10), (3, 3), (2, 2), "SAME", c_in=1, c_out=1),
}


def _random_conv(seed: int) -> Conv:
    """A random configuration: 1–3 spatial dims, random specs, kernels 1–5, strides 1–3 (one
    at least 2), padding mostly 0–2, at times 3–6, per side; input sizes give one output or
    more."""
    r = random.Random(seed)
    n = r.choice((1, 2, 2, 2, 3))
    kernel = tuple(r.randint(1, 5) for _ in range(n))
    strides = tuple(r.randint(1, 3) for _ in range(n))
    if all(s == 1 for s in strides):
        strides = (r.randint(2, 3),) + strides[1:]
    padding = tuple((r.choice((0, 0, 1, 2, r.randint(3, 6))), r.choice((0, 1, 2, r.randint(3, 6))))
                    for _ in range(n))
    inputs = tuple(max(r.randint(1, 9 if n < 3 else 6), k - lo - hi)
                   for k, (lo, hi) in zip(kernel, padding))
    letters = _LETTERS[n]
    specs = tuple("".join(r.sample(s, len(s))) for s in ("NC" + letters, "OI" + letters,
                                                          "NC" + letters))
    return Conv(inputs, kernel, strides, padding, specs, batch=r.randint(1, 3),
                c_in=r.randint(1, 3), c_out=r.randint(1, 2))


RANDOM = {f"random_{i}": _random_conv(i) for i in range(40)}


@pytest.mark.parametrize("conv", list(NAMED.values()) + [  # 16 draws by default, 40 in slow
    pytest.param(c, marks=pytest.mark.slow) if i >= 16 else c
    for i, c in enumerate(RANDOM.values())], ids=list(NAMED) + list(RANDOM))
def test_float64_matches_vjp(x64, conv):
    ours, theirs = _both(conv, jnp.float64)
    assert ours.dtype == jnp.float64
    _assert_close(ours, theirs, 1e-12)


def test_some_cases_read_the_input():
    assert sum(_reaches_input(c) for c in RANDOM.values()) >= 35
    assert not _reaches_input(NAMED["windows_in_padding_only"])


def _reaches_input(conv: Conv) -> bool:
    """Whether some window of every spatial dim overlaps the input (not padding only)."""
    if isinstance(conv.padding, str):
        return True
    for n, k, s, (lo, hi) in zip(conv.inputs, conv.kernel, conv.strides, conv.padding):
        outs = (n + lo + hi - k) // s + 1
        if not any(s * o + j - lo in range(n) for o in range(outs) for j in range(k)):
            return False
    return True


@pytest.mark.parametrize("name", ["mnist_conv2", "odd_orders", "3d", "nwc_1d", "random_0"])
def test_float32_matches_vjp(name):
    ours, theirs = _both({**NAMED, **RANDOM}[name], jnp.float32)
    _assert_close(ours, theirs, 1e-5)


def test_random_sweep_covers_the_shapes_it_is_meant_to():
    convs = list(RANDOM.values())
    assert {len(c.inputs) for c in convs} == {1, 2, 3}
    assert any(k < s for c in convs for k, s in zip(c.kernel, c.strides))
    assert any(k > s and k % s for c in convs for k, s in zip(c.kernel, c.strides))
    assert any(n % s for c in convs for n, s in zip(c.inputs, c.strides))
    assert any(1 in c.strides for c in convs)
    assert any(lo > k for c in convs for (lo, _), k in zip(c.padding, c.kernel))


def test_precision_and_preferred_element_type_reach_the_emitted_conv():
    conv = NAMED["mnist_conv2"]
    x, w, _, params, m = _arrays(conv, jnp.float32)
    params.update(precision=(lax.Precision.HIGHEST, lax.Precision.HIGHEST),
                  preferred_element_type=jnp.float32)
    jaxpr = jax.make_jaxpr(
        lambda m, w: strided_input_transpose(m, w, lhs_shape=x.shape, **params))(m, w)
    (eqn,) = [e for e in jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    assert eqn.params["precision"] == (lax.Precision.HIGHEST, lax.Precision.HIGHEST)
    assert eqn.params["preferred_element_type"] == jnp.float32
    assert eqn.params["window_strides"] == (1, 1) and eqn.params["lhs_dilation"] == (1, 1)


def test_a_kernel_of_another_dtype_is_cast_to_the_cotangents():
    conv = NAMED["nchw_oihw"]
    x, w, forward, params, m = _arrays(conv, jnp.float32)
    narrow = jnp.asarray(np.asarray(w), jnp.bfloat16)
    got, want = jax.jit(lambda m: (
        strided_input_transpose(m, narrow, lhs_shape=x.shape, **params),
        jax.vjp(lambda v: forward(v, narrow.astype(jnp.float32)), x)[1](m)[0]))(m)
    assert got.dtype == jnp.float32
    _assert_close(got, want, 1e-5)


@pytest.mark.parametrize("change, value", [
    ("window_strides", (1, 1)),
    ("lhs_dilation", (2, 1)),
    ("rhs_dilation", (1, 2)),
    ("feature_group_count", 3),
    ("batch_group_count", 2),
])
def test_none_where_the_decomposition_does_not_apply_or_help(change, value):
    x, w, _, params, m = _arrays(NAMED["same_3x3_s2"], jnp.float32)
    params[change] = value
    assert strided_input_transpose(m, w, lhs_shape=x.shape, **params) is None


def test_none_for_a_stride_1_equation():
    x, w, _, params, m = _arrays(Conv((6, 6), (3, 3), (1, 1), "SAME"), jnp.float32)
    assert strided_input_transpose(m, w, lhs_shape=x.shape, **params) is None


def test_vmap_over_an_extra_batch_axis_of_the_cotangent(x64):
    conv = NAMED["odd_orders"]
    x, w, forward, params, m = _arrays(conv, jnp.float64)
    m = np.asarray(m)
    ms = jnp.asarray(np.stack([m, 2 * m + 1, -m], axis=1))  # the extra axis second

    def both(ms):
        ours = jax.vmap(lambda m: strided_input_transpose(m, w, lhs_shape=x.shape, **params),
                        in_axes=1)(ms)
        return ours, jax.vmap(jax.vjp(lambda v: forward(v, w), x)[1], in_axes=1)(ms)[0]
    got, want = jax.jit(both)(ms)
    _assert_close(got, want, 1e-12)


def test_jit_with_the_kernel_traced_and_under_vmap(x64):
    conv = NAMED["3d_ncdhw"]
    x, w, forward, params, m = _arrays(conv, jnp.float64)
    f = jax.jit(jax.vmap(lambda m, w: strided_input_transpose(m, w, lhs_shape=x.shape, **params),
                         in_axes=(0, None)))
    m = np.asarray(m)
    ms = jnp.asarray(np.stack([m, m * m]))
    want = jax.jit(jax.vmap(jax.vjp(lambda v: forward(v, w), x)[1]))(ms)[0]
    _assert_close(f(ms, w), want, 1e-12)


def test_result_is_linear_in_the_cotangent_and_reaches_every_input(x64):
    """Not a copy of the reference by accident: the map is linear and its adjoint identity
    ``<conv(x), m> = <x, transpose(m)>`` holds."""
    conv = NAMED["kernel_not_multiple"]
    x, w, forward, params, m = _arrays(conv, jnp.float64)
    g, g3, y = jax.jit(lambda m: (
        strided_input_transpose(m, w, lhs_shape=x.shape, **params),
        strided_input_transpose(3 * m, w, lhs_shape=x.shape, **params), forward(x, w)))(m)
    np.testing.assert_allclose(np.vdot(y, m), np.vdot(x, g), rtol=1e-12)
    _assert_close(np.asarray(g3), 3 * np.asarray(g), 1e-12)
    assert math.prod(g.shape) == np.count_nonzero(np.asarray(g))


def test_a_padding_string_gives_the_numbers_of_its_pairs():
    conv = NAMED["nchw_oihw"]
    x, w, _, params, m = _arrays(conv, jnp.float32)
    f = jax.jit(lambda m, w, padding: strided_input_transpose(
        m, w, lhs_shape=x.shape, **{**params, "padding": padding}), static_argnums=2)
    np.testing.assert_array_equal(np.asarray(f(m, w, "SAME")),
                                  np.asarray(f(m, w, params["padding"])))


# ---------------------------------------------------------------------------------------------
# Wired into the linear rule: DeepLIFT's backward pass through strided convolutions

def _strided_cnn(p, xb):
    dn = ("NHWC", "HWIO", "NHWC")
    h = jax.nn.relu(lax.conv_general_dilated(xb, p["w1"], (1, 1), "SAME",
                                             dimension_numbers=dn) + p["b1"]) + p["shift"]
    h = jax.nn.relu(lax.conv_general_dilated(h, p["w2"], (2, 2), "VALID",
                                             dimension_numbers=dn) + p["b2"])
    return h.reshape(h.shape[0], -1) @ p["v"]


def _strided_cnn_data(dtype, offset: float = 0.0):
    """Parameters, 3 inputs and 2 references; ``offset`` shifts the strided convolution's input
    by that much and its bias back, so its operands are large while the ReLU after it still
    crosses its kink between input and reference."""
    rng = np.random.default_rng(3)
    p = {"w1": rng.normal(size=(3, 3, 2, 8)) * 0.4, "b1": rng.normal(size=8) * 0.1,
         "w2": rng.normal(size=(4, 4, 8, 6)) * 0.2, "b2": rng.normal(size=6) * 0.1,
         "v": rng.normal(size=(3 * 3 * 6, 2)), "shift": np.asarray(offset)}
    p["b2"] = p["b2"] - offset * p["w2"].sum(axis=(0, 1, 2))  # VALID: every window is full
    p = {k: jnp.asarray(v, dtype) for k, v in p.items()}
    x = jnp.asarray(rng.normal(size=(3, 8, 8, 2)), dtype)
    r = jnp.asarray(rng.normal(size=(2, 8, 8, 2)) * 0.3, dtype)
    return p, x, r


@pytest.mark.parametrize("mode, dtype, offset", [
    ("rescale", jnp.float64, 0.0), ("reveal_cancel", jnp.float64, 0.0),
    ("reveal_cancel", jnp.float64, 1e3),  # large operands, kinks still crossed
    ("reveal_cancel", jnp.bfloat16, 0.0)])  # half precision: evaluated in float32
def test_deeplift_through_a_strided_conv_takes_the_phased_transpose(x64, monkeypatch, mode,
                                                                    dtype, offset):
    """On the CPU the second (strided, 8-channel) convolution is transposed by phases: its
    program has no convolution over a dilated cotangent; the scores equal the VJP path's and
    sum to Δt, to float64 rounding (of the offset's size), or float32's for bfloat16."""
    import jaxlift
    from jaxlift.rules import linear

    p, x, r = _strided_cnn_data(dtype, offset)
    text = jax.jit(lambda x, r: jaxlift.attribute(_strided_cnn, p, x, r, target=1,
                                                  mode=mode)).lower(x, r).as_text()
    phased, delta = jaxlift.attribute(_strided_cnn, p, x, r, target=1, mode=mode,
                                      average_refs=False, return_delta=True)
    monkeypatch.setattr(linear, "PHASED_TRANSPOSE_PLATFORMS", ())

    def same_cnn(p, xb):  # a new function: no cached program or trace is reused
        return _strided_cnn(p, xb)
    text_vjp = jax.jit(lambda x, r: jaxlift.attribute(same_cnn, p, x, r, target=1,
                                                      mode=mode)).lower(x, r).as_text()
    by_vjp = jaxlift.attribute(same_cnn, p, x, r, target=1, mode=mode, average_refs=False)
    assert "lhs_dilate = [2, 2]" in text_vjp and "lhs_dilate = [2, 2]" not in text
    phased, by_vjp, delta = (np.asarray(a, np.float64) for a in (phased, by_vjp, delta))
    total, size = phased.sum(axis=(2, 3, 4)), np.abs(phased).sum(axis=(2, 3, 4))
    assert np.all(np.abs(np.asarray(delta)) > 1e-3)  # something to explain in every pair
    kink = _strided_cnn(dict(p, v=jnp.eye(54, dtype=dtype)), jnp.concatenate([x, r])) > 0
    assert (kink[:3, None] != kink[None, 3:]).any()  # some ReLU after it crosses its kink
    if dtype == jnp.float64:
        scale = max(1.0, offset)
        np.testing.assert_allclose(phased, by_vjp, rtol=1e-10, atol=1e-12 * scale)
        np.testing.assert_allclose(total, delta, rtol=1e-10, atol=1e-12 * scale)
    else:  # float32 evaluation
        np.testing.assert_allclose(phased, by_vjp, rtol=1e-5,
                                   atol=1e-6 * np.abs(by_vjp).max())
        assert np.all(np.abs(total - delta) <= 1e-5 * size)


def test_few_input_channels_keep_the_vjp():
    """A strided convolution of a 2-channel input (below PHASED_TRANSPOSE_MIN_CHANNELS) keeps
    jax's own transpose."""
    import jaxlift

    def first_layer_strided(p, xb):
        h = lax.conv_general_dilated(xb, p["w1"], (2, 2), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.tanh(h).sum(axis=(1, 2, 3))

    p, x, r = _strided_cnn_data(jnp.float32)
    text = jax.jit(lambda x, r: jaxlift.attribute(first_layer_strided, p, x, r)).lower(
        x, r).as_text()
    assert "lhs_dilate = [2, 2]" in text
