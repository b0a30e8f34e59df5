"""The transpose of a strided conv w.r.t. its input: ``jax.vjp`` ÷ the phase decomposition.

``jax.vjp`` lowers the transpose to one convolution of the cotangent dilated by the strides,
whose multiply-adds mostly hit the inserted zeros; the linear rule's
``strided_input_transpose`` runs one dense stride-1 conv with ``Π strides`` times the output
channels and a depth-to-space interleave. The cases:

* the MNIST CNN's two convs (docs/design.md §21) at B = 4096: (B,28,28,1) → 4×4×1×32 and
  (B,13,13,32) → 4×4×32×64, stride 2, VALID;
* a stride-2 3×3 SAME conv (B,64,64,32) → 64 channels at B = 64;
* a stride-1 3×3 SAME conv, for which the function returns ``None`` (the vjp is kept);
* end to end: ``jaxlift.attribute`` (``rescale``, ``reveal_cancel``) on the MNIST CNN with the
  linear rule's phased transpose on (the CPU default; the 1-channel first conv keeps the vjp,
  ``PHASED_TRANSPOSE_MIN_CHANNELS``) and off.

Both sides are jitted with the kernel an argument (its rearrangement is timed too), float32
NHWC/HWIO; each ratio comes from this one run, the two calls interleaved (vjp, phases, vjp, …)
so that a loaded machine slows both alike; medians (and minima) over ``--repeats`` rounds after
a warm-up.

    python -m benchmarks.bench_conv_transpose [--repeats 15] [--pairs 1024x8] [--out FILE]

Writes ``experiments/results/bench_conv_transpose.md``.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
from jax import lax

from benchmarks.internals import phased_transpose_on, strided_input_transpose
from benchmarks.timing import RESULTS, interleaved, medians, minima, write_report


DN = ("NHWC", "HWIO", "NHWC")
CASES = [  # name, input shape, kernel shape (HWIO), strides, padding
    ("MNIST conv1", (4096, 28, 28, 1), (4, 4, 1, 32), (2, 2), "VALID"),
    ("MNIST conv2", (4096, 13, 13, 32), (4, 4, 32, 64), (2, 2), "VALID"),
    ("3×3 SAME, stride 2", (64, 64, 64, 32), (3, 3, 32, 64), (2, 2), "SAME"),
    ("3×3 SAME, stride 1", (64, 64, 64, 32), (3, 3, 32, 64), (1, 1), "SAME"),
]


def case_row(name, x_shape, w_shape, strides, padding, repeats) -> str:
    x = jax.random.normal(jax.random.PRNGKey(0), x_shape)
    w = jax.random.normal(jax.random.PRNGKey(1), w_shape) / (w_shape[0] * w_shape[1]
                                                             * w_shape[2]) ** 0.5

    def forward(v, w):
        return lax.conv_general_dilated(v, w, strides, padding, dimension_numbers=DN)

    (eqn,) = jax.make_jaxpr(forward)(x, w).eqns
    m = jax.random.normal(jax.random.PRNGKey(2), jax.eval_shape(forward, x, w).shape)
    shapes = f"{x_shape} → {w_shape[:2]}×{w_shape[3]}, s{strides[0]}, {padding}"
    if strided_input_transpose(m, w, lhs_shape=x.shape, **eqn.params) is None:
        return f"| {name} | {shapes} | – | – | `None`: the vjp is kept | – | – |"
    vjp = jax.jit(lambda m, w: jax.vjp(lambda v: forward(v, w), x)[1](m)[0])
    phases = jax.jit(lambda m, w: strided_input_transpose(m, w, lhs_shape=x.shape,
                                                          **eqn.params))
    want, got = vjp(m, w), phases(m, w)
    err = float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))
    times = interleaved({"vjp": lambda: vjp(m, w), "phases": lambda: phases(m, w)}, repeats)
    med, low = medians(times), minima(times)
    return (f"| {name} | {shapes} | {1e3 * med['vjp']:.1f} | {1e3 * med['phases']:.1f} | "
            f"**{med['vjp'] / med['phases']:.2f}** | {low['vjp'] / low['phases']:.2f} | "
            f"{err:.1e} |")


def end_to_end(repeats: int, pairs: str) -> list[str]:
    """Rows for ``jaxlift.attribute`` on the MNIST CNN (``benchmarks.models.mnist_model``) with
    the linear rule's phased transpose on (the default on a CPU) and off, interleaved in this
    one run."""
    import jaxlift
    from benchmarks.models import mnist_model

    n, k = (int(v) for v in pairs.split("x"))
    fn, variables, shape = mnist_model()
    x = jax.random.uniform(jax.random.PRNGKey(1), (n,) + shape)
    refs = jax.random.uniform(jax.random.PRNGKey(2), (k,) + shape) * 0.2
    rows = ["", f"End to end: `jaxlift.attribute` on the MNIST CNN, {n} inputs × {k} references, "
            "target 3, `batch_size=\"auto\"`; `jax.vjp`'s transpose ÷ the phased one (the "
            "default on a CPU; forced on here whatever the platform), interleaved in this run.",
            "",
            "| mode | vjp median (ms) | phases median (ms) | vjp ÷ phases (medians) | (minima) "
            "| max relative difference |", "|---|---|---|---|---|---|"]
    for mode in ("rescale", "reveal_cancel"):
        calls, results = {}, {}
        for name, platforms in (("vjp", ()), ("phases", (jax.default_backend(),))):
            def own_fn(p, xb):  # a function of its own: its own compiled programs
                return fn(p, xb)
            with phased_transpose_on(platforms):  # traced and compiled now, under this setting
                results[name] = jaxlift.attribute(own_fn, variables, x, refs, target=3,
                                                  mode=mode)
            calls[name] = (lambda f, m: lambda: jaxlift.attribute(f, variables, x, refs, target=3,
                                                                  mode=m))(own_fn, mode)
        diff = float(jnp.max(jnp.abs(results["phases"] - results["vjp"]))
                     / jnp.max(jnp.abs(results["vjp"])))
        times = interleaved(calls, repeats)
        med, low = medians(times), minima(times)
        rows.append(f"| `{mode}` | {1e3 * med['vjp']:.1f} | {1e3 * med['phases']:.1f} | "
                    f"**{med['vjp'] / med['phases']:.2f}** | {low['vjp'] / low['phases']:.2f} | "
                    f"{diff:.1e} |")
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default=str(RESULTS / "bench_conv_transpose.md"))
    ap.add_argument("--pairs", default="1024x8", help="N×K of the end-to-end rows")
    ap.add_argument("--no-end-to-end", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    lines = ["# Transpose of a strided conv w.r.t. its input: `jax.vjp` ÷ phase decomposition",
             "", f"Machine: {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} "
             f"on {jax.devices()[0].platform}; float32, NHWC/HWIO, both sides jitted with the "
             f"kernel an argument; {args.repeats} interleaved rounds after warm-up, every ratio "
             "from this one run. Command: `python -m benchmarks.bench_conv_transpose "
             f"--repeats {args.repeats}`. Error: max |phases − vjp| ÷ max |vjp|.", "",
             "| case | input → kernel | vjp median (ms) | phases median (ms) | "
             "vjp ÷ phases (medians) | (minima) | error |",
             "|---|---|---|---|---|---|---|"]
    for case in CASES:
        lines.append(case_row(*case, args.repeats))
        print(lines[-1], flush=True)
    if not args.no_end_to_end:
        lines += end_to_end(args.repeats, args.pairs)
        print("\n".join(lines[-6:]), flush=True)
    write_report(lines, args.out, started=t0)


if __name__ == "__main__":
    main()
