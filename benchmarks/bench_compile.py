"""The first call: what ``jaxlift.attribute``'s first call costs beside the first call of
``jax.jit(jax.vmap(jax.grad))`` of the same target over the same pairs, and where it goes.

Each (model, method) runs in a fresh process (median of ``--repeats`` processes): the model is
built and its inputs made before the clock starts; then one call. The breakdown comes from
JAX's own monitoring events (tracing to a jaxpr, lowering to MLIR, XLA's compile: summed over
every compilation of the call, eager dispatches included) and from timers around jaxlift's
pieces: the chunk plan and the building of programs (tracing ``fn``, inlining, fusion). The
models are in benchmarks/compile_models.py.

    python -m benchmarks.bench_compile [--models mnist,lstm] [--repeats 3] [--persistent-cache]

With ``--persistent-cache`` it also runs each DeepLIFT call twice, in two processes sharing a
JAX persistent compilation cache, and reports the second's first call ÷ the first's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

from benchmarks.timing import RESULTS, run_child, write_report

METHODS = ("grad", "rescale", "reveal_cancel")
HAND_WRITTEN = ("hand_rescale", "hand_reveal_cancel")  # benchmarks/hand_rescale.py: MNIST only
FIRST_CALL_MARK = "--- bench_compile: the model is built; the first call follows ---"


def fewer_inputs(n: int) -> int:
    """How many of the first call's ``n`` inputs the next call explains (16 → 13, 4 → 3)."""
    return n - max(1, n // 5)


def more_inputs(tree, n: int):
    """``tree``'s leaves (leading axis ``n``) with their first ``max(1, n // 4)`` rows again
    after them: the inputs of the last call (16 → 20, 4 → 5)."""
    extra = max(1, n // 4)
    return jax.block_until_ready(jax.tree_util.tree_map(
        lambda l: jnp.concatenate([l, l[:extra]]), tree))


def timed(thunk) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(thunk())
    return time.perf_counter() - t0


def child(model_name: str, method: str) -> dict:
    """One first call in this (fresh) process; returns the timings."""
    import jax
    import jax.numpy as jnp

    import jaxlift
    from benchmarks.compile_models import MODELS
    from benchmarks.internals import time_first_call_pieces

    events: dict = {}

    def listen(name, seconds, **_):
        key = name.rsplit("/", 1)[-1]
        events[key] = events.get(key, 0.0) + seconds
        events[key + "_count"] = events.get(key + "_count", 0) + 1

    jax.monitoring.register_event_duration_secs_listener(listen)
    timers: dict = {}
    model_fn, params, x, refs, target, layer = MODELS[model_name]()
    jax.block_until_ready((params, x, refs))
    traces = [0]
    print(FIRST_CALL_MARK, file=sys.stderr, flush=True)  # benchmarks.xla_phases reads after it

    def fn(p, xb):  # the model, its traces counted
        traces[0] += 1
        return model_fn(p, xb)
    if method in HAND_WRITTEN:  # the MNIST CNN's DeepLIFT written by hand: the floor
        import benchmarks.hand_rescale as hand
        by_hand = getattr(hand, method)
        call = jax.jit(by_hand(target))
        events.clear()
        t0 = time.perf_counter()
        jax.block_until_ready(call(params, x, refs))
        total = time.perf_counter() - t0
        first = dict(events), traces[0]
        fewer = jax.block_until_ready(x[:fewer_inputs(x.shape[0])])
        t0 = time.perf_counter()
        jax.block_until_ready(call(params, fewer, refs))
        then = time.perf_counter() - t0
        one_ref = jax.block_until_ready(refs[:1])
        then_one_ref = timed(lambda: call(params, x, one_ref))
        more = more_inputs(x, x.shape[0])
        then_more = timed(lambda: call(params, more, refs))
        _, params = built_again(model_name)  # the hand-written program is one jit per model
        then_rebuilt = timed(lambda: jax.jit(by_hand(target))(params, x, refs))
    elif method == "grad":
        first_leaf = jax.tree_util.tree_leaves(x)[0]
        first_ref = jax.tree_util.tree_leaves(refs)[0]
        k = first_ref.shape[1 if first_ref.ndim == first_leaf.ndim + 1 else 0]  # K, per input too
        arg = jax.tree_util.tree_map(lambda l: jnp.repeat(l, k, axis=0), x)  # the pairs
        call = gradient_call(fn, params, target, first_leaf.dtype)
        events.clear()
        t0 = time.perf_counter()
        jax.block_until_ready(call(arg))
        total = time.perf_counter() - t0
        first = dict(events), traces[0]
        rows = fewer_inputs(first_leaf.shape[0]) * k
        fewer = jax.block_until_ready(jax.tree_util.tree_map(lambda l: l[:rows], arg))
        t0 = time.perf_counter()
        jax.block_until_ready(call(fewer))
        then = time.perf_counter() - t0
        one_ref = jax.block_until_ready(  # each input once: the pairs of one reference
            jax.tree_util.tree_map(lambda l: l[::k], arg))
        then_one_ref = timed(lambda: call(one_ref))
        more = more_inputs(arg, first_leaf.shape[0] * k)  # whole inputs' pairs: n // 4 · k rows
        then_more = timed(lambda: call(more))
        again, params = built_again(model_name)
        then_rebuilt = timed(lambda: gradient_call(again, params, target, first_leaf.dtype)(arg))
    else:
        time_first_call_pieces(timers)
        events.clear()
        t0 = time.perf_counter()
        jax.block_until_ready(jaxlift.attribute(fn, params, x, refs, target=target, mode=method,
                                                layer=layer))
        total = time.perf_counter() - t0
        first = {**events, **timers}, traces[0]  # before the next call adds to them
        n = jax.tree_util.tree_leaves(x)[0].shape[0]
        rows = fewer_inputs(n)
        fewer = jax.block_until_ready(jax.tree_util.tree_map(lambda l: l[:rows], x))
        per_input = all(jnp.ndim(r) == jnp.ndim(l) + 1 for r, l in zip(
            jax.tree_util.tree_leaves(refs), jax.tree_util.tree_leaves(x)))
        fewer_refs = jax.block_until_ready(jax.tree_util.tree_map(
            lambda l: l[:rows], refs)) if per_input else refs  # references held per input
        t0 = time.perf_counter()
        jax.block_until_ready(jaxlift.attribute(fn, params, fewer, fewer_refs, target=target,
                                                mode=method, layer=layer))
        then = time.perf_counter() - t0
        one_ref = jax.block_until_ready(jax.tree_util.tree_map(
            (lambda l: l[:, :1]) if per_input else (lambda l: l[:1]), refs))
        then_one_ref = timed(lambda: jaxlift.attribute(fn, params, x, one_ref, target=target,
                                                       mode=method, layer=layer))
        more, more_refs = more_inputs(x, n), more_inputs(refs, n) if per_input else refs
        then_more = timed(lambda: jaxlift.attribute(fn, params, more, more_refs, target=target,
                                                    mode=method, layer=layer))
        again, params = built_again(model_name)
        then_rebuilt = timed(lambda: jaxlift.attribute(again, params, x, refs, target=target,
                                                       mode=method, layer=layer))
    return {"total": total, "then_fewer": then, "then_one_ref": then_one_ref,
            "then_more": then_more, "then_rebuilt": then_rebuilt, "fn_traces": first[1],
            **first[0]}


def gradient_call(fn, params, target: int, dtype):
    """``jax.jit(jax.vmap(jax.grad))`` of ``fn``'s ``target`` over pairs (one example each):
    the baseline; token models (integer inputs) take the gradient with respect to the
    embedding table."""
    if jnp.issubdtype(dtype, jnp.floating):
        def t(xe):
            return fn(params, jax.tree_util.tree_map(lambda l: l[None], xe))[0, target]
        return jax.jit(jax.vmap(jax.grad(t)))

    def t_of(p, xe):
        return fn(p, jax.tree_util.tree_map(lambda l: l[None], xe))[0, target]
    call = jax.jit(jax.vmap(jax.grad(t_of), in_axes=(None, 0)))
    return lambda a: call(params, a)


def built_again(model_name: str):
    """``(fn, params)`` as a notebook cell that builds the model returns them when it runs
    again: the same architecture and weights, a new function object."""
    from benchmarks.compile_models import MODELS
    model_fn, params, *_ = MODELS[model_name]()
    return (lambda p, xb: model_fn(p, xb)), jax.block_until_ready(params)


def first_call(model: str, method: str, env: dict) -> dict:
    """:func:`child` in a fresh process."""
    return run_child("benchmarks.bench_compile", ["--child", model, method], env=env)


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r.get(key, 0.0) for r in runs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--models", default="mnist,cats_dogs,decoder,lstm,bert")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--persistent-cache", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "bench_compile.md"))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    t_start = time.perf_counter()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    lines = ["# The first call", "",
             f"`python -m benchmarks.bench_compile`: each figure the median of {args.repeats} "
             "fresh processes (model built before the clock starts); ratios are first call ÷ "
             "the first call of `jax.jit(jax.vmap(jax.grad))` of the same target over the same "
             "N × K pairs (token models: the gradient with respect to the embedding table). "
             "Breakdown: JAX's monitoring events summed over the call (tracing to jaxprs, "
             "lowering to MLIR, XLA compiles with their count), jaxlift's own pieces, and how "
             "many times the model's function was traced. The last three columns: the next "
             "calls in the same process, in turn: on fewer of the inputs (16 → 13, "
             "cats-vs-dogs 4 → 3); on all the inputs against one reference (K → 1; per-input "
             "references: the first of each input's); on more inputs (16 → 20, 4 → 5: the "
             "first ones again); then the model built again (a new function object of the same "
             "architecture and weights, as when a notebook cell runs again) on the first call's "
             "inputs; `jax.jit` compiles each new shape and each new function; "
             "jaxlift pads a small call to a size it has compiled (docs/design.md §20.2) and "
             "runs a program it has compiled for another function object that traces to the "
             "same jaxpr (§20.6). "
             "`hand_rescale` and `hand_reveal_cancel` (MNIST CNN only): the two modes written by "
             "hand in `jnp` — Rescale as a ReLU whose derivative is its secant under "
             "`jax.grad`; RevealCancel as the sign split of each layer's terms, RevealCancel's "
             "ReLU and the transposed products, by `jax.vjp` — two `vmap`s, without jaxlift's "
             "guards, checks or proof (benchmarks/hand_rescale.py): the least a DeepLIFT "
             "program compiles, beside the gradient's.", "",
             "| model | method | first call (s) | ÷ grad | trace (s) | lower (s) | XLA compile "
             "(s, count) | chunk plan (s) | build_program (s, count) | fn traces | "
             "then fewer inputs (s) | then one reference (s) | then more inputs (s) | "
             "then the model built again (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model in args.models.split(","):
        methods = METHODS + (HAND_WRITTEN if model == "mnist" else ())
        runs = {m: [first_call(model, m, env) for _ in range(args.repeats)] for m in methods}
        grad = median_of(runs["grad"], "total")
        for m in methods:
            r = runs[m]
            total = median_of(r, "total")
            lines.append(
                f"| {model} | {m} | {total:.2f} | {total / grad:.2f} | "
                f"{median_of(r, 'jaxpr_trace_duration'):.2f} | "
                f"{median_of(r, 'jaxpr_to_mlir_module_duration'):.2f} | "
                f"{median_of(r, 'backend_compile_duration'):.2f} "
                f"({median_of(r, 'backend_compile_duration_count'):.0f}) | "
                f"{median_of(r, 'plan_chunk'):.2f} | "
                f"{median_of(r, 'build_program'):.2f} "
                f"({median_of(r, 'build_program_count'):.0f}) | "
                f"{median_of(r, 'fn_traces'):.0f} | {median_of(r, 'then_fewer'):.3f} | "
                f"{median_of(r, 'then_one_ref'):.3f} | {median_of(r, 'then_more'):.3f} | "
                f"{median_of(r, 'then_rebuilt'):.3f} |")
        print("\n".join(lines[-len(methods):]), flush=True)
    if args.persistent_cache:
        lines += ["", "### A second process with JAX's persistent compilation cache", "",
                  "| model | method | first process (s) | second process (s) | ratio |",
                  "|---|---|---|---|---|"]
        for model in args.models.split(","):
            for m in ("rescale", "reveal_cancel"):
                with tempfile.TemporaryDirectory() as cache:
                    cenv = {**env, "JAX_COMPILATION_CACHE_DIR": cache,
                            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
                    first = first_call(model, m, cenv)["total"]
                    second = first_call(model, m, cenv)["total"]
                lines.append(f"| {model} | {m} | {first:.2f} | {second:.2f} | "
                             f"{second / first:.2f} |")
                print(lines[-1], flush=True)
    write_report(lines, args.out, started=t_start)


if __name__ == "__main__":
    main()
