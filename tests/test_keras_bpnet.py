"""A chrombpnet/BPNet-shaped Keras functional model (issue 18) written by Keras 3 itself as
``.h5`` and read with ``jaxlift.load_keras``: dilated ``Conv1D`` residual blocks joined by
``Cropping1D`` + ``Add``, a profile head (``Conv1D`` → ``Cropping1D`` → ``Flatten``) and a
counts head (``GlobalAveragePooling1D`` → ``Dense``), two outputs. Outputs match Keras's to
1e-5, the JAX-free shape rules match the traced shapes, and DeepLIFT on each head sums to Δt."""
from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras")
from keras import layers as K  # noqa: E402

import jaxlift  # noqa: E402
from jaxlift.io.keras_config import infer_shapes, trace_shapes  # noqa: E402
from jaxlift.io.keras_h5 import read_graph  # noqa: E402
from jaxlift.references import dinucleotide_shuffle  # noqa: E402

L, OUT = 64, 20


def bpnet_like() -> "keras.Model":
    """chrombpnet's layout, small: a first conv, dilated convs whose input is cropped to the
    conv's output and added, then the two heads on the centre."""
    seq = keras.Input((L, 4), name="sequence")
    x = K.Conv1D(8, 5, padding="valid", activation="relu", name="bpnet_1st_conv")(seq)
    for i in (1, 2, 3):
        conv = K.Conv1D(8, 3, padding="valid", dilation_rate=2 ** i, activation="relu",
                        name=f"bpnet_{i}conv")(x)
        crop = (x.shape[1] - conv.shape[1]) // 2
        x = K.Add(name=f"bpnet_{i}add")([conv, K.Cropping1D(crop, name=f"crop_{i}")(x)])
    prof = K.Conv1D(1, 5, padding="valid", name="prof_out_precrop")(x)
    crop = (prof.shape[1] - OUT) // 2
    prof = K.Flatten(name="logits_profile_predictions")(K.Cropping1D(crop, name="prof_crop")(prof))
    counts = K.Dense(1, name="logcount_predictions")(K.GlobalAveragePooling1D(name="gap")(x))
    return keras.Model(seq, [prof, counts], name="bpnet_like")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = bpnet_like()
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.4, w.shape).astype(np.float32) for w in model.weights])
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (3, L))]
    path = tmp_path_factory.mktemp("bpnet") / "m.h5"
    model.save(path)
    return path, x, [np.asarray(y) for y in model.predict(x, verbose=0)]


@pytest.mark.slow  # test budget: Keras builds and saves the model
def test_outputs_match_keras(saved):
    path, x, (prof, counts) = saved
    model, variables = jaxlift.load_keras(path)
    got = model.apply(variables, jnp.asarray(x))
    assert isinstance(got, (list, tuple)) and len(got) == 2
    assert got[0].shape == prof.shape == (3, OUT) and got[1].shape == counts.shape == (3, 1)
    np.testing.assert_allclose(got[0], prof, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(got[1], counts, atol=1e-5, rtol=1e-5)


def test_shape_rules_match_the_traced_model(saved):
    graph = read_graph(saved[0])
    shapes, weights = infer_shapes(graph)
    assert (shapes, weights) == trace_shapes(graph)
    assert shapes[("bpnet_3add", 0, 0)] == (None, L - 4 - 2 * (2 + 4 + 8), 8)
    assert weights["bpnet_2conv"]["params"]["kernel"] == (3, 8, 8)


@pytest.mark.slow   # ~5 s: two DeepLIFT compilations of the loaded graph
def test_deeplift_on_each_head_sums_to_delta(saved):
    path, x, _ = saved
    model, variables = jaxlift.load_keras(path)
    fn = lambda p, xb: model.apply(p, xb)                 # noqa: E731
    refs = np.stack([dinucleotide_shuffle(s, i, num=3) for i, s in enumerate(x)])
    for target in (lambda o: o[0].sum(-1), lambda o: o[1][..., 0]):
        c, d = jaxlift.attribute(fn, variables, jnp.asarray(x), jnp.asarray(refs),
                                 target=target, average_refs=False, return_delta=True)
        assert c.shape == (3, 3, L, 4) and np.abs(d).max() > 1e-3
        gap, flagged = jaxlift.flag_gaps(c, d, threshold=1e-5)
        assert not flagged.any(), float(gap.max())
