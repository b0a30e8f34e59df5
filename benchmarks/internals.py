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
    from jaxlift import chunking
    return chunking.plan_chunk("auto", fn, target, params, x, n, k, None)


CALL_OPTIONS = dict(mode="rescale", max_mode="preserving", average_refs=True,
                    batch_size="auto", layer_name=None, key=None, progress=False,
                    return_delta=False, check_finite=True, mode_options=None, mesh=None,
                    gating="shapley", precision="default", check_completeness="raise",
                    layer_bypass="refuse")


def profile_direct_call(fn, params, x, refs, *, target: int, repeats: int) -> dict[str, list]:
    """``{piece: [seconds, ...]}``: the full ``rescale`` path of a direct ``attribute`` call
    (the one a call of a new kind takes; repeats are served by the one-dispatch cache), taken
    apart as :func:`jaxlift.pipeline.run` runs it and timed piece by piece ``repeats`` times
    after one warm-up call."""
    import jaxlift
    from jaxlift import chunking, pipeline

    jax.block_until_ready(jaxlift.attribute(fn, params, x, refs, target=target))
    pieces: dict[str, list] = {}

    def tick(name, t0):
        pieces.setdefault(name, []).append(time.perf_counter() - t0)
        return time.perf_counter()

    for _ in range(repeats):
        t = time.perf_counter()
        call = pipeline.make_call("contributions", fn, target=target, **CALL_OPTIONS)
        t = tick("call: options checked", t)
        inputs, call = pipeline.make_inputs(call, params, x, refs, target)
        t = tick("inputs + validate", t)
        shapes = pipeline.shapes_of(inputs)
        chunk = chunking.plan_chunk(call.batch_size, call.fn, call.target, inputs.params,
                                    inputs.x, inputs.n, inputs.k, None, shapes=shapes)
        run_chunk = pipeline.family_of(call.method).runner(call, inputs,
                                                           chunked=chunk != inputs.n)
        run, recorded = pipeline.recording_checks(
            lambda p, xc, rc, start, run_chunk=run_chunk: run_chunk(p, xc, rc, start))
        t = tick("compiled look-up + chunk plan", t)
        if chunk == inputs.n:
            res, delta = run(inputs.params, inputs.x, inputs.refs, 0)
            t = tick("dispatch (one chunk)", t)
        else:
            res, delta = chunking.run_chunked(run, inputs.params, inputs.x, inputs.refs,
                                              inputs.n, chunk, inputs.per_input, False)
            t = tick(f"reference side + {-(-inputs.n // chunk)} chunks", t)
        jax.block_until_ready(res)
        t = tick("compute (wait)", t)
        pipeline.checks_on_host(recorded, inputs.k, pipeline.targets_of(delta, True))
        tick("checks to host", t)
    return pieces


def certified_call(fn, *, target, mode: str, vmapped: bool) -> Callable:
    """``run(params, x, refs) -> (scores, Δt, checks)``: a DeepLIFT ``mode``'s per-pair
    contributions with the completeness certificate's per-pair ``checks["gap"]`` and
    ``checks["bound"]`` (:func:`jaxlift.certificate.ratios` reads them), jitted (and vmapped
    over a batch of programs if ``vmapped``)."""
    from jaxlift.methods import METHODS, interpreted

    composite = interpreted.composite_of(METHODS[mode], {})
    compute = functools.partial(
        interpreted.compute, fn=fn, target=target, composite=composite, what="contributions",
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
    from jaxlift import chunking, program, validation

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

    wrap(validation, "settle_independence")
    wrap(chunking, "plan_chunk")
    wrap(program, "build_program")
