"""Keras sequence layers in the .h5 reader, checked against Keras 3 itself (JAX backend).

Embedding, SimpleRNN, LSTM, GRU (both reset_after), Bidirectional (every merge mode),
LayerNormalization, MultiHeadAttention (self, query/value/key, causal) and
GlobalAveragePooling1D: files written by Keras's ``model.save("m.h5")`` read with the same
outputs, written back and read by Keras again; recurrent layers stay one ``lax.scan``; options
that change the math and are not supported are refused by name; DeepLIFT through a loaded
recurrent model sums to Δ, and a token model is explained at its Embedding's output.
"""
from __future__ import annotations

import functools
import json
import os
import shutil

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras")
from keras import layers as K  # noqa: E402

import jaxlift  # noqa: E402
from jaxlift.io.keras_h5 import (KerasFormatError, keras_info, load_keras_h5,  # noqa: E402
                                 read_graph, save_keras_h5)
from jaxlift.io.keras_config import infer_shapes, trace_shapes  # noqa: E402

T, F, V = 6, 3, 11
TOL = 1e-5
Z = {"kernel_initializer": "zeros"}  # cheap to build: weights are set by _randomize anyway
ZR = {**Z, "recurrent_initializer": "zeros"}


def _randomize(model: "keras.Model", seed: int) -> None:
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, 0.5, w.shape).astype(np.float32) for w in model.weights])


def rnn_stack():
    """LSTM (backwards, hard-sigmoid gates) → Bidirectional GRU (merge by product): the model
    DeepLIFT is checked on (float inputs (N, T, F))."""
    x = keras.Input((T, F))
    h = K.LSTM(4, return_sequences=True, go_backwards=True,
               recurrent_activation="hard_sigmoid", dropout=0.1, unroll=True, name="lstm", **ZR)(x)
    h = K.Bidirectional(K.GRU(3, **ZR), merge_mode="mul", name="bi_gru")(h)
    return keras.Model(x, K.Dense(2, name="out", **Z)(h)), "float"


def bidirectional():
    """Every merge mode around every recurrent layer and option (forward parity only)."""
    x = keras.Input((T, F))
    a = K.Bidirectional(K.LSTM(3, return_sequences=True, use_bias=False, **ZR),
                        name="bi_concat")(x)
    b = K.Bidirectional(K.GRU(3, return_sequences=True, **ZR), merge_mode="sum",
                        name="bi_sum")(a)
    c = K.Bidirectional(K.SimpleRNN(2, use_bias=False, **ZR), merge_mode="mul",
                        name="bi_mul")(b)
    d = K.Bidirectional(K.GRU(2, reset_after=False, activation="relu", **ZR), merge_mode="ave",
                        name="bi_ave")(b)
    e = K.SimpleRNN(2, go_backwards=True, name="rnn", **ZR)(b)
    return keras.Model(x, K.Dense(2, name="out", **Z)(K.Concatenate()([c, d, e]))), "float"


def attention():
    """Token ids → Embedding → LayerNorm → self-attention → causal query/value/key
    attention → LayerNorm (rms_scaling) → GlobalAveragePooling1D → Dense."""
    ids = keras.Input((T,), dtype="int32")
    e = K.Embedding(V, 4, embeddings_initializer="zeros", name="emb")(ids)
    n = K.LayerNormalization(name="ln")(e)
    a = K.MultiHeadAttention(2, 3, name="mha", **Z)(n, n)
    r = K.LayerNormalization(center=False, epsilon=1e-2, name="ln_nc")(a)
    c = K.MultiHeadAttention(2, 2, output_shape=5, name="mha_causal", **Z)(
        r, e, key=n, use_causal_mask=True)
    s = K.LayerNormalization(rms_scaling=True, name="ln_rms")(c)
    y = K.Dense(2, name="out", **Z)(K.GlobalAveragePooling1D(name="gap")(s))
    return keras.Model(ids, y), "int"


def token_mha():
    """Embedding → self-attention → GlobalAveragePooling1D → Dense: explained at the
    Embedding's output."""
    ids = keras.Input((T,), dtype="int32")
    e = K.Embedding(V, 4, name="emb", embeddings_initializer="zeros")(ids)
    a = K.MultiHeadAttention(2, 2, name="mha", **Z)(e, e)
    y = K.Dense(2, name="out", **Z)(K.GlobalAveragePooling1D(name="gap")(a))
    return keras.Model(ids, y), "int"


ZOO = {f.__name__: f for f in (rnn_stack, bidirectional, attention, token_mha)}


def _inputs(kind: str, seed: int, n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "int":
        return rng.integers(1, V, (n, T)).astype(np.int32)
    return rng.normal(0.0, 1.0, (n, T, F)).astype(np.float32)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Each model saved by Keras as .h5, with inputs and Keras's outputs."""
    d = tmp_path_factory.mktemp("seq")
    out = {}
    for i, (name, make) in enumerate(ZOO.items()):
        kmodel, kind = make()
        _randomize(kmodel, i)
        x = _inputs(kind, i)
        path = d / f"{name}.h5"
        kmodel.save(path)
        out[name] = (path, kmodel, x, np.asarray(kmodel.predict(x, verbose=0)))
    return out


def _close(got, want, tol=TOL):
    got = np.asarray(got)
    assert got.shape == want.shape
    scale = max(1.0, float(np.abs(want).max()))
    assert float(np.abs(got - want).max()) <= tol * scale, float(np.abs(got - want).max())


pytestmark = pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")


@pytest.mark.parametrize("name", list(ZOO))
def test_forward_matches_keras(zoo, name):
    path, _, x, y = zoo[name]
    model, variables = load_keras_h5(path)
    assert float(np.abs(y).max()) > 1e-2  # the comparison has teeth
    _close(model.apply(variables, x), y)


@pytest.mark.parametrize("name", ["rnn_stack", pytest.param("attention", marks=pytest.mark.slow)])
def test_round_trip_through_keras(zoo, name, tmp_path):
    path, kmodel, x, y = zoo[name]
    model, variables = load_keras_h5(path)
    out = tmp_path / "rt.h5"
    save_keras_h5(out, model, variables)
    k2 = keras.models.load_model(out, compile=False)
    assert k2.count_params() == kmodel.count_params()
    _close(k2.predict(x, verbose=0), y)
    m2, v2 = load_keras_h5(out)
    assert m2.graph == model.graph
    _close(m2.apply(v2, x), y)


def test_integer_inputs_and_info(zoo):
    path, kmodel, _, _ = zoo["attention"]
    graph = read_graph(path)
    assert graph.input_dtypes == ("int32",)
    mha = graph.layer("mha_causal")
    assert mha.opts["use_causal_mask"] is True and len(mha.inbound[0]) == 3
    assert read_graph(zoo["rnn_stack"][0]).input_dtypes == ("float32",)
    info = keras_info(path)
    for cls in ("Embedding", "LayerNormalization", "MultiHeadAttention",
                "GlobalAveragePooling1D"):
        assert cls in info
    assert f"Total params: {kmodel.count_params():,}" in info
    for name, (p, *_) in zoo.items():  # info's JAX-free shapes are the traced ones
        g = read_graph(p)
        assert infer_shapes(g) == trace_shapes(g), name


def test_recurrent_layers_are_one_scan(zoo, tmp_path):
    """The jaxpr holds one scan per recurrent layer and does not grow with T."""
    model, variables = load_keras_h5(zoo["rnn_stack"][0])

    def eqns(steps):
        jaxpr = jax.make_jaxpr(model.apply)(variables, jnp.zeros((1, steps, F))).jaxpr
        return [e.primitive.name for e in jaxpr.eqns]
    short, long = eqns(T), eqns(12 * T)
    assert short.count("scan") == 3
    assert len(short) == len(long)


REFUSALS = [  # (model, layer, option, value, message)
    ("rnn_stack", "lstm", "stateful", True, "stateful=True"),
    ("bidirectional", "rnn", "return_state", True, "return_state=True"),
    ("bidirectional", "rnn", "activation", "softmin", "activation 'softmin'"),
    ("bidirectional", "bi_sum", "merge_mode", None, "merge_mode=None"),
    ("attention", "emb", "mask_zero", True, "mask_zero=True"),
    ("attention", "mha", "attention_axes", [1, 2], "attention_axes"),
    ("attention", "mha", "use_gate", True, "use_gate=True"),
]


@pytest.mark.parametrize("name, layer, key, value, message", REFUSALS,
                         ids=[f"{r[1]}-{r[2]}" for r in REFUSALS])
def test_unsupported_options_are_refused(zoo, tmp_path, name, layer, key, value, message):
    path = tmp_path / "edited.h5"
    shutil.copy(zoo[name][0], path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        (entry,) = [e for e in config["config"]["layers"] if e["config"]["name"] == layer]
        entry["config"][key] = value
        f.attrs["model_config"] = json.dumps(config)
    with pytest.raises(KerasFormatError) as err:
        load_keras_h5(path)
    text = str(err.value)
    assert str(path) in text and repr(layer) in text and message in text, text


def test_unknown_call_argument_is_refused(zoo, tmp_path):
    path = tmp_path / "edited.h5"
    shutil.copy(zoo["attention"][0], path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        (entry,) = [e for e in config["config"]["layers"] if e["config"]["name"] == "mha"]
        entry["inbound_nodes"][0]["kwargs"]["return_attention_scores"] = True
        f.attrs["model_config"] = json.dumps(config)
    with pytest.raises(KerasFormatError, match="'mha'.*return_attention_scores"):
        read_graph(path)


def test_marking_needs_a_marker_and_a_known_layer(zoo):
    model, variables = load_keras_h5(zoo["token_mha"][0])
    x = zoo["token_mha"][2]
    with pytest.raises(ValueError, match="marker=jaxlift.layer"):
        model.apply(variables, x, mark=("emb",))
    with pytest.raises(ValueError, match="no layer.*'nope'"):
        model.apply(variables, x, mark=("nope",), marker=jaxlift.layer)
    marked = model.apply(variables, x, mark=("emb",), marker=jaxlift.layer)
    np.testing.assert_array_equal(np.asarray(marked), np.asarray(model.apply(variables, x)))


def test_deeplift_through_loaded_recurrent_layers_sums_to_delta(x64, zoo):
    """LSTM (backwards, hard-sigmoid gates) → Bidirectional GRU merged by a product, in
    float64: Σ scores = Δ logit for every (input, reference) pair."""
    model, variables = load_keras_h5(zoo["rnn_stack"][0])
    v64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(2, T, F)))
    r = jnp.asarray(rng.normal(size=(2, T, F)) * 0.5)
    fn = functools.partial(model.apply, logits=True)
    c, d = jaxlift.attribute(fn, v64, x, r, target=0, mode="rescale", average_refs=False,
                             return_delta=True)
    assert c.dtype == jnp.float64 and c.shape == (2, 2, T, F)
    assert float(jnp.abs(d).min()) > 1e-5  # the check has teeth
    assert float(jnp.abs(c.sum((2, 3)) - d).max()) < 1e-12


def test_token_model_explained_at_the_embedding(zoo):
    """Token ids with an all-pad reference, scored at the Embedding's output: (N, T, D)
    scores that sum to Δ (Keras's own output difference: the last layer is a linear Dense);
    a position holding the pad token has Δ embedding = 0 and scores exactly 0."""
    path, kmodel, x, _ = zoo["token_mha"]
    model, variables = load_keras_h5(path)
    ids = jnp.asarray(x).at[:, -1].set(0)  # the last token is the pad token
    pad = jnp.zeros((1, T), jnp.int32)

    def fn(v, xb):
        return model.apply(v, xb, logits=True, mark=("emb",), marker=jaxlift.layer)
    c, d = jaxlift.attribute(fn, variables, ids, pad, target=0, layer="emb",
                             return_delta=True)
    assert c.shape == (3, T, 4)
    assert float(jnp.abs(d).min()) > 1e-3
    gap = jnp.abs(c.sum((1, 2)) - d) / jnp.abs(c).sum((1, 2))
    assert float(gap.max()) < 1e-5, float(gap.max())
    assert float(jnp.abs(c[:, -1]).max()) == 0.0 < float(jnp.abs(c[:, 0]).min())
    assert kmodel.get_layer("out").get_config()["activation"] == "linear"
    want = kmodel.predict(np.asarray(ids), verbose=0)[:, 0] \
        - kmodel.predict(np.asarray(pad), verbose=0)[0, 0]
    np.testing.assert_allclose(np.asarray(d), want, atol=1e-5, rtol=1e-5)


def test_cli_info_and_integer_inputs(zoo, tmp_path, capsys):
    """``jaxlift info`` lists the sequence layers; ``jaxlift attribute`` refuses a token-id
    model by name (it explains float inputs) instead of failing deep inside."""
    from jaxlift import cli
    path = zoo["token_mha"][0]
    assert cli.main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "emb (Embedding)" in out and "mha (MultiHeadAttention)" in out
    np.save(tmp_path / "ids.npy", zoo["token_mha"][2])
    assert cli.main(["attribute", str(path), str(tmp_path / "ids.npy"),
                     "--out", str(tmp_path / "s.npz")]) == 1
    err = capsys.readouterr().err
    assert "int32 inputs" in err and "layer=" in err and str(path) in err


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_a_live_keras_model_with_a_padding_mask_explained_at_its_embedding(mode):
    """A Keras 3 model run live on JAX (``stateless_call``): ``Embedding(mask_zero=True)`` →
    LSTM, whose scan reads the padding mask through ``jnp.all`` (``reduce_and``) in its body.
    With references padded where the input is, the mask agrees on both sides: the scores at
    the embedding sum to Δ in both modes and nothing reaches the target around the layer. With
    references padded elsewhere the mask flips, part of Δ goes around the layer, and the
    refusal says so (``reduce_and`` used to be refused with no rule, inside Keras's loop)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((7,), dtype="int32")
    h = K.LSTM(4)(K.Embedding(30, 8, name="emb", mask_zero=True)(inp))
    model = keras.Model(inp, K.Dense(2)(h))
    emb = model.get_layer("emb")
    emb.call = lambda *a, call=emb.call, **k: jaxlift.layer(call(*a, **k), "emb")
    params = ([w.value for w in model.trainable_variables],
              [w.value for w in model.non_trainable_variables])

    def fn(v, ids):
        return model.stateless_call(v[0], v[1], ids)[0]
    ids = np.array([[2, 7, 11, 5, 3, 0, 0], [1, 2, 3, 4, 5, 6, 7]], np.int32)
    refs = np.where(ids > 0, 1, 0).astype(np.int32)[:, None]  # per input: its own padding
    s, d = jaxlift.attribute(fn, params, ids, refs, target=1, layer="emb", mode=mode,
                             return_delta=True, layer_bypass="credit")
    assert s.layer.shape == (2, 7, 8) and float(jnp.abs(d).min()) > 1e-3
    assert float(jnp.abs(s.layer.sum((1, 2)) - d).max()) < TOL * float(jnp.abs(d).max())
    assert float(jnp.abs(s.bypass).max()) == 0.0
    assert float(jnp.abs(s.layer[0, 5:]).max()) == 0.0  # the padded steps
    if mode == "reveal_cancel":  # the slow step's variant (conftest.SLOW_CASES)
        with pytest.raises(jaxlift.CompletenessError, match="around layer 'emb'"):
            jaxlift.attribute(fn, params, ids, np.ones((1, 7), np.int32), target=1,
                              layer="emb", mode=mode)
