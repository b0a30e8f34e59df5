"""The ``jaxlift`` command line: the argparse parser of the sub-commands, and :func:`main`,
which runs one and turns every outcome into an exit status and at most one line on stderr."""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from typing import Callable, Iterator, Sequence

from jaxlift.errors import JaxliftError
from jaxlift.cli.commands import cmd_attribute, cmd_demo, cmd_info
from jaxlift.cli.options import (LazyChoices, TargetSpec, UsageError, available_modes,
                                 parse_batch_size, parse_class_names, parse_feature_names,
                                 parse_mode_option, parse_target)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``jaxlift`` and its sub-commands."""
    p = argparse.ArgumentParser(
        prog="jaxlift",
        description="DeepLIFT (Rescale, RevealCancel) scores for Keras .h5 models, computed "
                    "by a JAX program transformation. Scores explain the model's logits.",
        epilog="Start with `jaxlift demo`. Exit status: 0 ok, 2 usage error (a bad option, a "
               "file named here that does not exist, a --target or --layer the model does not "
               "have), 1 other errors (a file that cannot be read, data that do not fit).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="explain a few shipped MNIST digits (no download)",
                       description="Run DeepLIFT on a few MNIST test digits with the small CNN "
                                   "shipped inside jaxlift, against the all-black reference, "
                                   "print the summation-to-delta check and write a PNG.")
    d.add_argument("--out", default="jaxlift-demo", metavar="DIR",
                   help="folder for the PNG (default: ./jaxlift-demo)")
    _add_mode(d)
    d.add_argument("--n", type=_int_in(1, 100), default=5, metavar="N",
                   help="how many digits, 1-100 (default: 5)")
    _add_precision(d)
    d.set_defaults(func=cmd_demo)

    a = sub.add_parser(
        "attribute", help="score the inputs of a Keras .h5 model",
        description="DeepLIFT contribution scores of each input feature to a logit of MODEL, "
                    "relative to references. Integer (uint8) arrays and image files are read as "
                    "0-255 pixels and divided by 255; float arrays are used as they are.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  jaxlift attribute model.h5 digits.npy --out scores.npz --png heatmaps/\n"
               "  jaxlift attribute model.h5 photos/ --refs blur --target 0\n"
               "  jaxlift attribute model.h5 x.npz --target 3-5 --mode rescale\n"
               "  jaxlift attribute model.h5 x.npy --refs near-uniform:train.npy --layer dense")
    a.add_argument("model", metavar="MODEL.h5",
                   help="a Keras 2/3 .h5 or Keras 3 .keras model file")
    a.add_argument("inputs", nargs="+", metavar="INPUTS",
                   help="one .npy/.npz array (N, *input shape), or image files and/or folders "
                        "of images (resized to the model's input, grayscale or RGB as it needs)")
    a.add_argument("--refs", default="zeros", metavar="REFS",
                   help="zeros (default), blur (a heavily blurred copy of each image), a "
                        ".npy/.npz/image file or folder of references (K, *shape) or "
                        "(N, K, *shape), or near-uniform:DATA (the --num-refs inputs of DATA "
                        "whose prediction is closest to uniform); scores are averaged over "
                        "the references")
    a.add_argument("--num-refs", type=int, default=10, metavar="K",
                   help="references to pick with near-uniform:DATA (default: 10)")
    _add_mode(a)
    a.add_argument("--mode-option", type=parse_mode_option, action="append", metavar="KEY=VALUE",
                   help="an option of the mode, repeatable: window=4,4,1 and stride=2,2,1 "
                        "(occlusion; default: 1/8 of the image's height and width, all "
                        "channels, moved by half a window), steps=32 and method=riemann_left "
                        "(integrated_gradients), num_permutations=10 and feature_mask=FILE.npy "
                        "(shapley_sampling; default: the occlusion window's patches)")
    a.add_argument("--target", type=parse_target, default=TargetSpec("pred"), metavar="T",
                   help="pred (default: each input's predicted class), a class index, all "
                        "(every class; scores get an axis T after N), or A-B (logit A minus "
                        "logit B). A model with one sigmoid output has two classes: 1 is its "
                        "logit z, 0 the negated logit −z")
    a.add_argument("--class-names", type=parse_class_names, metavar="A,B,...",
                   help="names of the classes in order, for the printed table, the PNGs and "
                        "the .npz "
                        "(a sigmoid model: the class of P < 0.5 first, e.g. cat,dog for a model "
                        "that outputs P(dog))")
    a.add_argument("--resize", action="store_true",
                   help="accept images of another aspect ratio or colour than the model's "
                        "input: stretch and convert them (a warning says what changed); "
                        "without it such images are refused")
    a.add_argument("--layer", metavar="NAME",
                   help="score the units of this Keras layer (see `jaxlift info`) instead of "
                        "the inputs")
    a.add_argument("--batch-size", type=parse_batch_size, default="auto", metavar="B",
                   help="(input, reference) pairs computed at a time, bounding memory, or auto "
                        "(the default: sized from the free memory and the CPU caches)")
    a.add_argument("--out", metavar="FILE.npz|FOLDER",
                   help="FILE.npz: save scores, delta, base_value (t at the references, so "
                        "that t(x) = base_value + Σ scores), logits, predictions, targets … "
                        "(written atomically). FOLDER (a name without a suffix, new or a "
                        "scores folder): stream one .npy/.npz[:KEY]/.h5:DATASET INPUT into a "
                        "resumable folder chunk by chunk — re-running the command resumes "
                        "a killed run; read it with jaxlift.open_scores(FOLDER)")
    a.add_argument("--png", metavar="DIR",
                   help="write one heatmap PNG per input here, after --out and only when all "
                        "are rendered: a new DIR appears with all of them at once; in an "
                        "existing DIR they replace the files of the same names and other "
                        "files are left as they are")
    a.add_argument("--sign", choices=("all", "positive", "negative", "absolute"), default="all",
                   help="PNG: which scores to show: all (default; red raises the target, blue "
                        "lowers it), only positive, only negative, or absolute (|score|)")
    a.add_argument("--clip-percentile", type=_float_in(0.0, 100.0), default=99.5, metavar="P",
                   help="PNG: the colour scale ends at this percentile of |score| so that a few "
                        "outliers do not wash the map out (default: 99.5; 100: no clipping)")
    a.add_argument("--alpha", type=_float_in(0.0, 1.0, low_ok=True), default=0.8, metavar="A",
                   help="PNG: largest opacity of the map drawn over the grey input, 0-1 "
                        "(default: 0.8)")
    a.add_argument("--top-k", type=_int_in(1, 10**6), default=20, metavar="K",
                   help="PNG of 1-D scores (tabular inputs, a dense --layer): bars for the K "
                        "largest |scores| (default: 20)")
    a.add_argument("--feature-names", type=parse_feature_names, metavar="FILE|A,B,...",
                   help="PNG of tabular inputs: label the bars with these names instead of "
                        "'feature k' (a file with one name per line, or the names separated by "
                        "commas; one per input feature)")
    _add_precision(a)
    a.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar or summary (errors are still reported)")
    a.set_defaults(func=cmd_attribute)

    i = sub.add_parser("info", help="show the layers of a Keras .h5 model",
                       description="Print a Keras-summary-like table of a .h5 model: layer "
                                   "names (for --layer), output shapes and parameter counts.")
    i.add_argument("model", metavar="MODEL.h5")
    i.set_defaults(func=cmd_info)
    return p


def _add_mode(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=LazyChoices(available_modes), default="reveal_cancel",
                        metavar="M",
                        help="attribution method, one of %(choices)s (default: reveal_cancel; "
                             "rescale, reveal_cancel and genomics_default are DeepLIFT's and "
                             "sum to Δ exactly)")


def _precisions() -> tuple[str, ...]:
    from jaxlift.validation import PRECISIONS
    return tuple(PRECISIONS)


def _add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=LazyChoices(_precisions), default="default",
                        metavar="P",
                        help="float32 matmul/convolution precision: default (JAX's: fast, TF32 "
                             "on recent NVIDIA GPUs, sums miss delta by ~1e-5) or highest "
                             "(exact float32, slower on such GPUs; the same on a CPU)")


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{v} is not between {lo} and {hi}")
        return v
    return parse


def _float_in(lo: float, hi: float, low_ok: bool = False) -> Callable[[str], float]:
    """argparse ``type=``: a number in (lo, hi] (``[lo, hi]`` with ``low_ok``)."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (lo <= v if low_ok else lo < v) or not v <= hi:
            raise argparse.ArgumentTypeError(
                f"{v:g} is not in {'[' if low_ok else '('}{lo:g}, {hi:g}]")
        return v
    return parse


def _one_line(exc: BaseException) -> str:
    """An exception as one line: OSErrors as 'what: path', others by their message."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        msg = f"{exc.filename}: {exc.strerror}"
    else:
        msg = str(exc) or type(exc).__name__
    return " ".join(msg.split())


class Terminated(BaseException):
    """SIGTERM, raised where the command is so that its clean-ups run."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM (``kill PID``, a job scheduler's time limit) raises
    :class:`Terminated` instead of ending the process at once, so temporaries are removed as on
    any error. A no-op outside the main thread, where Python cannot handle signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``jaxlift`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with sigterm_raises():
            return args.func(args)
    except UsageError as e:  # the command line asks for what cannot be: as argparse's errors
        print(f"jaxlift: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except (JaxliftError, ValueError, OSError) as e:  # KerasFormatError is both of the first
        print(f"jaxlift: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # XLA's out-of-memory; anything else is a bug: show it
        if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
            raise
        print("jaxlift: error: out of memory while computing the scores; lower --batch-size "
              "(pairs of input and reference computed at a time)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("jaxlift: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("jaxlift: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
