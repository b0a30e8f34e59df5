"""In-silico mutagenesis (``mode="ism"``): equals a brute-force loop over every single-letter
substitution, the observed letter scores 0, the mean-centred variant, options and bad input."""
from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxlift
from jaxlift.methods import METHODS

L, A = 11, 4


def conv_model(p, xb):                    # (B, L, 4) → (B, 2): conv, relu, dense
    h = jax.lax.conv_general_dilated(xb, p["k"], (1,), "SAME",
                                     dimension_numbers=("NWC", "WIO", "NWC"))
    h = jax.nn.relu(h + p["c"])
    return h.reshape(xb.shape[0], -1) @ p["w"]


def _setup(seed=0, n=3):
    rng = np.random.default_rng(seed)
    p = {"k": rng.normal(size=(5, A, 6)), "c": rng.normal(size=6),
         "w": rng.normal(size=(L * 6, 2))}
    x = np.eye(A)[rng.integers(0, A, size=(n, L))]
    return p, x


def brute_force(p, x, target):
    """The definition: every mutated sequence written out in numpy (row i set to e_b), one
    forward pass over all of them; t(x with b at i) − t(x)."""
    n = x.shape[0]
    mutants = np.repeat(x[:, None, None], L, 1).repeat(A, 2)       # (n, L, A, L, A)
    for i in range(L):
        for b in range(A):
            mutants[:, i, b, i] = np.eye(A)[b]
    t_mut = np.asarray(conv_model(p, mutants.reshape(-1, L, A)))[:, target].reshape(n, L, A)
    return t_mut - np.asarray(conv_model(p, x))[:, target, None, None]


def test_ism_equals_the_brute_force_loop(x64):
    p, x = _setup()
    want = brute_force(p, x, 1)
    got = jaxlift.attribute(conv_model, p, x, None, target=1, mode="ism")
    assert got.shape == (3, L, A)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert np.all(got[x == 1] == 0)                     # the observed letter, exactly
    assert np.abs(got[x == 0]).min() > 0                # the others are real differences
    # batched substitutions (lax.map in groups) give the same numbers
    batched = jaxlift.attribute(conv_model, p, x, None, target=1, mode="ism",
                                mode_options={"perturbations_per_eval": 7})
    np.testing.assert_allclose(batched, got, rtol=1e-12, atol=1e-14)


def test_ism_mean_centred_and_every_target(x64):
    p, x = _setup(1)
    raw = brute_force(p, x, 0)
    got = jaxlift.attribute(conv_model, p, x, None, target=0, mode="ism",
                            mode_options={"center": "mean"})
    np.testing.assert_allclose(got, raw - raw.mean(-1, keepdims=True), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got.sum(-1), 0, atol=1e-12)
    both = jaxlift.attribute(conv_model, p, x, None, target="all", mode="ism")
    assert both.shape == (3, 2, L, A)
    np.testing.assert_allclose(both[:, 0], raw, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(both[:, 1], brute_force(p, x, 1), rtol=1e-10, atol=1e-12)


def test_ism_unknown_base_scores_every_letter_and_references_only_shape(x64):
    p, x = _setup(2, n=1)
    x[0, 4] = 0                                          # an N: no observed letter
    got = jaxlift.attribute(conv_model, p, x, None, target=1, mode="ism")
    np.testing.assert_allclose(got, brute_force(p, x, 1), rtol=1e-10, atol=1e-12)
    assert np.all(got[0, 4] != 0)
    refs = np.stack([np.roll(x, 1, axis=1)[0]] * 2)[None]   # (1, K=2, L, A), per input
    per_ref, delta = jaxlift.attribute(conv_model, p, x, refs, target=1, mode="ism",
                                       average_refs=False, return_delta=True)
    assert per_ref.shape == (1, 2, L, A)
    np.testing.assert_allclose(per_ref[:, 0], got, rtol=1e-12)
    np.testing.assert_allclose(per_ref[:, 1], got, rtol=1e-12)
    t = np.asarray(conv_model(p, x))[0, 1] - np.asarray(conv_model(p, refs[0]))[:, 1]
    np.testing.assert_allclose(delta[0], t, rtol=1e-10)


def test_ism_mutates_only_the_named_leaf_of_a_dict_input(x64):
    p, x = _setup(3, n=2)
    track = np.random.default_rng(4).normal(size=(2, L, 1))

    def two_inputs(p, xb):
        return conv_model(p, xb["seq"]) + (xb["ctl"].sum((1, 2)))[:, None] ** 2

    got = jaxlift.attribute(two_inputs, p, {"seq": x, "ctl": track}, None, target=0,
                            mode="ism", mode_options={"sequence_key": "seq"})
    np.testing.assert_allclose(got["seq"], brute_force(p, x, 0), rtol=1e-9, atol=1e-11)
    assert got["ctl"].shape == track.shape and np.all(got["ctl"] == 0)


def test_ism_options_and_bad_input_are_refused():
    p, x = _setup()
    method = METHODS["ism"]
    assert method.scope == "input" and not method.needs_refs and method.completeness == "none"
    with pytest.raises(ValueError, match="ism center"):
        method.check_options({"center": "median"})
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="ism perturbations_per_eval"):
            method.check_options({"perturbations_per_eval": bad})
    with pytest.raises(ValueError, match="ism sequence_key"):
        method.check_options({"sequence_key": 3})
    with pytest.raises(ValueError, match=r"ism needs one-hot sequences \(N, L, A\)"):
        jaxlift.attribute(lambda p, xb: xb.sum(1), None, np.ones((2, 5)), None, mode="ism")
    with pytest.raises(ValueError, match="ism sequence_key 'dna' must be a key"):
        jaxlift.attribute(lambda p, xb: conv_model(p, xb["seq"]), p, {"seq": x}, None,
                          target=0, mode="ism", mode_options={"sequence_key": "dna"})
