"""benchmarks/xla_phases.py reads XLA's compile log: the call's largest program, after the
first-call mark, its HLO passes and its modules' MLIR and LLVM times summed."""
from benchmarks.bench_compile import FIRST_CALL_MARK
from benchmarks.xla_phases import phases

_LOG = """I1204 21:51:50.0 1 cpu_compiler.cc:2094] Compiling [jit__uniform] for CPU using JIT time: 338 ms (338121 us)
{mark}
I1204 21:51:51.1 2 cpu_compiler.cc:1269] Running HLO passes on [jit_small] for CPU time: 1.0 ms (1000 us)
I1204 21:51:51.2 3 fusion_compiler.cc:494] Compiled MLIR module: a_kernel_module time: 9 ms (9000 us)
I1204 21:51:51.3 2 cpu_compiler.cc:2094] Compiling [jit_small] for CPU using JIT time: 20 ms (20000 us)
I1204 21:51:51.4 2 cpu_compiler.cc:1269] Running HLO passes on [jit_compute] for CPU time: 13.6 ms (13593 us)
I1204 21:51:51.5 3 fusion_compiler.cc:494] Compiled MLIR module: b_kernel_module time: 4.5 ms (4496 us)
I1204 21:51:51.5 4 fusion_compiler.cc:494] Compiled MLIR module: c_kernel_module time: 500 us (500 us)
I1204 21:51:51.6 3 ir_compiler.cc:293] Compiled LLVM module: __compute_module_b time: 7.31 ms (7306 us)
I1204 21:51:51.6 4 ir_compiler.cc:293] Compiled LLVM module: __compute_module_c time: 1.2 s (1200000 us)
I1204 21:51:51.7 2 cpu_compiler.cc:2094] Compiling [jit_compute] for CPU using JIT time: 215 ms (215230 us)
"""


def test_the_largest_program_after_the_mark():
    p = phases(_LOG.format(mark=FIRST_CALL_MARK))
    assert p["program"] == "jit_compute" and p["modules"] == 2
    assert abs(p["hlo_passes"] - 0.0136) < 1e-9 and abs(p["compile"] - 0.215) < 1e-9
    assert abs(p["mlir"] - 0.005) < 1e-9 and abs(p["llvm"] - 1.20731) < 1e-9


def test_no_compile_in_the_log():
    assert phases("no XLA log here") is None
