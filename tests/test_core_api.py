"""The attribute/multipliers API: models of every kind, reference layouts, targets, batching,
composition with jit, intermediate layers, numerics and errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift.errors import UnsupportedPrimitiveError


def mlp(p, xb):
    return jax.nn.relu(xb @ p["w"] + p["b"]) @ p["v"]


def make_mlp(d=4, h=5, c=3, seed=0, dtype=jnp.float32):
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    return {"w": jax.random.normal(k[0], (d, h), dtype), "b": jax.random.normal(k[1], (h,), dtype),
            "v": jax.random.normal(k[2], (h, c), dtype)}


def data(n=3, k=2, d=4, seed=1, dtype=jnp.float32):
    kx, kr = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.normal(kx, (n, d), dtype), jax.random.normal(kr, (k, d), dtype)


def sums(c):
    return c.reshape(c.shape[: c.ndim - 1] + (-1,)).sum(-1)


# ---------------------------------------------------------------------------- models of every kind

@pytest.mark.slow  # test budget: Flax CNNs stay in the default run via the model ports
def test_flax_linen_cnn(x64):
    import flax.linen as nn

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(4, (3, 3), strides=2)(x))
            x = nn.max_pool(x, (2, 2), (2, 2))
            x = nn.avg_pool(nn.sigmoid(nn.Conv(3, (2, 2))(x)), (2, 2), padding="SAME")
            return nn.Dense(3)(x.reshape(x.shape[0], -1))

    model = CNN()
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 12, 1), jnp.float64)
    params = model.init(jax.random.PRNGKey(1), x)
    refs = jnp.stack([jnp.zeros((12, 12, 1)), jnp.full((12, 12, 1), 0.3)])
    c, d = jaxlift.attribute(model.apply, params, x, refs, target=2, return_delta=True,
                             average_refs=False)
    assert c.shape == (2, 2, 12, 12, 1)
    np.testing.assert_allclose(c.reshape(2, 2, -1).sum(-1), d, atol=1e-10)


def test_flax_nnx_model(x64):
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(4, 6, rngs=rngs, param_dtype=jnp.float64)
            self.l2 = nnx.Linear(6, 2, rngs=rngs, param_dtype=jnp.float64)

        def __call__(self, x):
            return self.l2(nnx.tanh(self.l1(x)))

    graphdef, state = nnx.split(MLP(nnx.Rngs(0)))
    fn = lambda st, xb: nnx.merge(graphdef, st)(xb)  # noqa: E731
    x, r = data(dtype=jnp.float64)
    c, d = jaxlift.attribute(fn, state, x, r, target=1, return_delta=True)
    np.testing.assert_allclose(sums(c), d, atol=1e-10)


def test_equinox_model(x64):
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(4, 2, 8, 2, activation=jax.nn.softplus, key=jax.random.PRNGKey(0))
    model = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if eqx.is_array(a) else a, model)
    arrays, static = eqx.partition(model, eqx.is_array)
    fn = lambda p, xb: jax.vmap(eqx.combine(p, static))(xb)  # noqa: E731
    x, r = data(dtype=jnp.float64)
    c, d = jaxlift.attribute(fn, arrays, x, r, target=0, mode="reveal_cancel", return_delta=True)
    np.testing.assert_allclose(sums(c), d, atol=1e-10)


def test_plain_jnp_function_without_params(x64):
    fn = lambda p, xb: jnp.sum(jnp.tanh(xb) ** 2 + jnp.exp(-xb), axis=1)  # noqa: E731
    x, r = data(dtype=jnp.float64)
    c, d = jaxlift.attribute(fn, None, x, r, return_delta=True)
    np.testing.assert_allclose(sums(c), d, atol=1e-10)


def test_flax_relu_is_one_rescale_nonlinearity():
    from jaxlift.targets import per_example as _per_example
    from jaxlift.program import build_program
    import flax.linen as nn
    prog, _ = build_program(_per_example(lambda p, xb: nn.relu(xb).sum(1), None), None,
                            jax.ShapeDtypeStruct((3,), jnp.float32))
    live = [op.primitive for op in prog.ops if op.is_live]
    assert sum(p.startswith("nonlinearity[") for p in live) == 1
    assert not {"custom_jvp_call", "jit", "max"} & set(live)


# ------------------------------------------------------------------------------ references

def test_shared_per_input_and_callable_refs_agree(x64):
    p = make_mlp(dtype=jnp.float64)
    x, r = data(dtype=jnp.float64)
    shared = jaxlift.attribute(mlp, p, x, r, target=0)
    per_input = jaxlift.attribute(mlp, p, x, jnp.broadcast_to(r, (3,) + r.shape), target=0)
    dynamic = jaxlift.attribute(mlp, p, x, lambda xb, key: r, target=0)
    np.testing.assert_allclose(per_input, shared, rtol=1e-12)
    np.testing.assert_allclose(dynamic, shared, rtol=1e-12)


def test_average_refs_is_the_mean_over_references(x64):
    p = make_mlp(dtype=jnp.float64)
    x, r = data(dtype=jnp.float64)
    each = jaxlift.attribute(mlp, p, x, r, target=0, average_refs=False)
    assert each.shape == (3, 2, 4)
    np.testing.assert_allclose(jaxlift.attribute(mlp, p, x, r, target=0), each.mean(1), rtol=1e-12)


def test_multipliers_times_delta_are_contributions(x64):
    p = make_mlp(dtype=jnp.float64)
    x, r = data(dtype=jnp.float64)
    m = jaxlift.multipliers(mlp, p, x, r, target=1, average_refs=False, mode="reveal_cancel")
    c = jaxlift.attribute(mlp, p, x, r, target=1, average_refs=False, mode="reveal_cancel")
    np.testing.assert_allclose(m * (x[:, None] - r[None]), c, rtol=1e-10, atol=1e-12)


def test_pytree_inputs(x64):
    fn = lambda p, xb: jnp.tanh(xb["a"] @ p) + jax.nn.relu(xb["b"]).sum(1, keepdims=True)  # noqa: E731
    p = jnp.ones((3, 1))
    x = {"a": jnp.arange(6.0).reshape(2, 3) / 6, "b": -jnp.arange(4.0).reshape(2, 2) + 2}
    r = {"a": jnp.zeros((1, 3)), "b": jnp.zeros((1, 2))}
    c, d = jaxlift.attribute(fn, p, x, r, target=0, return_delta=True)
    assert c["a"].shape == (2, 3) and c["b"].shape == (2, 2)
    np.testing.assert_allclose(c["a"].sum(1) + c["b"].sum(1), d, atol=1e-12)


# ---------------------------------------------------------------------------------- targets

def test_target_all_equals_each_index(x64):
    p = make_mlp(dtype=jnp.float64)
    x, r = data(dtype=jnp.float64)
    every = jaxlift.attribute(mlp, p, x, r, target="all", mode="reveal_cancel")
    assert every.shape == (3, 3, 4)
    for t in range(3):
        np.testing.assert_allclose(every[:, t], jaxlift.attribute(mlp, p, x, r, target=t,
                                                                  mode="reveal_cancel"), rtol=1e-10)


def test_callable_and_tuple_targets(x64):
    p = make_mlp(dtype=jnp.float64)
    x, r = data(dtype=jnp.float64)
    diff = jaxlift.attribute(mlp, p, x, r, target=lambda o: o[0] - o[2])
    np.testing.assert_allclose(diff, jaxlift.attribute(mlp, p, x, r, target=0)
                               - jaxlift.attribute(mlp, p, x, r, target=2), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(jaxlift.attribute(mlp, p, x, r, target=(1,)),
                               jaxlift.attribute(mlp, p, x, r, target=1), rtol=1e-12)


# ------------------------------------------------------------------- batching and composition

def test_batch_size_chunks_give_the_same_result(x64):
    p = make_mlp(dtype=jnp.float64)
    x, r = data(n=7, k=3, dtype=jnp.float64)
    whole = jaxlift.attribute(mlp, p, x, r, target=0)
    chunked = jaxlift.attribute(mlp, p, x, r, target=0, batch_size=6)  # 2 inputs × 3 refs a chunk
    np.testing.assert_allclose(chunked, whole, rtol=1e-12)
    per_input = jnp.broadcast_to(r, (7,) + r.shape)
    np.testing.assert_allclose(jaxlift.attribute(mlp, p, x, per_input, target=0, batch_size=4),
                               whole, rtol=1e-12)


def test_composes_with_user_jit_and_does_not_retrace():
    p = make_mlp()
    x, r = data()
    jitted = jax.jit(lambda p, x, r: jaxlift.attribute(mlp, p, x, r, target=1))
    np.testing.assert_allclose(jitted(p, x, r), jaxlift.attribute(mlp, p, x, r, target=1),
                               rtol=1e-5, atol=1e-6)
    from jaxlift.methods.interpreted import compiled_program as _cached_jit
    before = _cached_jit.cache_info()
    jaxlift.attribute(mlp, p, x + 1, r, target=1)
    jaxlift.attribute(mlp, p, x + 2, r, target=1)  # a call seen before: one dispatch
    after = _cached_jit.cache_info()
    assert after.misses == before.misses and after.hits <= before.hits + 2


def test_intermediate_layer_scores(x64):
    def fn(p, xb):
        h = jaxlift.layer(jax.nn.relu(xb @ p["w"] + p["b"]), "hidden")
        return h @ p["v"]
    p = make_mlp(dtype=jnp.float64)
    x, r = data(dtype=jnp.float64)
    c, d = jaxlift.attribute(fn, p, x, r, target=2, layer="hidden", return_delta=True,
                             average_refs=False)
    assert c.shape == (3, 2, 5)
    np.testing.assert_allclose(c.sum(-1), d, atol=1e-10)
    # the hidden layer feeds a linear output: its contributions are v[:, 2]·Δh exactly
    h = lambda xb: jax.nn.relu(xb @ p["w"] + p["b"])  # noqa: E731
    np.testing.assert_allclose(c, p["v"][:, 2] * (h(x)[:, None] - h(r)[None]), rtol=1e-10)
    with pytest.raises(ValueError, match="no layer named 'nope'.*hidden"):
        jaxlift.attribute(fn, p, x, r, target=2, layer="nope")


# ------------------------------------------------------------------------------------ numerics

@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel", "genomics_default"])
def test_input_equal_to_reference_gives_zero_not_nan(mode):
    p = make_mlp()
    x, _ = data()
    fn = lambda p, xb: jax.nn.sigmoid(jnp.tanh(xb @ p["w"]) @ p["v"])  # noqa: E731
    c = jaxlift.attribute(fn, p, x, x[:2], target=0, mode=mode, average_refs=False)
    assert bool(jnp.all(jnp.isfinite(c)))
    np.testing.assert_array_equal(np.asarray(c[0, 0]), 0.0)


@pytest.mark.parametrize("eps", [1e-12, 1e-30])
@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_tiny_differences_stay_finite_and_sum_to_delta(eps, mode, x64):
    p = make_mlp(dtype=jnp.float64)
    fn = lambda p, xb: jax.nn.softplus(jnp.tanh(xb @ p["w"] + p["b"]) @ p["v"])  # noqa: E731
    x, _ = data(dtype=jnp.float64)
    c, d = jaxlift.attribute(fn, p, x, x[:1] + eps, target=0, mode=mode, return_delta=True,
                             average_refs=False)
    assert bool(jnp.all(jnp.isfinite(c)))
    np.testing.assert_allclose(sums(c), d, atol=1e-12 + 1e-6 * float(jnp.abs(d).max()))


@pytest.mark.parametrize("dtype, mode", [(jnp.float16, "rescale"),
                                         (jnp.bfloat16, "reveal_cancel")])
def test_half_precision_inputs(dtype, mode):
    p = make_mlp(dtype=dtype)
    fn = lambda p, xb: jax.nn.sigmoid(jax.nn.relu(xb @ p["w"] + p["b"]) @ p["v"])  # noqa: E731
    x, r = data(dtype=dtype)
    c, d = jaxlift.attribute(fn, p, x, jnp.concatenate([r, x[:1]]), target=0, mode=mode,
                             return_delta=True)
    # differences and multipliers of half-precision models are carried in float32 (docs/design.md §19.1)
    assert c.dtype == jnp.float32 and d.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(c)))
    err = jnp.abs(sums(c) - d)
    scale = jnp.abs(c).reshape(len(c), -1).sum(1) + jnp.abs(d)
    assert float((err / scale).max()) < 1e-3, float((err / scale).max())


# -------------------------------------------------------------------------------------- errors

def test_unsupported_primitive_names_it_and_the_source_line():
    fn = lambda p, xb: jnp.sort(xb, axis=1)[:, -1]  # noqa: E731
    x, r = data()
    with pytest.raises(UnsupportedPrimitiveError, match=r"'sort'.*test_core_api\.py:\d+"):
        jaxlift.attribute(fn, None, x, r)


def test_loop_with_an_input_dependent_trip_count_is_refused_clearly():
    def fn(p, xb):  # runs until the example's sum passes 10: the number of steps moves with x
        grow = lambda v: jax.lax.while_loop(lambda h: h.sum() < 10, lambda h: h * 2 + 1, v)  # noqa: E731
        return jax.vmap(grow)(xb).sum(1)
    x, r = data()
    with pytest.raises(UnsupportedPrimitiveError, match="'while'.*trip count depends on the input"):
        jaxlift.attribute(fn, None, x, r)


def test_discrete_dependence_is_refused():
    # the target moves with the argmax of x, which no multiplier can follow
    fn = lambda p, xb: jax.nn.one_hot(jnp.argmax(xb, axis=1), 4)[:, 0]  # noqa: E731
    x, r = data()
    with pytest.raises(UnsupportedPrimitiveError, match=r"'argmax'.*an index"):
        jaxlift.attribute(fn, None, x, r)


def test_shape_mismatch_between_x_and_refs():
    x, _ = data()
    with pytest.raises(ValueError, match=r"refs of shape \(2, 5\) do not fit x of shape \(3, 4\)"):
        jaxlift.attribute(mlp, make_mlp(), x, jnp.zeros((2, 5)), target=0)


def test_dtype_mismatch_between_x_and_refs():
    x, _ = data()
    with pytest.raises(ValueError, match="dtype int32 differs from x dtype float32"):
        jaxlift.attribute(mlp, make_mlp(), x, jnp.zeros((2, 4), jnp.int32), target=0)


def test_target_out_of_range():
    x, r = data()
    with pytest.raises(ValueError, match="target index 3 is out of range.*3 entries"):
        jaxlift.attribute(mlp, make_mlp(), x, r, target=3)
    with pytest.raises(ValueError, match="pass target=<index>"):
        jaxlift.attribute(mlp, make_mlp(), x, r)


def test_unknown_mode_empty_batch_and_nan_inputs():
    x, r = data()
    with pytest.raises(ValueError, match="unknown mode 'deeplift'"):
        jaxlift.attribute(mlp, make_mlp(), x, r, target=0, mode="deeplift")
    with pytest.raises(ValueError, match="empty batch"):
        jaxlift.attribute(mlp, make_mlp(), x[:0], r, target=0)
    with pytest.raises(ValueError, match=r"x contains 1 NaN or Inf"):
        jaxlift.attribute(mlp, make_mlp(), x.at[0, 0].set(jnp.nan), r, target=0)
    with pytest.raises(ValueError, match=r"params\['b'\] contains"):
        p = make_mlp()
        p["b"] = p["b"].at[0].set(jnp.inf)
        jaxlift.attribute(mlp, p, x, r, target=0)


def test_composes_with_grad_and_vmap(x64):
    # Σ contributions = f(x) − f(r), so the gradient of their total w.r.t. the parameters is the
    # gradient of Σ (f(x) − f(r)): grad flows through the interpreter's rules correctly.
    fn = lambda w, xb: jnp.tanh(jax.nn.relu(xb @ w)).sum(1)  # noqa: E731
    w = jax.random.normal(jax.random.PRNGKey(0), (4, 3), jnp.float64)
    x, r = data(n=2, k=1, dtype=jnp.float64)
    g = jax.grad(lambda w: jaxlift.attribute(fn, w, x, r).sum())(w)
    g_ref = jax.grad(lambda w: (fn(w, x) - fn(w, r)).sum())(w)
    np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-12)
    batched = jax.vmap(lambda xx: jaxlift.attribute(fn, w, xx, r))(jnp.stack([x, x + 1]))
    np.testing.assert_allclose(batched[1], jaxlift.attribute(fn, w, x + 1, r), rtol=1e-12)
