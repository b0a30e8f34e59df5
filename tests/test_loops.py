"""DeepLIFT through loops (``lax.scan`` and what lowers to it): summation-to-delta through
recurrent cells, reverse and unrolled scans, several carries and xs, loop constants computed
from the input, stacked layers, and a compiled program that stays a loop."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift.errors import UnsupportedPrimitiveError
from oracles import assert_sums_to_delta, forward_rounding_scale

MODES = ["rescale", "reveal_cancel", "genomics_default"]
H, D, T = 4, 3, 6


def _params(seed=0, dtype=jnp.float64):
    rng = np.random.default_rng(seed)
    mk = lambda *s: jnp.asarray(rng.normal(size=s) / np.sqrt(s[0]), dtype)  # noqa: E731
    return {"wx": mk(D, 4 * H), "wh": mk(H, 4 * H), "b": mk(4 * H) * 0.1, "out": mk(H, 2)}


def lstm(p, xb):
    """A hand-written LSTM over xb of shape (B, T, D), explained at its last hidden state."""
    def cell(carry, x_t):
        h, c = carry
        z = x_t @ p["wx"] + h @ p["wh"] + p["b"]
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h
    zeros = jnp.zeros((xb.shape[0], H), xb.dtype)
    (h, _), _ = jax.lax.scan(cell, (zeros, zeros), jnp.swapaxes(xb, 0, 1))
    return h @ p["out"]


def gru(p, xb):
    def cell(h, x_t):
        z = x_t @ p["wx"][:, :3 * H] + p["b"][:3 * H]
        u = h @ p["wh"][:, :3 * H]
        r = jax.nn.sigmoid(z[:, :H] + u[:, :H])
        zg = jax.nn.sigmoid(z[:, H:2 * H] + u[:, H:2 * H])
        n = jnp.tanh(z[:, 2 * H:] + r * u[:, 2 * H:])
        h = (1 - zg) * n + zg * h
        return h, h.sum(-1)
    h, ys = jax.lax.scan(cell, jnp.zeros((xb.shape[0], H), xb.dtype), jnp.swapaxes(xb, 0, 1))
    return h @ p["out"] + ys.mean(0)[:, None]


def reverse_unrolled(p, xb):
    """Two carries (one a running sum), a reverse scan, unroll=2, stacked ys used after."""
    def cell(carry, x_t):
        h, s = carry
        h = jnp.tanh(h @ p["wh"][:, :H] + x_t @ p["wx"][:, :H]) * jax.nn.sigmoid(s)
        return (h, s + x_t.sum(-1, keepdims=True)), h
    init = (jnp.zeros((xb.shape[0], H), xb.dtype), jnp.zeros((xb.shape[0], 1), xb.dtype))
    (h, s), ys = jax.lax.scan(cell, init, jnp.swapaxes(xb, 0, 1), reverse=True, unroll=2)
    return (h + ys.max(0) + s) @ p["out"]


def live_constant(p, xb):
    """A loop constant computed from the input (its multipliers add up across steps)."""
    g = jnp.tanh(xb.sum(1) @ p["wx"][:, :H])

    def cell(h, x_t):
        return jnp.tanh(h * g + x_t @ p["wx"][:, H:2 * H]), None
    h, _ = jax.lax.scan(cell, jnp.zeros((xb.shape[0], H), xb.dtype), jnp.swapaxes(xb, 0, 1))
    return h @ p["out"]


def stacked_layers(p, xb):
    """Residual layers stacked in a scan over their weights (nn.scan / Equinox scan=True),
    each under jax.checkpoint, then a fori_loop with a fixed trip count."""
    layers = jnp.stack([p["wh"][:, :H], p["wh"][:, H:2 * H], p["wh"][:, 2 * H:3 * H]])

    @jax.checkpoint
    def layer(h, w):
        return h + jnp.tanh(h @ w), None
    h, _ = jax.lax.scan(layer, xb[:, 0] @ p["wx"][:, :H], layers)
    h = jax.lax.fori_loop(0, 3, lambda i, v: jax.nn.relu(v @ p["wh"][:, :H]) + v, h)
    return h @ p["out"]


def _check(fn, mode, tol=1e-10, steps=T):
    p = _params()
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(3, steps, D)))
    r = jnp.asarray(rng.normal(size=(2, steps, D)) * 0.5)
    c, d = jaxlift.attribute(fn, p, x, r, target=0, mode=mode, average_refs=False,
                             return_delta=True)
    total = c.reshape(3, 2, -1).sum(-1)
    assert float(jnp.abs(d).min()) > 1e-3  # the check has teeth
    assert float(jnp.abs(total - d).max()) <= tol * max(1.0, float(jnp.abs(c).sum((2, 3)).max()))
    return c


@pytest.mark.parametrize("fn, mode", [
    (lstm, "rescale"), (lstm, "reveal_cancel"), (lstm, "genomics_default"),
    pytest.param(gru, "reveal_cancel", marks=pytest.mark.slow), (reverse_unrolled, "rescale"),
    (reverse_unrolled, "reveal_cancel"),
    (live_constant, "reveal_cancel"), (stacked_layers, "rescale")],
    ids=lambda v: getattr(v, "__name__", v))
def test_summation_to_delta_through_loops(x64, fn, mode):
    _check(fn, mode)


def _gru_where_cell(p, h, x_t, with_predicate=False):
    """A GRU cell (hand-written) with a live predicate: where the candidate state does not
    exceed the input's projection, it is halved (jnp.where of two live values); the kept state
    is squashed, tanh(h), so that a nonlinearity reads the carry itself and its RevealCancel
    split, which the sum of the two products leaves with both parts."""
    z = x_t @ p["wx"][:, :3 * H] + p["b"][:3 * H]
    u = h @ p["wh"][:, :3 * H]
    r = jax.nn.sigmoid(z[:, :H] + u[:, :H])
    zg = jax.nn.sigmoid(z[:, H:2 * H] + u[:, H:2 * H])
    n = jnp.tanh(z[:, 2 * H:] + r * u[:, 2 * H:])
    pred = n > x_t @ p["wx"][:, 3 * H:]
    n = jnp.where(pred, n, 0.5 * n)
    h = (1 - zg) * n + zg * jnp.tanh(h)
    return (h, pred) if with_predicate else h


def gru_where(p, xb):
    def cell(h, x_t):
        h = _gru_where_cell(p, h, x_t)
        return h, h.sum(-1)
    h, ys = jax.lax.scan(cell, jnp.zeros((xb.shape[0], H), xb.dtype), jnp.swapaxes(xb, 0, 1))
    return h @ p["out"] + ys.mean(0)[:, None]


def gru_where_unrolled(p, xb):
    h, ys = jnp.zeros((xb.shape[0], H), xb.dtype), 0
    for t in range(xb.shape[1]):
        h = _gru_where_cell(p, h, xb[:, t])
        ys = ys + h.sum(-1)
    return h @ p["out"] + (ys / xb.shape[1])[:, None]


# RevealCancel in the default run (the forward path that carries both sides and the split);
# Rescale's (each side on its own) in the slow step, with the LSTM comparison below
@pytest.mark.parametrize("mode", [pytest.param("rescale", marks=pytest.mark.slow),
                                  "reveal_cancel"])
def test_scan_values_equal_the_unrolled_program(x64, mode):
    """The loop rule is the interpreter on each step: a scan of a hand-written GRU with a live
    predicate in its body gives the scores of the Python-unrolled program, pair by pair."""
    p = _params(seed=3)
    rng = np.random.default_rng(4)
    # three steps: the third reads a carry split the second updated (with two, a carry split
    # frozen at its first value goes unseen: benchmarks/mutations.py scan_rc_carry_split_frozen)
    x, r = jnp.asarray(rng.normal(size=(2, 3, D))), jnp.asarray(rng.normal(size=(2, 3, D)))
    c, d = jaxlift.attribute(gru_where, p, x, r, target=0, mode=mode, average_refs=False,
                             return_delta=True)
    c_unrolled = jaxlift.attribute(gru_where_unrolled, p, x, r, target=0, mode=mode,
                                   average_refs=False)
    np.testing.assert_allclose(c, c_unrolled, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(d, gru_where(p, x)[:, None, 0] - gru_where(p, r)[None, :, 0],
                               rtol=1e-12, atol=1e-14)
    assert_sums_to_delta(c, d)

    def predicates(xb):
        h, out = jnp.zeros((xb.shape[0], H), xb.dtype), []
        for t in range(xb.shape[1]):
            h, pred = _gru_where_cell(p, h, xb[:, t], with_predicate=True)
            out.append(pred)
        return jnp.stack(out, 1)
    # the check has teeth: the predicate flips between inputs and references
    assert bool(jnp.any(predicates(x)[:, None] != predicates(r)[None]))


@pytest.mark.slow  # compiles the unrolled program twice (~25 s)
def test_scan_matches_the_unrolled_loop(x64):
    """The loop rule is the interpreter on each step: the same scores as the Python-unrolled
    program (whose every step is inlined)."""
    def unrolled(p, xb):
        zeros = jnp.zeros((xb.shape[0], H), xb.dtype)
        h, c = zeros, zeros
        for t in range(xb.shape[1]):
            z = xb[:, t] @ p["wx"] + h @ p["wh"] + p["b"]
            i, f, g, o = jnp.split(z, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return h @ p["out"]
    for mode in ("rescale", "reveal_cancel"):
        np.testing.assert_allclose(np.asarray(_check(lstm, mode, steps=3)),
                                   np.asarray(_check(unrolled, mode, steps=3)),
                                   rtol=1e-10, atol=1e-12)


def test_flax_rnn_lstm_cell_float32():
    """Flax's nn.RNN over an LSTMCell (a scan Flax builds itself, with its carry initialiser
    and parameters broadcast over the steps), small, in float32: the scores sum to the
    model's own Δt within the README's float32 bound."""
    import flax.linen as nn
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 3, 2)), jnp.float32)
    r = jnp.asarray(rng.normal(size=(1, 3, 2)) * 0.3, jnp.float32)

    class Model(nn.Module):
        @nn.compact
        def __call__(self, xb):
            return nn.Dense(2)(nn.RNN(nn.LSTMCell(3))(xb)[:, -1])
    model = Model()
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
    c, d = jaxlift.attribute(model.apply, variables, x, r, target=1, return_delta=True)
    out = jax.jit(model.apply)(variables, jnp.concatenate([x, r]))[:, 1]
    np.testing.assert_allclose(d, out[:2] - out[2], rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(d).min()) > 1e-3
    assert_sums_to_delta(c, d, "float32")


def test_compiled_program_stays_a_loop(x64):
    """The compiled attribution of an LSTM does not grow with the number of steps (it is a
    loop, not an unrolled program): its lowered text is the same size for 10 and 200 steps."""
    p = _params()

    def lowered_size(steps):
        x = jnp.ones((2, steps, D))
        f = jax.jit(lambda xx: jaxlift.attribute(lstm, p, xx, jnp.zeros((1, steps, D)), target=0))
        return len(f.lower(x).as_text())
    small, large = lowered_size(10), lowered_size(200)
    assert large < 1.05 * small, (small, large)


def test_while_loop_with_a_constant_trip_count_runs_as_a_scan(x64):
    """``while c[1] < 3`` and ``fori_loop`` with array bounds lower to ``while``; their trip
    count depends only on constants, so jaxlift counts it and runs the loop as a scan."""
    def fn(p, xb):
        h, _ = jax.lax.while_loop(lambda c: c[1] < 3,
                                  lambda c: (jnp.tanh(c[0] @ p["w"]) * 2, c[1] + 1), (xb, 0))
        h = jax.lax.fori_loop(jnp.int32(0), jnp.int32(2),
                              lambda i, v: jax.nn.relu(v @ p["w"] - 0.1 * i), h)
        return h.sum(-1)

    def unrolled(p, xb):
        h = xb
        for _ in range(3):
            h = jnp.tanh(h @ p["w"]) * 2
        for i in range(2):
            h = jax.nn.relu(h @ p["w"] - 0.1 * i)
        return h.sum(-1)
    rng = np.random.default_rng(3)
    p = {"w": jnp.asarray(rng.normal(size=(3, 3)))}
    x, r = jnp.asarray(rng.normal(size=(4, 3))), jnp.asarray(rng.normal(size=(2, 3)))
    for mode in ("reveal_cancel",):  # the split is carried through both loops
        c, delta = jaxlift.attribute(fn, p, x, r, mode=mode, return_delta=True,
                                     average_refs=False)
        np.testing.assert_allclose(c.sum(-1), delta, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(c, jaxlift.attribute(unrolled, p, x, r, mode=mode,
                                                        average_refs=False),
                                   rtol=1e-10, atol=1e-12)


def test_while_loops_whose_trip_count_is_not_fixed_are_refused():
    x, r = jnp.ones((2, 3), jnp.float32), jnp.zeros((1, 3), jnp.float32)

    def by_parameter(p, xb):
        return jax.lax.fori_loop(0, p["n"], lambda i, h: jnp.tanh(h * 2), xb).sum(-1)
    with pytest.raises(UnsupportedPrimitiveError,
                       match=r"'while' \(at .*test_loops\.py.*trip count depends on parameters"):
        jaxlift.attribute(by_parameter, {"n": jnp.int32(3)}, x, r)

    def by_input(p, xb):
        grow = lambda v: jax.lax.while_loop(lambda h: h.sum() < 10, lambda h: h * 2 + 1, v)  # noqa: E731
        return jax.vmap(grow)(xb).sum(-1)
    with pytest.raises(UnsupportedPrimitiveError,
                       match=r"'while' \(at .*test_loops\.py.*trip count depends on the input"):
        jaxlift.attribute(by_input, None, x, r)


def _logic_cell(p, xb, offset=0.0):
    """A scan whose body compares two live values (a live predicate into select_n), rounds
    (a step), and has a relu kink at ``offset``."""
    def cell(h, x_t):
        a = x_t @ p["wx"][:, :H]
        h = jnp.where(h > a, jnp.tanh(h @ p["wh"][:, :H]), a) + 0.1 * jnp.round(a)
        return jax.nn.relu(h - offset), h.sum(-1)
    h, ys = jax.lax.scan(cell, jnp.zeros((xb.shape[0], H), xb.dtype), jnp.swapaxes(xb, 0, 1))
    return h @ p["out"] + ys.mean(0)[:, None]


@pytest.mark.parametrize("mode", ["rescale", pytest.param("reveal_cancel", marks=pytest.mark.slow)])
def test_live_predicates_steps_and_far_kinks_inside_a_scan_sum_to_delta(x64, mode):
    """Both forward paths of the loop rule (per side in Rescale, together in RevealCancel)
    carry live booleans and steps exactly; a kink 1e4 away from 0 keeps the float64 bound."""
    rng = np.random.default_rng(5)
    p = _params(seed=5)
    x, r = jnp.asarray(rng.normal(size=(3, 5, D))), jnp.asarray(rng.normal(size=(2, 5, D)))
    c, delta = jaxlift.attribute(_logic_cell, p, x, r, mode=mode, target=0,
                                 average_refs=False, return_delta=True)
    assert_sums_to_delta(c, delta)
    assert np.abs(np.asarray(delta)).max() > 1e-3
    far = lambda q, xb: _logic_cell(q, xb + 1e4, offset=1e4)  # noqa: E731
    c, delta = jaxlift.attribute(far, p, x, r, mode=mode, target=0, average_refs=False,
                                 return_delta=True)
    # the README's bound, with the rounding of t's forward pass at 1e4 (κ)
    assert_sums_to_delta(c, delta, kappa=lambda: forward_rounding_scale(far, p, x, r, 0))
    assert np.abs(np.asarray(delta)).max() > 1e-3


def test_half_precision_weights_inside_a_scan_are_explained_in_float32():
    """bfloat16 weights in the body: evaluated in float32, scores within the float32 bound."""
    rng = np.random.default_rng(6)
    p = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), _params(seed=6, dtype=jnp.float32))
    x = jnp.asarray(rng.normal(size=(3, 5, D)), jnp.float32)
    r = jnp.asarray(rng.normal(size=(2, 5, D)), jnp.float32)
    c, delta = jaxlift.attribute(_logic_cell, p, x, r, target=0, average_refs=False,
                                 return_delta=True)
    assert c.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(c)))
    scale = np.maximum(np.abs(np.asarray(c)).sum((2, 3)), np.abs(np.asarray(delta)))
    assert np.all(np.abs(np.asarray(c.sum((2, 3)) - delta)) <= 1e-5 * scale + 1e-6)
