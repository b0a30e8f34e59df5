"""Peak memory of ``jaxlift.attribute`` beyond its input, as a multiple of ``x.nbytes``.

The shipped MNIST CNN (``jaxlift/data/mnist_small.h5``; ``--model design``: the larger CNN of
docs/design.md §21 that ``benchmarks/bench.py`` times), N random 28×28×1 float32 inputs (a
NumPy array, or a jax array with ``--jax-input``), K zero references, target 3,
``batch_size="auto"``. Each figure comes from two fresh processes: a baseline that imports
jax and jaxlift, loads the model and allocates x, and one that does the same and then runs
``attribute``; "extra" is the difference of their peak resident memory (``VmHWM``). The output
alone is ``x.nbytes`` (one score per input feature), so the least possible extra is about 1×
plus one chunk's working set and the compiled program.

    python -m benchmarks.bench_memory                  # N = 1,000 and 50,000 × K = 8
    python -m benchmarks.bench_memory --n 5000 --k 8 --jax-input --model design
"""
from __future__ import annotations

import argparse
import json
import time
from importlib import resources

from benchmarks.timing import peak_rss_bytes, run_child


def load_model(name: str):
    """``(fn, variables)`` of the shipped small MNIST CNN or of bench.py's docs/design.md §21 CNN."""
    if name == "design":
        from benchmarks.models import mnist_model
        fn, variables, _ = mnist_model()
        return fn, variables
    import jaxlift
    with resources.as_file(resources.files("jaxlift") / "data" / "mnist_small.h5") as h5:
        model, variables = jaxlift.load_keras_h5(h5)

    def fn(p, xb):
        return model.apply(p, xb, logits=True)
    return fn, variables


def child(what: str, n: int, k: int, jax_input: bool, model: str) -> dict:
    """Run in a fresh process: load the model, allocate x and refs, and (for ``what ==
    "attribute"``) explain target 3; return peak memory and timings."""
    import numpy as np
    import jax
    import jax.numpy as jnp
    import jaxlift

    fn, variables = load_model(model)
    x = np.random.default_rng(0).random((n, 28, 28, 1), dtype=np.float32)
    refs = np.zeros((k, 28, 28, 1), np.float32)
    if jax_input:
        x, refs = jnp.asarray(x), jnp.asarray(refs)
    out = {"n": n, "k": k, "x_nbytes": int(x.nbytes), "seconds": 0.0}
    if what == "attribute":
        t0 = time.perf_counter()
        scores = jax.block_until_ready(jaxlift.attribute(fn, variables, x, refs, target=3))
        out["seconds"] = time.perf_counter() - t0
        out["out_type"] = type(scores).__name__
    out["peak_bytes"] = peak_rss_bytes()
    return out


def measure(n: int, k: int, jax_input: bool, model: str = "small") -> dict:
    """Peak extra memory of ``attribute`` (fresh processes) for N inputs × K references."""
    res = {}
    for what in ("baseline", "attribute"):
        res[what] = run_child("benchmarks.bench_memory", [
            "--child", what, "--n", str(n), "--k", str(k), "--model", model]
            + (["--jax-input"] if jax_input else []))
    extra = res["attribute"]["peak_bytes"] - res["baseline"]["peak_bytes"]
    return {"model": model, "n": n, "k": k, "input": "jax" if jax_input else "numpy",
            "x_bytes": res["baseline"]["x_nbytes"], "baseline": res["baseline"]["peak_bytes"],
            "peak": res["attribute"]["peak_bytes"], "extra": extra,
            "seconds": res["attribute"]["seconds"]}


def row(r: dict) -> str:
    mb = 2**20
    return (f"| {r['model']} | {r['n']} × {r['k']} | {r['input']} | {r['x_bytes'] / mb:.0f} | "
            f"{r['baseline'] / mb:.0f} | {r['peak'] / mb:.0f} | {r['extra'] / mb:.0f} | "
            f"**{r['extra'] / r['x_bytes']:.2f}** | {r['seconds']:.1f} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--small-n", type=int, default=1_000,
                    help="also measure this N, to split the extra into a part that grows with "
                         "N and one that does not (0: skip)")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--model", choices=("small", "design"), default="small")
    ap.add_argument("--jax-input", action="store_true", help="pass x and refs as jax arrays")
    ap.add_argument("--child", choices=("baseline", "attribute"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.n, args.k, args.jax_input, args.model)))
        return
    ns = ([args.small_n] if 0 < args.small_n < args.n else []) + [args.n]
    rs = [measure(n, args.k, args.jax_input, args.model) for n in ns]
    print("| model | N × K | input | x (MB) | baseline peak (MB) | attribute peak (MB) | "
          "extra (MB) | extra ÷ x.nbytes | run (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(row(r) for r in rs))
    if len(rs) == 2:
        lo, hi = rs
        print(f"\nGrowth from N = {lo['n']} to {hi['n']}: the extra grows by "
              f"{(hi['extra'] - lo['extra']) / (hi['x_bytes'] - lo['x_bytes']):.2f}× the growth "
              f"of x.nbytes (the output alone: 1.00×); the part that does not grow with N is "
              f"about {(lo['extra'] - lo['x_bytes']) / 2**20:.0f} MB.")


if __name__ == "__main__":
    main()
