"""``layer=`` naming a module (jaxlift/named_layers.py): Flax linen by full path and unique
name, wildcard patterns as one cut, ambiguous and unmatched names refused with the candidates,
a marker of the name first, one wrapped fn per (fn, layer); Flax NNX and Equinox models from
the adapters; Haiku; the models of a Keras file by their Keras layer names."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift import named_layers
from jaxlift.errors import CompletenessError

# ---------------------------------------------------------------------------------------------
# Matching, on paths alone

PATHS = ["bert/embeddings/word_embeddings", "bert/embeddings/position_embeddings",
         "bert/embeddings", "bert/encoder/layer/0/attention/self/query",
         "bert/encoder/layer/0/output/dense", "bert/encoder/layer/1/output/dense",
         "bert/encoder/layer/0/output", "bert/encoder/layer/1/output", "classifier"]


def test_match_full_path_unique_suffix_and_component_boundaries():
    assert named_layers.match("bert/embeddings/word_embeddings", PATHS) == [PATHS[0]]
    assert named_layers.match("word_embeddings", PATHS) == [PATHS[0]]
    assert named_layers.match("embeddings/word_embeddings", PATHS) == [PATHS[0]]
    assert named_layers.match("classifier", PATHS) == ["classifier"]
    # a suffix is made of whole components: "embeddings" is not the end of "word_embeddings"
    assert named_layers.match("embeddings", PATHS) == ["bert/embeddings"]
    assert named_layers.match("layer/1/output", PATHS) == ["bert/encoder/layer/1/output"]


def test_a_full_path_wins_over_longer_paths_ending_with_it():
    paths = ["enc/dense", "dense", "dec/dense"]
    assert named_layers.match("dense", paths) == ["dense"]


def test_wildcards_match_within_one_component_and_take_every_match():
    assert named_layers.match("layer/*/output", PATHS) == ["bert/encoder/layer/0/output",
                                                           "bert/encoder/layer/1/output"]
    assert named_layers.match("*_embeddings", PATHS) == PATHS[:2]
    assert named_layers.match("layer/[1]/output/dense", PATHS) == [PATHS[5]]


def test_ambiguous_name_lists_the_matches_and_suggests_a_pattern():
    with pytest.raises(ValueError) as e:
        named_layers.match("dense", PATHS)
    msg = str(e.value)
    assert "'dense' is ambiguous: it names 2 modules" in msg
    assert "bert/encoder/layer/0/output/dense" in msg and "layer/1/output/dense" in msg
    assert "'bert/encoder/layer/*/output/dense'" in msg and "classifier" not in msg


def test_unmatched_name_lists_every_candidate_and_the_closest():
    with pytest.raises(ValueError) as e:
        named_layers.match("word_embedding", PATHS, marked=["h"])
    msg = str(e.value)
    assert msg.startswith("no layer named 'word_embedding' in fn (marked layers: h)")
    assert "did you mean 'bert/embeddings/word_embeddings'" in msg
    assert all(f"\n  {p}" in msg for p in PATHS)


def test_a_pattern_matching_a_module_and_one_inside_it_is_refused():
    with pytest.raises(ValueError, match="names a module and one inside it.*not one cut"):
        named_layers.match("*", PATHS)


# ---------------------------------------------------------------------------------------------
# Flax linen

def linen_net():
    import flax.linen as nn

    class Block(nn.Module):
        residual: bool

        @nn.compact
        def __call__(self, h):
            out = nn.Dense(8, name="ff")(nn.relu(nn.Dense(8, name="inner")(h)))
            return h + out if self.residual else out

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            a = nn.Dense(8, name="left")(x)              # two parallel branches, summed
            b = nn.Dense(8, name="right")(x[:, ::-1])
            h = Block(True, name="b0")(nn.relu(a) + nn.tanh(b))   # a residual block
            return nn.Dense(3, name="head")(Block(False, name="b1")(h))

    class Outer(nn.Module):
        @nn.compact
        def __call__(self, x):
            return Net(name="net")(x)

    model = Outer()
    x = jax.random.normal(jax.random.key(0), (4, 5))
    return model, model.init(jax.random.key(1), x), x


def test_linen_module_paths_are_the_modules_fn_calls():
    model, variables, x = linen_net()
    assert jaxlift.module_paths(model.apply, variables, x) == [
        "net/left", "net/right", "net/b0/inner", "net/b0/ff", "net/b0", "net/b1/inner",
        "net/b1/ff", "net/b1", "net/head", "net"]


def test_linen_by_full_path_and_by_unique_name():
    model, variables, x = linen_net()
    refs = jnp.zeros((1, 5))
    by_path, delta = jaxlift.attribute(model.apply, variables, x, refs, target=1,
                                       layer="net/b1/inner", return_delta=True)
    assert by_path.shape == (4, 8)
    assert np.allclose(by_path.sum(1), delta, rtol=1e-5, atol=1e-6)
    by_name = jaxlift.attribute(model.apply, variables, x, refs, target=1, layer="b1/inner")
    assert np.allclose(by_name, by_path, atol=0)


def test_a_residual_branch_by_name_is_refused_as_a_bypass():
    """b0/ff is the branch of a residual block: part of Δt goes around it."""
    model, variables, x = linen_net()
    with pytest.raises(CompletenessError, match="around layer 'b0/ff'"):
        jaxlift.attribute(model.apply, variables, x, jnp.zeros((1, 5)), target=1,
                          layer="b0/ff")


def test_a_pattern_over_parallel_modules_is_one_cut():
    model, variables, x = linen_net()
    (left, right), delta = jaxlift.attribute(model.apply, variables, x, jnp.zeros((1, 5)),
                                             target=2, layer="[lr]*", return_delta=True)
    assert left.shape == right.shape == (4, 8)
    assert np.allclose(left.sum(1) + right.sum(1), delta, rtol=1e-5, atol=1e-6)
    assert np.abs(left).sum() > 0 and np.abs(right).sum() > 0
    with pytest.raises(CompletenessError, match="around layer 'left'"):  # one branch is not
        jaxlift.attribute(model.apply, variables, x, jnp.zeros((1, 5)), target=2, layer="left")


def test_sites_come_back_in_call_order_and_a_shared_module_is_marked_at_every_call():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            shared = nn.Dense(4, name="shared")
            a = shared(x[:, :3])                                   # called twice
            b = shared(x[:, 3:])
            c = nn.Dense(6, name="tail_b")(x[:, ::-1])              # then two of other widths
            d = nn.Dense(2, name="tail_a")(x)
            return jnp.tanh(jnp.concatenate([a * b, c, d], axis=1)).sum(1)

    model = Net()
    x = jax.random.normal(jax.random.key(0), (4, 6))
    v = model.init(jax.random.key(1), x)
    assert jaxlift.module_paths(model.apply, v, x) == ["shared", "tail_b", "tail_a"]
    # every path from x to the output passes through the four calls: one cut
    sites, delta = jaxlift.attribute(model.apply, v, x, jnp.zeros((1, 6)), layer="[st]*",
                                     return_delta=True)
    assert [s.shape for s in sites] == [(4, 4), (4, 4), (4, 6), (4, 2)]
    assert np.allclose(sum(s.sum(1) for s in sites), delta, rtol=1e-5, atol=1e-6)


def test_linen_errors_name_the_candidates():
    model, variables, x = linen_net()
    with pytest.raises(ValueError) as e:
        jaxlift.attribute(model.apply, variables, x, jnp.zeros((1, 5)), layer="ff", target=0)
    assert "'ff' is ambiguous" in str(e.value) and "net/b0/ff" in str(e.value) \
        and "net/b1/ff" in str(e.value) and "'net/*/ff'" in str(e.value)
    with pytest.raises(ValueError) as e:
        jaxlift.attribute(model.apply, variables, x, jnp.zeros((1, 5)), layer="hed", target=0)
    assert "no layer named 'hed'" in str(e.value) and "did you mean 'net/head'?" in str(e.value)
    assert "\n  net/b1/inner" in str(e.value)


def test_a_marker_of_the_name_comes_first_and_fn_is_kept():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = jaxlift.layer(nn.relu(nn.Dense(8, name="head")(x)), "head")  # a marker "head"
            return nn.Dense(2, name="out")(h)

    model = Net()
    x = jax.random.normal(jax.random.key(0), (3, 5))
    v = model.init(jax.random.key(1), x)
    assert named_layers.resolve(model.apply, "head", v, x) == model.apply
    assert named_layers.resolve(model.apply, "out", v, x) != model.apply


def test_one_wrapped_fn_per_fn_and_layer_and_no_retrace():
    """The same (fn, layer) gives the same wrapped fn, so the second call reuses the compiled
    program: fn's Python runs no more."""
    import flax.linen as nn
    calls = []

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            calls.append(1)
            return nn.Dense(2, name="out")(nn.relu(nn.Dense(8, name="hidden")(x)))

    model = Net()
    x = jax.random.normal(jax.random.key(0), (3, 5))
    v = model.init(jax.random.key(1), x)
    fn = lambda v, xb: model.apply(v, xb)
    first = named_layers.resolve(fn, "hidden", v, x)
    assert first is not fn and named_layers.resolve(fn, "hidden", v, x) is first
    a = jaxlift.attribute(fn, v, x, jnp.zeros((1, 5)), target=0, layer="hidden")
    n = len(calls)
    b = jaxlift.attribute(fn, v, x + 1, jnp.zeros((1, 5)), target=0, layer="hidden")
    assert len(calls) == n and not np.allclose(a, b)


def test_a_module_path_after_fn_was_traced_without_layer():
    """A module path is listed from the trace at one example that ``layer=`` makes with the
    modules intercepted; where JAX already holds that trace (a call without ``layer=`` came
    first, so the modules do not run again) ``fn`` is surveyed on a trace of its own."""
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2, name="out")(nn.relu(nn.Dense(8, name="hidden")(x)))

    model = Net()
    x = jax.random.normal(jax.random.key(0), (3, 5))
    v = model.init(jax.random.key(1), x)
    refs = jnp.zeros((1, 5))
    first = lambda v, xb: model.apply(v, xb)  # noqa: E731
    second = lambda v, xb: model.apply(v, xb)  # noqa: E731
    jaxlift.attribute(second, v, x, refs, target=0)  # second's trace at one example, kept
    for fn in (first, second):
        scores, delta = jaxlift.attribute(fn, v, x, refs, target=0, layer="hidden",
                                          return_delta=True)
        assert scores.shape == (3, 8)
        np.testing.assert_allclose(np.asarray(scores).sum(1), delta, rtol=1e-5, atol=1e-6)


def test_layer_must_be_a_string():
    with pytest.raises(ValueError, match=r"layer must be a non-empty string .* got \['h'\]"):
        jaxlift.attribute(lambda p, xb: xb @ p, jnp.ones((3, 2)), jnp.ones((2, 3)),
                          jnp.zeros((1, 3)), target=0, layer=["h"])


def test_a_fn_that_calls_no_module_and_marks_nothing():
    with pytest.raises(ValueError, match=r"no layer named 'h' in fn \(marked layers: none\)"
                       r".*Modules fn calls: none"):
        jaxlift.attribute(lambda p, xb: jnp.tanh(xb @ p), jnp.ones((3, 2)), jnp.ones((2, 3)),
                          jnp.zeros((1, 3)), target=0, layer="h")


# ---------------------------------------------------------------------------------------------
# Flax NNX, Equinox, Haiku, Keras files

def test_nnx_by_name_and_index_path_and_the_model_is_unchanged():
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(5, 8, rngs=rngs)
            self.blocks = nnx.List([nnx.Linear(8, 8, rngs=rngs) for _ in range(2)])
            self.out = nnx.Linear(8, 3, rngs=rngs)

        def __call__(self, x):
            h = nnx.relu(self.hidden(x))
            for b in self.blocks:
                h = nnx.relu(b(h))
            return self.out(h)

    model = MLP(nnx.Rngs(0))
    fn, params = jaxlift.from_nnx(model)
    x = jax.random.normal(jax.random.key(0), (4, 5))
    assert jaxlift.module_paths(fn, params, x) == ["blocks/0", "blocks/1", "hidden", "out"]
    for name in ("hidden", "blocks/1"):
        scores, delta = jaxlift.attribute(fn, params, x, jnp.zeros((1, 5)), target=2,
                                          layer=name, return_delta=True)
        assert scores.shape == (4, 8)
        assert np.allclose(scores.sum(1), delta, rtol=1e-5, atol=1e-6)
    # the marking subclass lives in fn's merged copy only
    assert type(model.hidden) is nnx.Linear and type(model.blocks[1]) is nnx.Linear


def test_equinox_by_name_and_mark_module():
    eqx = pytest.importorskip("equinox")
    mlp = eqx.nn.MLP(in_size=5, out_size=3, width_size=8, depth=2, key=jax.random.key(0))
    fn, params = jaxlift.from_equinox(mlp)
    x = jax.random.normal(jax.random.key(1), (4, 5))
    assert jaxlift.module_paths(fn, params, x) == ["layers/0", "layers/1", "layers/2"]
    scores, delta = jaxlift.attribute(fn, params, x, jnp.zeros((1, 5)), target=0,
                                      layer="layers/1", return_delta=True)
    assert scores.shape == (4, 8)
    assert np.allclose(scores.sum(1), delta, rtol=1e-5, atol=1e-6)
    marked = named_layers.mark_module(mlp, ["layers/1"], "h")
    assert type(mlp.layers[1]).__name__ == "Linear"  # a new module; mlp is unchanged
    assert np.allclose(jax.vmap(marked)(x), jax.vmap(mlp)(x))
    with pytest.raises(ValueError, match="no submodule at"):
        named_layers.mark_module(mlp, ["layers/7"], "h")


def test_haiku_by_module_name():
    hk = pytest.importorskip("haiku")
    net = hk.without_apply_rng(hk.transform(lambda x: hk.nets.MLP([8, 8, 3])(x)))
    x = jax.random.normal(jax.random.key(1), (4, 5))
    params = net.init(jax.random.key(0), x)
    assert jaxlift.module_paths(net.apply, params, x) == [
        "mlp/~/linear_0", "mlp/~/linear_1", "mlp/~/linear_2", "mlp"]
    scores, delta = jaxlift.attribute(net.apply, params, x, jnp.zeros((1, 5)), target=0,
                                      layer="linear_1", return_delta=True)
    assert scores.shape == (4, 8)
    assert np.allclose(scores.sum(1), delta, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # the linen interception again (a Keras file's model is linen modules)
def test_a_keras_file_model_by_its_layer_names():
    from importlib import resources
    data = resources.files("jaxlift") / "data"
    model, variables = jaxlift.load_keras(str(data / "mnist_small.h5"))
    fn = lambda v, xb: model.apply(v, xb, logits=True)
    with np.load(str(data / "mnist_digits.npz")) as d:
        x = d["x"][:2, :, :, None].astype(np.float32) / 255
    assert jaxlift.module_paths(fn, variables, x) == [
        "conv2d", "conv2d_1", "dropout", "flatten", "dense", "dropout_1", "dense_1"]
    scores, delta = jaxlift.attribute(fn, variables, x, np.zeros((1, 28, 28, 1), np.float32),
                                      target=7, layer="flatten", return_delta=True)
    marked = jaxlift.attribute(
        lambda v, xb: model.apply(v, xb, logits=True, mark=("flatten",), marker=jaxlift.layer),
        variables, x, np.zeros((1, 28, 28, 1), np.float32), target=7, layer="flatten")
    assert scores.shape == (2, 400) and np.allclose(scores, marked, atol=1e-6)
    assert np.allclose(scores.sum(1), delta, rtol=1e-5, atol=1e-5)
