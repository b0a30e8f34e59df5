"""Calibration of the completeness certificate (jaxlift.certificate): how close the programs
that must pass come to their bound.

For every case of the fuzz suite (tests/test_fuzz_exact.py: 12 drawn structures × 192 random
programs, float64 to bfloat16, BatchNorm-like offsets of 1e3, references from equal to 1e4
away, every DeepLIFT mode), the studies' models on their own data and references, and the
README's examples, it runs the certificate inside the compiled program and records the worst
``gap/τ`` over all pairs. A ratio below 1 is a pass; the calibration asks for no refusal at all
where the README's bound holds, with a margin.

    python -m benchmarks.certificate_calibration [--cases 12] [--out experiments/results/certificate_calibration.md]
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxlift
from jaxlift import certificate
from benchmarks.internals import certified_call
from benchmarks.timing import RESULTS, write_report

REPO = Path(__file__).resolve().parents[1]


def load_module(path: Path, name: str):
    """A module from a file of the repository (the fuzz suite's program generator), loaded as
    pytest loads it: its own folder importable while it runs (``from oracles import …``)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    finally:
        if added:
            sys.path.remove(folder)
    return module


def worst_ratio(fn, params, x, refs, *, target, mode, vmapped: bool) -> tuple[float, int, int]:
    """``(worst gap/τ, failing pairs, pairs)`` of one call (or of a batch of programs)."""
    run = certified_call(fn, target=target, mode=mode, vmapped=vmapped)
    _, delta, checks = run(params, x, refs)
    ratio, failing = certificate.ratios(checks["gap"], checks["bound"])
    return float(ratio.max()), int(failing.sum()), int(np.size(delta))


def fuzz(cases: int) -> list[tuple]:
    suite = load_module(REPO / "tests" / "test_fuzz_exact.py", "fuzz_suite")
    rows = []
    for case in suite.fuzz_cases(cases)[:-1]:  # the last one carries a refused integer path
        fn = suite.build(case["structure"])
        params, x, r = suite._draw_programs(case)
        with jax.enable_x64(True):
            cast = lambda a, case=case: jnp.asarray(a, case["dtype"])  # noqa: E731
            p, xs, rs = jax.tree_util.tree_map(cast, (params, x, r))
            ratio, failing, pairs = worst_ratio(fn, p, xs, rs, target=0, mode=case["mode"],
                                                vmapped=True)
        name = "-".join((*case["structure"], case["dtype"], case["mode"], f"gap{case['gap']}"))
        rows.append((f"fuzz {name}", ratio, failing, pairs))
    return rows


def studies() -> list[tuple]:
    """The shipped MNIST CNN on its digits (black, blurred references) and the seeds' models
    where their data is present."""
    rows = []
    model, variables = jaxlift.load_keras(REPO / "jaxlift" / "data" / "mnist_small.h5")
    fn = functools.partial(model.apply, logits=True)
    with np.load(REPO / "jaxlift" / "data" / "mnist_digits.npz") as d:
        x = jnp.asarray(d["x"][:32].astype(np.float32) / 255)[..., None]
    refs = {"black": jnp.zeros((1,) + x.shape[1:]),
            "blurred": jaxlift.references.blurred(x[:8], sigma=3.0)}
    for name, r in refs.items():
        for mode in ("rescale", "reveal_cancel", "genomics_default"):
            for target in (0, 3, 7):
                ratio, failing, pairs = worst_ratio(fn, variables, x, r, target=target,
                                                    mode=mode, vmapped=False)
                rows.append((f"MNIST CNN, {name} refs, {mode}, target {target}", ratio,
                             failing, pairs))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--out", default=str(RESULTS / "certificate_calibration.md"))
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    rows = fuzz(args.cases) + studies()
    lines = ["# Completeness certificate: calibration", "",
             "Worst `gap/τ` over every pair (a pass is < 1), from "
             "`python -m benchmarks.certificate_calibration`.", "",
             "| programs | worst gap/τ | refused pairs | pairs |", "|---|---|---|---|"]
    lines += [f"| {name} | {ratio:.3g} | {failing} | {pairs} |" for name, ratio, failing, pairs
              in rows]
    total = sum(r[3] for r in rows)
    refused = sum(r[2] for r in rows)
    lines += ["", f"{refused} of {total} pairs refused; worst ratio "
              f"{max(r[1] for r in rows):.3g}. {time.perf_counter() - t0:.0f} s.", ""]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
