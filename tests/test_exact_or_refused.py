"""Regression tests of the issue "Exact or refused": each finding that once returned a silently
wrong score now sums to Δt exactly or is refused with the primitive and the user's line."""
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift.errors import NonFiniteScoresError, UnsupportedPrimitiveError

MODES = ["rescale", "reveal_cancel"]  # genomics_default mixes the two per layer
RNG = np.random.default_rng(7)
W = RNG.normal(size=(4, 4))
V = RNG.normal(size=(4, 4))


def _data(n=3, k=2, dtype=jnp.float64):
    rng = np.random.default_rng(3)
    return (jnp.asarray(rng.normal(size=(n, 4)), dtype),
            jnp.asarray(rng.normal(size=(k, 4)), dtype))


def _gap(fn, params, x, r, **kw):
    """Largest |Σ C − Δt| over all pairs, the deltas, and the scores."""
    c, d = jaxlift.attribute(fn, params, x, r, return_delta=True, average_refs=False, **kw)
    total = c.reshape(c.shape[:2] + (-1,)).sum(-1)
    assert bool(jnp.all(jnp.isfinite(c)))
    return float(jnp.abs(total - d).max()), d, c


# 1. live booleans: a predicate from one tensor choosing between values of others

@pytest.mark.parametrize("mode", MODES)
def test_where_with_a_live_predicate_is_exact(x64, mode):
    fn = lambda p, xb: jnp.where(xb @ W > 0, xb @ W, jnp.tanh(xb @ V)).sum(1)  # noqa: E731
    x, r = _data()
    gap, d, _ = _gap(fn, None, x, r, mode=mode)
    assert float(jnp.abs(d).max()) > 0.1 and gap < 1e-12


@pytest.mark.parametrize("mode", MODES)
def test_vmapped_cond_with_a_live_predicate_is_exact(x64, mode):
    def fn(p, xb):
        branch = lambda v: jax.lax.cond(v.sum() > 0, lambda u: jnp.tanh(u @ W),  # noqa: E731
                                        lambda u: u @ V, v)
        return jax.vmap(branch)(xb).sum(1)
    x, r = _data()
    gap, _, _ = _gap(fn, None, x, r, mode=mode)
    assert gap < 1e-12


def test_select_rule_by_hand(x64):
    # y = where(x1 > 0, x2, 3): x = (1, 5) → 5; r = (−1, 2) → 3. The predicate flips:
    # m_c1 = ½ (Δx2 = 3 → 1.5); m_p = ½[(5 − 3) + (2 − 3)] = ½, Δp = 1 → 0.5 goes to x1 through
    # the step (m = Δp/Δx1 = ½, C = 1·... = 0.5). Σ C = 2 = Δy.
    fn = lambda p, xb: jnp.where(xb[:, 0] > 0, xb[:, 1], 3.0)  # noqa: E731
    c = jaxlift.attribute(fn, None, jnp.array([[1.0, 5.0]]), jnp.array([[-1.0, 2.0]]))
    np.testing.assert_allclose(np.asarray(c[0]), [0.5, 1.5], rtol=1e-12)


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_discarded_branch_that_is_not_finite_is_exact(x64, mode):
    # log of a negative number in the branch jnp.where discards: the flip explains it all
    fn = lambda p, xb: jnp.where(xb[:, 0] > 0, jnp.log(jnp.abs(xb[:, 1]) + xb[:, 0]), 0.0)  # noqa: E731
    x, r = jnp.array([[1.0, 2.0]]), jnp.array([[-3.0, 1.0]])
    gap, d, _ = _gap(fn, None, x, r, mode=mode)
    assert float(d[0, 0]) == pytest.approx(np.log(3.0)) and gap < 1e-12
    # a value that is infinite on one side (log 0) and NaN on the other (sqrt of a negative),
    # both inside the discarded branch, before a nonlinearity whose rule reads them
    fn = lambda p, xb: jnp.where(xb[:, 0] > 0, jnp.tanh(jnp.log(xb[:, 1]) * jnp.sqrt(xb[:, 0])),  # noqa: E731
                                 xb[:, 1])
    x, r = jnp.array([[-1.0, 0.0], [-2.0, -1.0]]), jnp.array([[1.0, 0.5], [-1.0, 0.0]])
    gap, d, c = _gap(fn, None, x, r, mode=mode)
    assert gap < 1e-12


def test_integer_path_is_refused_with_primitive_and_line():
    w, v = W.astype(np.float32), V.astype(np.float32)
    fn = lambda p, xb: jnp.take_along_axis(xb @ w, jnp.argmax(xb @ v, 1)[:, None], 1)[:, 0]  # noqa: E731
    x, r = _data(dtype=jnp.float32)
    with pytest.raises(UnsupportedPrimitiveError,
                       match=r"'gather' \(at .*test_exact_or_refused\.py:\d+.*integer"):
        jaxlift.attribute(fn, None, x, r)


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_float_to_integer_cast_is_a_step(x64, mode):
    fn = lambda p, xb: (jnp.round(xb @ W).astype(jnp.int32).astype(xb.dtype) * 0.5 + xb @ V).sum(1)  # noqa: E731
    x, r = _data()
    gap, _, _ = _gap(fn, None, 3 * x, r, mode=mode)
    assert gap < 1e-12


# 2. the near-zero guard at a kink far from zero

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_kink_at_a_large_offset(mode, dtype):
    with jax.enable_x64(dtype == jnp.float64):
        fn = lambda p, xb: jax.nn.relu(xb[:, 0] - 1e4)  # noqa: E731
        x = jnp.array([[1e4 + 2.0]], dtype)
        r = jnp.array([[1e4 - 1.0]], dtype)
        c, d = jaxlift.attribute(fn, None, x, r, mode=mode, return_delta=True)
        assert float(d[0]) == 2.0
        assert float(c[0, 0]) == pytest.approx(2.0, rel=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_batchnorm_like_affine_at_a_large_mean(mode):
    mu, sigma = 1e4, 3.0
    fn = lambda p, xb: jax.nn.relu(((xb - mu) / sigma) @ W.astype(np.float32)).sum(1)  # noqa: E731
    x, r = _data(dtype=jnp.float32)
    c, d = jaxlift.attribute(fn, None, x * 3 + mu, r * 3 + mu, mode=mode, return_delta=True,
                             average_refs=False)
    total = c.reshape(c.shape[:2] + (-1,)).sum(-1)
    scale = jnp.abs(c).reshape(c.shape[:2] + (-1,)).sum(-1)
    assert float((jnp.abs(total - d) / scale).max()) < 1e-5


# 3. half precision: differences are carried in float32

@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_differences_do_not_overflow(dtype):
    x = jnp.full((2, 4), 4e4, dtype) * jnp.array([1, -1, 1, -1], dtype)
    r = -x[:1]
    fn = lambda p, xb: jnp.tanh(xb @ p).sum(1)  # noqa: E731
    w = jnp.asarray(W / 1e5, dtype)
    c, d = jaxlift.attribute(fn, w, x, r, return_delta=True)
    assert c.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(c)))
    assert float(jnp.abs(c.sum(1) - d).max()) <= 1e-5 * float(jnp.abs(c).sum(1).max())


@pytest.mark.parametrize("mode", MODES)
def test_float64_multipliers_through_float32_operations_stay_float64(x64, mode):
    """A float64 model that casts its input to float32 first (Hugging Face's Wav2Vec2 does,
    ``input_values`` as ``"f4"``) and computes in float32 for a few linear operations. Behind a
    normalization whose variance is 0 at the reference (multipliers of 1e5 and more), two
    roundings were amplified past any bound: the cast's (its multiplier is now ``Δy/Δx``,
    ``logic._convert_backward``) and the float32 transposes' of the float64 multipliers (now run
    in float64, ``_util.vjp_live``'s ``to``). Each alone fails this test; the scores sum to
    float64 rounding."""
    rng = np.random.default_rng(12)
    w = jnp.asarray(rng.normal(size=(3,)), jnp.float64)

    def fn(p, xb):
        h = xb.astype(jnp.float32)[:, :, None] * jnp.ones(3, jnp.float32)  # float32 ops
        h = jnp.reshape(h, (h.shape[0], -1)) * jnp.tile(w, 8)              # float64 again
        h = h - h.mean(-1, keepdims=True)
        h = h / jnp.sqrt((h * h).mean(-1, keepdims=True) + 1e-12)          # variance 0 at r
        return jnp.tanh(h[:, :4] @ jnp.asarray(rng.normal(size=(4, 2))))
    x = jnp.asarray(rng.normal(size=(2, 8)))
    r = jnp.zeros((1, 8))
    c, d = jaxlift.attribute(fn, None, x, r, target=0, mode=mode, return_delta=True)
    assert c.dtype == jnp.float64
    np.testing.assert_allclose(c.sum(-1), d, rtol=1e-9)


def test_a_float64_program_that_computes_in_float32_is_held_to_float32s_bound(x64):
    """Keras 3 on JAX computes a float64 model's mean in float32 (``reduce_sum`` and ``div`` on
    a cast). Δt itself carries float32 rounding there, so no scores can sum to it closer: the
    certificate takes the bound of the least precise type the program computes in
    (``interpreted.narrowest_live_float``), where float64's refused the call and blamed the
    sum's rule."""
    rng = np.random.default_rng(13)
    w = jnp.asarray(rng.normal(size=(6, 64)))

    def fn(p, xb):
        h = jax.nn.relu(xb @ w)
        mean = (h.astype(jnp.float32).sum(-1) / 64).astype(jnp.float64)  # Keras's ops.mean
        return jnp.stack([mean, -mean], 1)
    x = jnp.asarray(100 * rng.normal(size=(2, 6)))
    r = jnp.zeros((1, 6))
    prog = jaxlift.program.traced_program(lambda p, xe: fn(p, xe[None])[0], None,
                                          jax.ShapeDtypeStruct((6,), jnp.float64))[0]
    assert jaxlift.methods.interpreted.narrowest_live_float(prog) == jnp.float32
    c, d = jaxlift.attribute(fn, None, x, r, target=0, return_delta=True)
    assert c.dtype == jnp.float64
    gap = jnp.abs(c.sum(-1) - d) / jnp.abs(c).sum(-1)
    assert float(gap.max()) < 1e-4  # float32's promise


# 4. a marked layer inside an elementwise chain

@pytest.mark.parametrize("mode", MODES)
def test_marker_inside_an_elementwise_chain(x64, mode):
    fn = lambda p, xb: (2 * jaxlift.layer(jax.nn.relu(xb), "h")).sum(1)  # noqa: E731
    x, r = _data()
    c = jaxlift.attribute(fn, None, x, r, layer="h", mode=mode, average_refs=False)
    h_delta = jax.nn.relu(x)[:, None] - jax.nn.relu(r)[None]
    np.testing.assert_allclose(np.asarray(c), 2 * np.asarray(h_delta), rtol=1e-12, atol=1e-14)


# 5. a function that mixes the examples of a batch

def test_function_mixing_examples_is_refused():
    fn = lambda p, xb: jnp.tanh((xb - xb.mean(0)) @ W.astype(np.float32)).sum(1)  # noqa: E731
    x, r = _data(dtype=jnp.float32)
    with pytest.raises(ValueError, match="fn must not mix examples of a batch"):
        jaxlift.attribute(fn, None, x, r)
    with pytest.raises(ValueError, match="fn must not mix examples of a batch"):
        jaxlift.attribute(fn, None, x, r, mode="gradient")


# 6. a rejected target does not poison the cache

def test_rejected_target_does_not_poison_the_cache():
    fn = lambda p, xb: xb @ W.astype(np.float32)  # noqa: E731
    x, r = _data(dtype=jnp.float32)
    for bad in (1.0, True):
        with pytest.raises(TypeError, match="target must be"):
            jaxlift.attribute(fn, None, x, r, target=bad)
    assert jaxlift.attribute(fn, None, x, r, target=1).shape == x.shape


# 7. x == r gives Δt = 0 and C = 0 exactly

@pytest.mark.parametrize("mode", MODES)
def test_input_equal_to_reference_is_exactly_zero(mode):
    fn = lambda p, xb: jnp.tanh(xb) @ W.astype(np.float32) * 5e4  # noqa: E731
    x, r = _data(n=4, dtype=jnp.float32)
    refs = jnp.concatenate([x[2:3], r])
    c, d = jaxlift.attribute(fn, None, x, refs, target=0, mode=mode, return_delta=True,
                             average_refs=False)
    assert float(d[2, 0]) == 0.0 and float(jnp.abs(c[2, 0]).max()) == 0.0
    assert float(jnp.abs(d[:, 1:]).min()) > 0  # the other pairs are not zeroed


# 8. messages that name the problem

def test_input_without_batch_axis_is_named():
    fn = lambda p, xb: jnp.tanh(xb @ W.astype(np.float32)).sum(1)  # noqa: E731
    x, r = _data(dtype=jnp.float32)
    with pytest.raises(ValueError, match=r"shape \(4,\) looks like a single example.*x\[None\]"):
        jaxlift.attribute(fn, None, x[0], r[0])


def test_integer_inputs_say_cast_to_float():
    fn = lambda p, xb: jnp.tanh(xb @ W.astype(np.float32)).sum(1)  # noqa: E731
    x, r = _data(dtype=jnp.float32)
    with pytest.raises(UnsupportedPrimitiveError, match=r"input itself is int32: cast x and refs"):
        jaxlift.attribute(fn, None, (3 * x).astype(jnp.int32), r.astype(jnp.int32))


def test_fixed_predicate_cond_is_exact_not_called_live(x64):
    fn = lambda p, xb: jax.lax.cond(p.sum() > 0, lambda u: jnp.tanh(u @ W),  # noqa: E731
                                    lambda u: u @ V, xb).sum(1)
    x, r = _data()
    for sign in (1.0, -1.0):
        gap, _, _ = _gap(fn, jnp.asarray(sign), x, r)
        assert gap < 1e-12


def test_scalar_and_integer_outputs_are_named():
    x, r = _data(dtype=jnp.float32)
    w = W.astype(np.float32)
    with pytest.raises(ValueError, match="one output per example.*returned shape \\(\\)"):
        jaxlift.attribute(lambda p, xb: jnp.tanh(xb @ w).sum(), None, x, r)
    with pytest.raises(ValueError, match="returns int32 outputs"):
        jaxlift.attribute(lambda p, xb: jnp.argmax(xb @ w, 1), None, x, r)


def test_overflowing_multiplier_names_the_primitive():
    # a step crossed within 3e-38: 1e3·Δp/Δh overflows float32; refused, naming the comparison
    fn = lambda p, xb: jnp.where(xb[:, 0] > 0, 1.0, 0.0) * 1e3 + xb[:, 1]  # noqa: E731
    x = jnp.array([[1.5e-38, 1.0]], jnp.float32)
    r = jnp.array([[-1.5e-38, 1.0]], jnp.float32)
    with pytest.raises(NonFiniteScoresError,
                       match=r"'nonlinearity\[gt, .*\(at .*test_exact_or_refused"):
        jaxlift.attribute(fn, None, x, r)


def test_params_with_rng_keys_and_integers_are_not_checked_as_floats():
    # a Flax NNX model whose state holds Dropout's RNG key (and integer counters)
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(4, 8, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)
            self.l2 = nnx.Linear(8, 2, rngs=rngs)

        def __call__(self, x):
            return self.l2(self.drop(jax.nn.relu(self.l1(x))))

    model = Model(nnx.Rngs(0))
    model.eval()
    graphdef, state = nnx.split(model)
    fn = lambda s, xb: nnx.merge(graphdef, s)(xb)  # noqa: E731
    x, r = _data(dtype=jnp.float32)
    c, d = jaxlift.attribute(fn, state, x, r, target=0, return_delta=True)
    assert float(jnp.abs(c.sum(1) - d).max()) <= 1e-5 * float(jnp.abs(c).sum(1).max())


PREDICATES = {
    # a step of h − g (two live operands), and/or/not of live predicates
    "ordered": lambda h, g: ((h > g) & (g < 0.2)) | ~(h > 1.0),
    # lax's le_to / lt_to / eq_to (what jnp.sort and jnp.searchsorted compare with) are
    # comparisons like le / lt / eq: steps, exact; they used to be refused as unknown
    "total_order": lambda h, g: (jax.lax.le_to_p.bind(h, g)
                                 | jax.lax.lt_to_p.bind(g, jnp.full_like(g, 0.2))
                                 | jax.lax.eq_to_p.bind(h, jnp.zeros_like(h))),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("predicate", list(PREDICATES))
def test_comparison_of_two_live_values_and_boolean_logic(x64, predicate, mode):
    def fn(p, xb):
        h, g = xb @ W, jnp.tanh(xb @ V)
        return jnp.where(PREDICATES[predicate](h, g), h, 2 * g).sum(1)
    x, r = _data(n=4, k=3)
    gap, d, _ = _gap(fn, None, x, r, mode=mode)
    assert float(jnp.abs(d).max()) > 0.1 and gap < 1e-12


@pytest.mark.parametrize("mode", MODES)
def test_all_and_any_of_live_predicates_are_exact(x64, mode):
    # jnp.all / jnp.any (reduce_and / reduce_or) of comparisons, into selects and sums: the
    # min / max of 0/1 values, credited to the elements that turned them; they were refused
    def fn(p, xb):
        h = xb @ W
        every, some = jnp.all(h > -0.6, axis=-1), jnp.any(h < -0.5, axis=-1)
        return (jnp.where(every, 3.0, 0.0) + jnp.where(some, h[:, 0], -h[:, 1])
                + (h > 0).all(-1) - jnp.any(h > 0.8, -1))
    rng = np.random.default_rng(1)
    x, r = jnp.asarray(rng.normal(size=(30, 4))), jnp.asarray(rng.normal(size=(5, 4)))
    gap, d, _ = _gap(fn, None, x, r, mode=mode)
    every = jnp.all(x @ W > -0.6, -1)[:, None] != jnp.all(r @ W > -0.6, -1)[None]
    some = jnp.any(x @ W < -0.5, -1)[:, None] != jnp.any(r @ W < -0.5, -1)[None]
    assert bool(jnp.any(every)) and bool(jnp.any(some))  # both flip in some pairs
    assert float(jnp.abs(d).max()) > 1.0 and gap < 1e-12


def test_bitwise_reductions_of_integers_are_refused():
    def fn(p, xb):
        bits = (xb @ W.astype(np.float32) > 0).astype(jnp.int32)
        return jax.lax.reduce_and_p.bind(bits, axes=(1,)).astype(jnp.float32)
    x, r = _data(dtype=jnp.float32)
    with pytest.raises(UnsupportedPrimitiveError, match=r"'reduce_and' .*bitwise reduction"):
        jaxlift.attribute(fn, None, x, r)


def test_a_refusal_inside_jaxs_own_loop_names_the_users_line():
    # jnp.searchsorted runs a scan whose equations carry no line outside JAX: the refusal
    # names the line that called it (it used to say "at " and nothing)
    edges = jnp.linspace(-1.0, 1.0, 5)

    def fn(p, xb):
        return xb.sum(1) + jnp.searchsorted(edges, xb[:, 0])
    x, r = _data(dtype=jnp.float32)
    with pytest.raises(UnsupportedPrimitiveError,
                       match=r"\(at [^ ]*test_exact_or_refused\.py:\d+:\d+ \(\S*fn\)") as info:
        jaxlift.attribute(fn, None, x, r)
    # and it says what to write instead: a count of comparisons, which is exact
    assert "jnp.sum(x[..., None] > edges, -1)" in str(info.value)

    def counted(p, xb):
        return xb.sum(1) + jnp.sum(xb[:, 0, None] > edges, -1)
    gap, d, _ = _gap(counted, None, x, r)
    assert gap < 1e-5 and float(jnp.abs(d).max()) > 0.1


def test_bitwise_logic_on_integers_is_refused():
    w, v = W.astype(np.float32), V.astype(np.float32)

    def fn(p, xb):
        bits = (xb @ w > 0).astype(jnp.int32) & (xb @ v > 0).astype(jnp.int32)
        return bits.astype(jnp.float32).sum(1)
    x, r = _data(dtype=jnp.float32)
    with pytest.raises(UnsupportedPrimitiveError, match=r"'and' \(at .*test_exact_or_refused"):
        jaxlift.attribute(fn, None, x, r)


class _OneOp:
    """The context a rule sees for one elementwise op ``f`` at ``x`` (input) and ``x0``
    (reference): enough of :class:`jaxlift.interpreter.RuleContext` for Rescale's multiplier."""

    def __init__(self, f, x, x0):
        self.f, self.xs, self.rs = f, [jnp.float32(x)], [jnp.float32(x0)]
        self.ys, self.y0s = [f(self.xs[0])], [f(self.rs[0])]
        # a chain of plain jnp operations: no custom_vjp equation in its body
        self.op = SimpleNamespace(outs=(), body=(), where="", primitive="nonlinearity[]")

    def apply(self, u):
        return [self.f(u)]

    def shared(self, name, make):
        return make()


def test_rescale_multiplier_element_by_element():
    # the guard's table (jaxlift/rules/rescale.py): the slope where Δx = 0, the quotient across
    # a kink, 0 where a value is not finite, infinity (refused downstream) where Δy/Δx overflows
    from jaxlift.rules.rescale import rescale_multiplier
    relu_at = lambda c: lambda u: jnp.maximum(u - c, 0)  # noqa: E731
    step = lambda u: jnp.where(u > 0, jnp.float32(1e3), 0)  # noqa: E731
    where_relu = lambda u: jnp.where(u > 0, u, 0)  # noqa: E731
    cases = [  # (f, x, x0, expected m)
        (jnp.tanh, 1.0, -1.0, (np.tanh(1.0) - np.tanh(-1.0)) / 2),
        (jnp.tanh, 0.3, 0.3, 1 - np.tanh(0.3) ** 2),            # Δx = 0: the slope
        (jax.nn.sigmoid, 0.0, 0.0, 0.25),
        (relu_at(1e4), 1e4 + 2.0, 1e4 - 2.0, 0.5),                # a kink inside: Δy/Δx
        (jnp.sqrt, 0.0, 0.0, 0.0),                                # Δx = 0, slope infinite
        (jnp.sqrt, 4.0, 0.0, 0.5),                                # one side's slope infinite
        (jnp.tanh, np.inf, 1.0, 0.0),                             # x not finite, y finite
        (jnp.tanh, np.inf, np.inf, 0.0),                          # equal infinities
        (jax.nn.softplus, np.inf, np.inf, 0.0),                   # y not finite on both sides
        (jnp.exp, 100.0, 1.0, 0.0),                               # y overflows to infinity
        (where_relu, np.nan, 1.0, 0.0),                           # x NaN, y finite
        (step, 1.5e-38, -1.5e-38, np.inf),                        # Δy/Δx overflows: kept
    ]
    for f, x, x0, expected in cases:
        m = float(rescale_multiplier(_OneOp(f, x, x0)))
        assert m == pytest.approx(expected, rel=1e-6), (f, x, x0, m)


class _OneSplitOp(_OneOp):
    """:class:`_OneOp` with the RevealCancel split ``(Δx⁺, Δx⁻)`` of its input, read by no
    other operation (so its four parts stay apart)."""

    def __init__(self, f, x, x0, pos, neg):
        super().__init__(f, x, x0)
        self.split = (jnp.float32(pos), jnp.float32(neg))
        self.program = SimpleNamespace(consumers={})
        self.kept = {}

    def split_in(self, i):
        return self.split

    def shared(self, name, make):
        if name not in self.kept:
            self.kept[name] = make()
        return self.kept[name]


def test_reveal_cancel_parts_element_by_element():
    # the parts sum to Δy where the values are finite; where x, x0, y or y0 is not, both
    # multipliers are 0 (Rescale's are), even where the parts themselves look harmless
    from jaxlift.rules.reveal_cancel import reveal_cancel_parts
    dyp, dyn, mp, mn = (float(v) for v in reveal_cancel_parts(_OneSplitOp(jnp.tanh, 1.0, -1.0,
                                                                           3.0, -1.0)))
    assert dyp + dyn == pytest.approx(np.tanh(1.0) - np.tanh(-1.0), rel=1e-6)
    assert mp == pytest.approx(dyp / 3.0, rel=1e-6) and mn == pytest.approx(dyn / -1.0, rel=1e-6)
    for f, x, x0, pos, neg in [(jnp.tanh, np.inf, 1.0, np.inf, 0.0),       # x not finite
                               (jnp.tanh, 1.0, -np.inf, np.inf, 0.0),      # x0 not finite
                               (jax.nn.softplus, np.inf, np.inf, 0.0, 0.0),  # y, y0 infinite
                               (jnp.exp, 100.0, 1.0, 99.0, 0.0)]:          # y overflows
        _, _, mp, mn = reveal_cancel_parts(_OneSplitOp(f, x, x0, pos, neg))
        assert float(mp) == 0.0 and float(mn) == 0.0, (f, x, x0, float(mp), float(mn))
