"""XLA options of jaxlift's own programs (jaxlift/_compiler.py, docs/design.md §20.5): given at
top level where XLA knows them, never inside a caller's trace (JAX refuses options on a nested
jit), never over a user's own XLA_FLAGS."""
import jax
import jax.numpy as jnp
import numpy as np

import jaxlift
from jaxlift import _compiler


def test_options_at_top_level_and_none_inside_a_trace():
    here = _compiler.options_here()
    if jax.default_backend() == "cpu":
        assert dict(here) == {_compiler.YNN_OPTION: _compiler.CPU_LIBRARY_FUSIONS,
                              _compiler.LLVM_LEVEL_OPTION: _compiler.LLVM_LEVEL}
    seen = []

    @jax.jit
    def traced(v):
        seen.append(_compiler.options_here())
        return v
    traced(1.0)
    jax.vmap(lambda v: seen.append(_compiler.options_here()) or v)(jnp.ones(2))
    assert seen == [(), ()]


def test_a_user_setting_of_an_option_is_kept(monkeypatch):
    """Each option the user names in XLA_FLAGS is left to XLA (their flag wins); the other
    is still given."""
    if jax.default_backend() != "cpu":
        return
    monkeypatch.setenv("XLA_FLAGS", f"--{_compiler.YNN_OPTION}=LIBRARY_FUSION_TYPE_REDUCE")
    assert _compiler.compiler_options.__wrapped__() == {
        _compiler.LLVM_LEVEL_OPTION: _compiler.LLVM_LEVEL}
    monkeypatch.setenv("XLA_FLAGS", f"--{_compiler.LLVM_LEVEL_OPTION}=3")
    assert _compiler.compiler_options.__wrapped__() == {
        _compiler.YNN_OPTION: _compiler.CPU_LIBRARY_FUSIONS}
    monkeypatch.setenv("XLA_FLAGS", f"--{_compiler.YNN_OPTION}=LIBRARY_FUSION_TYPE_REDUCE "
                       f"--{_compiler.LLVM_LEVEL_OPTION}=3")
    assert _compiler.compiler_options.__wrapped__() is None


def test_a_checked_jaxlib_is_not_asked_and_any_other_is(monkeypatch):
    """On a jaxlib release whose XLA was checked to define the options no probe program is
    compiled; on any other one is, and an option XLA rejects leaves XLA's defaults."""
    if jax.default_backend() != "cpu":
        return
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    probes = []
    real_jit = jax.jit
    monkeypatch.setattr(jax, "jit", lambda *a, **k: probes.append(k) or real_jit(*a, **k))
    both = {_compiler.YNN_OPTION: _compiler.CPU_LIBRARY_FUSIONS,
            _compiler.LLVM_LEVEL_OPTION: _compiler.LLVM_LEVEL}
    monkeypatch.setattr(_compiler, "_jaxlib_release", lambda: _compiler.CHECKED_JAXLIB[0])
    assert _compiler.compiler_options.__wrapped__() == both
    assert probes == []
    monkeypatch.setattr(_compiler, "_jaxlib_release", lambda: (99, 0))
    assert _compiler.compiler_options.__wrapped__() == both
    assert probes == [{"compiler_options": both}]
    monkeypatch.setattr(_compiler, "YNN_OPTION", "xla_cpu_no_such_option_in_any_release")
    assert _compiler.compiler_options.__wrapped__() is None
    assert len(probes) == 2


def test_the_same_scores_at_top_level_and_inside_a_callers_jit(mode="rescale"):
    """The top-level program (compiled with the options) and the one inlined into a caller's
    jit (without them) compute the same thing: kernels change, not the arithmetic's terms."""
    w1 = jax.random.normal(jax.random.key(0), (6, 5))
    w2 = jax.random.normal(jax.random.key(1), (5, 2))

    def fn(p, xb):
        return jax.nn.relu(xb @ p[0]) @ p[1]
    x = jax.random.normal(jax.random.key(2), (4, 6))
    refs = jax.random.normal(jax.random.key(3), (3, 6))
    top = jaxlift.attribute(fn, (w1, w2), x, refs, target=1, mode=mode)
    inner = jax.jit(lambda a, b: jaxlift.attribute(fn, (w1, w2), a, b, target=1, mode=mode))(
        x, refs)
    np.testing.assert_allclose(top, inner, rtol=1e-5, atol=1e-6)
    delta = (fn((w1, w2), x)[:, 1][:, None] - fn((w1, w2), refs)[None, :, 1]).mean(1)
    np.testing.assert_allclose(top.sum(1), delta, rtol=1e-4, atol=1e-5)
