"""jaxlift.from_nnx / from_equinox / from_linen: one line from a model object to the
``(fn, params)`` that ``attribute`` takes; scores sum to delta on tiny models, BatchNorm in
inference mode included, and a model in training mode is refused with a clear error."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift


def sums(c):
    return np.asarray(c).reshape(c.shape[0], -1).sum(1)


@pytest.fixture(scope="module")
def data():
    x = jax.random.normal(jax.random.PRNGKey(3), (3, 5))
    r = jnp.stack([jnp.zeros(5), jnp.full(5, 0.4)])
    return x, r


def test_from_nnx_batchnorm_dropout_eval(data):
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(5, 8, rngs=rngs)
            self.bn = nnx.BatchNorm(8, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)
            self.l2 = nnx.Linear(8, 3, rngs=rngs)

        def __call__(self, x):
            return self.l2(self.drop(nnx.relu(self.bn(self.l1(x)))))

    model = Net(nnx.Rngs(0))
    # running statistics that differ from a fresh layer's, so that using them matters
    model.bn.mean[...] = jnp.linspace(-0.5, 0.5, 8)
    model.bn.var[...] = jnp.linspace(0.5, 2.0, 8)
    fn, params = jaxlift.from_nnx(model)
    assert model.bn.use_running_average is False  # the user's module is not changed
    x, r = data
    c, d = jaxlift.attribute(fn, params, x, r, target=2, mode="reveal_cancel",
                             return_delta=True)
    np.testing.assert_allclose(sums(c), d, rtol=1e-4, atol=1e-5)
    # fn is the model in eval mode: running statistics, no dropout (deterministic)
    model.eval()
    np.testing.assert_allclose(fn(params, x), model(x), rtol=1e-6)
    np.testing.assert_allclose(d, model(x)[:, 2] - 0.5 * (model(r[:1])[0, 2] + model(r[1:])[0, 2]),
                               rtol=1e-5, atol=1e-6)
    # no RNG state among what is explained (key/uint32 leaves would not be params)
    assert all(jnp.issubdtype(a.dtype, jnp.floating) for a in jax.tree.leaves(params))


def test_from_nnx_train_mode_is_refused(data):
    from flax import nnx

    model = nnx.Sequential(nnx.Linear(5, 4, rngs=nnx.Rngs(0)), nnx.BatchNorm(4, rngs=nnx.Rngs(0)))
    fn, params = jaxlift.from_nnx(model, eval_mode=False)
    with pytest.raises(ValueError, match="(?i)mix|independent|batch"):
        jaxlift.attribute(fn, params, *data, target=0)


def test_from_equinox_mlp(data):
    eqx = pytest.importorskip("equinox")
    module = eqx.nn.MLP(5, 2, 6, 2, activation=jax.nn.softplus, key=jax.random.PRNGKey(0))
    fn, params = jaxlift.from_equinox(module)
    x, r = data
    out = fn(params, x)
    assert out.shape == (3, 2)
    np.testing.assert_allclose(out[1], module(x[1]), rtol=1e-6)
    c, d = jaxlift.attribute(fn, params, x, r, target=1, return_delta=True)
    np.testing.assert_allclose(sums(c), d, rtol=1e-4, atol=1e-5)


def test_from_equinox_call_and_inference(data):
    eqx = pytest.importorskip("equinox")

    class Net(eqx.Module):
        lin: eqx.nn.Linear
        drop: eqx.nn.Dropout

        def __init__(self, key):
            self.lin = eqx.nn.Linear(5, 2, key=key)
            self.drop = eqx.nn.Dropout(0.9)

        def __call__(self, x, scale):
            return self.drop(jnp.tanh(self.lin(x))) * scale

    fn, params = jaxlift.from_equinox(Net(jax.random.PRNGKey(1)), call=lambda m, x: m(x, 2.0))
    x, r = data
    c, d = jaxlift.attribute(fn, params, x, r, target=0, return_delta=True)
    np.testing.assert_allclose(sums(c), d, rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="equinox.Module"):
        jaxlift.from_equinox(lambda x: x)


def test_from_linen_batchnorm_eval_and_train_refused(data):
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = True):
            h = nn.Dense(6)(x)
            h = nn.BatchNorm(use_running_average=not train)(h)
            return nn.Dense(2)(nn.relu(h))

    model = Net()
    x, r = data
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    variables = {"params": variables["params"],
                 "batch_stats": jax.tree.map(lambda a: a + 0.3, variables["batch_stats"])}
    fn, params = jaxlift.from_linen(model, variables, train=False)
    assert set(params) == {"params", "batch_stats"}
    c, d = jaxlift.attribute(fn, params, x, r, target=1, mode="rescale", return_delta=True)
    np.testing.assert_allclose(sums(c), d, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fn(params, x), model.apply(variables, x, train=False), rtol=1e-6)

    fn_train, params = jaxlift.from_linen(model, variables)  # train=True: BatchNorm updates
    with pytest.raises(ValueError, match="train=False"):
        jaxlift.attribute(fn_train, params, x, r, target=1)
    with pytest.raises(ValueError, match="mutable"):
        jaxlift.from_linen(model, variables, mutable=["batch_stats"])
    with pytest.raises(ValueError, match="'params'"):
        jaxlift.from_linen(model, variables["params"])
    with pytest.raises(TypeError, match="from_nnx"):
        from flax import nnx
        jaxlift.from_linen(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), variables)
