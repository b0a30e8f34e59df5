"""The sub-commands: ``jaxlift demo`` (shipped MNIST digits), ``jaxlift attribute`` (scores of a
Keras model's inputs to an ``.npz``, PNGs or a scores folder) and ``jaxlift info`` (a Keras
file's layers)."""
from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from jaxlift.io.atomic import remove_stale_temporaries
from jaxlift.cli.explaining import explain, summation_gap
from jaxlift.cli.inputs import load_batch, make_refs, warn_changes
from jaxlift.cli.model import check_model_path, load_model, probabilities
from jaxlift.cli.options import (TargetSpec, UsageError, check_class_names,
                                 check_feature_names, check_target_classes, describe_options,
                                 resolve_mode_options, sums_to_delta)
from jaxlift.cli.outputs import (check_writable_dir, check_writable_file, commit_outputs,
                                 format_table, heatmap_pages, remove_stale_outputs, score_arrays)
from jaxlift.cli.store import attribute_to_store, is_store_path


def _shipped(name: str) -> Any:
    return resources.files("jaxlift") / "data" / name


def cmd_demo(args: argparse.Namespace) -> int:
    """``jaxlift demo``: RevealCancel on shipped MNIST digits, a PNG, the summation check."""
    from jaxlift import viz

    t0 = time.time()
    out = Path(args.out)
    check_writable_dir(out, "--out")
    with resources.as_file(_shipped("mnist_small.h5")) as h5:
        loaded = load_model(h5)
    with resources.as_file(_shipped("mnist_digits.npz")) as npz, np.load(npz) as d:
        x_u8, labels = d["x"][:args.n], d["y"][:args.n]
    x = x_u8.astype(np.float32)[..., None] / 255.0
    refs = np.zeros((1, *loaded.input_shape), np.float32)
    print(f"jaxlift demo: DeepLIFT ({args.mode}) on {len(x)} MNIST test digits, a small CNN "
          "shipped with jaxlift (98.3% test accuracy),\n"
          "explaining each digit's predicted-class logit against the all-black (zero) reference.")
    result = explain(loaded, x, refs, TargetSpec("pred"), mode=args.mode,
                     precision=args.precision,
                     mode_options=resolve_mode_options(args.mode, (), loaded.input_shape))
    gap = summation_gap(result.scores, result.delta)
    cls = result.targets
    probs = probabilities(result.logits)
    print(f"\n{'digit':>5} {'label':>5} {'predicted':>9} {'p':>6} {'Δlogit':>8} {'Σ scores':>9}")
    for i in range(len(x)):
        print(f"{i:>5} {labels[i]:>5} {cls[i]:>9} {probs[i, cls[i]]:>6.3f} "
              f"{result.delta[i]:>8.3f} {result.scores[i].sum():>9.3f}")
    print(f"\nsummation-to-delta: max |Σ contributions − Δlogit| = {gap.max():.2e} "
          "(float32 rounding; DeepLIFT's scores add up to the change in the logit)")
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out, f"demo_{args.mode}.png")
    target = "each digit's predicted-class logit"
    fig = viz.examples_grid(
        x, result.scores,
        row_labels=[f"true {labels[i]} · predicted {cls[i]} (p = {probs[i, cls[i]]:.2f})"
                    for i in range(len(x))],
        title="jaxlift demo: what in each MNIST digit makes the CNN predict its class",
        subtitle=f"mode: {args.mode} · reference: all-black image · Σ contributions = Δlogit "
                 f"(max gap {gap.max():.1e}) · one colour scale for all digits",
        unit=f"contribution to {target}", legend=viz.legend_sentence(target))
    png = viz.save_png(fig, out / f"demo_{args.mode}.png")
    print(f"wrote {png.resolve()}  ({time.time() - t0:.1f} s)")
    return 0


def cmd_attribute(args: argparse.Namespace) -> int:
    """``jaxlift attribute``: scores for a model and inputs, to .npz and PNGs."""
    if args.out and is_store_path(Path(args.out)):  # stream a data set into a scores folder
        return attribute_to_store(args)
    if args.num_refs < 1:
        raise UsageError(f"--num-refs {args.num_refs}: give a positive number")
    out = Path(args.out) if args.out else None
    png = Path(args.png) if args.png else None
    if out is not None:
        check_writable_file(out, "--out")
    if png is not None:
        check_writable_dir(png, "--png")
    say = (lambda *a, **k: None) if args.quiet else print
    t0 = time.time()
    stale = remove_stale_outputs(out, png)
    if stale:
        say(f"removed {len(stale)} temporary file(s)/folder(s) left by an interrupted run: "
            f"{', '.join(p.name for p in stale)}")
    loaded = load_model(args.model)
    check_target_classes(args.target, loaded.n_classes, loaded.binary)
    check_class_names(args.class_names, loaded.n_classes, loaded.binary)
    check_feature_names(args.feature_names, loaded.input_shape, args.layer)
    if args.layer is not None:
        loaded.scored_fn(args.layer)  # an unknown layer fails before the inputs are read
    options = resolve_mode_options(args.mode, args.mode_option or (), loaded.input_shape)
    batch = load_batch(args.inputs, loaded.input_shape, "inputs", args.resize)
    refs, ref_text = make_refs(args.refs, batch, loaded, args.num_refs, args.resize)
    warn_changes(batch.notes, args.resize)
    classes = (f"{loaded.n_outputs} output(s)" if not loaded.binary else
               "one sigmoid output: classes 0 (−logit) and 1 (logit)")
    say(f"model {args.model}: input {loaded.input_shape}, {classes}; "
        f"{len(batch.x)} input(s); references: {ref_text}; mode {args.mode}"
        + (f" ({describe_options(options)})" if options else "")
        + f"; target {args.target}" + (f"; layer {args.layer}" if args.layer else ""))
    result = explain(loaded, batch.x, refs, args.target, mode=args.mode, layer=args.layer,
                     batch_size=args.batch_size, progress=not args.quiet,
                     precision=args.precision, mode_options=options,
                     class_names=args.class_names)
    gap = summation_gap(result.scores, result.delta)
    say(format_table(batch.names, result, gap, spec=args.target))
    say(f"summation-to-delta: max |Σ scores − Δ| = {gap.max():.2e}"
        + ("" if sums_to_delta(args.mode) else
           f" (mode {args.mode} does not promise Σ scores = Δ)"))
    pages = heatmap_pages(
        batch, result, args.target, reference=ref_text, mode=args.mode, layer=args.layer,
        sign=args.sign, clip_percentile=args.clip_percentile, alpha=args.alpha,
        top_k=args.top_k, feature_names=args.feature_names) if png is not None else []
    if png is not None and not pages and not args.quiet:
        shape = result.scores.shape[2 if args.target.kind == "all" else 1:]
        print(f"note: no PNG: scores of shape {shape} are not the inputs' image shape "
              f"{batch.x.shape[1:]}", file=sys.stderr)
    arrays = score_arrays(args, batch, result, ref_text) if out is not None else None
    files = commit_outputs(out, arrays, png, pages)
    if out is not None:
        say(f"wrote {out}")
    else:
        say("(scores not saved: pass --out FILE.npz to keep them)")
    if files:
        say(f"wrote {len(files)} PNG(s) to {png}")
    say(f"done in {time.time() - t0:.1f} s")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """``jaxlift info``: the layers of a Keras file."""
    from jaxlift.io.keras_files import keras_info
    check_model_path(args.model)
    print(keras_info(args.model))
    return 0
