"""precision= ("default" | "highest") and jaxlift.flag_gaps (issue 16, docs/design.md §19.2).

On the CPU both precisions are exact float32, so the scores agree to float32 rounding; what
"highest" changes is checked in the compiled program (every dot_general and convolution carries
precision HIGHEST) and in the trace (fn sees jax_default_matmul_precision = "highest")."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift import cli, pipeline
from jaxlift.methods import interpreted


def conv_net(p, xb):
    h = jax.nn.relu(jax.lax.conv_general_dilated(xb, p["k"], (1, 1), "SAME",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC")))
    return jnp.tanh(h.reshape(h.shape[0], -1) @ p["w"])


def data(seed=0):
    rng = np.random.default_rng(seed)
    p = {"k": jnp.asarray(rng.normal(size=(3, 3, 1, 4)), jnp.float32),
         "w": jnp.asarray(rng.normal(size=(64, 3)) / 8, jnp.float32)}
    x = jnp.asarray(rng.normal(size=(3, 4, 4, 1)), jnp.float32)
    refs = jnp.asarray(rng.normal(size=(2, 4, 4, 1)) * 0.1, jnp.float32)
    return p, x, refs


@pytest.mark.parametrize("what", [jaxlift.attribute, jaxlift.multipliers])
def test_highest_equals_default_on_cpu(what):
    p, x, refs = data()
    default = what(conv_net, p, x, refs, target=1, average_refs=False)
    highest = what(conv_net, p, x, refs, target=1, average_refs=False, precision="highest")
    assert highest.shape == default.shape == (3, 2, 4, 4, 1)
    if jax.default_backend() == "cpu":  # both exact float32 here; a GPU's default is TF32
        scale = float(np.abs(default).max())
        np.testing.assert_allclose(highest, default, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("bad", ["high", "HIGHEST", None, 3, "float32"])
def test_unknown_precision_is_refused_by_name(bad):
    p, x, refs = data()
    with pytest.raises(ValueError, match=r"unknown precision .*\"highest\""):
        jaxlift.attribute(conv_net, p, x, refs, target=0, precision=bad)
    with pytest.raises(ValueError, match="unknown precision"):
        jaxlift.multipliers(conv_net, p, x, refs, target=0, mode="gradient", precision=bad)


def _dots_and_convs(text: str) -> list[str]:
    return [l for l in text.splitlines()
            if "stablehlo.dot_general" in l or "stablehlo.convolution" in l]


def test_highest_compiles_every_dot_and_conv_at_precision_highest():
    p, x, refs = data()
    highest = _dots_and_convs(pipeline.lowered_text(conv_net, p, x, refs, target=0,
                                                precision="highest"))
    default = _dots_and_convs(pipeline.lowered_text(conv_net, p, x, refs, target=0))
    # the forward conv and dense, their transposes for the multipliers, on both sides
    assert len(highest) == len(default) >= 4
    assert any("convolution" in l for l in highest)
    assert all("precision HIGHEST" in l or "precision = [HIGHEST, HIGHEST]" in l
               for l in highest), highest
    assert not any("HIGHEST" in l for l in default)


def test_the_call_is_traced_under_the_chosen_precision():
    seen = []

    def fn(p, xb):  # records the precision it is traced under, and its output shows it
        seen.append(jax.config.jax_default_matmul_precision)
        scale = 2.0 if jax.config.jax_default_matmul_precision == "highest" else 1.0
        return scale * conv_net(p, xb)

    p, x, refs = data(1)
    default = jaxlift.attribute(fn, p, x, refs, target=2, check_finite=False)
    highest = jaxlift.attribute(fn, p, x, refs, target=2, check_finite=False,
                                precision="highest")
    np.testing.assert_allclose(highest, 2 * default, rtol=1e-5,
                               atol=1e-6 * float(np.abs(default).max()))
    assert "highest" in seen and None in seen


def test_precision_is_part_of_the_compilation_key():
    p, x, refs = data(2)
    before = interpreted.compiled_program.cache_info().misses
    jaxlift.attribute(conv_net, p, x, refs, target=0, mode="reveal_cancel")
    jaxlift.attribute(conv_net, p, x, refs, target=0, mode="reveal_cancel", precision="highest")
    assert interpreted.compiled_program.cache_info().misses == before + 2


def test_baseline_modes_take_a_precision():
    p, x, refs = data(3)
    g = jaxlift.attribute(conv_net, p, x, refs, target=0, mode="gradient", precision="highest")
    np.testing.assert_allclose(g, jaxlift.attribute(conv_net, p, x, refs, target=0,
                                                    mode="gradient"), rtol=1e-5, atol=1e-6)


def test_cli_precision_option():
    parser = cli.build_parser()
    args = parser.parse_args(["attribute", "m.h5", "x.npy", "--precision", "highest"])
    assert args.precision == "highest"
    assert parser.parse_args(["attribute", "m.h5", "x.npy"]).precision == "default"
    assert parser.parse_args(["demo", "--precision", "highest"]).precision == "highest"
    with pytest.raises(SystemExit):
        parser.parse_args(["attribute", "m.h5", "x.npy", "--precision", "tf32"])


# ------------------------------------------------------------------------------ flag_gaps

def test_flag_gaps_relative_gap_per_pair():
    scores = jnp.asarray([[[1.0, 2.0], [3.0, -1.0]],
                          [[0.5, 0.5], [0.0, 0.0]]])  # (N=2, K=2, S=2)
    delta = jnp.asarray([[3.0, 2.5], [1.0, 0.0]])
    gap, flagged = jaxlift.flag_gaps(scores, delta, threshold=0.05)
    # |ΣC − Δt| / max(Σ|C|, |Δt|): 0/3, 0.5/4, 0/1, and 0 for a pair with nothing at all
    np.testing.assert_allclose(gap, [[0.0, 0.125], [0.0, 0.0]], atol=1e-7)
    np.testing.assert_array_equal(flagged, [[False, True], [False, False]])
    assert gap.shape == flagged.shape == delta.shape and flagged.dtype == jnp.bool_


def test_flag_gaps_on_attribute_output_and_a_pytree():
    p, x, refs = data(4)
    c, d = jaxlift.attribute(conv_net, p, x, refs, target=0, average_refs=False,
                             return_delta=True)
    gap, flagged = jaxlift.flag_gaps(c, d)
    assert gap.shape == (3, 2) and not bool(flagged.any())
    assert float(gap.max()) < 1e-5  # float32 rounding on the CPU
    # a wrong score is flagged, in the pair it is in, and pytrees of scores sum leaf by leaf
    bad = c.at[1, 0, 0, 0, 0].add(0.1 * float(jnp.abs(c[1, 0]).sum()))
    _, flagged = jaxlift.flag_gaps({"a": bad, "b": jnp.zeros_like(c)}, d)
    np.testing.assert_array_equal(flagged, [[False, False], [True, False], [False, False]])


def test_flag_gaps_refuses_mismatched_shapes_and_bad_thresholds():
    with pytest.raises(ValueError, match="do not start with delta's shape"):
        jaxlift.flag_gaps(jnp.ones((3, 4)), jnp.ones((2,)))
    for bad in (-1.0, "1e-3", True, float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            jaxlift.flag_gaps(jnp.ones((2, 4)), jnp.ones((2,)), threshold=bad)
