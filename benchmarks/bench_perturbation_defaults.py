"""Time and peak memory of the perturbation methods on images: the defaults (patches as
feature groups, Shapley sampling's coalitions evaluated 512 at a time) against what the API did
before issue 28 (one group per pixel, every coalition at once), on the shipped MNIST CNN.

Each figure comes from fresh processes: a baseline that imports jax and jaxlift, loads the
model and the digits, and one that then runs ``attribute``; "extra" is the difference of their
peak resident memory (``VmHWM``). Times include compilation (a user's first call). Figures are
ratios measured in one run, printed as a Markdown table.

    python -m benchmarks.bench_perturbation_defaults            # 4 digits, target 7
    python -m benchmarks.bench_perturbation_defaults --n 16
"""
from __future__ import annotations

import argparse
import json
import time

from benchmarks.timing import peak_rss_bytes, run_child

CASES = [  # (label, mode, options: "before" as the old defaults, "now" as shipped)
    ("shapley_sampling", "shapley_sampling",
     {"feature_mask": None, "perturbations_per_eval": None}, None),
    ("shapley_sampling, one group per pixel", "shapley_sampling",
     {"feature_mask": None, "perturbations_per_eval": None}, {"feature_mask": None}),
    ("kernel_shap", "kernel_shap", {"feature_mask": None}, None),
    ("lime", "lime", {"feature_mask": None}, None),
]


def child(n: int, mode: str | None, options: dict | None) -> dict:
    """Run in a fresh process: load the model and n digits, then (``mode``) attribute."""
    from importlib import resources

    import numpy as np

    import jaxlift

    data = resources.files("jaxlift") / "data"
    model, variables = jaxlift.load_keras(str(data / "mnist_small.h5"))

    def fn(v, xb):
        return model.apply(v, xb, logits=True)

    with np.load(str(data / "mnist_digits.npz")) as d:
        x = d["x"][:n, :, :, None].astype(np.float32) / 255
    seconds = 0.0
    if mode is not None:
        t0 = time.perf_counter()
        s = jaxlift.attribute(fn, variables, x, np.zeros((1, 28, 28, 1), np.float32), target=7,
                              mode=mode, mode_options=options)
        np.asarray(s)
        seconds = time.perf_counter() - t0
    return {"peak": peak_rss_bytes(), "seconds": seconds}


def measure(n: int, mode: str | None, options: dict | None) -> dict:
    """:func:`child` in a fresh process (this module with ``--child``)."""
    return run_child("benchmarks.bench_perturbation_defaults", ["--child",
                                                                json.dumps([n, mode, options])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4, help="MNIST digits (default 4)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*json.loads(args.child))))
        return
    base = measure(args.n, None, None)["peak"]
    print(f"{args.n} MNIST digits, target 7, zero reference; extra = peak RSS beyond loading "
          "the model and data\n")
    print("| method | before: s | before: extra MB | now: s | now: extra MB | time ratio | "
          "memory ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, mode, before, now in CASES:
        b, a = measure(args.n, mode, before), measure(args.n, mode, now)
        eb, ea = (b["peak"] - base) / 1e6, (a["peak"] - base) / 1e6
        print(f"| {label} | {b['seconds']:.1f} | {eb:.0f} | {a['seconds']:.1f} | {ea:.0f} | "
              f"{b['seconds'] / a['seconds']:.1f}× | {eb / max(ea, 1.0):.1f}× |")


if __name__ == "__main__":
    main()
