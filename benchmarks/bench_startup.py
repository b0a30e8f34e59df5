"""Start-up benchmark (issue 19): how long a newcomer waits before anything happens.

Each figure is the median wall time of a fresh Python process (``--repeats`` runs, after one
warm-up run that fills the file cache and ``__pycache__``):

* ``import jax`` — the floor every JAX program pays;
* ``import jaxlift`` — lazy (PEP 562): no JAX, Flax, h5py or Matplotlib until a name is used;
  the target is "within 0.5 s of ``import jax``";
* ``import jaxlift; jaxlift.attribute`` — JAX and the interpreter, what a first call needs;
* ``jaxlift info MODEL`` — the command on the shipped MNIST ``.h5`` (target: under 1.5 s).

    python -m benchmarks.bench_startup [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "jaxlift" / "data" / "mnist_small.h5"

CASES = {
    "import jax": ["-c", "import jax"],
    "import jaxlift": ["-c", "import jaxlift"],
    "import jaxlift; jaxlift.attribute": ["-c", "import jaxlift; jaxlift.attribute"],
    "jaxlift info mnist_small.h5": ["-m", "jaxlift.cli", "info", str(MODEL)],
}


def wall(args: list[str]) -> float:
    """Seconds for one fresh ``python ARGS`` process (output discarded; failure raises)."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, env=env, cwd=REPO,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    results = {}
    for name, cmd in CASES.items():
        wall(cmd)  # warm-up
        results[name] = [wall(cmd) for _ in range(args.repeats)]
    print(f"{'':<36} {'median s':>9} {'min s':>7} {'max s':>7}   ({args.repeats} runs, "
          f"{os.cpu_count()} CPUs)")
    for name, ts in results.items():
        print(f"{name:<36} {statistics.median(ts):>9.2f} {min(ts):>7.2f} {max(ts):>7.2f}")
    base = statistics.median(results["import jax"])
    print(f"\nimport jaxlift − import jax: {statistics.median(results['import jaxlift']) - base:+.2f} s"
          f"; with jaxlift.attribute: "
          f"{statistics.median(results['import jaxlift; jaxlift.attribute']) - base:+.2f} s "
          "(target ≤ +0.5 s)")
    print(f"jaxlift info: {statistics.median(results['jaxlift info mnist_small.h5']):.2f} s "
          "(target < 1.5 s)")


if __name__ == "__main__":
    main()
