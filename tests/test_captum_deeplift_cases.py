"""The peer-suite view: the cases of Captum's own DeepLift tests (basic, classification, layer,
neuron, DeepLiftShap), run on Captum and on jaxlift with the same weights, float64 on both sides.

Captum's models come from ``captum.testing.helpers``; their torch weights are copied into plain
JAX functions (``x @ W.T + b``; NCHW → NHWC for convolutions). Wherever Captum sums to delta
(its convergence delta is ~0), jaxlift ``mode="rescale"`` must equal it to 1e-8. Where Captum
does not, the test asserts Captum's delta, asserts jaxlift is exact, and where the cause is
known asserts *what* Captum computes instead:

* two hooked modules back to back (ReLU → Sigmoid, ReLU → MaxPool, …): the upstream module's
  hook reads the downstream module's plain gradient at x, recorded before the downstream hook
  replaced it with its DeepLIFT multiplier (``test_adjacent_nonlinearities_*``);
* ``nn.Softmax``: Captum's rule is Rescale on the target entry alone, minus a mean taken over
  the whole batch (``test_softmax_classifier_*``);
* LayerDeepLift on a nonlinearity's *input*: Captum takes the gradient there before that
  module's hook rescales it, i.e. gradient × Δ (``test_layer_deeplift_on_a_relus_input_*``);
* a module used twice: Captum refuses (RuntimeError); jaxlift equals Captum on the same model
  with the module duplicated (``test_reused_relu_*``).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")
bm = pytest.importorskip("captum.testing.helpers.basic_models")
cm = pytest.importorskip("captum.testing.helpers.classification_models")
nn = torch.nn

# Captum warns on every DeepLift call that it sets hooks; that is not what these tests check.
pytestmark = [pytest.mark.filterwarnings("ignore:Setting forward, backward hooks"),
              pytest.mark.filterwarnings("ignore:Input Tensor .* did not already require")]

TOL = 1e-8          # parity where Captum is exact
EXACT = 1e-10       # summation-to-delta, either side, on O(1)–O(100) outputs


@pytest.fixture(autouse=True)
def float64_both_sides(x64):
    prev = torch.get_default_dtype()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(prev)


# ---------------------------------------------------------------------------------------------
# helpers

def params_of(model) -> dict:
    """A torch module's weights as a dict of JAX arrays, keyed as in its state_dict."""
    return {k: jnp.asarray(v.detach().numpy()) for k, v in model.state_dict().items()}


def dense(p, name, x):
    out = x @ p[name + ".weight"].T
    return out + p[name + ".bias"] if name + ".bias" in p else out


def randomize(model, seed, scale=1.0):
    """Captum's helper models with random weights (units on both sides of 0)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for prm in model.parameters():
            prm.copy_(torch.randn_like(prm) * scale)
    return model.double().eval()


def tt(*arrays):
    return tuple(torch.tensor(np.asarray(a)) for a in arrays)


def npy(t):
    return t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def captum(method, *args, **kw):
    """Run a Captum attribution; return (tuple of numpy attributions, numpy delta or None)."""
    out = method.attribute(*args, **kw)
    attrs, delta = out if kw.get("return_convergence_delta") else (out, None)
    attrs = attrs if isinstance(attrs, tuple) else (attrs,)
    return tuple(npy(a) for a in attrs), None if delta is None else npy(delta)


def flat_sum(tree):
    return sum(np.asarray(l).reshape(np.shape(l)[0], -1).sum(1)
               for l in jax.tree_util.tree_leaves(tree))


def assert_same(got, want, tol=TOL):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))


def assert_exact(scores, delta, tol=EXACT):
    """jaxlift sums to its Δt."""
    np.testing.assert_allclose(flat_sum(scores), np.asarray(delta).reshape(-1), rtol=0,
                               atol=tol * max(1.0, np.abs(delta).max()))


_JITTED: dict = {}


def attribute(fn, *args, **kwargs):
    """``jaxlift.attribute`` on ``jax.jit(fn)`` (one wrapper per ``fn``, so that jaxlift's
    compilation cache still hits). jaxlift traces through the jit all the same; its check that
    ``fn`` keeps the examples of a batch apart then runs ``fn`` compiled instead of op by op,
    which took about a fifth of this file's time on these small models."""
    if fn not in _JITTED:
        _JITTED[fn] = jax.jit(fn)
    return jaxlift.attribute(_JITTED[fn], *args, **kwargs)


def gather(all_targets, targets):
    """Rows of jaxlift's ``target="all"`` scores ``(N, T, ...)``, one target per example."""
    a = np.asarray(all_targets)
    return a[np.arange(len(targets)), np.asarray(targets)]


# ---------------------------------------------------------------------------------------------
# basic: test_deeplift_basic's relu / tanh / linear models

def relu_model(p, xs):      # ReLUDeepLiftModel with its default x3 = 2
    x1, x2 = xs
    return 2 * jax.nn.relu(x1) + 2 * jax.nn.relu(x2 - 1.5)


def tanh_model(p, xs):      # TanhDeepLiftModel
    x1, x2 = xs
    return 2 * jnp.tanh(x1) + 2 * jnp.tanh(x2 - 1.5)


@pytest.mark.parametrize("name", ["relu", "tanh"])
@pytest.mark.parametrize("baseline", ["zero", "scalar", "per_example"])
def test_relu_tanh_models_two_inputs(name, baseline):
    torch_model, fn = {"relu": (bm.ReLUDeepLiftModel(), relu_model),
                       "tanh": (bm.TanhDeepLiftModel(), tanh_model)}[name]
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(scale=2, size=(2, 4, 3))
    if baseline == "per_example":
        r1, r2 = rng.normal(size=(2, 4, 3))
        c_base = tt(r1, r2)
        refs = (jnp.asarray(r1)[:, None], jnp.asarray(r2)[:, None])    # (N, 1, 3) per input
    else:
        s1, s2 = (0.0, 0.0) if baseline == "zero" else (0.5, -1.0)
        c_base = (s1, s2)                                               # Captum's scalars
        refs = (jnp.full((1, 3), s1), jnp.full((1, 3), s2))             # one shared reference
    want, cdelta = captum(captum_attr.DeepLift(torch_model), tt(x1, x2), c_base, target=1,
                          return_convergence_delta=True)
    got, delta = attribute(fn, None, (jnp.asarray(x1), jnp.asarray(x2)), refs,
                           target=1, mode="rescale", return_delta=True)
    for g, w in zip(got, want):
        assert_same(g, w)
    assert np.abs(cdelta).max() < EXACT
    assert_exact(got, delta)
    # Δt is the model's own output difference (torch forward on x and on the baseline)
    r1, r2 = (np.broadcast_to(np.asarray(r)[:, 0] if r.ndim == 3 else np.asarray(r), x1.shape)
              for r in refs)
    with torch.no_grad():
        out = npy(torch_model(*tt(x1, x2))) - npy(torch_model(*tt(r1, r2)))
    np.testing.assert_allclose(delta, out[:, 1], rtol=1e-12, atol=1e-12)


def test_relu_linear_model_with_additional_forward_arg():
    """ReLULinearModel(x1, x2, x3): l3(relu([l1 x1, x3 · l2 x2])), Captum's fixed weights, x3
    passed as an additional forward argument (closed over on the jaxlift side)."""
    model = bm.ReLULinearModel().double()
    p = params_of(model)

    def fn(p, xs, x3=3.0):
        h = jnp.concatenate([dense(p, "l1", xs[0]), x3 * dense(p, "l2", xs[1])], axis=1)
        return dense(p, "l3", jax.nn.relu(h))
    rng = np.random.default_rng(1)
    x1, x2, r1, r2 = rng.normal(scale=2, size=(4, 5, 3))
    want, cdelta = captum(captum_attr.DeepLift(model), tt(x1, x2), tt(r1, r2), target=0,
                          additional_forward_args=(3.0,), return_convergence_delta=True)
    got, delta = attribute(fn, p, (jnp.asarray(x1), jnp.asarray(x2)),
                           (jnp.asarray(r1)[:, None], jnp.asarray(r2)[:, None]),
                           target=0, return_delta=True)
    for g, w in zip(got, want):
        assert_same(g, w)
    assert np.abs(cdelta).max() < EXACT
    assert_exact(got, delta)
    # both relus straddle somewhere: the case is not linear in disguise
    h = np.concatenate([x1 @ npy(model.l1.weight).T, 3 * x2 @ npy(model.l2.weight).T], 1)
    h0 = np.concatenate([r1 @ npy(model.l1.weight).T, 3 * r2 @ npy(model.l2.weight).T], 1)
    assert np.any((h > 0) != (h0 > 0))


def test_linear_models_equal_the_closed_form():
    """BasicLinearModel (cat(x1, x2) → 7 → 1) and BasicLinearModel_Multilayer (4 → 3 → 2, no
    bias): on linear models DeepLIFT is Δx · w on both sides."""
    lin = randomize(bm.BasicLinearModel(), 2)
    p = params_of(lin)
    rng = np.random.default_rng(2)
    x1, r1 = rng.normal(size=(2, 3, 3))
    x2, r2 = rng.normal(size=(2, 3, 4))
    want, cdelta = captum(captum_attr.DeepLift(lin), tt(x1, x2), tt(r1, r2),
                          return_convergence_delta=True)
    got = attribute(lambda p, xs: dense(p, "linear", jnp.concatenate(xs, -1)), p,
                    (jnp.asarray(x1), jnp.asarray(x2)),
                    (jnp.asarray(r1)[:, None], jnp.asarray(r2)[:, None]), target=0)
    w = npy(lin.linear.weight)[0]
    for g, c, dx, wi in zip(got, want, (x1 - r1, x2 - r2), (w[:3], w[3:])):
        assert_same(g, c)
        assert_same(g, dx * wi)
    assert np.abs(cdelta).max() < EXACT

    ml = randomize(bm.BasicLinearModel_Multilayer(4, 3, 2), 3)
    p = params_of(ml)
    x, r = rng.normal(size=(2, 5, 4))
    (want,), cdelta = captum(captum_attr.DeepLift(ml), tt(x), tt(r), target=1,
                             return_convergence_delta=True)
    got = attribute(lambda p, x: dense(p, "linear2", dense(p, "linear1", x)), p,
                    jnp.asarray(x), jnp.asarray(r)[:, None], target=1)
    assert_same(got, want)
    assert_same(got, (x - r) * (npy(ml.linear2.weight) @ npy(ml.linear1.weight))[1])
    assert np.abs(cdelta).max() < EXACT


def multilayer(p, x, marks=False):
    """BasicModel_MultiLayer: linear0 (identity) → linear1 → relu → linear2 (``marks``: with
    jaxlift layer markers on linear1's and the relu's outputs)."""
    h = dense(p, "linear1", dense(p, "linear0", x))
    if marks:
        h = jaxlift.layer(h, "linear1")
    a = jax.nn.relu(h)
    if marks:
        a = jaxlift.layer(a, "relu")
    return dense(p, "linear2", a)


def multilayer_marked(p, x):
    return multilayer(p, x, marks=True)


def test_three_input_tensors_multilayer_model():
    """BasicModel_MultiLayer_MultiInput: model(scale · (x1 + x2 + x3)), Captum's fixed weights,
    three input tensors (a 3-tuple pytree in jaxlift) and ``scale`` as a forward argument."""
    model = bm.BasicModel_MultiLayer_MultiInput().double()
    p = params_of(model.model)
    rng = np.random.default_rng(4)
    xs = rng.normal(scale=2, size=(3, 6, 3))
    rs = rng.normal(scale=0.5, size=(3, 1, 3))
    want, cdelta = captum(captum_attr.DeepLift(model), tt(*xs),
                          tt(*np.repeat(rs, 6, axis=1)), target=0,
                          additional_forward_args=(2,), return_convergence_delta=True)
    got, delta = attribute(lambda p, x: multilayer(p, 2 * (x[0] + x[1] + x[2])), p,
                           tuple(jnp.asarray(a) for a in xs),
                           tuple(jnp.asarray(a) for a in rs), target=0,
                           return_delta=True)
    for g, w in zip(got, want):
        assert_same(g, w)
    assert np.abs(cdelta).max() < EXACT
    assert_exact(got, delta)
    assert not np.allclose(want[0], 0)


def test_reused_relu_captum_refuses_jaxlift_equals_the_unshared_model():
    """BasicModelWithReusedModules: one ReLU module applied twice. Captum raises (its hooks keep
    one input/output per module); jaxlift sees two relu primitives and is exact, and equals
    Captum on the same weights with the ReLU module duplicated."""
    model = randomize(bm.BasicModelWithReusedModules(), 5)
    rng = np.random.default_rng(5)
    x, r = rng.normal(scale=2, size=(2, 4, 3))
    with pytest.raises(RuntimeError, match="used more than once"):
        captum_attr.DeepLift(model).attribute(*tt(x), baselines=tt(r)[0], target=1)

    class Unshared(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.lin1, self.relu1, self.lin2, self.relu2 = m.lin1, nn.ReLU(), m.lin2, nn.ReLU()

        def forward(self, x):
            return self.relu2(self.lin2(self.relu1(self.lin1(x))))
    (want,), cdelta = captum(captum_attr.DeepLift(Unshared(model)), tt(x), tt(r), target=1,
                             return_convergence_delta=True)
    p = params_of(model)
    got, delta = attribute(
        lambda p, x: jax.nn.relu(dense(p, "lin2", jax.nn.relu(dense(p, "lin1", x)))), p,
        jnp.asarray(x), jnp.asarray(r)[:, None], target=1, return_delta=True)
    assert np.abs(cdelta).max() < EXACT
    assert_same(got, want)
    assert_exact(got, delta)
    assert np.abs(delta).max() > 0.1


# ---------------------------------------------------------------------------------------------
# classification: test_deeplift_classification's sigmoid / softmax / max-pool models

def sigmoid_model(p, x):    # SigmoidModel: lin1 → relu → lin2 → sigmoid
    return jax.nn.sigmoid(dense(p, "lin2", jax.nn.relu(dense(p, "lin1", x))))


def softmax_model(p, x):    # SoftmaxModel: lin1 → relu → lin2 → relu → lin3 → softmax
    h = jax.nn.relu(dense(p, "lin2", jax.nn.relu(dense(p, "lin1", x))))
    return jax.nn.softmax(dense(p, "lin3", h), axis=-1)


def test_sigmoid_classifier_one_and_many_targets():
    """SigmoidModel(5, 8, 3): Captum's Sigmoid rule is Rescale, as jaxlift's: the post-sigmoid
    output agrees for one target and for a different target per example (``target="all"``
    gathered)."""
    model = randomize(cm.SigmoidModel(5, 8, 3), 6, scale=1.5)
    p = params_of(model)
    rng = np.random.default_rng(6)
    x, r = rng.normal(scale=2, size=(2, 4, 5))
    dl = captum_attr.DeepLift(model)
    (one,), cdelta1 = captum(dl, tt(x), tt(r), target=2, return_convergence_delta=True)
    targets = [0, 2, 1, 0]
    (many,), cdelta2 = captum(dl, tt(x), tt(r), target=targets, return_convergence_delta=True)
    got, delta = attribute(sigmoid_model, p, jnp.asarray(x), jnp.asarray(r)[:, None],
                           target="all", return_delta=True)
    assert np.asarray(got).shape == (4, 3, 5)
    assert_same(np.asarray(got)[:, 2], one)
    assert_same(gather(got, targets), many)
    assert np.abs(cdelta1).max() < EXACT and np.abs(cdelta2).max() < EXACT
    for t in range(3):
        assert_exact(np.asarray(got)[:, t], np.asarray(delta)[:, t])


@pytest.mark.slow  # a ConvNet / softmax model compiled for several targets
def test_softmax_classifier_captum_rule_differs_from_rescale_through_softmax():
    """SoftmaxModel(5, 6, 4), a different target per example. Captum's nn.Softmax rule gives
    the logits the multiplier ``m_b·e_t − (Σ_b' m_b')/(B·C)`` with ``m_b = Δs_t/Δz_t`` (Rescale
    on the target entry alone, then the mean over *every* entry of the batch subtracted). So

        captum_b = m_b · A(z_t)_b − mean_b'(m_b') · A(mean_j z_j)_b

    with ``A`` the Rescale scores of the logits (jaxlift, to 1e-8): not summation-to-delta
    (Captum's delta is far from 0), and an example's scores depend on the rest of the batch.
    jaxlift through the softmax is exact."""
    model = randomize(cm.SoftmaxModel(5, 6, 4), 7, scale=1.5)
    p = params_of(model)
    rng = np.random.default_rng(7)
    x, r = rng.normal(scale=2, size=(2, 3, 5))
    targets = [0, 3, 1]
    dl = captum_attr.DeepLift(model)
    (want,), cdelta = captum(dl, tt(x), tt(r), target=targets, return_convergence_delta=True)
    refs = jnp.asarray(r)[:, None]

    probs, pdelta = attribute(softmax_model, p, jnp.asarray(x), refs, target="all",
                              return_delta=True)
    for t in range(4):
        assert_exact(np.asarray(probs)[:, t], np.asarray(pdelta)[:, t])
    assert np.abs(cdelta).max() > 5e-3                   # Captum: not summation-to-delta

    logits_fn = jaxlift.pre_activation(softmax_model)        # cut at the softmax's input
    logit_scores = np.asarray(attribute(logits_fn, p, jnp.asarray(x), refs,
                                        target="all"))          # (N, C, 5)
    with torch.no_grad():
        logits = lambda v: model.lin3(model.relu2(model.lin2(model.relu1(model.lin1(v)))))  # noqa: E731
        z, z0 = npy(logits(*tt(x))), npy(logits(*tt(r)))
        s, s0 = npy(model(*tt(x))), npy(model(*tt(r)))
    rows = np.arange(3)
    m = (s - s0)[rows, targets] / (z - z0)[rows, targets]
    expected = (m[:, None] * gather(logit_scores, targets)
                - m.mean() * logit_scores.mean(axis=1))
    assert_same(want, expected)
    assert np.abs(want - gather(probs, targets)).max() > 1e-2   # ≠ Rescale through softmax

    # batch dependence: example 0 alone gets m_0 instead of the batch mean in the second term,
    # i.e. m_0 times the scores of logit t − mean logit (jaxlift.softmax_normalized(t))
    (alone,), _ = captum(dl, tt(x[:1]), tt(r[:1]), target=targets[0],
                         return_convergence_delta=True)
    normalized = logit_scores[0, targets[0]] - logit_scores[0].mean(0)
    assert_same(alone[0], m[0] * normalized)
    assert np.abs(alone - want[:1]).max() > 1e-3


def test_linear_maxpool_linear_captum_max_rule_is_jaxlift_preserving():
    """LinearMaxPoolLinearModel (identity → MaxPool1d(4) → ×1) with Captum's test baselines: its
    max-pool rule (Δy⁺ to the input's argmax, Δy⁻ to the reference's) is jaxlift's
    ``max_mode="preserving"``; ``"gradient"`` (the original deeplift's) is not exact here."""
    model = bm.LinearMaxPoolLinearModel().double()
    p = params_of(model)

    def fn(p, x):
        h = dense(p, "lin1", x).max(axis=-1, keepdims=True)
        return dense(p, "lin2", h)
    rng = np.random.default_rng(8)
    x = rng.normal(scale=4, size=(2, 4))
    r = np.array([[1.0, 2.0, 3.0, 9.0], [4.0, 8.0, 6.0, 7.0]])
    (want,), cdelta = captum(captum_attr.DeepLift(model), tt(x), tt(r), target=0,
                             return_convergence_delta=True)
    refs = jnp.asarray(r)[:, None]
    got, delta = attribute(fn, p, jnp.asarray(x), refs, target=0, return_delta=True)
    assert_same(got, want)
    assert np.abs(cdelta).max() < EXACT
    assert_exact(got, delta)
    # the input's argmax differs from the reference's: the gradient rule misses Δt there
    assert not np.array_equal(x.argmax(1), r.argmax(1))
    grad_rule, gdelta = attribute(fn, p, jnp.asarray(x), refs, target=0,
                                  max_mode="gradient", return_delta=True)
    assert np.abs(flat_sum(grad_rule) - np.asarray(gdelta)).max() > 0.1


@pytest.mark.slow  # a ConvNet / softmax model compiled for several targets
def test_convnet_classifier_captum_not_exact_jaxlift_exact():
    """BasicModel_ConvNet (conv → relu → maxpool → conv → relu → maxpool → fc → relu → fc →
    softmax) with random weights, a different target per example: each ReLU sits right before
    a MaxPool and the output is an nn.Softmax, so Captum's delta is far from 0; jaxlift (NHWC,
    same weights) sums to Δt for every target."""
    model = randomize(bm.BasicModel_ConvNet(), 9, scale=0.7)
    p = params_of(model)
    dn = ("NHWC", "HWIO", "NHWC")

    def conv(x, name):
        k = p[name + ".weight"].transpose(2, 3, 1, 0)
        return jax.lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=dn) \
            + p[name + ".bias"]

    def pool(h):
        return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1),
                                     "VALID")

    def fn(p, x):
        h = pool(jax.nn.relu(conv(x, "conv1")))
        h = pool(jax.nn.relu(conv(h, "conv2")))
        h = jax.nn.relu(dense(p, "fc1", h.reshape(h.shape[0], 4)))   # 1×1 spatial: no reorder
        return jax.nn.softmax(dense(p, "fc2", h), axis=-1)
    rng = np.random.default_rng(9)
    x, r = rng.normal(scale=2, size=(2, 3, 1, 10, 10))
    targets = [1, 7, 4]
    (want,), cdelta = captum(captum_attr.DeepLift(model), tt(x), tt(r), target=targets,
                             return_convergence_delta=True)
    got, delta = attribute(fn, p, jnp.asarray(x).transpose(0, 2, 3, 1),
                           jnp.asarray(r).transpose(0, 2, 3, 1)[:, None],
                           target="all", return_delta=True)
    got, delta = gather(got, targets), gather(delta, targets)
    assert_exact(got, delta)
    with torch.no_grad():                                # the same function on both sides
        out = npy(model(*tt(x))) - npy(model(*tt(r)))
    np.testing.assert_allclose(delta, out[np.arange(3), targets], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(flat_sum(want) - delta, cdelta, atol=1e-12)  # Captum's own Δt
    assert np.abs(cdelta).max() > 1e-3
    assert np.abs(delta).max() > 1e-3


# ---------------------------------------------------------------------------------------------
# why Captum misses summation-to-delta next to a max-pool: adjacent hooked modules

class LinReluSigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.relu, self.sig, self.out = (nn.Linear(4, 3), nn.ReLU(), nn.Sigmoid(),
                                                   nn.Linear(3, 1))

    def forward(self, x):
        return self.out(self.sig(self.relu(self.lin(x))))


class LinReluPool(nn.Module):
    """lin → relu → MaxPool1d(2) → out; ``view_between`` puts the unsqueeze the pool needs
    between the relu and the pool (the same function, but no tensor shared by the two hooks)."""

    def __init__(self, view_between=False):
        super().__init__()
        self.lin, self.relu, self.pool, self.out = (nn.Linear(8, 8), nn.ReLU(), nn.MaxPool1d(2),
                                                    nn.Linear(4, 1))
        self.view_between = view_between

    def forward(self, x):
        if self.view_between:
            h = self.pool(self.relu(self.lin(x))[:, None])
        else:
            h = self.pool(self.relu(self.lin(x)[:, None]))
        return self.out(h[:, 0])


def test_adjacent_nonlinearities_captum_uses_the_plain_downstream_gradient():
    """ReLU → Sigmoid and ReLU → MaxPool1d (one tensor between two hooked modules). Captum's
    ReLU hook reads the gradient recorded on its output tensor before the next module's hook
    replaces it: it multiplies its Rescale multiplier by the downstream module's plain gradient
    at x (σ'(relu(h)), or 1 at the input's argmax) instead of that module's DeepLIFT
    multiplier. The test rebuilds exactly that (to 1e-12) and checks jaxlift is exact. With a
    view between the ReLU and the pool (the same function), Captum is exact and equals jaxlift."""
    rng = np.random.default_rng(10)
    for model_cls, downstream in ((LinReluSigmoid, "sigmoid"), (LinReluPool, "maxpool")):
        model = randomize(model_cls(), 10)
        p = params_of(model)
        d_in = model.lin.in_features
        x, r = rng.normal(scale=2, size=(2, 6, d_in))
        (want,), cdelta = captum(captum_attr.DeepLift(model), tt(x), tt(r), target=0,
                                 return_convergence_delta=True)
        W, b, w_out = npy(model.lin.weight), npy(model.lin.bias), npy(model.out.weight)[0]
        h, h0 = x @ W.T + b, r @ W.T + b
        a, a0 = np.maximum(h, 0), np.maximum(h0, 0)
        m_relu = (a - a0) / (h - h0)
        if downstream == "sigmoid":
            sig = 1 / (1 + np.exp(-a))
            g = sig * (1 - sig) * w_out                        # σ' at x, not Δσ/Δa

            def fn(p, x):
                return dense(p, "out", jax.nn.sigmoid(jax.nn.relu(dense(p, "lin", x))))
        else:
            pairs = a.reshape(len(a), 4, 2)                    # MaxPool1d(2) windows
            g = np.zeros_like(pairs)
            np.put_along_axis(g, pairs.argmax(-1)[..., None], w_out[None, :, None], -1)
            g = g.reshape(a.shape)                             # 1 at the argmax of x

            def fn(p, x):
                a = jax.nn.relu(dense(p, "lin", x))
                return dense(p, "out", a.reshape(a.shape[0], 4, 2).max(-1))
        assert_same(want, (x - r) * ((m_relu * g) @ W), tol=1e-12)
        assert np.abs(cdelta).max() > 1e-2, downstream
        got, delta = attribute(fn, p, jnp.asarray(x), jnp.asarray(r)[:, None],
                               target=0, return_delta=True)
        assert_exact(got, delta)
        np.testing.assert_allclose(flat_sum(want) - delta, cdelta, atol=1e-12)
        assert np.abs(np.asarray(got) - want).max() > 1e-2
    viewed = LinReluPool(view_between=True)
    viewed.load_state_dict(model.state_dict())
    (want,), cdelta = captum(captum_attr.DeepLift(viewed), tt(x), tt(r), target=0,
                             return_convergence_delta=True)
    assert np.abs(cdelta).max() < EXACT
    assert_same(got, want)


# ---------------------------------------------------------------------------------------------
# layer: test_layer_deeplift (LayerDeepLift / LayerDeepLiftShap)

@pytest.mark.parametrize("layer,mark", [("linear1", "linear1"), ("relu", "relu")])
def test_layer_deeplift_hidden_layer(layer, mark):
    """BasicModel_MultiLayer, Captum's fixed weights: LayerDeepLift on linear1's output and on
    the relu's output vs jaxlift ``layer=`` on the marked value; the layer's scores sum to the
    output's Δ on both sides."""
    model = bm.BasicModel_MultiLayer().double()
    p = params_of(model)
    rng = np.random.default_rng(11)
    x, r = rng.normal(scale=3, size=(2, 5, 3))
    (want,), cdelta = captum(captum_attr.LayerDeepLift(model, getattr(model, layer)), tt(x),
                             tt(r), target=1, return_convergence_delta=True)
    got, delta = attribute(multilayer_marked, p, jnp.asarray(x),
                           jnp.asarray(r)[:, None], target=1, layer=mark,
                           return_delta=True)
    assert np.asarray(got).shape == (5, 4)
    assert_same(got, want)
    assert np.abs(cdelta).max() < EXACT
    assert_exact(got, delta)
    h, h0 = x.sum(1, keepdims=True) + npy(model.linear1.bias), r.sum(1, keepdims=True) + \
        npy(model.linear1.bias)
    assert np.any((h > 0) != (h0 > 0))                # some relu is crossed


def test_layer_deeplift_on_a_relus_input_is_gradient_times_delta_in_captum():
    """LayerDeepLift(model.relu, attribute_to_layer_input=True) scores linear1's output, as
    jaxlift ``layer="linear1"`` does, but Captum captures the gradient at the relu's input
    before the relu's own hook rescales it: its scores are Δh · w₂[t] · 1[h(x) > 0]
    (gradient × Δ), not summation-to-delta wherever a relu is crossed. jaxlift is exact and
    equals Captum's LayerDeepLift on linear1 (the same tensor)."""
    model = bm.BasicModel_MultiLayer().double()
    p = params_of(model)
    rng = np.random.default_rng(11)
    x, r = rng.normal(scale=3, size=(2, 5, 3))
    (want,), cdelta = captum(captum_attr.LayerDeepLift(model, model.relu), tt(x), tt(r),
                             target=1, attribute_to_layer_input=True,
                             return_convergence_delta=True)
    (lin1,), _ = captum(captum_attr.LayerDeepLift(model, model.linear1), tt(x), tt(r), target=1,
                        return_convergence_delta=True)
    got, delta = attribute(multilayer_marked, p, jnp.asarray(x),
                           jnp.asarray(r)[:, None], target=1, layer="linear1",
                           return_delta=True)
    w1, b1, w2 = (npy(t) for t in (model.linear1.weight, model.linear1.bias,
                                   model.linear2.weight))
    h, h0 = x @ w1.T + b1, r @ w1.T + b1
    assert_same(want, (h - h0) * (h > 0) * w2[1])
    crossed = ((h > 0) != (h0 > 0)).any(1)
    assert crossed.any() and not crossed.all()
    assert np.all(np.abs(cdelta[crossed]) > 1) and np.all(np.abs(cdelta[~crossed]) < EXACT)
    assert_exact(got, delta)
    assert_same(got, lin1)


def one_conv(p, x, marks=False):
    """BasicModel_ConvNet_One_Conv on NHWC input (B, 4, 4, 1): conv1 → relu → flatten in
    torch's (C, H, W) order → fc1 → relu."""
    k = p["conv1.weight"].transpose(2, 3, 1, 0)
    h = jax.lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["conv1.bias"]
    if marks:
        h = jaxlift.layer(h, "conv1")
    a = jax.nn.relu(h)
    if marks:
        a = jaxlift.layer(a, "relu1")
    a = jnp.transpose(a, (0, 3, 1, 2)).reshape(a.shape[0], 8)
    return jax.nn.relu(dense(p, "fc1", a))


def conv_inputs(seed, n, k):
    """Inputs for BasicModel_ConvNet_One_Conv (its conv biases are −50 and −75: pixels ~0–20)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 20, size=(n, 1, 4, 4)), rng.uniform(0, 12, size=(k, 1, 4, 4))


def test_layer_deeplift_conv_layer_and_layer_deeplift_shap():
    """BasicModel_ConvNet_One_Conv, Captum's fixed weights: LayerDeepLift on conv1's output
    (NCHW there, NHWC here) and LayerDeepLiftShap on relu1's output over 3 baselines vs jaxlift
    ``layer=`` with the references averaged."""
    model = bm.BasicModel_ConvNet_One_Conv().double()
    p = params_of(model)
    x, refs = conv_inputs(12, 4, 3)
    xj, rj = jnp.asarray(x).transpose(0, 2, 3, 1), jnp.asarray(refs).transpose(0, 2, 3, 1)
    fn = lambda p, x: one_conv(p, x, marks=True)  # noqa: E731

    (want,), cdelta = captum(captum_attr.LayerDeepLift(model, model.conv1), tt(x),
                             tt(np.repeat(refs[:1], 4, 0)), target=2,
                             return_convergence_delta=True)
    got, delta = attribute(fn, p, xj, rj[:1], target=2, layer="conv1",
                           return_delta=True)
    assert_same(np.moveaxis(np.asarray(got), -1, 1), want)
    assert np.abs(cdelta).max() < EXACT
    assert_exact(got, delta)
    assert np.abs(delta).max() > 1

    (want,), cdelta = captum(captum_attr.LayerDeepLiftShap(model, model.relu1), tt(x), tt(refs),
                             target=0, return_convergence_delta=True)
    got, delta = attribute(fn, p, xj, rj, target=0, layer="relu1", return_delta=True)
    assert_same(np.moveaxis(np.asarray(got), -1, 1), want)
    assert np.abs(cdelta).max() < EXACT          # one per (input, baseline) pair
    assert_exact(got, delta)


# ---------------------------------------------------------------------------------------------
# neuron: test_neuron_deeplift (NeuronDeepLift / NeuronDeepLiftShap)

def test_neuron_deeplift_dense_neurons():
    """BasicModel_MultiLayer: NeuronDeepLift on neurons of linear1's output, of the relu's input
    (the same neurons) and of the relu's output vs jaxlift on ``fn`` cut at that layer (every
    neuron at once with ``target="all"``; one neuron with a callable target)."""
    model = bm.BasicModel_MultiLayer().double()
    p = params_of(model)
    rng = np.random.default_rng(13)
    x, r = rng.normal(scale=3, size=(2, 5, 3))

    def pre(p, x):
        return dense(p, "linear1", dense(p, "linear0", x))

    def post(p, x):
        return jax.nn.relu(pre(p, x))
    refs = jnp.asarray(r)[:, None]
    got_pre, d_pre = attribute(pre, p, jnp.asarray(x), refs, target="all",
                               return_delta=True)                 # (N, 4 neurons, 3)
    got_post, d_post = attribute(post, p, jnp.asarray(x), refs, target=lambda o: o[2],
                                 return_delta=True)
    for j in (0, 2):
        (lin,), _ = captum(captum_attr.NeuronDeepLift(model, model.linear1), tt(x), j, tt(r))
        (relu_in,), _ = captum(captum_attr.NeuronDeepLift(model, model.relu), tt(x), j, tt(r),
                               attribute_to_neuron_input=True)
        assert_same(np.asarray(got_pre)[:, j], lin)
        assert_same(np.asarray(got_pre)[:, j], relu_in)
        assert_exact(np.asarray(got_pre)[:, j], np.asarray(d_pre)[:, j])
    (relu_out,), _ = captum(captum_attr.NeuronDeepLift(model, model.relu), tt(x), 2, tt(r))
    assert_same(got_post, relu_out)
    assert_exact(got_post, d_post)
    assert_same(flat_sum(relu_out), d_post)          # Captum sums to the neuron's Δ too
    assert np.abs(np.asarray(got_pre)[:, 2] - got_post).max() > 0.1   # the relu is crossed


def test_neuron_deeplift_conv_neuron_and_neuron_deeplift_shap():
    """BasicModel_ConvNet_One_Conv: NeuronDeepLift on neuron (c, h, w) = (1, 0, 1) of relu1's
    output (jaxlift: ``target=(0, 1, 1)`` into the NHWC output), and NeuronDeepLiftShap on a
    neuron of fc1's output over 3 baselines (jaxlift: K references averaged)."""
    model = bm.BasicModel_ConvNet_One_Conv().double()
    p = params_of(model)
    x, refs = conv_inputs(14, 4, 3)
    xj, rj = jnp.asarray(x).transpose(0, 2, 3, 1), jnp.asarray(refs).transpose(0, 2, 3, 1)

    def relu1(p, x):
        k = p["conv1.weight"].transpose(2, 3, 1, 0)
        return jax.nn.relu(jax.lax.conv_general_dilated(
            x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["conv1.bias"])
    (want,), _ = captum(captum_attr.NeuronDeepLift(model, model.relu1), tt(x), (1, 0, 1),
                        tt(np.repeat(refs[1:2], 4, 0)))
    got, delta = attribute(relu1, p, xj, rj[1:2], target=(0, 1, 1), return_delta=True)
    assert_same(np.moveaxis(np.asarray(got), -1, 1), want)
    assert_exact(got, delta)
    assert np.abs(delta).max() > 1

    def fc1(p, x):
        k = p["conv1.weight"].transpose(2, 3, 1, 0)
        a = jax.nn.relu(jax.lax.conv_general_dilated(
            x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["conv1.bias"])
        return dense(p, "fc1", jnp.transpose(a, (0, 3, 1, 2)).reshape(a.shape[0], 8))
    (want,), _ = captum(captum_attr.NeuronDeepLiftShap(model, model.fc1), tt(x), 3, tt(refs))
    got, delta = attribute(fc1, p, xj, rj, target=3, return_delta=True)
    assert_same(np.moveaxis(np.asarray(got), -1, 1), want)
    assert_exact(got, delta)


# ---------------------------------------------------------------------------------------------
# DeepLiftShap: several baselines, averaged

def test_deeplift_shap_two_inputs_per_pair_and_averaged():
    """ReLULinearModel with 4 baselines for a pair of input tensors: Captum DeepLiftShap (the
    mean of DeepLift over the baselines; one convergence delta per (input, baseline)) vs jaxlift
    with K = 4 references, averaged and per reference (``average_refs=False``)."""
    model = bm.ReLULinearModel().double()
    p = params_of(model)

    def fn(p, xs):
        h = jnp.concatenate([dense(p, "l1", xs[0]), dense(p, "l2", xs[1])], axis=1)
        return dense(p, "l3", jax.nn.relu(h))
    rng = np.random.default_rng(15)
    x1, x2 = rng.normal(scale=2, size=(2, 3, 3))
    r1, r2 = rng.normal(scale=2, size=(2, 4, 3))
    want, cdelta = captum(captum_attr.DeepLiftShap(model), tt(x1, x2), tt(r1, r2), target=0,
                          return_convergence_delta=True)
    xs, rs = (jnp.asarray(x1), jnp.asarray(x2)), (jnp.asarray(r1), jnp.asarray(r2))
    got = attribute(fn, p, xs, rs, target=0)
    per_ref, delta = attribute(fn, p, xs, rs, target=0, average_refs=False,
                               return_delta=True)
    assert cdelta.shape == (12,) and np.abs(cdelta).max() < EXACT
    for g, pr, w in zip(got, per_ref, want):
        assert_same(g, w)
        assert np.asarray(pr).shape == (3, 4, 3)
        assert_same(np.asarray(pr).mean(1), w)
    # per (input, reference): Σ over both inputs' scores = that pair's Δt
    np.testing.assert_allclose(sum(np.asarray(pr).sum(-1) for pr in per_ref), delta,
                               atol=EXACT)
    # and each pair equals Captum DeepLift with that baseline alone
    for k in range(4):
        single, _ = captum(captum_attr.DeepLift(model), tt(x1, x2),
                           tt(np.repeat(r1[k:k + 1], 3, 0), np.repeat(r2[k:k + 1], 3, 0)),
                           target=0, return_convergence_delta=True)
        for pr, s in zip(per_ref, single):
            assert_same(np.asarray(pr)[:, k], s)


def test_deeplift_shap_classifier_many_targets():
    """SigmoidModel with 5 baselines and a different target per example: Captum DeepLiftShap vs
    jaxlift ``target="all"`` over K = 5 references, gathered."""
    model = randomize(cm.SigmoidModel(5, 8, 3), 16, scale=1.5)
    p = params_of(model)
    rng = np.random.default_rng(16)
    x = rng.normal(scale=2, size=(4, 5))
    refs = rng.normal(size=(5, 5))
    targets = [2, 0, 1, 2]
    (want,), cdelta = captum(captum_attr.DeepLiftShap(model), tt(x), tt(refs), target=targets,
                             return_convergence_delta=True)
    got, delta = attribute(sigmoid_model, p, jnp.asarray(x), jnp.asarray(refs),
                           target="all", return_delta=True)
    assert_same(gather(got, targets), want)
    assert np.abs(cdelta).max() < EXACT
    assert_exact(gather(got, targets), gather(delta, targets))
