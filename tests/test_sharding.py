"""Sharded (mesh=) and chunked (batch_size=) runs give the numbers of the plain run.

The sharded check runs in a subprocess with 8 host CPU devices
(``--xla_force_host_platform_device_count=8`` must be set before JAX starts)."""
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import jaxlift
    from jax.sharding import Mesh
    assert jax.device_count() == 8, jax.devices()

    def fn(p, xb):
        h = jax.nn.relu(jax.lax.conv_general_dilated(xb, p["k"], (1, 1), "SAME",
                        dimension_numbers=("NHWC", "HWIO", "NHWC")))
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        return jnp.tanh(h.reshape(h.shape[0], -1) @ p["w"])

    rng = np.random.default_rng(0)
    p = {"k": jnp.asarray(rng.normal(size=(3, 3, 1, 4))), "w": jnp.asarray(rng.normal(size=(64, 3)))}
    x = jnp.asarray(rng.normal(size=(13, 8, 8, 1)))       # 13: not a multiple of 8 devices
    refs = jnp.asarray(rng.normal(size=(3, 8, 8, 1)))
    per_input = jnp.asarray(rng.normal(size=(13, 2, 8, 8, 1)))
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
    for mode in sys.argv[1:]:
        plain, d0 = jaxlift.attribute(fn, p, x, refs, target=1, mode=mode, return_delta=True)
        sharded, d1 = jaxlift.attribute(fn, p, x, refs, target=1, mode=mode, mesh=mesh,
                                        return_delta=True)
        both = jaxlift.attribute(fn, p, x, refs, target=1, mode=mode, mesh=mesh, batch_size=30)
        np.testing.assert_allclose(sharded, plain, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(d1, d0, rtol=1e-12)
        np.testing.assert_allclose(both, plain, rtol=1e-12, atol=1e-14)
        a = jaxlift.attribute(fn, p, x, per_input, target="all", mode=mode)
        b = jaxlift.attribute(fn, p, x, per_input, target="all", mode=mode, mesh=mesh)
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)
    print("SHARDED-OK")
""")


# Sharding splits the batch axis outside the rules, so one mode exercises the mesh= path in the
# default run (each mode costs ~10 s of compilation); CI's slow step checks reveal_cancel too.
@pytest.mark.slow  # a subprocess on 8 host devices; mesh= refusals stay in the default run
@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_sharded_runs_equal_the_one_device_run(mode):
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "")
                                      + " --xla_force_host_platform_device_count=8").strip(),
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SHARDED-OK" in out.stdout
