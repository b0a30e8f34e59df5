"""DeepLIFT through an LSTM compiled as a loop: compile time against the number of steps, and
``rescale`` against ``jax.grad`` of the same function over the same pairs (issue "Any JAX model").

    python -m benchmarks.bench_loops [--steps 200] [--inputs 256] [--refs 8]

Prints ratios measured in this one run (medians of 5 after a warm-up; compile time apart) and
writes them to experiments/results/bench_loops.md.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxlift
from benchmarks.timing import RESULTS, timed, write_report

HIDDEN, FEATURES = 32, 8


def make_lstm(seed: int = 0):
    rng = np.random.default_rng(seed)
    mk = lambda *s: jnp.asarray(rng.normal(size=s) / np.sqrt(s[0]), jnp.float32)  # noqa: E731
    params = {"wx": mk(FEATURES, 4 * HIDDEN), "wh": mk(HIDDEN, 4 * HIDDEN),
              "b": jnp.zeros(4 * HIDDEN), "out": mk(HIDDEN, 2)}

    def lstm(p, xb):
        def cell(carry, x_t):
            h, c = carry
            i, f, g, o = jnp.split(x_t @ p["wx"] + h @ p["wh"] + p["b"], 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), None
        zeros = jnp.zeros((xb.shape[0], HIDDEN), xb.dtype)
        (h, _), _ = jax.lax.scan(cell, (zeros, zeros), jnp.swapaxes(xb, 0, 1))
        return h @ p["out"]
    return lstm, params


def compile_seconds(fn, params, steps: int) -> float:
    x = jnp.ones((4, steps, FEATURES))
    r = jnp.zeros((2, steps, FEATURES))
    f = jax.jit(lambda xx, rr: jaxlift.attribute(fn, params, xx, rr, target=0))
    t0 = time.perf_counter()
    f.lower(x, r).compile()
    return time.perf_counter() - t0


def median_seconds(f, *args, repeats: int = 5) -> float:
    return timed(lambda: f(*args), repeats)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--inputs", type=int, default=256)
    ap.add_argument("--refs", type=int, default=8)
    ap.add_argument("--out", default=str(RESULTS / "bench_loops.md"))
    args = ap.parse_args()
    fn, params = make_lstm()
    c100, c1000 = compile_seconds(fn, params, 100), compile_seconds(fn, params, 1000)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(args.inputs, args.steps, FEATURES)), jnp.float32)
    r = jnp.asarray(rng.normal(size=(args.refs, args.steps, FEATURES)), jnp.float32)
    explain = jax.jit(lambda xx, rr: jaxlift.attribute(fn, params, xx, rr, target=0,
                                                       batch_size=None))

    grad = jax.grad(lambda u: fn(params, u[None])[0, 0])

    def grads_per_pair(xx, rr):  # one gradient per (input, reference) pair: at the midpoint
        pair = lambda a, b: grad((a + b) / 2) * (a - b)  # noqa: E731
        return jax.vmap(lambda a: jax.vmap(lambda b: pair(a, b))(rr))(xx)

    def grads_per_input(xx, rr):  # gradient × Δ: the gradient at x does not depend on r, so
        pair = lambda a, b: grad(a) * (a - b)  # noqa: E731  (vmap runs it once per input)
        return jax.vmap(lambda a: jax.vmap(lambda b: pair(a, b))(rr))(xx)
    t_rescale = median_seconds(explain, x, r)
    t_grad = median_seconds(jax.jit(grads_per_pair), x, r)
    t_grad_n = median_seconds(jax.jit(grads_per_input), x, r)
    lines = [
        "# DeepLIFT through an LSTM (benchmarks/bench_loops.py, one run)",
        "",
        f"LSTM, {HIDDEN} hidden units, {FEATURES} features; CPU: {jax.devices()[0].device_kind}",
        "",
        "| | value |",
        "|---|---|",
        f"| compile time, 1,000 steps ÷ 100 steps (target ≤ 2) | {c1000 / c100:.2f} "
        f"({c1000:.2f} s / {c100:.2f} s) |",
        f"| `rescale` ÷ `jax.grad` at every pair, T = {args.steps}, {args.inputs} inputs × "
        f"{args.refs} refs (target ≤ 2) | {t_rescale / t_grad:.2f} ({t_rescale * 1e3:.0f} ms / "
        f"{t_grad * 1e3:.0f} ms) |",
        f"| `rescale` ÷ `jax.grad` at every input (× Δ per pair; {args.refs}× fewer gradients) "
        f"| {t_rescale / t_grad_n:.2f} ({t_rescale * 1e3:.0f} ms / {t_grad_n * 1e3:.0f} ms) |",
    ]
    write_report(lines + [""], args.out)


if __name__ == "__main__":
    main()
