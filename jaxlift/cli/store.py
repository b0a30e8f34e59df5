"""``jaxlift attribute MODEL INPUT --out FOLDER``: a data set streamed into a resumable scores
folder with :func:`jaxlift.attribute_dataset`.

When ``--out`` names a folder (no suffix) that does not exist yet or is a scores store, the
single INPUT (``x.npy``, ``x.npz[:KEY]`` or ``x.h5:DATASET``, rows of the model's input shape;
uint8 pixels are divided by 255 chunk by chunk) is explained chunk by chunk into ``FOLDER/``,
and an interrupted run of the same command resumes. Read it with
``jaxlift.open_scores("FOLDER")``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from jaxlift.cli.inputs import read_array_file, to_model_float
from jaxlift.cli.model import load_model
from jaxlift.cli.options import CLIError, UsageError, check_target_classes, resolve_mode_options


def is_store_path(out: Path) -> bool:
    """Whether ``--out`` asks for a scores store: a name without a suffix that is new, or a
    folder holding a store's ``manifest.json`` (an existing other folder keeps the old
    "is a folder" error)."""
    return not out.suffix and (not out.exists() or (out / "manifest.json").is_file())


def _store_inputs(path: str, shape: tuple[int, ...]):
    """The source of INPUT, as float32 rows of the model's input ``shape``."""
    from jaxlift.io.sources import MappedSource, SourceError, as_source
    try:
        src = as_source(path)
    except SourceError as exc:
        raise CLIError(f"inputs: {exc}") from None
    fits = src.row_shape == shape or (shape[-1:] == (1,) and src.row_shape == shape[:-1])
    if not fits:
        raise CLIError(f"inputs {src.name}: rows of shape {src.row_shape}; the model's input is "
                       f"{shape}")
    if src.dtype != np.uint8 and not np.issubdtype(src.dtype, np.floating):
        raise CLIError(f"inputs {src.name}: dtype {src.dtype}; expected floats or uint8 pixels")
    what = f"inputs {src.name}"
    return MappedSource(src, lambda rows: to_model_float(rows, what).reshape(-1, *shape),
                        np.float32, shape)


def _store_target(spec):
    import jaxlift
    if spec.kind == "pred":
        raise UsageError("--target pred (the default) needs each input's class; when streaming "
                       "into a folder give --target IDX, A-B or all")
    return {"index": spec.a, "all": "all"}.get(spec.kind) if spec.kind != "diff" \
        else jaxlift.class_difference(spec.a, spec.b)


def attribute_to_store(args: argparse.Namespace) -> int:
    """Run ``jaxlift attribute`` with a folder ``--out``; returns the exit status."""
    import jaxlift

    if len(args.inputs) != 1:
        raise UsageError("with a folder --out, give one input file (.npy, .npz[:KEY], "
                       ".h5[:DATASET])")
    if args.png:
        raise UsageError("--png is not available with a folder --out (one PNG per input of a "
                       "whole data set); render from jaxlift.open_scores(FOLDER)")
    loaded = load_model(args.model)
    check_target_classes(args.target, loaded.n_classes, loaded.binary)
    target = _store_target(args.target)
    shape = tuple(loaded.input_shape)
    src = _store_inputs(args.inputs[0], shape)
    if args.refs == "zeros":
        refs = np.zeros((1, *shape), np.float32)
    elif Path(args.refs).suffix.lower() in (".npy", ".npz"):
        refs = to_model_float(read_array_file(Path(args.refs), "--refs"), "--refs")
        if refs.shape[1:] != shape:
            raise CLIError(f"--refs {args.refs}: shape {refs.shape}; expected (K, *{shape}) "
                           "references shared by all inputs")
    else:
        raise UsageError(f"--refs {args.refs}: with a folder --out, give zeros or a .npy/.npz "
                       "file of references (K, …)")
    extra = {} if args.batch_size is None else {"batch_size": args.batch_size}
    options = resolve_mode_options(args.mode, args.mode_option or (), shape)
    if options:
        extra["mode_options"] = options
    out = jaxlift.attribute_dataset(
        loaded.class_fn(args.layer), loaded.variables, src, refs, out=args.out,
        target=target, mode=args.mode, layer=args.layer, precision=args.precision,
        progress=None if not args.quiet else False, quiet=args.quiet, **extra)
    if not args.quiet:
        print(f"wrote {out} (open it with jaxlift.open_scores({str(out)!r}))", file=sys.stderr)
    return 0
