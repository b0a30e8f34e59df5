"""What the user typed: the ``jaxlift`` command's values parsed (argparse ``type=``) and
checked against the model — targets, class and feature names, modes and their options (with
the API's defaults made explicit), batch sizes — and the errors they raise: :class:`CLIError`
(exit status 1) and :class:`UsageError` (exit status 2)."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from jaxlift.errors import CLIError, UsageError  # noqa: F401  (the errors raised here; their home)


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """What to explain: ``kind`` is "pred" (each input's predicted class), "index", "all"
    or "diff" (logit ``a`` minus logit ``b``)."""

    kind: str
    a: int = 0
    b: int = 0

    def __str__(self) -> str:
        return {"pred": "pred", "index": f"{self.a}", "all": "all",
                "diff": f"{self.a}-{self.b}"}[self.kind]


def parse_target(text: str) -> TargetSpec:
    """``pred`` | ``IDX`` | ``all`` | ``A-B`` → TargetSpec (argparse ``type=``)."""
    text = text.strip()
    if text == "pred":
        return TargetSpec("pred")
    if text == "all":
        return TargetSpec("all")
    if re.fullmatch(r"\d+", text):
        return TargetSpec("index", int(text))
    m = re.fullmatch(r"(\d+)-(\d+)", text)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        if a == b:
            raise argparse.ArgumentTypeError(f"{text!r}: a class difference needs two "
                                             "different classes")
        return TargetSpec("diff", a, b)
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a target; use pred (each input's predicted class), an output index "
        "such as 3, all, or a class difference such as 3-5 (logit 3 minus logit 5)")


def check_target_classes(spec: TargetSpec, n_classes: int, binary: bool = False) -> None:
    """Raise CLIError if ``spec`` names a class the model does not have (``binary``: a
    single-logit model, whose two classes are the negated logit (0) and the logit (1))."""
    for i in {"index": (spec.a,), "diff": (spec.a, spec.b)}.get(spec.kind, ()):
        if i >= n_classes:
            if binary:
                raise UsageError(f"--target {spec}: class {i} is out of range; the model has one "
                               "(sigmoid) output, so two classes: 0 (the negated logit, "
                               "P = 1 − σ(z)) and 1 (the logit z, P = σ(z))")
            raise UsageError(f"--target {spec}: output {i} is out of range; the model has "
                           f"{n_classes} output(s), numbered 0 to {n_classes - 1}")


def parse_class_names(text: str) -> tuple[str, ...]:
    """``cat,dog`` → ("cat", "dog") (argparse ``type=``): one name per class, in class order."""
    names = tuple(n.strip() for n in text.split(","))
    if any(not n for n in names):
        raise argparse.ArgumentTypeError(f"{text!r}: give the class names separated by commas, "
                                         "e.g. cat,dog (an empty name is not allowed)")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: the class names repeat a name")
    return names


def parse_feature_names(text: str) -> tuple[str, ...]:
    """``--feature-names`` (argparse ``type=``): a text file with one name per line (or one
    comma-separated line, such as a CSV header), or the names themselves, ``age,income,...``."""
    path = Path(text)
    if path.is_file():
        try:
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as e:
            raise argparse.ArgumentTypeError(f"{text}: cannot read the feature names: {e}"
                                             ) from None
        lines = [ln for ln in lines if ln]
        names = [n.strip() for n in lines[0].split(",")] if len(lines) == 1 else lines
        where = f"{text} (one name per line, or one comma-separated line)"
    else:
        names = [n.strip() for n in text.split(",")]
        where = f"{text!r} (a file of names, or the names separated by commas)"
    if not names or any(not n for n in names):
        raise argparse.ArgumentTypeError(f"{where}: a feature name is empty")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{where}: the feature names repeat a name")
    return tuple(names)


def check_feature_names(names: tuple[str, ...] | None, input_shape: tuple[int, ...],
                        layer: str | None) -> None:
    """Raise CLIError unless ``names`` label the features of a 1-D (tabular) input, one each."""
    if names is None:
        return
    if layer is not None:
        raise UsageError("--feature-names labels the input features; with --layer the bars are "
                       "the layer's units")
    if len(input_shape) != 1:
        raise UsageError(f"--feature-names labels tabular inputs (one value per feature), but "
                       f"the model's input has shape {input_shape}")
    if len(names) != input_shape[0]:
        raise UsageError(f"--feature-names gives {len(names)} name(s) but the model's input has "
                       f"{input_shape[0]} features")


def check_class_names(names: tuple[str, ...] | None, n_classes: int, binary: bool) -> None:
    """Raise CLIError unless ``names`` has one entry per class."""
    if names is not None and len(names) != n_classes:
        what = ("two classes: 0 (the negated logit) and 1 (the logit), e.g. --class-names cat,dog"
                " for a model that outputs P(dog)" if binary else f"{n_classes} classes")
        raise UsageError(f"--class-names gives {len(names)} name(s) but the model has {what}")


class LazyChoices(Sequence[str]):
    """argparse ``choices`` read on first use: listing the methods imports JAX, which
    ``jaxlift info`` and ``jaxlift --help`` do without."""

    def __init__(self, load: Callable[[], Sequence[str]]):
        self._load, self._items = load, None

    def _all(self) -> tuple[str, ...]:
        if self._items is None:
            self._items = tuple(self._load())
        return self._items

    def __getitem__(self, i):
        return self._all()[i]

    def __len__(self) -> int:
        return len(self._all())

    def __contains__(self, value) -> bool:
        return value in self._all()

    def __iter__(self):
        return iter(self._all())


def _method_table() -> dict:
    """``jaxlift.methods.METHODS`` (name → Method), imported when first needed."""
    from jaxlift.methods import METHODS
    return METHODS


def available_modes() -> tuple[str, ...]:
    """Every ``mode=`` of :func:`jaxlift.attribute`, DeepLIFT's first."""
    return tuple(_method_table())


def sums_to_delta(mode: str) -> bool:
    """Whether ``mode``'s scores sum to Δ exactly (DeepLIFT, Shapley sampling, KernelSHAP)."""
    return _method_table()[mode].completeness == "exact"


def check_mode_options(mode: str, options: dict) -> dict:
    """``options`` validated (and completed with defaults) by the method ``mode``; raises
    ``ValueError``/``TypeError`` naming the option."""
    return _method_table()[mode].check_options(options)


def parse_option_value(raw: str) -> Any:
    """The value of ``--mode-option KEY=VALUE``: a Python literal (``32``, ``0.5``,
    ``4,4,1`` or ``(4, 4, 1)`` → a tuple, ``'text'``), ``none`` → None, ``FILE.npy`` → the
    array it holds (e.g. a ``feature_mask``), anything else the text itself."""
    raw = raw.strip()
    if raw.lower() in ("none", "null"):
        return None
    if raw.lower().endswith(".npy"):
        try:
            return np.load(raw, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise argparse.ArgumentTypeError(f"cannot read {raw} as a .npy array ({e})") from None
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return raw
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, (bool, int, float, str, tuple)):
        return value
    return raw


def parse_mode_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` → (key, value) (argparse ``type=``; see :func:`parse_option_value`)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(
            f"{text!r}: give an option as KEY=VALUE, e.g. window=4,4,1 (occlusion) or "
            "steps=32 (integrated_gradients)")
    return key, parse_option_value(raw)


def default_window(shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(window, stride) of occlusion when ``--mode-option window=`` is not given: the API's
    default, :func:`jaxlift.methods.groups.default_window` (for an image (H, W, C),
    ⌈H/8⌉ × ⌈W/8⌉ pixels across all channels, moved by half a window)."""
    from jaxlift.methods.groups import default_window as api_default
    return api_default(tuple(shape))


def patch_mask(shape: tuple[int, ...], window: tuple[int, ...]) -> np.ndarray:
    """Integer labels of the non-overlapping ``window``-sized blocks of an array of ``shape``
    (:func:`jaxlift.methods.groups.patch_mask`; the default ``feature_mask`` of
    ``shapley_sampling``, ``lime`` and ``kernel_shap``: one group per patch)."""
    from jaxlift.methods.groups import patch_mask as api_patch_mask
    return api_patch_mask(tuple(shape), tuple(window))


def resolve_mode_options(mode: str, given: Sequence[tuple[str, Any]],
                         shape: tuple[int, ...]) -> dict:
    """The ``mode_options`` the CLI passes: ``--mode-option`` values, then the defaults the API
    would choose made explicit (occlusion's ``window``/``stride``; a ``feature_mask`` of patches
    for shapley_sampling, lime and kernel_shap), so that the run's summary names them; checked
    by the method; errors name the option."""
    opts: dict[str, Any] = {}
    for key, value in given:
        if key in opts:
            raise UsageError(f"--mode-option {key}= is given twice")
        opts[key] = value
    window, stride = default_window(shape)
    if mode == "occlusion":
        if "window" not in opts:
            opts["window"] = window
            opts.setdefault("stride", stride)
    elif mode in ("shapley_sampling", "lime", "kernel_shap") and "feature_mask" not in opts:
        opts["feature_mask"] = patch_mask(shape, window)  # tens of groups, not every pixel
    try:
        check_mode_options(mode, opts)
    except (ValueError, TypeError) as e:
        raise UsageError(f"--mode {mode} --mode-option: {e}") from None
    return opts


def describe_options(opts: dict) -> str:
    """``window=(4, 4, 1), stride=(2, 2, 1)`` (arrays by their shape)."""
    return ", ".join(f"{k}=" + (f"<{v.dtype} array {v.shape}, {len(np.unique(v))} groups>"
                                if isinstance(v, np.ndarray) else repr(v))
                     for k, v in opts.items())


def parse_batch_size(text: str) -> int | str:
    """``auto`` or a positive number of (input, reference) pairs (argparse ``type=``)."""
    if text.strip() == "auto":
        return "auto"
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give auto or a positive number of (input, "
                                         "reference) pairs per chunk") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v}: give auto or a positive number of (input, "
                                         "reference) pairs per chunk")
    return v
