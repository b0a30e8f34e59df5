"""The one place where benchmarks reach inside jaxlift.

Most benches time only the public face (``jaxlift.attribute``). A few need what lies under it:
the chunk size ``batch_size="auto"`` picks, the pieces of one direct call taken apart, the
certificate's summary of a compiled call, the phased conv transpose on and off, the functions a
first call spends its time in. Those calls are all here, so that when the pipeline's insides
change (their names, their arguments) this module is the one to follow. Nothing here uses a
private (``_name``) name of jaxlift.
"""
from __future__ import annotations

import contextlib
import functools
import sys
import time
from typing import Any, Callable, Iterator

import jax


def auto_chunk_inputs(fn, target, params, x, n: int, k: int) -> int:
    """The inputs per chunk ``batch_size="auto"`` plans for N inputs × K shared references."""
    from jaxlift import pipeline
    return pipeline.inputs_per_chunk("auto", fn, target, params, x, n, k, None)


def profile_direct_call(fn, params, x, refs, *, target: int, repeats: int) -> dict[str, list]:
    """``{piece: [seconds, ...]}``: the full ``rescale`` path of a direct ``attribute`` call
    (the one a call of a new kind takes; repeats are served by the one-dispatch cache), taken
    apart and timed piece by piece ``repeats`` times after one warm-up call."""
    import jaxlift
    from jaxlift import pipeline
    from jaxlift.methods import METHODS, interpreted
    from jaxlift.validation import check_examples_independent, signature

    jax.block_until_ready(jaxlift.attribute(fn, params, x, refs, target=target))
    pieces: dict[str, list] = {}

    def tick(name, t0):
        pieces.setdefault(name, []).append(time.perf_counter() - t0)
        return time.perf_counter()

    method = METHODS["rescale"]
    for _ in range(repeats):
        t = time.perf_counter()
        xi, ri, n, k, per = pipeline.prepare_inputs(x, refs, None)
        t = tick("inputs + validate", t)
        concrete = pipeline.is_concrete((params, xi, ri))
        shapes = signature(params), signature(xi, drop_leading=True)
        t = tick("concrete + shape signature", t)
        check_examples_independent(fn, params, xi, ri, n=n, per_input_refs=per,
                                   shapes_key=shapes)
        t = tick("independence check (cache hit)", t)
        chunk = pipeline.inputs_per_chunk("auto", fn, target, params, xi, n, k, None,
                                          shapes=shapes)
        one = interpreted.runner(method, {}, fn=fn, target=target, what="contributions",
                                 layer_name=None, per_input=per, average=True,
                                 precision="default", check_inputs=concrete,
                                 max_mode="preserving", gating="shapley", params=params,
                                 refs=ri, chunked=chunk < n)
        run, flags = pipeline.recording_checks(one)
        t = tick("compiled look-up + chunk plan", t)
        if chunk == n:
            res, _ = run(params, xi, ri, 0)
            t = tick("dispatch (one chunk)", t)
        else:
            res, _ = pipeline.run_chunked(run, params, xi, ri, n, chunk, per, False)
            t = tick(f"reference side + {-(-n // chunk)} chunks", t)
        jax.block_until_ready(res)
        t = tick("compute (wait)", t)
        pipeline.checks_on_host(flags, k, 1)
        tick("finite flags to host", t)
    return pieces


def certified_call(fn, *, target, mode: str, vmapped: bool) -> Callable:
    """``run(params, x, refs) -> (scores, Δt, checks)``: a DeepLIFT ``mode``'s per-pair
    contributions with the completeness certificate's summary (``checks["ratio"]``: gap/τ,
    ``checks["failing"]``), jitted (and vmapped over a batch of programs if ``vmapped``)."""
    from jaxlift.methods import METHODS, interpreted

    config = interpreted.config_of(METHODS[mode], {}, "preserving", "shapley")
    compute = functools.partial(
        interpreted.compute, fn=fn, target=target, config=config, what="contributions",
        layer_name=None, per_input_refs=False, average=False, certify=True)
    return jax.jit(jax.vmap(compute) if vmapped else compute)


def strided_input_transpose(ct, w, *, lhs_shape, **conv_params):
    """The linear rule's transpose of a strided conv w.r.t. its input by phases, or ``None``
    where it does not apply (stride 1); ``conv_params`` are the conv equation's params."""
    from jaxlift.rules import linear
    return linear.strided_input_transpose(ct, w, lhs_shape=lhs_shape, **conv_params)


@contextlib.contextmanager
def phased_transpose_on(platforms: tuple[str, ...]) -> Iterator[None]:
    """Programs traced inside use the phased conv transpose on ``platforms`` only (``()``:
    ``jax.vjp``'s everywhere)."""
    from jaxlift.rules import linear
    saved = linear.PHASED_TRANSPOSE_PLATFORMS
    linear.PHASED_TRANSPOSE_PLATFORMS = platforms
    try:
        yield
    finally:
        linear.PHASED_TRANSPOSE_PLATFORMS = saved


def time_first_call_pieces(timers: dict[str, Any]) -> None:
    """Wrap the functions a first ``attribute`` call spends its own time in (the independence
    check, the chunk plan, the building of programs) so that each adds its seconds to
    ``timers[name]`` and its calls to ``timers[name + "_count"]``. Every loaded jaxlift module
    that binds one of them (``from jaxlift.program import build_program``) gets the wrapper.
    For a fresh process: the wrappers stay."""
    import jaxlift.api  # noqa: F401  (loads every module a call goes through)
    from jaxlift import pipeline, program, validation

    def wrap(module, name):
        original = getattr(module, name)

        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                timers[name] = timers.get(name, 0.0) + time.perf_counter() - t0
                timers[name + "_count"] = timers.get(name + "_count", 0) + 1
        for loaded in list(sys.modules.values()):
            if (getattr(loaded, "__name__", "").split(".")[0] == "jaxlift"
                    and getattr(loaded, name, None) is original):
                setattr(loaded, name, wrapper)

    wrap(validation, "check_examples_independent")
    wrap(pipeline, "inputs_per_chunk")
    wrap(program, "build_program")
