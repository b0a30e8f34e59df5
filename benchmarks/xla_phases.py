"""Inside XLA's compile of a first call: where the seconds of ``bench_compile``'s "XLA compile"
column go, for the gradient's program and jaxlift's (docs/design.md §20.13).

XLA:CPU compiles a program in three phases: its HLO passes (simplification, fusion, layout,
copy insertion: one thread), then each fusion as an MLIR module lowered to LLVM IR, then each
such module through LLVM's code generation — the last two on worker threads (two on this
project's machine), so their summed time is work, not wall time. Identical fusions are compiled
once. This reads the three from XLA's own log (``TF_CPP_VMODULE``), in a fresh process per
(model, method) running ``benchmarks.bench_compile``'s child, for the call's largest program.

    python -m benchmarks.xla_phases [--models mnist,decoder] [--out FILE]

The log lines are XLA's, not an API: where this jaxlib does not write them the figures are
missing (``–``), never guessed. One run per row: on a shared machine the summed times move
±20 % between runs, so compare two variants of a program by recompiling both in turn in one
process, not by two runs of this.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

from benchmarks.bench_compile import FIRST_CALL_MARK, METHODS
from benchmarks.timing import RESULTS, ROOT, write_report

VMODULE = "cpu_compiler=2,fusion_compiler=2,ir_compiler=2"
_TIME = r"time: ([0-9.]+) (s|ms|us)"
_UNIT = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def _seconds(value: str, unit: str) -> float:
    return float(value) * _UNIT[unit]


def phases(log: str) -> dict | None:
    """XLA's phases for the program whose compile took longest in ``log`` (XLA's stderr; after
    :data:`~benchmarks.bench_compile.FIRST_CALL_MARK` where it holds one):
    ``hlo_passes`` (s), ``mlir`` and ``llvm`` (s summed over modules), ``modules``, ``compile``
    (the compile after the HLO passes, s), ``program`` (its name); ``None`` if the log has none."""
    lines = log.split(FIRST_CALL_MARK)[-1].splitlines()
    compiles = [(i, m.group(1), _seconds(m.group(2), m.group(3))) for i, line in enumerate(lines)
                for m in [re.search(r"Compiling \[(\S+)\] for CPU using JIT " + _TIME, line)] if m]
    if not compiles:
        return None
    end, name, seconds = max(compiles, key=lambda c: c[2])
    start = max((i for i, line in enumerate(lines[:end])
                 if f"Running HLO passes on [{name}]" in line), default=None)
    if start is None:
        return None
    hlo = re.search(_TIME, lines[start])

    def total(what: str) -> tuple[float, int]:
        found = [re.search(_TIME, line) for line in lines[start:end] if what in line]
        found = [m for m in found if m]
        return sum(_seconds(m.group(1), m.group(2)) for m in found), len(found)
    mlir, modules = total("Compiled MLIR module")
    llvm, _ = total("Compiled LLVM module")
    return {"program": name, "hlo_passes": _seconds(hlo.group(1), hlo.group(2)) if hlo else None,
            "compile": seconds, "mlir": mlir, "llvm": llvm, "modules": modules}


def run(model: str, method: str) -> dict | None:
    """:func:`phases` of one first call in a fresh process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0", "TF_CPP_VMODULE": VMODULE,
           "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_compile", "--child", model,
                          method], capture_output=True, text=True, cwd=ROOT, env=env)
    return phases(out.stderr) if out.returncode == 0 else None


def _cell(value, fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mnist,cats_dogs,decoder,lstm,bert")
    parser.add_argument("--out", default=str(RESULTS / "xla_phases.md"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    lines = ["# Inside XLA's compile of a first call", "",
             "`python -m benchmarks.xla_phases`: one fresh process per row, XLA's own log "
             "(`TF_CPP_VMODULE`) read for the call's largest program. HLO passes run on one "
             "thread; MLIR and LLVM are summed over the modules XLA compiles on its worker "
             "threads (work, not wall time); compile: XLA's time after the HLO passes.", "",
             "| model | method | program | HLO passes (s) | modules | MLIR (s, summed) | "
             "LLVM (s, summed) | compile (s) |", "|---|---|---|---|---|---|---|---|"]
    for model in args.models.split(","):
        for method in METHODS:
            p = run(model, method) or {}
            lines.append(f"| {model} | {method} | {p.get('program', '–')} | "
                         f"{_cell(p.get('hlo_passes'), '{:.3f}')} | {_cell(p.get('modules'), '{:d}')} | "
                         f"{_cell(p.get('mlir'))} | {_cell(p.get('llvm'))} | "
                         f"{_cell(p.get('compile'))} |")
            print(lines[-1], flush=True)
    write_report(lines, args.out, started=started)


if __name__ == "__main__":
    main()
