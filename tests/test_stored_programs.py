"""Compiled programs kept on disk between processes (jaxlift/stored_programs.py,
docs/design.md §20.6): a stored program is served only for what it was made from, and anything
that cannot be described faithfully is compiled, never stored."""
import dataclasses
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift import dispatch, stored_programs
from jaxlift.methods import interpreted
from jaxlift.rules import registry


@pytest.fixture
def store(tmp_path, monkeypatch):
    """The store on, in a folder of the test's own (JAX's own cache stays off), storing every
    program however fast it compiled; in-process caches emptied before and after, and the
    store's events counted."""
    where = tmp_path / "jaxlift"
    monkeypatch.setattr(stored_programs, "store_dir", lambda: where)
    saved_min = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    events: list = []
    listener = events.append
    jax.monitoring.register_event_listener(listener)
    forget()
    try:
        yield where, events
    finally:
        jax.monitoring.unregister_event_listener(listener)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", saved_min)
        forget()


def forget():
    """What a new process would not have: the compiled programs (by fn and by what they are
    made from) and one-dispatch slots."""
    interpreted.compiled_program.cache_clear()
    stored_programs.KEPT.clear()
    dispatch.one_dispatch_slot.cache_clear()


def mlp(params, xb):
    return jax.nn.relu(xb @ params["w"]) @ params["v"]


def data():
    params = {"w": jax.random.normal(jax.random.key(0), (5, 4)),
              "v": jax.random.normal(jax.random.key(1), (4, 3))}
    x = jax.random.normal(jax.random.key(2), (3, 5))
    refs = jnp.zeros((2, 5))
    return params, x, refs


def stored_files(where):
    return sorted(where.glob("*" + stored_programs.SUFFIX)) if where.exists() else []


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_a_stored_program_is_loaded_and_gives_the_same_scores(store, mode):
    where, events = store
    params, x, refs = data()
    first = jaxlift.attribute(mlp, params, x, refs, target=1, mode=mode)
    assert len(stored_files(where)) == 1 and stored_programs.HIT_EVENT not in events
    forget()
    again = jaxlift.attribute(mlp, params, x, refs, target=1, mode=mode)
    assert events.count(stored_programs.HIT_EVENT) == 1
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    # other inputs of the same shapes: the loaded program computes, it does not replay
    x2 = x[::-1] * 2.0
    want = jaxlift.attribute(mlp, params, x2, refs, target=1, mode=mode)
    np.testing.assert_allclose(np.asarray(want).sum(-1),
                               np.asarray(mlp(params, x2)[:, 1] - mlp(params, refs[:1])[:, 1]),
                               rtol=1e-5, atol=1e-5)


def test_what_the_program_is_made_from_is_in_the_key(store):
    """A constant fn closes over, the target, a custom derivative rule (read by Rescale where
    Δx → 0) and the shapes each give another key."""
    params, x, refs = data()

    def fingerprint(fn, target=1, xs=x):
        return interpreted.compiled_program(fn, target, interpreted.COMPOSITES["rescale"],
                                            "contributions", None, False, True).fingerprint(
            params, xs, refs, None, None)

    def scaled(c):
        return lambda p, xb: mlp(p, xb) * c

    @jax.custom_jvp
    def soft(u):
        return jnp.logaddexp(u, 0.0)
    soft.defjvp(lambda p, t: (soft(p[0]), jax.nn.sigmoid(p[0]) * t[0]))

    @jax.custom_jvp
    def soft_other_rule(u):
        return jnp.logaddexp(u, 0.0)
    soft_other_rule.defjvp(lambda p, t: (soft_other_rule(p[0]), 0.5 * t[0]))

    keys = [fingerprint(scaled(jnp.asarray(2.0))), fingerprint(scaled(jnp.asarray(3.0))),
            fingerprint(mlp), fingerprint(mlp, target=0), fingerprint(mlp, xs=x[:, :5] + 0),
            fingerprint(lambda p, xb: soft(xb @ p["w"]) @ p["v"]),
            fingerprint(lambda p, xb: soft_other_rule(xb @ p["w"]) @ p["v"])]
    assert fingerprint(mlp) == keys[2]  # deterministic
    assert len(set(keys)) == len(keys) - 1  # x[:, :5] + 0 has x's shapes: the one repeat
    # N and K are not in the description but in the arguments' part of the key
    assert (stored_programs.arguments_text((params, x, refs))
            != stored_programs.arguments_text((params, x[:2], refs)))


def test_a_constant_held_by_a_nested_jit_is_in_the_key(store):
    """A constant closed over inside fn's own ``jit`` call sits in that call's jaxpr, not in
    fn's: it is digested too, so two such fns differing only in it never share a program."""
    params, x, refs = data()

    def fingerprint(fn):
        return interpreted.compiled_program(fn, 1, interpreted.COMPOSITES["rescale"],
                                            "contributions", None, False, True).fingerprint(
            params, x, refs, None, None)

    def scaled_inside(c):
        scale = jax.jit(lambda h: h * c)
        return lambda p, xb: scale(mlp(p, xb))
    twice, thrice = scaled_inside(jnp.full((3,), 2.0)), scaled_inside(jnp.full((3,), 3.0))
    assert fingerprint(twice) != fingerprint(thrice)
    assert fingerprint(twice) == fingerprint(twice)


def test_what_cannot_be_described_is_compiled_not_stored(store, monkeypatch):
    where, events = store
    params, x, refs = data()

    def with_callback(p, xb):  # a weight computed by Python: the jaxpr names no code
        w = jax.pure_callback(lambda v: np.asarray(v) * 2, jax.ShapeDtypeStruct((5, 4), xb.dtype),
                              p["w"], vmap_method="sequential")
        return mlp({"w": w, "v": p["v"]}, xb)
    scores = jaxlift.attribute(with_callback, params, x, refs, target=1)
    doubled = {"w": params["w"] * 2, "v": params["v"]}
    np.testing.assert_allclose(np.asarray(scores),
                               np.asarray(jaxlift.attribute(mlp, doubled, x, refs, target=1)),
                               rtol=1e-6)
    assert len(stored_files(where)) == 1  # mlp's program only
    assert stored_programs.HIT_EVENT not in events
    forget()
    foreign = registry.Registration("tanh", "my_tanh", "mypackage.rules", "overrides", "rescale")
    original = registry.registrations
    monkeypatch.setattr(registry, "registrations", lambda: original() + (foreign,))
    jaxlift.attribute(mlp, params, x, refs, target=1)
    assert stored_programs.HIT_EVENT not in events  # a rule from outside jaxlift: not served


def test_describe_takes_jaxlifts_own_values_only():
    rescale = interpreted.COMPOSITES["rescale"]
    assert stored_programs.describe(rescale) == stored_programs.describe(rescale)
    assert stored_programs.describe(rescale) != stored_programs.describe(
        interpreted.COMPOSITES["reveal_cancel"])
    mine = dataclasses.replace(rescale, entries=((lambda op, program: True,
                                                  rescale.entries[0][1]),))
    with pytest.raises(stored_programs.NotStorable):
        stored_programs.describe(mine)
    with pytest.raises(stored_programs.NotStorable):
        stored_programs.describe(object())


def test_inside_a_callers_jit_nothing_is_stored(store):
    where, _ = store
    params, x, refs = data()
    out = jax.jit(lambda p, xs: jaxlift.attribute(mlp, p, xs, refs, target=1))(params, x)
    assert out.shape == x.shape and stored_files(where) == []


def test_a_damaged_file_is_compiled_again_and_replaced(store):
    where, events = store
    params, x, refs = data()
    first = jaxlift.attribute(mlp, params, x, refs, target=1)
    (path,) = stored_files(where)
    path.write_bytes(b"not a program")
    forget()
    again = jaxlift.attribute(mlp, params, x, refs, target=1)
    assert stored_programs.HIT_EVENT not in events
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    assert path.read_bytes() != b"not a program"


@pytest.mark.slow
def test_a_second_process_runs_the_stored_program(tmp_path):
    """End to end, as a user's second process meets it: JAX's persistent cache set, the first
    process stores, the second loads (no XLA compile of the program) and gives the same
    scores."""
    script = textwrap.dedent("""
        import json, sys
        import jax, jax.numpy as jnp
        import jaxlift
        from jaxlift import stored_programs
        events = []
        jax.monitoring.register_event_listener(events.append)
        def fn(p, xb):
            return jnp.tanh(jax.nn.relu(xb @ p["w"]) @ p["v"])
        p = {"w": jax.random.normal(jax.random.key(0), (5, 4)),
             "v": jax.random.normal(jax.random.key(1), (4, 3))}
        x = jax.random.normal(jax.random.key(2), (3, 5))
        s = jaxlift.attribute(fn, p, x, jnp.zeros((2, 5)), target=1, mode="reveal_cancel")
        print(json.dumps({"scores": s.tolist(),
                          "hit": events.count(stored_programs.HIT_EVENT),
                          "saved": events.count(stored_programs.SAVED_EVENT)}))
    """)
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    import json
    runs = [json.loads(subprocess.run([sys.executable, "-c", script], env=env, check=True,
                                      capture_output=True, text=True).stdout.splitlines()[-1])
            for _ in range(2)]
    assert (runs[0]["saved"], runs[0]["hit"]) == (1, 0)
    assert (runs[1]["saved"], runs[1]["hit"]) == (0, 1)
    np.testing.assert_array_equal(np.asarray(runs[0]["scores"]), np.asarray(runs[1]["scores"]))


# ---------------------------------------------------------------------------------------------
# The same key within a process: a program asked for again under another fn object

@pytest.fixture
def kept(monkeypatch):
    """The disk store off, the in-process caches emptied before and after; yields the list of
    XLA compiles and of the shelf's hits as they happen."""
    monkeypatch.setattr(stored_programs, "store_dir", lambda: None)
    monkeypatch.delenv(stored_programs.STORE_SWITCH, raising=False)
    seen: dict = {"compiles": [], "hits": []}

    def on_duration(name, secs, **_):
        if name.endswith("backend_compile_duration"):
            seen["compiles"].append(name)

    def on_event(name, **_):
        if name == stored_programs.KEPT_HIT_EVENT:
            seen["hits"].append(name)
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    forget()
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(on_duration)
        jax.monitoring.unregister_event_listener(on_event)
        forget()


def built(scale=1.0):
    """What a notebook cell that builds the model returns each time it runs: a new function
    object tracing to the same jaxpr (for the same ``scale``)."""
    return lambda p, xb: jnp.tanh(jax.nn.relu(xb @ p["w"]) @ p["v"]) * scale


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_a_model_built_again_runs_the_program_compiled_for_it(kept, mode):
    params, x, refs = data()
    first = jaxlift.attribute(built(), params, x, refs, target=1, mode=mode)
    assert kept["compiles"] and not kept["hits"]
    kept["compiles"].clear()
    again = jaxlift.attribute(built(), params, x, refs, target=1, mode=mode)
    assert kept["compiles"] == [] and len(kept["hits"]) == 1
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    # the program computes: other inputs of the same shapes, the same function's scores
    x2, fn = x[::-1] * 2.0, built()
    scores = jaxlift.attribute(fn, params, x2, refs, target=1, mode=mode)
    delta = fn(params, x2)[:, 1] - fn(params, refs[:1])[:, 1]
    np.testing.assert_allclose(np.asarray(scores).sum(-1), np.asarray(delta), rtol=1e-5,
                               atol=1e-6)
    # what the function computes is in the key: another constant compiles its own program
    kept["compiles"].clear()
    other = jaxlift.attribute(built(2.0), params, x, refs, target=1, mode=mode)
    assert kept["compiles"]
    np.testing.assert_allclose(np.asarray(other), 2.0 * np.asarray(first), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", ["integrated_gradients", "smoothgrad"])
def test_a_kernel_methods_program_is_kept_too(kept, mode):
    params, x, refs = data()
    first = jaxlift.attribute(built(), params, x, refs, target=1, mode=mode)
    kept["compiles"].clear()
    again = jaxlift.attribute(built(), params, x, refs, target=1, mode=mode)
    assert kept["compiles"] == [] and len(kept["hits"]) == 1
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    kept["compiles"].clear()
    jaxlift.attribute(built(2.0), params, x, refs, target=1, mode=mode)
    assert kept["compiles"]


def test_a_chunked_call_on_a_model_built_again_compiles_nothing(kept):
    """More inputs than a chunk holds: the chunks' program and the references' forward pass
    (run once per call) are both kept."""
    params, x, refs = data()
    first = jaxlift.attribute(built(), params, x, refs, target=1, batch_size=2)
    kept["compiles"].clear()
    again = jaxlift.attribute(built(), params, x, refs, target=1, batch_size=2)
    assert kept["compiles"] == [] and len(kept["hits"]) == 2
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))


def test_a_patched_rule_is_never_served_a_program_compiled_without_it(kept, monkeypatch):
    """The source of jaxlift is in the key, not what a module holds at run time: a rule
    replaced after a program was compiled gets a program of its own, and so does the original
    once restored."""
    from jaxlift.rules import rescale
    params, x, refs = data()
    good = jaxlift.attribute(built(), params, x, refs, target=1)
    right = rescale.rescale_multiplier
    monkeypatch.setattr(rescale, "rescale_multiplier", lambda ctx: right(ctx) * 1.01)
    with pytest.raises(jaxlift.CompletenessError):  # the patched rule's program ran
        jaxlift.attribute(built(), params, x, refs, target=1)
    assert kept["hits"] == []
    monkeypatch.undo()
    monkeypatch.setattr(stored_programs, "store_dir", lambda: None)
    np.testing.assert_array_equal(
        np.asarray(jaxlift.attribute(built(), params, x, refs, target=1)), np.asarray(good))


def test_the_switch_turns_the_in_process_tier_off(kept, monkeypatch):
    params, x, refs = data()
    monkeypatch.setenv(stored_programs.STORE_SWITCH, "0")
    jaxlift.attribute(built(), params, x, refs, target=1)
    kept["compiles"].clear()
    jaxlift.attribute(built(), params, x, refs, target=1)
    assert kept["compiles"] and kept["hits"] == []


def test_the_shelf_keeps_the_most_recently_used():
    shelf = stored_programs.Shelf(2)
    state = stored_programs.jaxlift_state()
    for key in "abc":
        shelf.put(key, key.upper(), state)
    assert shelf.get("a") is None and shelf.get("b") == "B"
    shelf.put("d", "D", state)  # "c" is now the least recently used
    assert shelf.get("c") is None and (shelf.get("b"), shelf.get("d")) == ("B", "D")
