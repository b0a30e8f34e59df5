"""Random networks for property tests: plain jnp functions ``fn(params, xb)`` with a batch axis.

Specs are drawn by hypothesis (see ``mlp_specs``/``cnn_specs``); ``build_*`` turn a spec and a
seed into ``(fn, params, x_shape)``.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "elu": jax.nn.elu,
    "gelu": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_exact": functools.partial(jax.nn.gelu, approximate=False),
    "leaky_relu": jax.nn.leaky_relu,
}

activation = st.sampled_from(sorted(ACTIVATIONS))


@st.composite
def mlp_specs(draw):
    depth = draw(st.integers(1, 3))
    width = draw(st.integers(2, 6))
    return dict(
        d_in=draw(st.integers(1, 6)),
        layers=[dict(act=draw(activation), residual=draw(st.booleans()), gate=draw(st.booleans()))
                for _ in range(depth)],
        width=width,
        n_out=draw(st.integers(1, 4)),
        seed=draw(st.integers(0, 2**16)),
    )


@st.composite
def cnn_specs(draw):
    return dict(
        hw=draw(st.integers(5, 9)),
        c_in=draw(st.integers(1, 2)),
        convs=[dict(features=draw(st.integers(1, 4)), k=draw(st.integers(1, 3)),
                    stride=draw(st.integers(1, 2)), padding=draw(st.sampled_from(["SAME", "VALID"])),
                    act=draw(activation),
                    pool=draw(st.sampled_from(["none", "max", "avg", "max_overlap"])))
               for _ in range(draw(st.integers(1, 2)))],
        residual=draw(st.booleans()),
        n_out=draw(st.integers(1, 3)),
        seed=draw(st.integers(0, 2**16)),
    )


def _normal(rng, shape, scale=1.0):
    return jnp.asarray(rng.normal(size=shape) * scale)


def build_mlp(spec):
    rng = np.random.default_rng(spec["seed"])
    w = spec["width"]
    params = {"w0": _normal(rng, (spec["d_in"], w), 1 / np.sqrt(spec["d_in"])), "b0": _normal(rng, (w,))}
    for i, _ in enumerate(spec["layers"]):
        params[f"w{i + 1}"] = _normal(rng, (w, w), 1 / np.sqrt(w))
        params[f"b{i + 1}"] = _normal(rng, (w,), 0.5)
        params[f"g{i + 1}"] = _normal(rng, (w, w), 1 / np.sqrt(w))
    params["out"] = _normal(rng, (w, spec["n_out"]), 1 / np.sqrt(w))

    def fn(p, xb):
        h = xb @ p["w0"] + p["b0"]
        for i, layer in enumerate(spec["layers"]):
            z = ACTIVATIONS[layer["act"]](h @ p[f"w{i + 1}"] + p[f"b{i + 1}"])
            if layer["gate"]:
                z = z * jax.nn.sigmoid(h @ p[f"g{i + 1}"])
            h = h + z if layer["residual"] else z
        return h @ p["out"]

    return fn, params, (spec["d_in"],)


def _pool(h, kind):
    if kind == "none":
        return h
    window, stride = ((1, 2, 2, 1), (1, 2, 2, 1)) if kind != "max_overlap" else ((1, 2, 2, 1), (1, 1, 1, 1))
    if kind.startswith("max"):
        return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, window, stride, "VALID")
    return jax.lax.reduce_window(h, 0.0, jax.lax.add, window, stride, "VALID") / 4.0


def build_cnn(spec):
    rng = np.random.default_rng(spec["seed"])
    params = {}
    c = spec["c_in"]
    size = spec["hw"]
    for i, conv in enumerate(spec["convs"]):
        if conv["padding"] == "VALID" and size < conv["k"]:
            conv["padding"] = "SAME"  # keep at least one output pixel
        size = -(-(size - (conv["k"] - 1 if conv["padding"] == "VALID" else 0)) // conv["stride"])
        if conv["pool"] != "none" and size >= 2:
            size = size // 2 if conv["pool"] in ("max", "avg") else size - 1
        params[f"k{i}"] = _normal(rng, (conv["k"], conv["k"], c, conv["features"]), 1 / np.sqrt(conv["k"] ** 2 * c))
        params[f"b{i}"] = _normal(rng, (conv["features"],), 0.3)
        c = conv["features"]

    def features(p, xb):
        h = xb
        for i, conv in enumerate(spec["convs"]):
            z = jax.lax.conv_general_dilated(h, p[f"k{i}"], (conv["stride"],) * 2, conv["padding"],
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            z = ACTIVATIONS[conv["act"]](z + p[f"b{i}"])
            if spec["residual"] and z.shape == h.shape:
                z = z + h
            h = _pool(z, conv["pool"]) if min(z.shape[1:3]) >= 2 else z
        assert h.shape[1] >= 1
        return h.reshape(h.shape[0], -1)

    x_shape = (spec["hw"], spec["hw"], spec["c_in"])
    n_feat = jax.eval_shape(lambda xb: features(params, xb),
                            jax.ShapeDtypeStruct((1,) + x_shape, params["k0"].dtype)).shape[1]
    params["dense"] = _normal(rng, (n_feat, spec["n_out"]), 1 / np.sqrt(n_feat))
    params["bias"] = _normal(rng, (spec["n_out"],), 0.3)

    def fn(p, xb):
        return features(p, xb) @ p["dense"] + p["bias"]

    return fn, params, x_shape


def inputs_and_refs(seed, x_shape, n=3, k=2, dtype=jnp.float64):
    rng = np.random.default_rng(seed + 1)
    x = jnp.asarray(rng.normal(size=(n,) + x_shape), dtype)
    refs = jnp.asarray(rng.normal(size=(k,) + x_shape) * 0.7 + 0.2, dtype)
    return x, refs


@st.composite
def rnn_specs(draw):
    """Recurrent programs: a ``lax.scan`` (LSTM, GRU or a gated tanh/relu cell; reversed or
    not; unrolled or not; the last carry and/or the stacked outputs read), optionally followed by
    a ``fori_loop`` with a fixed trip count and a ``lax.cond`` with a live predicate."""
    return dict(
        cell=draw(st.sampled_from(["lstm", "gru", "gated"])),
        act=draw(st.sampled_from(["tanh", "leaky_relu"])),  # no dead units: Δt ≠ 0
        steps=draw(st.integers(1, 5)),
        d_in=draw(st.integers(1, 3)),
        hidden=draw(st.integers(1, 4)),
        reverse=draw(st.booleans()),
        unroll=draw(st.sampled_from([1, 2])),
        read=draw(st.sampled_from(["last", "ys", "both"])),
        fori=draw(st.integers(0, 2)),
        cond=draw(st.booleans()),
        n_out=draw(st.integers(1, 3)),
        seed=draw(st.integers(0, 2**16)),
    )


def build_rnn(spec):
    """``(fn, params, x_shape)`` with x of shape ``(steps, d_in)`` per example."""
    rng = np.random.default_rng(spec["seed"])
    d, h, n_gates = spec["d_in"], spec["hidden"], {"lstm": 4, "gru": 3, "gated": 2}[spec["cell"]]
    params = {"wx": _normal(rng, (d, n_gates * h), 1 / np.sqrt(d)),
              "wh": _normal(rng, (h, n_gates * h), 1 / np.sqrt(h)),
              "b": _normal(rng, (n_gates * h,), 0.3),
              "wf": _normal(rng, (h, h), 1 / np.sqrt(h)),
              "out": _normal(rng, (h, spec["n_out"]), 1 / np.sqrt(h))}
    act = ACTIVATIONS[spec["act"]]

    def cell(p, carry, x_t):
        hh, c = carry
        z = x_t @ p["wx"] + p["b"]
        u = hh @ p["wh"]
        if spec["cell"] == "lstm":
            i, f, g, o = jnp.split(z + u, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * act(g)
            hh = jax.nn.sigmoid(o) * act(c)
        elif spec["cell"] == "gru":
            r = jax.nn.sigmoid(z[..., :h] + u[..., :h])
            zg = jax.nn.sigmoid(z[..., h:2 * h] + u[..., h:2 * h])
            n = act(z[..., 2 * h:] + r * u[..., 2 * h:])
            hh = (1 - zg) * n + zg * hh
        else:
            a, g = jnp.split(z + u, 2, axis=-1)
            hh = act(a) * jax.nn.sigmoid(g)
        return (hh, c), hh

    def fn(p, xb):
        zeros = jnp.zeros((xb.shape[0], h), xb.dtype)
        (hh, _), ys = jax.lax.scan(lambda cr, xt: cell(p, cr, xt), (zeros, zeros),
                                   jnp.swapaxes(xb, 0, 1), reverse=spec["reverse"],
                                   unroll=spec["unroll"])
        out = {"last": hh, "ys": ys.mean(0), "both": hh + ys.max(0)}[spec["read"]]
        if spec["fori"]:
            out = jax.lax.fori_loop(0, spec["fori"], lambda _, v: jnp.tanh(v @ p["wf"]) + v, out)
        if spec["cond"]:
            out = jax.vmap(lambda v: jax.lax.cond(v.sum() > 0, jnp.tanh,
                                                  lambda w: jax.nn.relu(w) * 0.5, v))(out)
        return out @ p["out"]

    return fn, params, (spec["steps"], d)
