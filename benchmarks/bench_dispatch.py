"""Dispatch overhead: ``jaxlift.attribute`` ÷ the same call inside the user's ``jax.jit``.

Inside ``jax.jit`` the inputs are tracers, so ``attribute`` adds nothing at run time: the
program is one compiled dispatch. Called directly it also validates the call, plans chunks,
checks NaN/Inf and reads its flags; this bench measures what that costs, for the MNIST CNN of
docs/design.md §21 (``rescale``, target 3) at 1×1, 64×8 and 1024×8 (input, reference) pairs.

Every ratio is measured in this one run with the two calls interleaved (call A, call B, call A,
…) so that a loaded machine slows both alike; medians (and minima) over ``--repeats`` rounds
after a warm-up. The rows:

* ``attribute`` ÷ jit: the default call (``check_finite=True``, ``batch_size="auto"``);
* ``attribute(check_finite=False)`` ÷ jit;
* ``attribute(batch_size=None)`` ÷ jit: one chunk whatever the size (the jitted call is one
  chunk too: a Python loop over chunks cannot run inside a trace).

    python -m benchmarks.bench_dispatch [--repeats 30] [--sizes 1x1,64x8,1024x8] [--out FILE]

Writes ``experiments/results/bench_dispatch.md``. ``--profile`` prints where the time goes in
the full path of one direct call (``time.perf_counter`` around its pieces): what a call of a
new kind costs; a repeated call skips all of it but the dispatch and the flags' read.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp

import jaxlift
from benchmarks.internals import profile_direct_call
from benchmarks.models import mnist_model
from benchmarks.timing import RESULTS, interleaved, medians, minima, write_report


def size_rows(fn, variables, shape, n, k, repeats):
    x = jax.random.uniform(jax.random.PRNGKey(1), (n,) + shape)
    refs = jax.random.uniform(jax.random.PRNGKey(2), (k,) + shape) * 0.2
    jax.block_until_ready((x, refs))
    jitted = jax.jit(lambda p, xb, rb: jaxlift.attribute(fn, p, xb, rb, target=3))
    calls = {
        "jit": lambda: jitted(variables, x, refs),
        "attribute": lambda: jaxlift.attribute(fn, variables, x, refs, target=3),
        "attribute, check_finite=False": lambda: jaxlift.attribute(
            fn, variables, x, refs, target=3, check_finite=False),
        "attribute, batch_size=None": lambda: jaxlift.attribute(
            fn, variables, x, refs, target=3, batch_size=None),
    }
    times = interleaved(calls, repeats)
    med, low = medians(times), minima(times)
    rows = []
    for name in calls:
        if name == "jit":
            rows.append(f"| {n}×{k} | `{name}` (the floor) | {1e3 * med[name]:.3f} | "
                        f"{1e3 * low[name]:.3f} | 1 | 1 |")
            continue
        rows.append(f"| {n}×{k} | `{name}` | {1e3 * med[name]:.3f} | {1e3 * low[name]:.3f} | "
                    f"**{med[name] / med['jit']:.3f}** | {low[name] / low['jit']:.3f} |")
    return rows


def profile(fn, variables, shape, n, k, repeats):
    """Print where the time goes in the full DeepLIFT path of a direct call (the one a call of
    a new kind takes; the one-dispatch cache serves the repeats): medians per piece."""
    x = jax.random.uniform(jax.random.PRNGKey(1), (n,) + shape)
    refs = jnp.zeros((k,) + shape)
    pieces = profile_direct_call(fn, variables, x, refs, target=3, repeats=repeats)
    for name, ts in pieces.items():
        print(f"{name:32s} {1e6 * statistics.median(ts):9.1f} µs")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--sizes", default="1x1,64x8,1024x8")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "bench_dispatch.md"))
    args = ap.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    fn, variables, shape = mnist_model()
    if args.profile:
        for n, k in sizes:
            print(f"--- {n}×{k} pairs")
            profile(fn, variables, shape, n, k, args.repeats)
        return
    t0 = time.perf_counter()
    lines = ["# jaxlift dispatch overhead: `attribute` ÷ the same call inside `jax.jit`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} on "
             f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind}); MNIST CNN "
             f"(docs/design.md §21), `rescale`, target 3; {args.repeats} interleaved rounds after "
             "warm-up, every ratio from this one run. Command: `python "
             f"-m benchmarks.bench_dispatch --repeats {args.repeats} --sizes {args.sizes}`.",
             "", "| N×K pairs | call | median (ms) | min (ms) | ratio of medians | "
             "ratio of minima |", "|---|---|---|---|---|---|"]
    for n, k in sizes:
        lines += size_rows(fn, variables, shape, n, k, args.repeats)
    write_report(lines, args.out, started=t0)


if __name__ == "__main__":
    main()
