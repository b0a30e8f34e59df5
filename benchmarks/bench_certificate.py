"""What the completeness certificate costs: ``check_completeness="raise"`` ÷ ``"off"`` on the
MNIST CNN (the seeds' architecture, trained weights from experiments/results/mnist_cnn.h5),
N = 1024 inputs × K = 8 references, target 3, rescale and reveal_cancel; medians of rounds
interleaved in one run (the ratio holds on a loaded machine better than the seconds).

    python -m benchmarks.bench_certificate [--n 1024] [--k 8] [--rounds 15]
"""
from __future__ import annotations

import argparse
import functools
import platform

import jax
import numpy as np

import jaxlift
from benchmarks.models import mnist_model
from benchmarks.timing import RESULTS, ROOT, interleaved, medians, write_report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", default=str(RESULTS / "bench_certificate.md"))
    args = parser.parse_args(argv)
    fn, variables, _ = mnist_model()
    with np.load(ROOT / "jaxlift" / "data" / "mnist_digits.npz") as d:
        digits = d["x"].astype(np.float32) / 255
    x = jax.numpy.asarray(np.resize(digits, (args.n, 28, 28))[..., None])
    refs = jax.random.uniform(jax.random.PRNGKey(2), (args.k, 28, 28, 1)) * 0.2
    calls = {}
    for mode in ("rescale", "reveal_cancel"):
        for check in ("off", "raise"):
            calls[(mode, check)] = functools.partial(
                jaxlift.attribute, fn, variables, x, refs, target=3, mode=mode,
                check_completeness=check)
    med = medians(interleaved(calls, args.rounds))
    lines = ["# The completeness certificate's cost", "",
             f"Machine: {platform.machine()} CPU, {jax.device_count()} device(s), jax "
             f"{jax.__version__} on {jax.default_backend()}; MNIST CNN, N = {args.n} × K = "
             f"{args.k} = {args.n * args.k} pairs, target 3; medians of {args.rounds} "
             "interleaved rounds. Command: `python -m benchmarks.bench_certificate`.", "",
             "| mode | check_completeness=\"off\" (s) | \"raise\" (s) | cost |", "|---|---|---|---|"]
    for mode in ("rescale", "reveal_cancel"):
        off, on = med[(mode, "off")], med[(mode, "raise")]
        lines.append(f"| {mode} | {off:.3f} | {on:.3f} | {100 * (on / off - 1):+.1f} % |")
    lines.append("")
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
