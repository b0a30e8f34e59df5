"""Timing and memory for the benchmarks: every bench measures with these, so that their figures
mean the same thing.

* :func:`timed` — the first call (compilation included) and the median of ``repeats`` calls
  after it;
* :func:`interleaved` — several calls timed in rounds (A, B, A, B, …) after a warm-up, so that a
  loaded machine slows them alike and their ratio holds; :func:`medians` and :func:`minima` of
  its result;
* :func:`peak_rss_bytes` — this process's peak resident memory, for figures measured in fresh
  processes (:func:`run_child` starts one: ``python -m benchmarks.NAME ...`` printing JSON);
* :func:`write_report` — a Markdown report written whole (never half a file) and printed.

Every timed call is waited for with ``jax.block_until_ready``. Results go to
``experiments/results/`` (:data:`RESULTS`).
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


class Timing(NamedTuple):
    """Seconds of one call: the median after warm-up, and the first call (compilation
    included)."""

    median: float
    first: float


def _wait(f: Callable[[], Any]) -> float:
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(f())
    return time.perf_counter() - t0


def timed(f: Callable[[], Any], repeats: int) -> Timing:
    """``f()`` once (the first call), then ``repeats`` more times: their median."""
    first = _wait(f)
    return Timing(statistics.median([_wait(f) for _ in range(repeats)]), first)


def interleaved(calls: Mapping[str, Callable[[], Any]], repeats: int,
                warmup: int = 2) -> dict[str, list[float]]:
    """``{name: [seconds, ...]}``: each call ``warmup`` times (compilation, every cache), then
    ``repeats`` rounds in which each call runs once, in order."""
    for f in calls.values():
        for _ in range(warmup):
            _wait(f)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, f in calls.items():
            times[name].append(_wait(f))
    return times


def medians(times: Mapping[Any, Sequence[float]]) -> dict:
    """The median of each entry of :func:`interleaved`'s result."""
    return {name: statistics.median(t) for name, t in times.items()}


def minima(times: Mapping[Any, Sequence[float]]) -> dict:
    """The least of each entry of :func:`interleaved`'s result."""
    return {name: min(t) for name, t in times.items()}


def peak_rss_bytes() -> int:
    """This process's peak resident memory: ``VmHWM`` where Linux gives it (unlike
    ``ru_maxrss`` it is not inherited from the parent across ``exec``), else ``ru_maxrss``."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ChildFailed(RuntimeError):
    """A :func:`run_child` process exited non-zero; the message is its last stderr line."""


def run_child(module: str, args: Sequence[str], *, env: Mapping[str, str] | None = None,
              timeout: float | None = None) -> dict:
    """Run ``python -m MODULE ARGS`` in a fresh process from the repository root (so it imports
    this checkout's jaxlift) and return the JSON object on the last line of its output."""
    out = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                         cwd=ROOT, env=None if env is None else dict(env), timeout=timeout)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        raise ChildFailed(lines[-1] if lines else f"{module} exited {out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_report(lines: Sequence[str], out: str | os.PathLike, *,
                 started: float | None = None) -> None:
    """Write ``lines`` to ``out`` (through a temporary file, so a crash leaves the old report)
    and print them; with ``started`` (a ``time.perf_counter()``), a last line gives the total
    seconds since."""
    lines = list(lines)
    if started is not None:
        lines += ["", f"Total: {time.perf_counter() - started:.0f} s.", ""]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, out)
    print("\n".join(lines))
