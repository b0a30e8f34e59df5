"""``jaxlift.surrogate`` (issue 17): a threshold network is imitated almost perfectly by a tree,
the reported numbers are what they say, bad inputs are refused."""
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift.surrogates import Surrogate

pytest.importorskip("sklearn")

RNG = np.random.default_rng(0)
X_FIT = RNG.uniform(size=(400, 2, 3)).astype(np.float32)
X_TEST = RNG.uniform(size=(300, 2, 3)).astype(np.float32)


def threshold_net(p, x):
    """Class 1 iff x[:, 0, 1] > p: itself a depth-1 tree on feature (0, 1)."""
    z = x[:, 0, 1] - p
    return jnp.stack([-z, z], axis=-1)


def test_tree_imitates_a_threshold_network():
    truth = (X_TEST[:, 1, 2] > 0.5).astype(int)        # an unrelated "truth"
    s = jaxlift.surrogate(threshold_net, 0.3, X_FIT, X_TEST, y_test=truth)
    assert isinstance(s, Surrogate) and s.kind == "tree"
    assert s.fidelity >= 0.98
    net = (X_TEST[:, 0, 1] > 0.3).astype(int)
    assert s.network_accuracy == pytest.approx(np.mean(net == truth))
    assert s.surrogate_accuracy == pytest.approx(np.mean(s.predict(X_TEST) == truth))
    assert np.mean(s.predict(X_TEST) == net) == pytest.approx(s.fidelity)
    assert s.importances.shape == (2, 3)
    assert s.importances[0, 1] == pytest.approx(1.0)   # the only feature the network reads
    assert s.n_fit == 400 and s.n_test == 300 and list(s.classes) == [0, 1]


def test_sparse_logistic_finds_the_feature():
    s = jaxlift.surrogate(threshold_net, 0.5, X_FIT, X_TEST, kind="logistic", C=1.0)
    assert s.fidelity >= 0.95
    assert s.network_accuracy is None and s.surrogate_accuracy is None
    assert np.unravel_index(np.argmax(s.importances), (2, 3)) == (0, 1)


def test_low_fidelity_is_reported_not_hidden():
    # an XOR network is not a depth-1 tree
    def xor_net(p, x):
        z = (x[:, 0, 0] - 0.5) * (x[:, 1, 1] - 0.5)
        return jnp.stack([-z, z], axis=-1)
    s = jaxlift.surrogate(xor_net, None, X_FIT, X_TEST, max_depth=1)
    assert s.fidelity < 0.8
    deep = jaxlift.surrogate(xor_net, None, X_FIT, X_TEST, max_depth=4)
    assert deep.fidelity > s.fidelity + 0.1


@pytest.mark.parametrize("kwargs,match", [
    ({"kind": "forest"}, "unknown surrogate kind 'forest'"),
    ({"max_depth": 0}, "max_depth must be a positive int"),
    ({"C": -1.0}, "C must be a positive finite number"),
    ({"batch_size": 0}, "batch_size must be a positive int"),
    ({"x_test": X_TEST[:, :1]}, "differ in shape"),
    ({"x_fit": X_FIT[:, 0, 0]}, r"must have shape \(N, \*S\)"),
    ({"x_fit": np.where(X_FIT > 0.9, np.nan, X_FIT)}, "x_fit has non-finite values"),
    ({"x_fit": {"a": X_FIT}}, "not a pytree"),
    ({"y_test": np.zeros(5)}, r"y_test must have shape \(300,\)"),
    ({"fn": lambda p, x: x[:, 0, 1]}, r"class scores of shape \(N, C\) with C ≥ 2"),
    ({"fn": lambda p, x: jnp.full((x.shape[0], 2), jnp.nan)}, "non-finite class scores"),
    ({"fn": lambda p, x: jnp.stack([x[:, 0, 0] * 0 + 1, x[:, 0, 0] * 0], -1),
      "kind": "logistic"}, "predicts only class 0"),
])
def test_bad_inputs_are_refused(kwargs, match):
    args = {"fn": threshold_net, "x_fit": X_FIT, "x_test": X_TEST}
    args.update(kwargs)
    fn, xf, xt = args.pop("fn"), args.pop("x_fit"), args.pop("x_test")
    with pytest.raises((ValueError, TypeError), match=match):
        jaxlift.surrogate(fn, 0.3, xf, xt, **args)
