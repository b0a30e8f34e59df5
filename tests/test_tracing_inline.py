"""The interpreter's passes are traced with jit-wrapped helpers inlined (jaxlift/_ops.py
``calls_inlined``, docs/design.md §20.9): the batched pairs hold no nested ``jit`` call, and a
rule's ``lax.scan`` stays one scan."""
import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift import _ops
from jaxlift.methods import interpreted
from jaxlift.rules.composites import COMPOSITES
from jaxlift.targets import per_example

N, K, D = 3, 2, 5


def _mlp(p, xb):
    return jnp.tanh(jnp.maximum(xb @ p[0], 0.1 * xb @ p[0]) @ p[1])


def _params():
    return (jax.random.normal(jax.random.key(0), (D, 4)),
            jax.random.normal(jax.random.key(1), (4, 2)))


def _pair_calls(jaxpr) -> list:
    """The ``pjit`` equations (at any depth) whose results carry the N × K pair axes."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("pjit", "jit") and any(
                tuple(v.aval.shape[:2]) == (N, K) for v in eqn.outvars
                if hasattr(v.aval, "shape")):
            found.append(eqn)
        for value in eqn.params.values():  # and inside conds, scans and calls
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += _pair_calls(inner)
    return found


def _compute_jaxpr(mode: str):
    p = _params()
    x = jax.random.normal(jax.random.key(2), (N, D))
    refs = jax.random.normal(jax.random.key(3), (K, D))
    run = functools.partial(interpreted.compute, fn=_mlp, target=1, composite=COMPOSITES[mode],
                            what="contributions", layer_name=None, per_input_refs=False,
                            average=False, certify=True)
    return jax.make_jaxpr(run)(p, x, refs).jaxpr


def test_the_pairs_hold_no_nested_jit_calls():
    """Every rule's ``jnp`` call runs inline in the pairs' trace: none of the program's
    equations on pair-shaped values is a nested ``jit`` (each would have been traced and
    batched twice on its own)."""
    for mode in ("rescale", "reveal_cancel"):
        jaxpr = _compute_jaxpr(mode)
        assert any(len(v.aval.shape) >= 2 and tuple(v.aval.shape[:2]) == (N, K)
                   for e in jaxpr.eqns for v in e.outvars)  # the pairs are there
        assert _pair_calls(jaxpr) == [], mode


def test_outside_the_context_the_same_code_holds_nested_calls():
    """The check above can fail: traced without ``calls_inlined``, a rule's ``jnp.where``
    under the two ``vmap``s is a batched nested ``jit``."""
    def pair(a, b):
        return jnp.where(a > b, a - b, jnp.zeros_like(a))
    batched = jax.vmap(jax.vmap(pair, (None, 0)), (0, None))
    a, b = jnp.ones((N, D)), jnp.ones((K, D))
    assert _pair_calls(jax.make_jaxpr(batched)(a, b).jaxpr)

    def inlined(a, b):
        with _ops.calls_inlined():
            return batched(a, b)
    assert _pair_calls(jax.make_jaxpr(inlined)(a, b).jaxpr) == []


def test_scan_stays_one_scan_when_calls_are_inlined():
    """``_ops.scan`` under ``calls_inlined`` is one ``scan`` equation (``jax.lax.scan`` would
    run as a Python loop there), with the values of ``jax.lax.scan``, and its body is traced
    in the caller's mode (its ``jnp`` calls inline too)."""
    def step(c, x):
        return c + jnp.where(x > 0, x, 0.0), c * x

    xs = jnp.arange(-3.0, 5.0)

    def ours(xs):
        with _ops.calls_inlined():
            return _ops.scan(step, 0.0, xs)
    jaxpr = jax.make_jaxpr(ours)(xs).jaxpr
    scans = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
    assert len(scans) == 1 and len(jaxpr.eqns) == 1
    body = scans[0].params["jaxpr"].jaxpr
    assert not [e for e in body.eqns if e.primitive.name in ("pjit", "jit")]
    expected = jax.lax.scan(step, 0.0, xs)
    for got, want in zip(jax.tree_util.tree_leaves(ours(xs)), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_array_equal(got, want)

    def plain(xs):
        with _ops.calls_inlined():
            return jax.lax.scan(step, 0.0, xs)
    unrolled = jax.make_jaxpr(plain)(xs).jaxpr
    assert not [e for e in unrolled.eqns if e.primitive.name == "scan"]  # why _ops.scan exists


def test_a_loop_model_compiles_to_a_loop_at_top_level():
    """jaxlift's own top-level program for a ``lax.scan`` model holds a ``while`` (the loop
    rule's scans), not the steps unrolled: its text does not grow with the steps."""
    w = jax.random.normal(jax.random.key(4), (D, D)) * 0.3

    def rnn(p, xb):
        def step(h, x_t):
            h = jnp.tanh(h @ p + x_t)
            return h, None
        h, _ = jax.lax.scan(step, jnp.zeros_like(xb[:, 0]), jnp.swapaxes(xb, 0, 1))
        return h

    def text(steps):
        x = jax.random.normal(jax.random.key(5), (2, steps, D))
        return interpreted.lowered_text(rnn, w, x, jnp.zeros((1, steps, D)), target=0)
    small, large = text(4), text(64)
    assert "stablehlo.while" in small
    assert len(large) < 1.05 * len(small), (len(small), len(large))
    x = jax.random.normal(jax.random.key(5), (2, 6, D))
    scores, delta = jaxlift.attribute(rnn, w, x, jnp.zeros((1, 6, D)), target=0,
                                      return_delta=True)
    np.testing.assert_allclose(scores.sum(axis=(1, 2)), delta, rtol=1e-4, atol=1e-5)


def test_per_example_programs_are_traced_outside_the_context():
    """``fn``'s own program keeps its ``jit`` calls (markers and named layers are such calls):
    it is traced before the pairs, never under ``calls_inlined``."""
    def fn(p, xb):
        return jax.jit(jax.nn.relu)(xb @ p[0]) @ p[1]
    p = _params()
    x = jax.random.normal(jax.random.key(2), (N, D))
    program, _ = interpreted.traced_program(per_example(fn, 0), p,
                                            _ops.example_structs(x, True))
    calls = [e for e in program.source.jaxpr.eqns if e.primitive.name in ("pjit", "jit")]
    inner = [e for c in calls for e in c.params["jaxpr"].jaxpr.eqns]  # fn, traced once
    assert any(e.primitive.name in ("pjit", "jit") and e.params["name"] == "relu"
               for e in inner)
    scores = jaxlift.attribute(fn, p, x, jnp.zeros((1, D)), target=0)
    assert np.all(np.isfinite(np.asarray(scores)))


def test_varying_like_keeps_values_and_varies_as_its_sources():
    """``_ops.varying_like`` returns its tree's values (NaN and inf sources included) and, under
    ``vmap``, varies over an axis exactly when a source does: so the loop rule's initial carries
    enter a scan batched as its body returns them (JAX then batches the body once, not twice)."""
    tree = {"h": jnp.arange(3.0), "c": jnp.float32(2.0)}
    batch = jnp.array([[1.0, jnp.nan], [jnp.inf, 0.0]])
    out = jax.vmap(lambda s: _ops.varying_like(tree, s))(batch)
    np.testing.assert_array_equal(out["h"], jnp.tile(jnp.arange(3.0), (2, 1)))
    np.testing.assert_array_equal(out["c"], jnp.full((2,), 2.0))
    # unbatched sources: the result does not vary (out_axes=None accepts it) …
    same = jax.vmap(lambda s: _ops.varying_like(tree, jnp.ones(2)), out_axes=None)(batch)
    np.testing.assert_array_equal(same["h"], jnp.arange(3.0))
    # … batched ones: it varies (out_axes=None refuses it)
    with pytest.raises(ValueError):
        jax.vmap(lambda s: _ops.varying_like(tree, s), out_axes=None)(batch)
    assert _ops.varying_like(tree) is tree


@jax.custom_vjp
def _softplus_vjp_only(v):
    return jnp.logaddexp(v, 0.0)


_softplus_vjp_only.defvjp(lambda v: (jnp.logaddexp(v, 0.0), v),
                          lambda v, g: (g * jax.nn.sigmoid(v),))


class _Elementwise:
    """The part of a rule's context ``value_and_derivative`` reads: ``apply(u) -> (f(u),)``
    and the operation (here a chain without a ``custom_vjp`` equation: the JVP is tried
    first)."""

    def __init__(self, f):
        self.apply = lambda u: (f(u),)
        self.op = types.SimpleNamespace(body=(), where="", primitive="nonlinearity[]")


@jax.custom_vjp
def _clipped_gradient(v):
    return v


# residuals None: JAX stages this function's JVP and fails only when the program is lowered
_clipped_gradient.defvjp(lambda v: (v, None), lambda _, g: (jnp.clip(g, -0.01, 0.01),))


def test_the_slope_is_forward_mode_except_for_a_custom_vjp(monkeypatch):
    """Rescale's ``f'`` is a JVP of ones (an elementwise ``f`` has a diagonal Jacobian): no VJP
    traced, a third of its tracing. A ``custom_vjp`` function has no JVP: there, the VJP of
    ones. Both give the derivative; and a model built on such a function is explained as the
    same model built on the plain function is."""
    from jaxlift.rules.rescale import value_and_derivative
    pulls = []
    real_vjp = jax.vjp
    monkeypatch.setattr(jax, "vjp", lambda *a, **k: pulls.append(1) or real_vjp(*a, **k))
    v = jnp.linspace(-3.0, 3.0, 13)
    y, d = value_and_derivative(_Elementwise(jnp.tanh), v)
    assert pulls == []
    np.testing.assert_allclose(y, jnp.tanh(v), rtol=1e-6)
    np.testing.assert_allclose(d, 1 - jnp.tanh(v) ** 2, rtol=1e-5, atol=1e-7)
    y, d = value_and_derivative(_Elementwise(_softplus_vjp_only), v)
    assert pulls == [1]
    np.testing.assert_allclose(d, jax.nn.sigmoid(v), rtol=1e-5)
    monkeypatch.undo()

    p = _params()
    x = jax.random.normal(jax.random.key(2), (N, D))
    refs = jax.random.normal(jax.random.key(3), (K, D))
    for mode in ("rescale", "reveal_cancel"):
        got = jaxlift.attribute(lambda q, xb: _softplus_vjp_only(xb @ q[0]) @ q[1], p, x, refs,
                                target=1, mode=mode)
        want = jaxlift.attribute(lambda q, xb: jax.nn.softplus(xb @ q[0]) @ q[1], p, x, refs,
                                 target=1, mode=mode)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        # a gradient-clipping identity in the chain: the chain is differentiated by its VJP
        got = jaxlift.attribute(lambda q, xb: jnp.tanh(_clipped_gradient(xb @ q[0])) @ q[1], p,
                                x, refs, target=1, mode=mode)
        want = jaxlift.attribute(lambda q, xb: jnp.tanh(xb @ q[0]) @ q[1], p, x, refs,
                                 target=1, mode=mode)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_fn_is_traced_once_at_one_example():
    """The interpreter's program and the batch-independence proof read one trace of ``fn`` at a
    batch of one (``program.at_one_trace``); the proof's other traces are at a symbolic batch
    and at its probe's size. The program is built as if ``fn`` had been called directly: its
    equations keep their own source lines."""
    seen = []

    def fn(p, xb):
        seen.append(tuple(xb.shape))
        return jnp.tanh(xb @ p[0]) @ p[1]  # the line a refusal would name
    p = _params()
    x = jax.random.normal(jax.random.key(2), (N, D))
    scores, delta = jaxlift.attribute(fn, p, x, jnp.zeros((K, D)), target=0, return_delta=True)
    assert seen.count((1, D)) == 1
    assert len(seen) == 3 and (977, D) in seen
    np.testing.assert_allclose(np.asarray(scores).sum(1), delta, rtol=1e-5, atol=1e-6)
    program, _ = interpreted.traced_program(per_example(fn, 0), p,
                                            _ops.example_structs(x, True))
    lines = {op.where for op in program.ops if op.primitive == "tanh" or op.eqn is None}
    assert any("test_tracing_inline.py" in str(w) for w in lines)


def test_a_marker_named_by_layer_is_read_off_the_trace_at_one_example():
    """``layer=`` naming a ``jaxlift.layer`` marker is resolved on ``fn``'s trace at one example,
    the one the program is built from: no trace at the full batch of its own, so the call
    traces ``fn`` as often as one without ``layer=`` (a trace of a transformer is 30-40 ms)."""
    seen = []

    def fn(p, xb):
        seen.append(tuple(xb.shape))
        return jaxlift.layer(jnp.tanh(xb @ p[0]), "hidden") @ p[1]
    p = _params()
    x = jax.random.normal(jax.random.key(2), (N, D))
    scores, delta = jaxlift.attribute(fn, p, x, jnp.zeros((K, D)), target=0, layer="hidden",
                                      return_delta=True)
    assert seen.count((1, D)) == 1 and (N, D) not in seen
    assert len(seen) == 3 and (977, D) in seen
    assert scores.shape == (N, 4)
    np.testing.assert_allclose(np.asarray(scores).sum(1), delta, rtol=1e-5, atol=1e-6)
