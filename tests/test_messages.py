"""Messages that point the right way (issue 28, point 5): an input without its channel axis is
told so, not that fn needs a batch axis; one example without its batch axis is named as such,
not blamed on the references; an optional dependency that is missing names the extra to
install."""
from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift

KERNEL = jnp.asarray(np.random.default_rng(5).normal(size=(3, 3, 1, 2)))


def nhwc(p, xb):
    """(N, 8, 8, 1) → (N, 2): a convolution that needs its channel axis last."""
    h = jax.lax.conv_general_dilated(xb, p, (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(h).sum((1, 2))


def nchw(p, xb):
    """(N, 1, 8, 8) → (N, 2): the same, channels first."""
    h = jax.lax.conv_general_dilated(xb, p, (1, 1), "VALID",
                                     dimension_numbers=("NCHW", "HWIO", "NCHW"))
    return jax.nn.relu(h).sum((2, 3))


X = jnp.asarray(np.random.default_rng(6).uniform(size=(4, 8, 8)))


@pytest.mark.parametrize("refs, mode", [(jnp.zeros((1, 8, 8)), "rescale"), (None, "gradient")])
def test_missing_channel_axis_is_named(refs, mode):
    with pytest.raises(ValueError) as err:
        jaxlift.attribute(nhwc, KERNEL, X, refs, target=0, mode=mode)
    msg = str(err.value)
    assert "lacks its channel axis" in msg and "Pass x[..., None]" in msg, msg
    assert "(4, 8, 8)" in msg and "must take a batch with a leading axis" not in msg
    # and the fix it names works
    fixed = jaxlift.attribute(nhwc, KERNEL, X[..., None],
                              None if refs is None else refs[..., None], target=0, mode=mode)
    assert fixed.shape == (4, 8, 8, 1)


def test_missing_channels_first_axis_is_named():
    with pytest.raises(ValueError, match=r"channels-first.*Pass x\[:, None\]"):
        jaxlift.attribute(nchw, KERNEL, X, jnp.zeros((1, 8, 8)), target=1)


def test_references_with_the_channel_axis_that_x_lacks():
    with pytest.raises(ValueError) as err:
        jaxlift.attribute(nhwc, KERNEL, X, jnp.zeros((1, 8, 8, 1)), target=0)
    msg = str(err.value)
    assert "x of shape (4, 8, 8) has no trailing axis of size 1" in msg
    assert "pass x[..., None]" in msg, msg


def test_one_example_without_batch_axis_does_not_blame_the_references():
    one = X[0][..., None]                                     # (8, 8, 1): no batch axis
    with pytest.raises(ValueError) as err:
        jaxlift.attribute(nhwc, KERNEL, one, jnp.zeros((1, 8, 8, 1)), target=0)
    msg = str(err.value)
    assert "x of shape (8, 8, 1) looks like one example without its batch axis" in msg, msg
    assert "pass x[None]" in msg and "(K, 8, 1)" not in msg


def test_a_real_error_of_fn_is_still_reported_as_such():
    def broken(p, xb):
        return xb @ jnp.ones((5, 2))                          # wrong weights for (N, 8, 8, 1)
    with pytest.raises(ValueError, match="fn must take a batch with a leading axis"):
        jaxlift.attribute(broken, None, X[..., None], jnp.zeros((1, 8, 8, 1)), target=0)


def test_an_error_of_fn_itself_keeps_its_type_in_the_message():
    """A misspelt parameter is fn's own KeyError, not a missing batch axis: its type and text
    come first."""
    with pytest.raises(ValueError, match=r"fn\(params, xb\) raised KeyError: 'W'") as err:
        jaxlift.attribute(lambda p, xb: xb @ p["W"], {"w": jnp.ones((8, 3))}, X.reshape(-1, 8),
                          jnp.zeros((1, 8)), target=0)
    assert isinstance(err.value.__cause__, KeyError)


def test_superpixels_without_scikit_image_names_the_extra(monkeypatch):
    from jaxlift.methods import lime
    monkeypatch.setitem(sys.modules, "skimage", None)         # import skimage fails
    monkeypatch.setitem(sys.modules, "skimage.segmentation", None)
    with pytest.raises(ImportError, match=r"pip install 'jaxlift\[methods\]'"):
        lime.superpixels(np.zeros((8, 8, 3)))


def test_surrogate_without_scikit_learn_names_the_extra(monkeypatch):
    for name in ("sklearn", "sklearn.tree", "sklearn.linear_model"):
        monkeypatch.setitem(sys.modules, name, None)
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)

    def fn(p, xb):
        return jnp.stack([xb[:, 0], -xb[:, 0]], -1)
    with pytest.raises(ImportError, match=r"surrogate needs scikit-learn.*jaxlift\[methods\]"):
        jaxlift.surrogate(fn, None, x, x)


def test_a_primitive_jax_cannot_differentiate_is_refused_by_name():
    """``nextafter`` in a nonlinearity: Rescale's slope needs ``f'``, and JAX has no derivative
    for it. Refused naming the primitive and this line, not JAX's NotImplementedError."""
    with pytest.raises(jaxlift.UnsupportedPrimitiveError, match="'nextafter'") as err:
        jaxlift.attribute(lambda p, xb: jnp.nextafter(xb, 10.0).sum(1), None,
                          X.reshape(4, -1), jnp.zeros((1, 64)))
    assert "test_messages.py" in str(err.value)


def test_a_layer_marked_inside_a_loop_body_says_so():
    """A marker in a scan's body has a value per step: not a cut jaxlift can score. The message
    says where it is, not that fn marks no such layer."""
    w = jnp.ones((8, 8)) / 8

    def fn(p, xb):
        def step(h, xt):
            return h * 0.5 + jaxlift.layer(jnp.tanh(xt @ w), "z"), None
        return jax.lax.scan(step, jnp.zeros((xb.shape[0], 8)), jnp.swapaxes(xb, 0, 1))[0]

    with pytest.raises(ValueError, match="'z' is marked inside the body of a loop"):
        jaxlift.attribute(fn, None, X, jnp.zeros((1, 8, 8)), target=0, layer="z")


def test_token_scores_of_named_axes_are_refused_saying_how_to_sum_by_name():
    """Scores at a marker on a penzai NamedArray come back as one, N prefixed, with the data in
    the library's own axis order: ``axis=-1`` would sum whatever axis is last there (the
    sequence, not the embedding). Refused, naming the axes and the way to sum by name."""

    @jax.tree_util.register_pytree_node_class
    class Named:  # what jaxlift needs to know of penzai's NamedArray
        def __init__(self, data_array, named_shape):
            self.data_array, self.named_shape = data_array, named_shape

        def tree_flatten(self):
            return (self.data_array,), self.named_shape

        @classmethod
        def tree_unflatten(cls, named_shape, leaves):
            return cls(leaves[0], named_shape)

    scores = Named(jnp.ones((2, 8, 1, 4)), {"embedding": 8, "batch": 1, "seq": 4})
    with pytest.raises(jaxlift.InputTypeError, match=r"named axes \{'embedding': 8.*tag_prefix"):
        jaxlift.token_scores({"emb": scores})
    assert jaxlift.token_scores({"emb": jnp.ones((2, 4, 8))})["emb"].shape == (2, 4)
