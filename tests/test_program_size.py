"""What XLA compiles is what the rules wrote (docs/design.md §20.10): RevealCancel's four parts
are computed together where XLA would otherwise compute every guard once per part inside
every reader (jaxlift/_ops.py ``computed_together``, jaxlift/rules/reveal_cancel.py
``feeds_fused_work``)."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift import _ops
from jaxlift.methods import interpreted
from jaxlift.program import traced_program
from jaxlift.rules import reveal_cancel
from jaxlift.rules.composites import COMPOSITES
from jaxlift.rules.reveal_cancel import feeds_fused_work
from jaxlift.targets import per_example

D = 16


def test_computed_together_returns_its_arrays_bit_for_bit():
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=(3, D)), jnp.float32)
    b = jnp.asarray([[np.inf, -np.inf, np.nan] + [0.0] * (D - 3)] * 3, jnp.float32)
    c = jnp.float32(2.5)  # broadcast to the others' shape
    got = jax.jit(_ops.computed_together)(a, b, c)
    for g, want in zip(got, (a, b, jnp.full((3, D), 2.5, jnp.float32))):
        assert g.shape == (3, D) and g.dtype == jnp.float32
        np.testing.assert_array_equal(g, want)
    under_vmap = jax.vmap(lambda u, v: _ops.computed_together(u, v))(a, a * 2)
    np.testing.assert_array_equal(under_vmap[1], a * 2)


def test_computed_together_leaves_mixed_dtypes_and_shapes_alone():
    f32, f64ish = jnp.ones((2, 3), jnp.float32), jnp.ones((2, 3), jnp.int32)
    assert _ops.computed_together(f32, f64ish) == (f32, f64ish)
    odd = jnp.ones((4,), jnp.float32)
    assert _ops.computed_together(f32, odd) == (f32, odd)
    assert _ops.computed_together(f32) == (f32,)


def _layer_norm_softmax(p, xb):
    """A transformer's elementwise chains: a layer norm, then a softmax, then a dense head."""
    mu = xb.mean(-1, keepdims=True)
    h = (xb - mu) * jax.lax.rsqrt(((xb - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    h = jnp.tanh(h * p["g"])
    e = jnp.exp(h - jax.lax.stop_gradient(h.max(-1, keepdims=True)))
    return (e / e.sum(-1, keepdims=True)) @ p["w"]


def _params():
    k1, k2 = jax.random.split(jax.random.key(0))
    return {"g": 1.0 + 0.1 * jax.random.normal(k1, (D,)), "w": jax.random.normal(k2, (D, 3))}


def _guard_counts(fn, params, x, refs):
    """Guard operations (``compare``, ``select``, ``isfinite``) the rules wrote (the lowered
    program) and XLA compiled."""
    lowered = interpreted.compiled_program(fn, 1, COMPOSITES["reveal_cancel"], "contributions",
                                           None, False, True).lower(params, x, refs)
    written = len(re.findall(r"stablehlo\.(?:compare|select|is_finite)\b", lowered.as_text()))
    compiled = len(re.findall(r"= \S+ (?:compare|select|is-finite)\(", lowered.compile().as_text()))
    return written, compiled


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's fusion decisions")
def test_reveal_cancel_guards_are_compiled_once_not_once_per_reader(monkeypatch):
    """Each guard of a RevealCancel nonlinearity is compiled about once: without its parts
    computed together, XLA:CPU fuses every guard into each reader of each of the four parts
    (here 3.2× the guard operations — compares, selects, isfinite — of the same program with
    them together; 4.6× the isfinite written on a 2-block decoder before the guards were
    shortened, docs/design.md §20.12)."""
    p = _params()
    x = jax.random.normal(jax.random.key(1), (4, D))
    refs = jax.random.normal(jax.random.key(2), (2, D)) * 0.3
    written, compiled = _guard_counts(_layer_norm_softmax, p, x, refs)
    assert written > 100
    assert compiled <= 1.5 * written, (written, compiled)
    monkeypatch.setattr(reveal_cancel, "feeds_fused_work", lambda op, program: False)
    interpreted.compiled_program.cache_clear()
    _, apart = _guard_counts(_layer_norm_softmax, p, x, refs)
    interpreted.compiled_program.cache_clear()
    assert 2 * compiled <= apart, (written, compiled, apart)
    monkeypatch.undo()
    scores, delta = jaxlift.attribute(_layer_norm_softmax, p, x, refs, target=1,
                                      mode="reveal_cancel", return_delta=True)
    np.testing.assert_allclose(scores.sum(-1), delta, rtol=1e-4, atol=1e-5)


def _program(fn, x):
    program, _ = traced_program(per_example(fn, 0), _params(),
                                _ops.example_structs(x, True))
    return program


def _nonlinearities(program):
    return [op for op in program.ops if op.is_live and op.primitive.startswith("nonlinearity")]


def test_parts_stay_apart_before_a_contraction_or_a_pool():
    """A relu read only by a dense layer (through a reshape) or by max-pooling keeps its four
    fused expressions; one read by elementwise work or a reduction computes them together."""
    def dense(p, xb):
        return jax.nn.relu(xb * p["g"]).reshape(xb.shape[0], -1) @ p["w"]

    def pooled(p, xb):
        h = jax.nn.relu(xb * p["g"])[..., None]
        pooled = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 1), (1, 2, 1), "VALID")
        return pooled.reshape(xb.shape[0], -1)[:, :D // 2] @ p["w"][:D // 2]

    x = jnp.ones((2, D))
    for fn in (dense, pooled):
        program = _program(fn, x)
        (op,) = _nonlinearities(program)
        assert not feeds_fused_work(op, program), fn.__name__
    program = _program(_layer_norm_softmax, x)
    assert any(feeds_fused_work(op, program) for op in _nonlinearities(program))


def _reductions(closed) -> int:
    """``reduce_sum`` equations of a jaxpr (nested ones included)."""
    count = 0
    for eqn in closed.jaxpr.eqns:
        count += eqn.primitive.name == "reduce_sum"
        for value in eqn.params.values():
            if hasattr(value, "jaxpr") and hasattr(value, "consts"):
                count += _reductions(value)
    return count


def test_one_finite_flag_for_every_leaf_one_reduction_per_leaf_plus_one():
    """``_ops.finite_flag``: scores, Δt, inputs and references in one flag — a windowed sum
    per float leaf and one windowed sum over all the windows (a flag per leaf took two each),
    integer leaves not read, a short vector read on the host (``_ops.flag_up``): reducing it to
    one bool in the program cost three more kernels; and it is exact: a NaN or an Inf anywhere,
    in any float dtype or in either part of a complex value, in the last window or alone,
    turns it off."""
    res = [jnp.zeros((4, 3, 100)), jnp.zeros((4, 3, 7))]
    delta = jnp.zeros((4, 3))
    x = {"ids": jnp.zeros((4, 5), jnp.int32), "v": jnp.zeros((4, 40), jnp.float16)}
    refs = {"ids": jnp.zeros((3, 5), jnp.int32), "v": jnp.zeros((3, 40), jnp.float16)}
    flag = jax.make_jaxpr(lambda *a: _ops.finite_flag(*a, check_inputs=True))(res, delta, x, refs)
    assert _reductions(flag) == 5 + 1  # four float score/Δt/input leaves … and refs' float leaf
    # 38 + 3 + 1 + 5 + 4 windows of 32 elements, summed in windows of 32 once more
    assert flag.out_avals[0].shape == (2,)
    unchecked = jax.make_jaxpr(lambda *a: _ops.finite_flag(*a, check_inputs=False))(
        res, delta, x, refs)
    assert _reductions(unchecked) == 3 + 1
    jitted = jax.jit(lambda *a: _ops.finite_flag(*a, check_inputs=True))
    check = lambda *a: _ops.flag_up(jitted(*a))  # noqa: E731
    assert check(res, delta, x, refs)
    for bad in (np.nan, np.inf, -np.inf):
        assert not check([res[0].at[3, 2, 99].set(bad), res[1]], delta, x, refs)
        assert not check(res, delta.at[0, 0].set(bad), x, refs)
        assert not check(res, delta, {**x, "v": x["v"].at[1, 39].set(bad)}, refs)
        assert _ops.flag_up(jax.jit(lambda *a: _ops.finite_flag(*a, check_inputs=False))(
            res, delta, {**x, "v": x["v"].at[1, 39].set(bad)}, refs))
    z = jnp.zeros((2, 33), jnp.complex64)
    assert bool(_ops.all_finite(z, jnp.float64(1.0) if jax.config.jax_enable_x64 else 1.0))
    assert not bool(_ops.all_finite(z.at[1, 32].set(complex(0, np.inf))))
    assert not bool(_ops.all_finite(z.at[0, 0].set(complex(np.nan, 0))))
    assert bool(_ops.all_finite(jnp.arange(3), jnp.array([True])))
