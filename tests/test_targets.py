"""jaxlift.targets: class differences, softmax normalisation, cutting at the pre-activation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift


pytestmark = pytest.mark.usefixtures("x64")  # float64 throughout (tests/conftest.py)


def logits(p, x):
    h = jax.nn.relu(x @ p["w1"] + p["b1"])
    return h @ p["w2"] + p["b2"]


def probs(p, x):
    return jax.nn.softmax(logits(p, x), axis=-1)


def probs_by_hand(p, x):
    z = logits(p, x)
    e = jnp.exp(z - jax.lax.stop_gradient(z.max(-1, keepdims=True)))
    return e / e.sum(-1, keepdims=True)


def log_probs(p, x):
    return jax.nn.log_softmax(logits(p, x), axis=-1)


def log_probs_by_hand(p, x):  # no stabilising shift: the logits are z itself
    z = logits(p, x)
    return z - jnp.log(jnp.exp(z).sum(-1, keepdims=True))


def sigmoid_head(p, x):
    return jax.nn.sigmoid(jax.jit(logits)(p, x)[:, :1])


def _setup():
    rng = np.random.default_rng(0)
    n = lambda *s: jnp.asarray(rng.normal(size=s))  # noqa: E731
    p = {"w1": n(5, 7), "b1": n(7), "w2": n(7, 4), "b2": n(4)}
    return p, n(3, 5), n(2, 5)


def test_class_difference_and_softmax_normalized():
    p, x, refs = _setup()
    a = lambda t, **kw: jaxlift.attribute(logits, p, x, refs, target=t, **kw)  # noqa: E731
    for mode in ("rescale", "reveal_cancel"):
        every = a("all", mode=mode)                                   # (N, T, 5)
        np.testing.assert_allclose(a(jaxlift.class_difference(1, 3), mode=mode),
                                   every[:, 1] - every[:, 3], atol=1e-12)
        np.testing.assert_allclose(a(jaxlift.softmax_normalized(2), mode=mode),
                                   every[:, 2] - every.mean(1), atol=1e-12)
    c, d = a(jaxlift.class_difference(0, 2), return_delta=True)
    z, z0 = logits(p, x), logits(p, refs)
    np.testing.assert_allclose(d, (z[:, 0] - z[:, 2]) - (z0[:, 0] - z0[:, 2]).mean(), rtol=1e-12)
    # equal arguments give equal (hashable) targets: the compiled function is reused
    assert jaxlift.class_difference(0, 2) == jaxlift.class_difference(0, 2)
    assert hash(jaxlift.softmax_normalized(1)) == hash(jaxlift.softmax_normalized(1))
    with pytest.raises(ValueError, match="out of range"):
        a(jaxlift.class_difference(0, 9))
    with pytest.raises(TypeError, match="int class index"):
        jaxlift.class_difference(0, "b")


@pytest.mark.parametrize("head", [probs, probs_by_hand, sigmoid_head, jax.jit(probs),
                                  log_probs, log_probs_by_hand])
def test_pre_activation_returns_the_logits(head):
    p, x, refs = _setup()
    cut = jaxlift.pre_activation(head)
    want = logits(p, x)[:, :1] if head is sigmoid_head else logits(p, x)
    np.testing.assert_allclose(cut(p, x), want, rtol=1e-13)
    np.testing.assert_allclose(jax.jit(cut)(p, x), want, rtol=1e-13)
    kind = {sigmoid_head: "sigmoid", log_probs: "log_softmax", log_probs_by_hand: "log_softmax"}
    assert cut.kind(p, x) == kind.get(head, "softmax")
    c = jaxlift.attribute(cut, p, x, refs, target=0, mode="reveal_cancel")
    np.testing.assert_allclose(c, jaxlift.attribute(logits, p, x, refs, target=0,
                                                    mode="reveal_cancel"), atol=1e-12)


def test_pre_activation_with_flax():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.softmax(nn.Dense(3)(nn.relu(nn.Dense(6)(x))))
    net = Net()
    x = jnp.ones((2, 4))
    params = net.init(jax.random.PRNGKey(0), x)
    cut = jaxlift.pre_activation(net.apply)
    z = cut(params, x)
    np.testing.assert_allclose(jax.nn.softmax(z), net.apply(params, x), rtol=1e-12)

    class LogNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.log_softmax(nn.Dense(3)(nn.relu(nn.Dense(6)(x))))
    log_net = LogNet()
    params = log_net.init(jax.random.PRNGKey(0), x)
    z = jaxlift.pre_activation(log_net.apply)(params, x)
    np.testing.assert_allclose(jax.nn.log_softmax(z), log_net.apply(params, x), rtol=1e-12)


def test_pre_activation_errors():
    p, x, _ = _setup()
    with pytest.raises(ValueError, match="produced by 'add'.*not by a final sigmoid"):
        jaxlift.pre_activation(logits)(p, x)
    with pytest.raises(ValueError, match="produced by 'sub'.*not by a final sigmoid"):
        jaxlift.pre_activation(lambda p, x: logits(p, x) - jax.nn.logsumexp(
            logits(p, x), axis=-1, keepdims=True))(p, x)
    with pytest.raises(ValueError, match="produced by 'sub'"):  # log of a different sum
        jaxlift.pre_activation(lambda p, x: logits(p, x) - jnp.log(
            jnp.exp(2 * logits(p, x)).sum(-1, keepdims=True)))(p, x)
    with pytest.raises(ValueError, match="returns 2 arrays"):
        jaxlift.pre_activation(lambda p, x: (probs(p, x), probs(p, x)))(p, x)
    with pytest.raises(TypeError, match="callable"):
        jaxlift.pre_activation(3)
