"""XLA options for the programs jaxlift compiles itself (docs/design.md §20.5).

On the CPU, XLA hands dots, convolutions and reductions to its YNNPACK library fusions by
default. A library reduction takes its operand from memory, so each per-pair sum of the
certificate (``ΣC``, ``Σ|C|``, κ̂'s ``Σ|m|·(|v| + |v0|)``) first wrote an N × K × features
temporary and read it back: on the MNIST benchmark that was the whole 8–19 % the certificate
cost. XLA's own reductions fuse the elementwise work that feeds them into the loop, so
:func:`compiler_options` keeps the library for dots and convolutions only. It changes which
kernels run, never what is computed.

The elementwise kernels are compiled at LLVM's ``-O2`` rather than XLA's default ``-O3``
(``xla_backend_optimization_level``): jaxlift's programs hold hundreds of small fused kernels,
whose compile is most of a first call, and ``-O3`` adds 5–18 % to it on the five benchmark
models without making them faster (steady state within noise; both vectorize). The results
differ from ``-O3``'s by rounding at most.

A user who names an option in ``XLA_FLAGS`` keeps their own choice for it; a jaxlib that does
not know the options (an older or newer one) is left at its defaults. Whether it knows them is
asked by compiling a one-op program with them (17 ms, once per process) except on the jaxlib
releases whose XLA was checked to define both (:data:`CHECKED_JAXLIB`). Inside a caller's trace
(their ``jit``, ``vmap`` or ``grad``) JAX takes options from the outermost ``jit`` only, so none
are given there (:func:`options_here`).
"""
from __future__ import annotations

import functools
import os

import jax

YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
CPU_LIBRARY_FUSIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
LLVM_LEVEL_OPTION = "xla_backend_optimization_level"
LLVM_LEVEL = 2
CHECKED_JAXLIB = ((0, 10),)  # 0.10.0 and 0.10.2 define both options (their XLA's flag table)


@functools.cache
def compiler_options() -> dict | None:
    """The ``compiler_options`` of ``jax.jit`` for jaxlift's interpreter programs on this
    process's default backend, or ``None`` (XLA's defaults) off the CPU, where the user set
    the option, or where this jaxlib rejects it (checked once, on a one-op program, unless
    its release is in :data:`CHECKED_JAXLIB`)."""
    if jax.default_backend() != "cpu":
        return None
    flags = os.environ.get("XLA_FLAGS", "")
    options = {name: value for name, value in ((YNN_OPTION, CPU_LIBRARY_FUSIONS),
                                               (LLVM_LEVEL_OPTION, LLVM_LEVEL))
               if name not in flags}
    if not options:
        return None
    if _jaxlib_release() in CHECKED_JAXLIB:
        return options
    try:
        jax.jit(lambda v: v + 1, compiler_options=options).lower(1.0).compile()
    except Exception:  # an XLA without the option (its error type differs between versions)
        return None
    return options


def _jaxlib_release() -> tuple:
    """``(major, minor)`` of the installed jaxlib (``()`` where it cannot be read)."""
    try:
        import jaxlib.version
        return tuple(int(p) for p in jaxlib.version.__version__.split(".")[:2])
    except Exception:  # noqa: BLE001 an unusual version string: ask XLA instead
        return ()


def options_here() -> tuple:
    """:func:`compiler_options` as a hashable key (``()`` for XLA's defaults) for a program
    compiled from here: none inside a trace (JAX refuses options on a nested ``jit``)."""
    try:
        from jax._src.core import trace_state_clean
    except ImportError:  # no way to tell: a nested jit must not carry options
        return ()
    if not trace_state_clean():
        return ()
    return tuple(sorted((compiler_options() or {}).items()))
