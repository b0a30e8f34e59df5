"""One compiled dispatch per call (issue 16): the finite checks of x, refs and params run inside
the compiled program and are read with the result; a repeated call of the same shapes does no
tracing, no planning and no eager run of fn. Speed itself is measured in
benchmarks/bench_dispatch.py, not here."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift import chunking, dispatch, pipeline, validation
from jaxlift.methods import interpreted
from jaxlift.errors import NonFiniteScoresError


def mlp(p, xb):
    return jnp.tanh(xb @ p["w"] + p["b"]) @ p["v"]


def data(seed=0, n=4, k=3):
    rng = np.random.default_rng(seed)
    p = {"w": jnp.asarray(rng.normal(size=(5, 6)), jnp.float32),
         "b": jnp.asarray(rng.normal(size=6), jnp.float32),
         "v": jnp.asarray(rng.normal(size=(6, 2)), jnp.float32)}
    return (p, jnp.asarray(rng.normal(size=(n, 5)), jnp.float32),
            jnp.asarray(rng.normal(size=(k, 5)), jnp.float32))


def _spy(monkeypatch, reference_side=False):
    """Record, in order, each run of a compiled DeepLIFT program, each host-side finite check
    and each read of the finite flags; the reference side must not run separately. Calls seen
    before are forgotten, so the next call takes the full path (the repeated-call path has
    its own tests below)."""
    events = []
    dispatch.one_dispatch_slot.cache_clear()
    compiled = interpreted.compiled_program

    def counting_compiled(*key):
        run = compiled(*key)

        def counted(*args):
            events.append("dispatch")
            return run(*args)
        return counted

    check, flags = validation.refuse_non_finite_input, pipeline.checks_on_host
    monkeypatch.setattr(interpreted, "compiled_program", counting_compiled)
    monkeypatch.setattr(validation, "refuse_non_finite_input",
                        lambda *a: (events.append("host check"), check(*a))[1])
    monkeypatch.setattr(pipeline, "checks_on_host",
                        lambda *a: (events.append("flags"), flags(*a))[1])
    if not reference_side:
        monkeypatch.setattr(interpreted, "reference_values",
                            lambda *a: pytest.fail("the reference side ran as its own dispatch"))
    return events


@pytest.mark.parametrize("batch_size", ["auto", None, 12])
def test_one_chunk_is_one_dispatch_then_one_flag_read(monkeypatch, batch_size):
    p, x, refs = data()
    expected = jaxlift.attribute(mlp, p, x, refs, target=1)
    events = _spy(monkeypatch)
    got = jaxlift.attribute(mlp, p, x + 1, refs, target=1, batch_size=batch_size)
    assert events == ["dispatch", "flags"]
    assert not np.allclose(got, expected)  # the new inputs were scored


def test_chunks_read_every_flag_in_one_transfer(monkeypatch):
    p, x, refs = data(n=5)
    events = _spy(monkeypatch, reference_side=True)
    whole = jaxlift.attribute(mlp, p, x, refs, target=0, batch_size=None)
    events.clear()
    chunked = jaxlift.attribute(mlp, p, x, refs, target=0, batch_size=6)  # 2 inputs a chunk
    assert events == ["dispatch"] * 3 + ["flags"]
    np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("where", ["x", "refs", "params"])
@pytest.mark.parametrize("batch_size", ["auto", 3])
def test_non_finite_inputs_are_named_after_the_compiled_run(monkeypatch, where, batch_size):
    p, x, refs = data(1)
    jaxlift.attribute(mlp, p, x, refs, target=0)  # shapes seen: the independence check passed
    if where == "x":
        x = x.at[2, 1].set(jnp.nan)
    elif where == "refs":
        refs = refs.at[0, 0].set(jnp.inf)
    else:
        p = {**p, "b": p["b"].at[3].set(-jnp.inf)}
    events = _spy(monkeypatch) if batch_size == "auto" else []
    pattern = r"params\['b'\] contains 1 NaN" if where == "params" else f"{where} contains 1 NaN"
    with pytest.raises(ValueError, match=pattern):
        jaxlift.attribute(mlp, p, x, refs, target=0, batch_size=batch_size)
    if batch_size == "auto":
        assert events[:2] == ["dispatch", "flags"]  # checked in the program, read after it


def test_first_call_with_a_nan_input_names_the_nan_not_the_batch_check():
    def fresh(p, xb):  # a function never seen: its independence check runs on NaN inputs
        return mlp(p, xb) * 1.0
    p, x, refs = data(2)
    with pytest.raises(ValueError, match=r"^x contains 1 NaN or Inf"):
        jaxlift.attribute(fresh, p, x.at[0, 0].set(jnp.nan), refs, target=0)


def test_check_finite_false_skips_the_input_check_but_still_refuses_nan_scores():
    p, x, refs = data(3)
    bad = x.at[1, 2].set(jnp.nan)
    with pytest.raises(NonFiniteScoresError, match=r"target is NaN or Inf at the input of pair "
                                                   r"\(input 1"):
        jaxlift.attribute(mlp, p, bad, refs, target=0, check_finite=False)
    with pytest.raises(ValueError, match="x contains"):
        jaxlift.attribute(mlp, p, bad, refs, target=0)


def test_a_first_call_on_nan_inputs_without_finite_checks_refuses_the_nan_scores():
    def fresh(p, xb):  # never seen: the batch-independence check runs on these NaN inputs
        return mlp(p, xb) + 0.0
    p, x, refs = data(5)
    with pytest.raises(NonFiniteScoresError, match="target is NaN or Inf at the input"):
        jaxlift.attribute(fresh, p, x.at[1, 0].set(jnp.nan), refs, target=0,
                          check_finite=False)


def test_non_finite_scores_from_finite_inputs_still_name_the_primitive():
    fn = lambda p, xb: jnp.where(xb[:, 0] > 0, 1.0, 0.0) * 1e3 + xb[:, 1]  # noqa: E731
    x = jnp.array([[1.5e-38, 1.0]], jnp.float32)
    r = jnp.array([[-1.5e-38, 1.0]], jnp.float32)
    with pytest.raises(NonFiniteScoresError, match=r"'nonlinearity\[gt"):
        jaxlift.attribute(fn, None, x, r)


def test_a_repeated_call_does_not_trace_plan_or_run_fn_eagerly(monkeypatch):
    calls = []

    def fn(p, xb):
        calls.append(isinstance(xb, jax.core.Tracer))
        return mlp(p, xb)

    p, x, refs = data(4)
    jaxlift.attribute(fn, p, x, refs, target=1)
    # the first call traced fn — at one example, and on a batch of two for the independence
    # check, both inside the compiled program — and never ran it eagerly (op by op, each op
    # compiled on its own: seconds on a library model)
    assert calls and all(calls)
    calls.clear()
    monkeypatch.setattr(chunking, "free_memory_bytes",
                        lambda d: pytest.fail("chunks planned again for the same shapes"))
    np_x = np.asarray(x) * 2  # NumPy leaves of the same shapes and dtype hit the same caches
    jaxlift.attribute(fn, p, np_x, refs, target=1)
    jaxlift.attribute(fn, jax.tree_util.tree_map(lambda l: l + 1, p), x, refs, target=1)
    assert calls == []


def test_shape_signature_distinguishes_shapes_dtypes_and_structure():
    from jaxlift.program import signature
    a = {"w": jnp.ones((2, 3)), "b": np.zeros(3, np.float64)}
    assert signature(a) == signature({"w": jnp.zeros((2, 3)), "b": np.ones(3, np.float64)})
    assert signature(a) != signature({"w": jnp.ones((2, 4)), "b": np.zeros(3)})
    assert signature(a) != signature({"w": jnp.ones((2, 3), jnp.int32), "b": np.zeros(3)})
    assert signature(a) != signature([jnp.ones((2, 3)), np.zeros(3)])
    assert signature(jnp.ones((5, 2)), drop_leading=True) == signature(jnp.ones((9, 2)),
                                                                       drop_leading=True)
    assert signature(1.0)[1] == (((), jnp.result_type(1.0)),)


# ---------------------------------------------------------------------------------------------
# A call seen before: one dispatch, no validation or planning in Python

def _count_full_path(monkeypatch):
    """Count the full path's runs (its shape validation) from now on."""
    runs = []
    validate = pipeline.validate_pairs
    monkeypatch.setattr(pipeline, "validate_pairs",
                        lambda *a: (runs.append(1), validate(*a))[1])
    return runs


@pytest.mark.parametrize("case", ["shared", "numpy x", "per-input refs", "return_delta",
                                  "multipliers", "kernel method", "reference-free"])
def test_a_repeated_call_skips_the_checks_and_equals_the_full_path(monkeypatch, case):
    p, x, refs = data(6)
    kw = dict(target=1)
    call = jaxlift.attribute
    if case == "numpy x":
        x = np.asarray(x)
    elif case == "per-input refs":
        refs = jnp.stack([refs] * 4) + jnp.arange(4.0)[:, None, None]
    elif case == "return_delta":
        kw["return_delta"] = True
    elif case == "multipliers":
        call = jaxlift.multipliers
    elif case == "kernel method":
        kw.update(mode="occlusion", mode_options={"window": 2})
    elif case == "reference-free":
        kw["mode"], refs = "grad_times_input", None
    call(mlp, p, x, refs, **kw)
    runs = _count_full_path(monkeypatch)
    x2 = x * 3 - 1
    fast = call(mlp, p, x2, refs, **kw)
    assert runs == []  # the second call, same shapes and options, took the one-dispatch path
    dispatch.one_dispatch_slot.cache_clear()
    full = call(mlp, p, x2, refs, **kw)
    assert runs == [1]
    for a, b in zip(jax.tree_util.tree_leaves(fast), jax.tree_util.tree_leaves(full)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    first = call(mlp, p, x, refs, **kw)
    assert not np.allclose(jax.tree_util.tree_leaves(first)[0],
                           jax.tree_util.tree_leaves(fast)[0])  # the new inputs were scored


def test_a_changed_shape_dtype_structure_or_option_takes_the_full_path(monkeypatch):
    p, x, refs = data(7)
    jaxlift.attribute(mlp, p, x, refs, target=0)
    runs = _count_full_path(monkeypatch)
    jaxlift.attribute(mlp, p, x[:3], refs, target=0)  # N
    jaxlift.attribute(mlp, p, x, refs[:2], target=0)  # K
    jaxlift.attribute(mlp, p, x, refs, target=1)  # target
    jaxlift.attribute(mlp, p, x, refs, target=0, average_refs=False)
    jaxlift.attribute(mlp, {**p, "extra": jnp.ones(2)}, x, refs, target=0)  # params structure
    with pytest.raises(ValueError, match="dtype"):  # refs' dtype: refused again, not reused
        jaxlift.attribute(mlp, p, x, refs.astype(jnp.float16), target=0)
    assert runs == [1] * 6


def test_a_repeated_call_still_refuses_nan_inputs_and_params_by_name():
    p, x, refs = data(8)
    jaxlift.attribute(mlp, p, x, refs, target=0)
    jaxlift.attribute(mlp, p, x, refs, target=0)  # the one-dispatch path is in place
    with pytest.raises(ValueError, match=r"^x contains 1 NaN or Inf"):
        jaxlift.attribute(mlp, p, x.at[1, 1].set(jnp.nan), refs, target=0)
    with pytest.raises(ValueError, match=r"^refs contains 1 NaN or Inf"):
        jaxlift.attribute(mlp, p, x, refs.at[0, 4].set(jnp.inf), target=0)
    with pytest.raises(ValueError, match=r"^params\['w'\] contains 1 NaN or Inf"):
        jaxlift.attribute(mlp, {**p, "w": p["w"].at[0, 0].set(jnp.nan)}, x, refs, target=0)
    np_params = jax.tree_util.tree_map(np.array, p)  # NumPy params: checked on every call
    jaxlift.attribute(mlp, np_params, x, refs, target=0)
    jaxlift.attribute(mlp, np_params, x, refs, target=0)
    np_params["b"][2] = np.nan  # changed in place: the same objects, now with a NaN
    with pytest.raises(ValueError, match=r"^params\['b'\] contains 1 NaN or Inf"):
        jaxlift.attribute(mlp, np_params, x, refs, target=0)


def test_params_arrays_are_checked_for_nan_once_each(monkeypatch):
    p, x, refs = data(9)
    checked = []
    leaf_check = validation.leaf_finite_on_host  # jax arrays on the CPU: checked by NumPy
    monkeypatch.setattr(validation, "leaf_finite_on_host",
                        lambda leaf: (checked.append(leaf.shape), leaf_check(leaf))[1])
    jaxlift.attribute(mlp, p, x, refs, target=0)
    jaxlift.attribute(mlp, p, x + 1, refs, target=0)
    assert len(checked) == 3
    p2 = {**p, "b": p["b"] + 1}  # one new array
    jaxlift.attribute(mlp, p2, x, refs, target=0)
    jaxlift.attribute(mlp, p2, x, refs, target=0)
    assert len(checked) == 4 and checked[-1] == p["b"].shape
    jaxlift.attribute(mlp, p2, x, refs, target=0, check_finite=False)
    assert len(checked) == 4


def test_the_batch_check_is_not_skipped_when_the_first_call_compared_nothing(monkeypatch):
    def mixes(p, xb):  # a batch statistic: examples of a batch interact
        return mlp(p, xb - jnp.mean(xb, axis=0, keepdims=True) * 0.5)
    p, x, refs = data(10, n=2, k=2)
    same = jnp.broadcast_to(x[:1], x.shape)
    jaxlift.attribute(mixes, p, same, same, target=0)  # one example everywhere: nothing compared
    with pytest.raises(ValueError, match="must not mix examples"):
        jaxlift.attribute(mixes, p, x, refs, target=0)


def test_inside_jit_the_repeated_call_path_is_not_taken():
    p, x, refs = data(11)
    signatures = []

    def traced(xb):
        signatures.append(dispatch.call_signature(xb))
        return jaxlift.attribute(mlp, p, xb, refs, target=0)
    jitted = jax.jit(traced)
    for xb in (x, x + 1):  # a different program from the direct call's: float rounding differs
        np.testing.assert_allclose(jitted(xb), jaxlift.attribute(mlp, p, xb, refs, target=0),
                                   rtol=1e-5, atol=1e-6)
    assert signatures == [None]  # traced once; a tracer has no one-dispatch key
    assert dispatch.call_signature(x) is not None


def test_an_equal_partial_written_anew_is_not_compiled_again(monkeypatch):
    import functools

    def scaled(p, xb, *, scale, shift=0.0):
        return mlp(p, xb) * scale + shift

    p, x, refs = data(12)
    first = jaxlift.attribute(functools.partial(scaled, scale=2.0), p, x, refs, target=0)
    runs = _count_full_path(monkeypatch)
    again = jaxlift.attribute(functools.partial(scaled, scale=2.0), p, x, refs, target=0)
    assert runs == []  # the new partial is the first one's function and arguments
    np.testing.assert_array_equal(first, again)
    other = jaxlift.attribute(functools.partial(scaled, scale=3.0), p, x, refs, target=0)
    assert runs == [1]
    np.testing.assert_allclose(other, first * 1.5, rtol=1e-5, atol=1e-6)
    assert dispatch.canonical_fn(functools.partial(scaled, scale=1)) is not \
        dispatch.canonical_fn(functools.partial(scaled, scale=True))  # 1 == True, types differ
    arr = functools.partial(scaled, scale=jnp.ones(()))  # unhashable argument: kept as it is
    assert dispatch.canonical_fn(arr) is arr
