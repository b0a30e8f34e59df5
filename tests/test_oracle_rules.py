"""Value oracles for every rule family: scores worked by hand (in the comments) or by the
paper's formulas in NumPy (tests/oracles.py), not only their sums.

Summation-to-delta is necessary, not sufficient: a rule can move credit from one input to
another and keep ΣC = Δt (min routed like max, a one-sided RevealCancel split, a one-sided
product or select, Δx = 0 read as positive …). Each test below pins the values, so such a
bug fails it; ``benchmarks/mutations.py`` checks that it does."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from oracles import assert_sums_to_delta, forward, mlp_contributions, mlp_multipliers

pytestmark = pytest.mark.usefixtures("x64")  # float64 throughout (tests/conftest.py)

BOTH = ["rescale", "reveal_cancel"]
TOL = dict(rtol=1e-12, atol=1e-12)


def scores(fn, cases, mode="rescale", **kw):
    """Contributions and multipliers of ``fn`` for hand cases ``[(x, r), ...]`` (one program:
    each input with its own reference), after checking ``ΣC = Δt`` with ``Δt`` computed by
    ``fn`` itself."""
    x = jnp.asarray([c[0] for c in cases], jnp.float64)
    r = jnp.asarray([c[1] for c in cases], jnp.float64)
    m, d = jaxlift.multipliers(fn, None, x, r[:, None], mode=mode, return_delta=True, **kw)
    np.testing.assert_allclose(d, fn(None, x) - fn(None, r), rtol=1e-12, atol=1e-12)
    c = np.asarray(m) * np.asarray(x - r)
    assert_sums_to_delta(c, d)
    return c, np.asarray(m)


def contribs(fn, cases, mode="rescale", **kw):
    return scores(fn, cases, mode, **kw)[0]


def blocks(parts, mode="rescale"):
    """:func:`scores` of several blocks of hand cases ``[(fn, cases), ...]`` in one program (one
    compilation): block k reads its own slice of the input and the outputs add up, so each
    block's scores are its own; a block with fewer cases repeats its last. Returns
    ``[(c, m), ...]`` per block, one row per case of the block."""
    n = max(len(cases) for _, cases in parts)
    edges = np.cumsum([0] + [len(cases[0][0]) for _, cases in parts])

    def fn(p, xb):
        return sum(f(p, xb[:, a:b]) for (f, _), a, b in zip(parts, edges[:-1], edges[1:]))

    def row(i, side):
        return [v for _, cases in parts for v in cases[min(i, len(cases) - 1)][side]]
    c, m = scores(fn, [(row(i, 0), row(i, 1)) for i in range(n)], mode)
    return [(c[:len(cases), a:b], m[:len(cases), a:b])
            for (_, cases), a, b in zip(parts, edges[:-1], edges[1:])]


# ------------------------------------------------------------------------------ max and min

def _pool(xb, op, init, stride=2):
    return jax.lax.reduce_window(xb, init, op, (1, 2), (1, stride), "VALID").sum(1)


@pytest.mark.parametrize("mode", BOTH)
def test_max_and_min_routing_by_hand(mode):
    # max credits a rise to the input's argmax and blames a fall on the reference's; min swaps
    # the roles (a rise to the reference's argmin, a fall to the input's). Ties split equally.
    two_min = (lambda p, xb: jnp.minimum(xb[:, 0], xb[:, 1]), [
        # x = (3, 1) → 1, r = (0, 2) → 0, Δy = 1: the reference's argmin is x1, so C = (1, 0),
        # m = (1/3, 0). (Without the swap: (0, 1).)
        ([3, 1], [0, 2]),
        # x = (1, 4) → 1, r = (3, 2) → 2, Δy = −1 is blamed on the input's argmin x1: C = (−1, 0)
        ([1, 4], [3, 2])])
    reduce_max = (lambda p, xb: jnp.max(xb, axis=1), [
        # x → 5 (a tie), r → 3: Δy = 2 to the input's argmaxes, split: C = (0, 1, 1, 0)
        ([1, 5, 5, 0], [2, 0, 0, 3]),
        # x → 2, r → 4 (a tie): Δy = −2 blamed on the reference's argmaxes, split:
        # C = (−1, 0, −1, 0), m = (−1/−3, 0, −1/−4, 0)
        ([1, 2, 0, 0], [4, 0, 4, 0])])
    reduce_min = (lambda p, xb: jnp.min(xb, axis=1), [
        # x → 1, r → 0: Δy = 1 credited to the reference's argmin x1: C = (1, 0, 0, 0)
        ([3, 1, 1, 4], [0, 2, 5, 5]),
        # x → −1 (a tie), r → 0: Δy = −1 blamed on the input's argmins: C = (0, −½, −½, 0)
        ([2, -1, -1, 4], [0, 3, 3, 5])])
    # max-pooling, windows of 2 (x | r):    Δy   routed at    C
    #   (2, 2) | (0, 0)   2 | 0             2    x, tie       (1, 1)
    #   (5, 1) | (1, 3)   5 | 3             2    x            (2, 0)
    #   (1, 4) | (3, 3)   4 | 3             1    x            (0, 1)
    #   (0, 0) | (1, 2)   0 | 2            −2    r            (0, −2)
    #   (1, 0) | (3, 3)   1 | 3            −2    r, tie       (−1, −1)
    max_pool = (lambda p, xb: _pool(xb, jax.lax.max, -jnp.inf), [
        ([2, 2, 5, 1, 1, 4, 0, 0, 1, 0], [0, 0, 1, 3, 3, 3, 1, 2, 3, 3])])
    # overlapping windows (stride 1) over x = (3, 1, 5), r = (0, 4, 0): (3, 1) | (0, 4):
    # Δy = −1 blamed on r's argmax x2; (1, 5) | (4, 0): Δy = 1 to x's argmax x3
    overlapping = (lambda p, xb: _pool(xb, jax.lax.max, -jnp.inf, stride=1), [
        ([3, 1, 5], [0, 4, 0])])
    # min-pooling: (2, 5) | (3, 0): Δy = 2 credited to r's argmin x2 (not x's x1);
    #              (4, 0) | (1, 6): Δy = −1 blamed on x's argmin x4 (not r's x3)
    min_pool = (lambda p, xb: _pool(xb, jax.lax.min, jnp.inf), [([2, 5, 4, 0], [3, 0, 1, 6])])
    got = blocks([two_min, reduce_max, reduce_min, max_pool, overlapping, min_pool], mode)
    want = [[[1, 0], [-1, 0]], [[0, 1, 1, 0], [-1, 0, -1, 0]], [[1, 0, 0, 0], [0, -0.5, -0.5, 0]],
            [[1, 1, 2, 0, 0, 1, 0, -2, -1, -1]], [[0, -1, 1]], [[0, 2, 0, -1]]]
    for (c, _), w in zip(got, want):
        np.testing.assert_allclose(c, w, **TOL)
    np.testing.assert_allclose(got[0][1][0], [1 / 3, 0], **TOL)
    np.testing.assert_allclose(got[1][1][1], [1 / 3, 0, 1 / 4, 0], **TOL)


def _pool_oracle(x, r, window, strides, padding, kind):
    """Preserving routing by brute force over the windows of a 2-D (H, W) map: a rise of
    the window's max (min) to the input's argmaxes (argmins), a fall to the reference's, each
    share split equally among ties; padded positions take no part."""
    pick = np.max if kind == "max" else np.min
    pads = jax.lax.padtype_to_pads(x.shape, window, strides, padding)
    c = np.zeros_like(x)
    out = [(n + lo + hi - w) // s + 1 for n, (lo, hi), w, s in zip(x.shape, pads, window, strides)]
    for oi in range(out[0]):
        for oj in range(out[1]):
            idx = [(i, j) for i in range(oi * strides[0] - pads[0][0],
                                         oi * strides[0] - pads[0][0] + window[0])
                   for j in range(oj * strides[1] - pads[1][0],
                                  oj * strides[1] - pads[1][0] + window[1])
                   if 0 <= i < x.shape[0] and 0 <= j < x.shape[1]]
            xs, rs = np.array([x[p] for p in idx]), np.array([r[p] for p in idx])
            dy = pick(xs) - pick(rs)
            rise = dy > 0 if kind == "max" else dy < 0   # routed at the input's extreme
            side = xs if rise else rs
            ties = [p for p, v in zip(idx, side) if v == pick(side)]
            for p in ties:
                c[p] += dy / len(ties)
    return c


POOLS = [((2, 2), (2, 2), "VALID"), ((3, 3), (2, 2), "SAME"), ((2, 3), (1, 1), "VALID")]


def test_pooling_with_many_ties_against_brute_force():
    """Max-pooling (even channels) and min-pooling (odd channels), non-overlapping and
    overlapping, padded, on small integers (ties everywhere): every window's Δy to the right
    side's extremes, split equally among ties (README: "ties split equally"; JAX's own
    gradient of a pooling gives a tie to one element)."""
    def pool(v, init, op, window, strides, padding):
        return jax.lax.reduce_window(v, init, op, (1, *window), (1, *strides), padding).sum((1, 2))

    def fn(p, xb):
        return sum(pool(xb[..., 2 * k], -jnp.inf, jax.lax.max, *cfg)
                   + pool(xb[..., 2 * k + 1], jnp.inf, jax.lax.min, *cfg)
                   for k, cfg in enumerate(POOLS))
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, size=(3, 5, 6, 2 * len(POOLS))).astype(np.float64)
    r = rng.integers(0, 3, size=(3, 5, 6, 2 * len(POOLS))).astype(np.float64)
    c = contribs(fn, list(zip(x.tolist(), r.tolist())), "rescale")
    for i in range(3):
        for ch in range(2 * len(POOLS)):
            kind = ("max", "min")[ch % 2]
            want = _pool_oracle(x[i, ..., ch], r[i, ..., ch], *POOLS[ch // 2], kind)
            np.testing.assert_allclose(c[i, ..., ch], want, **TOL, err_msg=f"{kind} {POOLS[ch // 2]}")


# -------------------------------------------------------------------- products and quotients

@pytest.mark.parametrize("mode", BOTH)
def test_products_and_quotients_take_the_midpoints(mode):
    # y = a·b: x = (2, 3), r = (1, 1): m_a = (3 + 1)/2, m_b = (2 + 1)/2 ⇒ C = (2, 3)
    prod = (lambda p, xb: xb[:, 0] * xb[:, 1], [([2, 3], [1, 1])])
    # y = a·b as a dot of two live vectors (dot_general): m_a = b̄, m_b = ā. a = (1, 2),
    # b = (3, −1), a0 = (0, 1), b0 = (1, 1): ā = (½, 3/2), b̄ = (2, 0), Δa = (1, 1),
    # Δb = (2, −2): C_a = (2, 0), C_b = (1, −3); Δy = 1 − 1 = 0.
    dot = (lambda p, xb: jnp.einsum("bi,bi->b", xb[:, :2], xb[:, 2:]), [([1, 2, 3, -1], [0, 1, 1, 1])])
    # y = Σ a / b with a vector a = (6, 2) over a scalar b = 2; r: a0 = (1, 1), b0 = 4:
    # m_a = ½(1/2 + 1/4) = 3/8 ⇒ C_a = (15/8, 3/8); m_b = −Σ(a + a0)/(2·b·b0) = −10/16,
    # Δb = −2 ⇒ C_b = 5/4; Δy = 4 − ½ = 7/2. And a / b at x = (6, 3), r = (1, 2):
    # m_a = ½(1/3 + 1/2) = 5/12, m_b = −(6 + 1)/(2·3·2) ⇒ C = (25/12, −7/12), Δy = 3/2.
    quot = (lambda p, xb: (xb[:, :2] / xb[:, 2:3]).sum(1), [([6, 2, 2], [1, 1, 4]),
                                                            ([6, 0, 3], [1, 0, 2])])
    got = blocks([prod, dot, quot], mode)
    want = [[[2, 3]], [[2, 0, 1, -3]], [[15 / 8, 3 / 8, 5 / 4], [25 / 12, 0, -7 / 12]]]
    for (c, _), w in zip(got, want):
        np.testing.assert_allclose(c, w, **TOL)


# ---------------------------------------------------- steps, selects and logic (docs/design.md §12)

@pytest.mark.parametrize("mode", BOTH)
def test_steps_selects_and_logic_by_hand(mode):
    select = (lambda p, xb: jnp.where(xb[:, 0] > 0, xb[:, 1], xb[:, 2]), [
        # the predicate flips (x1: −1 → 1): y = c0 + p·(c1 − c0) with c1 = x2 (taken when
        # true), c0 = x3: m_c0 = m_c1 = ½, m_p = ½[(c1 − c0) + (c1⁰ − c0⁰)]
        # = ½[(5 − 2) + (3 − 7)] = −½, Δp = 1 goes to x1 through the step:
        # C = (−½, ½·2, ½·(−5)) = (−½, 1, −5/2); Δy = −2.
        ([1, 5, 2], [-1, 3, 7]),
        # the predicate holds on both sides: the taken case passes through, C = (0, 2, 0)
        ([1, 5, 2], [2, 3, 7])])
    # a case that is not finite on one side (log of a negative reference): the flip explains
    # all, m_p = Δy/Δp: x = (2, 1) → log 2 + 1, r = (−1, 3) → 3; C = (log 2 − 2, 0)
    logs = (lambda p, xb: jnp.where(xb[:, 0] > 0, jnp.log(xb[:, 0]) + xb[:, 1], xb[:, 1]),
            [([2, 1], [-1, 3])])
    # one live operand: m = Δp/Δx. y = 3·[x1 > ½] + round(x2) + int(x3): x = (1, 2.4, 2.7),
    # r = (0, 0.6, 0.2): the step rises by 1 (C = 3), round goes 1 → 2 (C = 1), int 0 → 2.
    # Two live operands: p = [x4 > x5] is a step of x4 − x5: m_4 = Δp/(Δx4 − Δx5) = −m_5;
    # x = (2, 0), r = (0, 1): Δp = 1, Δx4 − Δx5 = 3 ⇒ C = (2/3, (−1/3)·(−1)) = (2/3, 1/3).
    steps = (lambda p, xb: (3.0 * (xb[:, 0] > 0.5) + jnp.round(xb[:, 1])
                            + xb[:, 2].astype(jnp.int32).astype(jnp.float64)
                            + (xb[:, 3] > xb[:, 4]).astype(jnp.float64)),
             [([1, 2.4, 2.7, 2, 0], [0, 0.6, 0.2, 0, 1])])

    # p = [x1 > 0], q = [x2 > 0]. and = p·q: m_p = q̄, m_q = p̄ (midpoints);
    # or = p + q − p·q: m_p = 1 − q̄; not = 1 − p: m = −1. y = and + 2·or + 4·not:
    def logic_fn(p, xb):
        a, b = xb[:, 0] > 0, xb[:, 1] > 0
        f = lambda v: v.astype(jnp.float64)  # noqa: E731
        return f(a & b) + 2 * f(a | b) + 4 * f(~a)
    logic = (logic_fn, [
        # p 0 → 1, q stays 1: and +1 (m_p = q̄ = 1), or stays 1 (m_p = 1 − q̄ = 0), not −1:
        # C = (1 + 0 − 4, 0) = (−3, 0)
        ([1, 1], [-1, 1]),
        # p 0 → 1, q stays 0: and stays 0 (m_p = q̄ = 0), or +1 (m_p = 1), not −1: C = (−2, 0)
        ([1, -1], [-1, -1]),
        # p 0 → 1, q 1 → 0: and stays 0 but m_p = q̄ = ½, m_q = p̄ = ½; or stays 1,
        # m_p = 1 − q̄ = ½, m_q = ½: C = (½ + 1 − 4, −½ − 1)
        ([1, -1], [-1, 1])])
    got = blocks([select, logs, steps, logic], mode)
    want = [[[-0.5, 1, -2.5], [0, 2, 0]], [[np.log(2) - 2, 0]], [[3, 1, 2, 2 / 3, 1 / 3]],
            [[-3, 0], [-2, 0], [-2.5, -1.5]]]
    for (c, _), w in zip(got, want):
        np.testing.assert_allclose(c, w, **TOL)


# ------------------------------------------------------ RevealCancel: every split, by hand

def _rule_names(fn, shape=(2,)):
    """The registry rules of the live operations of ``fn``'s program (DeepLIFT's view)."""
    from jaxlift.program import build_program
    from jaxlift.rules import registry
    from jaxlift.targets import per_example
    prog, _ = build_program(per_example(fn, None), None,
                            jax.ShapeDtypeStruct(shape, jnp.float64))
    names = {}
    for op in prog.ops:
        if op.is_live and op.eqn is not None:
            rule = registry.lookup(op.primitive, tuple(op.live))
            names[op.primitive] = rule.name if rule is not None else None
    return names


def test_negative_scale_between_two_live_terms_runs_the_scaled_rule():
    # y = relu(−2·x1 + x2 − 1): the scale is not next to the relu (the add of two live terms
    # stands between), so it is the `scaled` rule, which swaps the parts of a negative scale.
    fn = lambda p, xb: jax.nn.relu(-2.0 * xb[:, 0] + xb[:, 1] - 1.0)  # noqa: E731
    assert _rule_names(fn)["mul"] == "scaled"
    # x = (1, 3), r = (0, 0): s = −2·x1 has Δs = −2 from Δx1 = +1: split (0, −2) (swapped);
    # z = s + x2: split (3, −2), z0 = 0; f(z) = relu(z − 1):
    #   Δy⁺ = ½[f(3) − f(0)] + ½[f(1) − f(−2)] = 1,  Δy⁻ = ½[f(−2) − f(0)] + ½[f(1) − f(3)] = −1
    #   m⁺ = 1/3, m⁻ = ½; s's multipliers swap back: m_x1⁺ = −2·m⁻ = −1 ⇒ C = (−1, 3·⅓) = (−1, 1)
    # (Δy = relu(0) − relu(−1) = 0; Rescale's m = 0/1 gives (0, 0).)
    np.testing.assert_allclose(contribs(fn, [([1, 3], [0, 0])], "reveal_cancel"), [[-1, 1]],
                               **TOL)
    np.testing.assert_allclose(contribs(fn, [([1, 3], [0, 0])], "rescale"), [[0, 0]], **TOL)


def test_splits_through_sub_add_and_a_fused_negative_scale():
    # z = (x1 − x2) + (x3 − x4); sub swaps its subtrahend's parts, add adds the splits.
    # x = (2, 1, 0, 3), r = 0: x1 − x2 → (2, −1), x3 − x4 → (0, −3), z → (2, −4), z0 = 0.
    # f(z) = relu(z − 1): Δy⁺ = ½[f(2) − f(0)] + ½[f(−2) − f(−4)] = ½,
    #                     Δy⁻ = ½[f(−4) − f(0)] + ½[f(−2) − f(2)] = −½;  m⁺ = ¼, m⁻ = ⅛.
    # C = (2·¼, −1·⅛, 0, −3·⅛); multipliers (¼, −⅛, (¼ + ⅛)/2, −⅛): x3 has Δx = 0 and takes
    # the mean of its two multipliers.
    # Plus relu(−1.5·(x5..6·W) + 0.3): the scale is fused into the nonlinearity; RevealCancel on
    # f(u) = relu(−1.5u + 0.3) equals the paper's rule on z = x·(−1.5W) + 0.3 (NumPy oracle).
    w = np.array([[1.0, -2.0], [0.5, 1.5]])
    fn = lambda p, xb: (jax.nn.relu((xb[:, 0] - xb[:, 1]) + (xb[:, 2] - xb[:, 3]) - 1.0)  # noqa: E731
                        + jax.nn.relu(-1.5 * (xb[:, 4:] @ w) + 0.3).sum(axis=1))
    x, r = [2, 1, 0, 3, 1.0, -1.0], [0, 0, 0, 0, 0.2, 0.4]
    c, m = scores(fn, [(x, r)], "reveal_cancel")
    fused = mlp_contributions([(-1.5 * w, np.full(2, 0.3), "relu")], np.ones(2), x[4:], r[4:],
                              "reveal_cancel")
    np.testing.assert_allclose(c[0], [0.5, -0.125, 0, -0.375, *fused], **TOL)
    np.testing.assert_allclose(m[0, :4], [0.25, -0.125, 0.1875, -0.125], **TOL)


def _act_np(name):
    return {"tanh": np.tanh, "softplus": lambda v: np.logaddexp(0, v),
            "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
            "elu": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0)))}[name]


ACT_NAMES = ("tanh", "softplus", "sigmoid", "elu")
ACT_JAX = (jnp.tanh, jax.nn.softplus, jax.nn.sigmoid, jax.nn.elu)


@pytest.mark.parametrize("mode", BOTH)
def test_reveal_cancel_split_of_each_activation_by_hand(mode):
    # y_a = f_a(x1 − x2 + b) from a dense layer, one pair of inputs per activation: x1 carries
    # Δz⁺ and x2 carries Δz⁻, so C(x1) = Δy⁺ and C(x2) = Δy⁻ of the paper's rule; Rescale gives
    # C = (Δy/Δz)·(Δz⁺, Δz⁻). x = (1.5, 2.5), r = (−0.5, 0), b = −0.3: z0 = −0.8, Δz± = 2, −2.5.
    b = -0.3
    diff = jnp.array([1.0, -1.0])

    def fn(p, xb):
        return sum(f(xb[:, 2 * i:2 * i + 2] @ diff + b) for i, f in enumerate(ACT_JAX))
    c = contribs(fn, [([1.5, 2.5] * 4, [-0.5, 0.0] * 4)], mode)[0]
    z0, zp, zn = -0.5 + b, 2.0, -2.5
    want = []
    for name in ACT_NAMES:
        f = _act_np(name)
        if mode == "reveal_cancel":
            yp = 0.5 * (f(z0 + zp) - f(z0)) + 0.5 * (f(z0 + zp + zn) - f(z0 + zn))
            yn = 0.5 * (f(z0 + zn) - f(z0)) + 0.5 * (f(z0 + zp + zn) - f(z0 + zp))
        else:
            m = (f(z0 + zp + zn) - f(z0)) / (zp + zn)
            yp, yn = m * zp, m * zn
        want += [yp, yn]
    np.testing.assert_allclose(c, want, **TOL)


def test_reveal_cancel_falls_back_to_rescale_where_f_is_undefined():
    # y = sqrt(z), z = x1 − x2 + 1 (a dense layer): x = (3, 2), r = 0: z0 = 1, Δz⁺ = 3,
    # Δz⁻ = −2; sqrt(z0 + Δz⁻) = sqrt(−1) is undefined, so the element falls back to Rescale:
    # Δy± = (Δy/Δz)·Δz± with Δy/Δz = (√2 − 1)/1.
    fn = lambda p, xb: jnp.sqrt(xb @ jnp.array([1.0, -1.0]) + 1.0)  # noqa: E731
    m = np.sqrt(2.0) - 1.0
    np.testing.assert_allclose(contribs(fn, [([3, 2], [0, 0])], "reveal_cancel"),
                               [[3 * m, -2 * m]], **TOL)


# ---------------------------------------------- the dense RevealCancel backward at Δx = 0

@pytest.mark.parametrize("mode", BOTH)
def test_dense_backward_where_an_input_does_not_move(mode):
    # y = relu(x·w), w = (1, −1, 1); x = (0, 4, 1), r = (0, 0, 1): z0 = 1, z = −3.
    # RevealCancel: terms w_iΔx_i = (0, −4, 0): Δz⁺ = 0, Δz⁻ = −4.
    #   Δy⁻ = relu(−3) − relu(1) = −1, m⁻ = ¼;
    #   Δz⁺ = 0: m⁺ is its limit ½[f'(z0) + f'(z0 + Δz⁻)] = ½[1 + 0] = ½.
    # Multipliers: x2 (Δx > 0, w < 0: a negative term) w·m⁻ = −¼; x1 and x3 do not move (Δx = 0,
    # no term): w·(m⁺ + m⁻)/2 = 3/8 — neither the positive nor the negative side alone.
    # Rescale: m = Δy/Δz = ¼ for every input: w·¼.
    fn = lambda p, xb: jax.nn.relu(xb @ jnp.array([1.0, -1.0, 1.0]))  # noqa: E731
    c, m = scores(fn, [([0, 4, 1], [0, 0, 1])], mode)
    np.testing.assert_allclose(c, [[0, -1, 0]], **TOL)
    want = [3 / 8, -1 / 4, 3 / 8] if mode == "reveal_cancel" else [1 / 4, -1 / 4, 1 / 4]
    np.testing.assert_allclose(m, [want], **TOL)


def _relu_mlp(seed, d=6, h=10, o=3):
    rng = np.random.default_rng(seed)
    w1, b1 = rng.normal(size=(d, h)), rng.normal(size=h) * 0.5
    w2, b2 = rng.normal(size=(h, o)) / np.sqrt(h), rng.normal(size=o) * 0.5
    v = rng.normal(size=o)
    layers = [(w1, b1, "relu"), (w2, b2, "relu")]
    params = tuple(jnp.asarray(a) for a in (w1, b1, w2, b2, v))
    return layers, v, params, rng


def _relu_mlp_fn(p, xb):
    w1, b1, w2, b2, v = p
    return jax.nn.relu(jax.nn.relu(xb @ w1 + b1) @ w2 + b2) @ v


@pytest.mark.parametrize("mode", BOTH)
def test_two_layer_relu_mlp_matches_the_papers_rules_pair_by_pair(mode):
    """Contributions and multipliers of every (input, reference) pair against the paper's
    rules in NumPy (tests/oracles.py). The pairs include inputs that do not move (Δx = 0)
    and hidden units that end where they started (Δh = 0) although their split does not
    (Δh⁺ = −Δh⁻ ≠ 0): the multipliers there decide the scores below them."""
    layers, v, params, rng = _relu_mlp(7)
    x = rng.normal(size=(4, 6))
    refs = rng.normal(size=(4, 3, 6))
    refs[:, :, :2] = x[:, None, :2]            # inputs 1 and 2 equal their references
    c, d = jaxlift.attribute(_relu_mlp_fn, params, jnp.asarray(x), jnp.asarray(refs),
                             mode=mode, average_refs=False, return_delta=True)
    m = jaxlift.multipliers(_relu_mlp_fn, params, jnp.asarray(x), jnp.asarray(refs), mode=mode,
                            average_refs=False)
    assert_sums_to_delta(c, d)
    np.testing.assert_allclose(d, forward(layers, x)[:, None] @ v - forward(layers, refs) @ v,
                               rtol=1e-12, atol=1e-12)
    cancelled = 0
    for i in range(4):
        for k in range(3):
            want_m, parts = mlp_multipliers(layers, v, x[i], refs[i, k], mode)
            np.testing.assert_allclose(m[i, k], want_m, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(c[i, k], want_m * (x[i] - refs[i, k]), rtol=1e-10,
                                       atol=1e-12)
            if mode == "reveal_cancel":
                _, _, dh, hp, _ = parts[0]
                cancelled += int(np.sum((dh == 0) & (hp != 0)))
    if mode == "reveal_cancel":
        assert cancelled >= 3, cancelled  # the check has teeth


# --------------------------------------------------- Rescale: Δx = 0 and the near-zero guard

@pytest.mark.parametrize("mode", BOTH)
def test_at_the_input_itself_multipliers_are_the_gradient(mode):
    # Δx = 0 everywhere: every nonlinearity takes its slope f'(x) (the limit of Δy/Δx), so the
    # multipliers are ∂t/∂x exactly — for relu too, away from its kink.
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(4, 5)), rng.normal(size=(5, 2))

    def fn(p, xb):
        h = jax.nn.softplus(xb @ w1) * jnp.tanh(xb @ w1[:, ::-1])
        return jax.nn.relu(h @ w2 + 0.1)[:, 0] + jax.nn.sigmoid(h @ w2)[:, 1]
    x = jnp.asarray(rng.normal(size=(3, 4)))
    m = jaxlift.multipliers(fn, None, x, x[:, None], mode=mode)  # each input its own ref
    grad = jax.vmap(jax.grad(lambda v: fn(None, v[None])[0]))(x)
    assert float(jnp.abs(grad).min()) > 1e-3
    np.testing.assert_allclose(m, grad, rtol=1e-12, atol=1e-14)


def test_a_kink_inside_a_tiny_interval_far_from_zero_keeps_its_share():
    # f(x) = x + relu(x − 10⁴) with x = 10⁴ + 10⁻⁶, r = 10⁴ − 3·10⁻⁶: Δy = Δx + 10⁻⁶ = 5·10⁻⁶,
    # while the slope ½[f'(x) + f'(r)] = 3/2 would give 6·10⁻⁶: the near-zero guard must keep
    # the quotient (the slope loses 10⁻⁶, far more than the rounding of y ≈ 2·10⁴).
    fn = lambda p, xb: xb[:, 0] + jax.nn.relu(xb[:, 0] - 1e4)  # noqa: E731
    x, r = 1e4 + 1e-6, 1e4 - 3e-6
    want = (x + max(x - 1e4, 0)) - (r + max(r - 1e4, 0))
    c = contribs(fn, [([x], [r])])[0]
    assert abs(c[0] - want) <= 64 * np.finfo(np.float64).eps * 2e4, (c[0], want)
    assert abs(want - 5e-6) < 1e-10
