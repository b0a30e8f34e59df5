"""Core benchmark: DeepLIFT Rescale (and RevealCancel) ÷ jax.grad over the same N×K pairs.

A small MNIST-size CNN (docs/design.md §21: Conv(32,4,s2)-relu, Conv(64,4,s2)-relu, Flatten,
Dense(128)-relu, Dense(10)), N inputs × K references. The floor is ``jax.grad`` of the same
function vmapped over the N·K (input, reference) pairs (one forward and one backward per pair):
DeepLIFT needs a forward on inputs and references and one backward. Every figure is a ratio of
medians measured in this one run, after warm-up; compile time is reported apart.

    python -m benchmarks.bench_core [--n 1024] [--k 8] [--repeats 5]
"""
from __future__ import annotations

import argparse
import platform

import jax
import jax.numpy as jnp

import jaxlift
from benchmarks.timing import timed


def mnist_cnn(params, xb):
    dn = ("NHWC", "HWIO", "NHWC")
    h = jax.nn.relu(jax.lax.conv_general_dilated(xb, params["k1"], (2, 2), "VALID",
                                                 dimension_numbers=dn) + params["b1"])
    h = jax.nn.relu(jax.lax.conv_general_dilated(h, params["k2"], (2, 2), "VALID",
                                                 dimension_numbers=dn) + params["b2"])
    h = h.reshape(h.shape[0], -1)
    h = jax.nn.relu(h @ params["w3"] + params["b3"])
    return h @ params["w4"] + params["b4"]


def init(key):
    ks = jax.random.split(key, 4)
    he = lambda k, shape, fan: jax.random.normal(k, shape) * jnp.sqrt(2.0 / fan)  # noqa: E731
    return {"k1": he(ks[0], (4, 4, 1, 32), 16), "b1": jnp.zeros(32),
            "k2": he(ks[1], (4, 4, 32, 64), 512), "b2": jnp.zeros(64),
            "w3": he(ks[2], (1600, 128), 1600), "b3": jnp.zeros(128),
            "w4": he(ks[3], (128, 10), 128), "b4": jnp.zeros(10)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--target", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    params = init(jax.random.PRNGKey(0))
    kx, kr = jax.random.split(jax.random.PRNGKey(1))
    x = jax.random.uniform(kx, (args.n, 28, 28, 1))
    refs = jax.random.uniform(kr, (args.k, 28, 28, 1)) * 0.2

    def scalar(p, xe):
        return mnist_cnn(p, xe[None])[0, args.target]

    # the floor: grad of the same function over the same N×K (input, reference) pairs
    pairs = jnp.broadcast_to(x[:, None], (args.n, args.k) + x.shape[1:]).reshape((-1,) + x.shape[1:])
    grad_fn = jax.jit(jax.vmap(jax.grad(scalar, argnums=1), in_axes=(None, 0)))
    t_grad, c_grad = timed(lambda: grad_fn(params, pairs), args.repeats)

    rows = [("jax.grad (floor)", t_grad, c_grad)]
    for mode in ("rescale", "reveal_cancel", "genomics_default"):
        t, c = timed(lambda mode=mode: jaxlift.attribute(mnist_cnn, params, x, refs, target=args.target,
                                                         mode=mode), args.repeats)
        rows.append((f"jaxlift {mode}", t, c))

    print(f"# bench_core: MNIST-size CNN, N={args.n} inputs × K={args.k} references "
          f"= {args.n * args.k} pairs")
    print(f"# machine: {platform.machine()} {platform.processor() or ''} "
          f"{jax.devices()[0].device_kind}, jax {jax.__version__}; medians of {args.repeats} "
          "runs after warm-up")
    print("| method | median run (s) | first call incl. compile (s) | ÷ jax.grad |")
    print("|---|---|---|---|")
    for name, t, c in rows:
        print(f"| {name} | {t:.3f} | {c:.2f} | {t / t_grad:.2f} |")
    print(f"rescale / grad = {rows[1][1] / t_grad:.2f} (target ≤ 1.5)")


if __name__ == "__main__":
    main()
