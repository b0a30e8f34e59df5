"""What the command writes and prints: the ``.npz`` of scores (:func:`score_arrays`), one PNG
per input (:class:`HeatmapPage`, :func:`write_pngs`), both committed together or not at all
(:func:`commit_outputs`), and the table of inputs on stdout (:func:`format_table`)."""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxlift.io.atomic import (check_commit_folder, commit_folder, remove_stale_temporaries,
                               staged_folder, write_atomically)
from jaxlift.cli.explaining import Result
from jaxlift.cli.inputs import Batch
from jaxlift.cli.model import classes_of, probabilities
from jaxlift.cli.options import CLIError, TargetSpec, sums_to_delta


def class_label(c: int, names: Sequence[str] | None) -> str:
    """A class as printed: its name when ``--class-names`` gave one, else its index."""
    return str(c) if names is None or c < 0 else names[c]


def class_words(c: int, names: Sequence[str] | None) -> str:
    """A class in a sentence: its name when ``--class-names`` gave one, else ``class c``."""
    return f"class {c}" if names is None else names[c]


def logit_label(c: int, names: Sequence[str] | None, binary: bool) -> str:
    """What explaining class ``c`` explains, for figures: ``the class 7 logit`` (``the dog
    logit`` with names); for a single-logit model ``the dog logit (z)`` for class 1 and ``the
    cat logit (−z)`` for class 0, the negated logit."""
    sign = ("" if not binary else " (z)" if c == 1 else " (−z)")
    return f"the {class_words(c, names)} logit{sign}"


def target_label(spec: TargetSpec, c: int, names: Sequence[str] | None, binary: bool) -> str:
    """What the scores of one input explain under ``--target spec`` (``c``: the input's class
    explained, for ``pred`` and ``index``)."""
    if spec.kind == "diff":
        return (f"{logit_label(spec.a, names, binary)} − "
                f"{logit_label(spec.b, names, binary).removeprefix('the ')}")
    if spec.kind == "all":
        return "each class's logit"
    return logit_label(c, names, binary)


def check_writable_file(path: Path, flag: str) -> None:
    """Fail early if ``path`` cannot be written (its folder missing or read-only)."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise CLIError(f"{flag} {path}: is a folder; give a file name such as scores.npz")
    if folder.exists() and not folder.is_dir():
        raise CLIError(f"{flag} {path}: {folder} is a file, not a folder; choose another place")
    if not folder.is_dir():
        raise CLIError(f"{flag} {path}: folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CLIError(f"{flag} {path}: folder {folder} is not writable; choose another place")


def check_writable_dir(path: Path, flag: str) -> None:
    """Fail early if folder ``path`` cannot be created or written."""
    p = path
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    if not p.is_dir():
        raise CLIError(f"{flag} {path}: {p} is a file, not a folder; choose another place")
    if not os.access(p, os.W_OK | os.X_OK):
        raise CLIError(f"{flag} {path}: folder {p} is not writable; choose another place")


def write_npz_atomic(path: Path, arrays: dict[str, Any]) -> None:
    """``np.savez`` written whole or not at all (:func:`jaxlift.io.atomic.write_atomically`)."""
    write_atomically(path, lambda fh: np.savez(fh, **arrays), what="scores")


def _safe_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem) or "input"


@dataclasses.dataclass(frozen=True)
class HeatmapPage:
    """One PNG of ``jaxlift attribute --png``, everything its figure shows.

    ``kind``: "image" (``image`` is the input (H, W, C), each panel a map of its shape),
    "features" (1-D scores: bars of the ``top_k`` largest) or "positions" (a sequence (L, K):
    bars per position, channels summed). ``panels``: panel title -> one input's scores for
    one target; ``target`` says what they explain ("the class 7 logit") for the colour bar
    and the legend; ``names`` label the bars."""

    filename: str
    kind: str
    image: np.ndarray | None
    panels: dict[str, np.ndarray]
    title: str
    subtitle: str
    target: str
    names: tuple[str, ...] = ()
    sign: str = "all"
    clip_percentile: float = 99.5
    alpha: float = 0.8
    top_k: int = 20


def heatmap_pages(batch: Batch, result: Result, spec: TargetSpec, *, reference: str = "",
                  mode: str = "", layer: str | None = None, sign: str = "all",
                  clip_percentile: float = 99.5, alpha: float = 0.8, top_k: int = 20,
                  feature_names: Sequence[str] | None = None) -> list[HeatmapPage]:
    """One page per input: images get their maps (one per target with ``all``), 1-D scores
    (tabular inputs, labelled by ``feature_names`` where given; a dense ``--layer``) and
    sequences bar charts; none when the scores are neither (e.g. a convolutional
    ``--layer``). Classes are named by ``result.class_names`` where given."""
    s = result.scores
    per_target = spec.kind == "all"
    one = s.shape[2:] if per_target else s.shape[1:]
    x_shape = batch.x.shape[1:]
    if len(one) == 3 and one == x_shape:
        kind = "image"
    elif len(one) == 1:
        kind = "features"
    elif len(one) == 2 and one == x_shape:
        kind = "positions"
    else:
        return []
    single = result.logits.shape[1] == 1
    probs = probabilities(result.logits)
    cls = classes_of(result.logits)

    cn = result.class_names
    word = "unit" if layer else "feature"
    names = (() if kind == "image" else tuple(map(str, range(one[0]))) if kind == "positions"
             else tuple(feature_names) if feature_names is not None and layer is None
             else tuple(f"{word} {k}" for k in range(one[0])))
    pages = []
    for i, name in enumerate(batch.names):
        target = target_label(spec, int(result.targets[i]), cn, single)
        if per_target:
            panels = {logit_label(t, cn, single).removeprefix("the "): s[i, t]
                      for t in range(s.shape[1])}
        else:
            panels = {target.removeprefix("the "): s[i]}
        if kind == "positions":
            panels = {k: v.sum(axis=-1) for k, v in panels.items()}
        facts = [f"predicted: {class_words(int(cls[i]), cn)} (p = {probs[i, cls[i]]:.3f})",
                 f"explained: {target}"]
        if not per_target and (not mode or sums_to_delta(mode)):
            facts.append(f"Σ contributions = Δ = {float(result.delta[i]):.4g}")
        elif not per_target:  # a baseline method: its scores need not add up to Δ
            facts.append(f"Δ = {float(result.delta[i]):.4g}, Σ contributions = "
                         f"{float(s[i].sum()):.4g} ({mode} does not promise Σ = Δ)")
        facts += [f"reference: {reference}" if reference else "", f"mode: {mode}" if mode else "",
                  f"layer: {layer}" if layer else ""]
        if batch.dtype == "image":
            stem, title = _safe_stem(name), f"input file: {name}"
        else:
            stem, title = f"input_{i:04d}", f"input: example {i} of {Path(batch.source).name}"
        pages.append(HeatmapPage(
            f"{stem}.png", kind, batch.x[i] if kind == "image" else None, panels, title,
            " · ".join(f for f in facts if f), target, names, sign, clip_percentile, alpha,
            top_k))
    return pages


def write_pngs(folder: Path, pages: Sequence[HeatmapPage]) -> list[Path]:
    """Render each page to ``folder / page.filename`` (each PNG written atomically): images as
    :func:`jaxlift.viz.attribution_grid` (input, map and overlay; an overlay per target with
    several), 1-D scores and sequences as :func:`jaxlift.viz.target_bars`."""
    from jaxlift import viz

    written = []
    for p in pages:
        text = dict(unit=f"contribution to {p.target}", title=p.title, subtitle=p.subtitle,
                    legend=viz.legend_sentence(p.target, p.sign), sign=p.sign)
        if p.kind == "image":
            styles = ("overlay",) if len(p.panels) > 1 else ("map", "overlay")
            fig = viz.attribution_grid(p.image, p.panels, styles=styles, alpha=p.alpha,
                                       clip_percentile=p.clip_percentile, **text)
        else:
            by_size = p.kind == "features"
            fig = viz.target_bars(p.panels, p.names, top_k=p.top_k if by_size else None,
                                  order="magnitude" if by_size else "position", **text)
        written.append(viz.save_png(fig, folder / p.filename))
    return written


def remove_stale_outputs(out: Path | None, png: Path | None) -> list[Path]:
    """Remove what killed runs left where this run writes: stale temporaries
    (:func:`jaxlift.io.atomic.is_stale`) of ``out`` beside it, of the folder ``png`` beside it,
    and of single PNGs inside ``png``. Returns what was removed."""
    removed = []
    if out is not None:
        removed += remove_stale_temporaries(out.absolute().parent, out.name)
    if png is not None:
        dest = Path(os.path.realpath(png))
        removed += remove_stale_temporaries(dest.parent, dest.name)
        removed += remove_stale_temporaries(dest)
    return removed


def commit_outputs(out: Path | None, arrays: dict[str, Any] | None, png: Path | None,
                   pages: Sequence[HeatmapPage]) -> list[Path]:
    """Write a run's outputs together, as far as a filesystem allows, and return the PNGs.

    The PNGs are rendered into a temporary folder beside ``png``
    (:func:`jaxlift.io.atomic.staged_folder`); then, only when all of them are written, the npz
    replaces ``out`` (:func:`write_npz_atomic`) and the folder is moved into place
    (:func:`jaxlift.io.atomic.commit_folder`: one rename when ``png`` does not exist yet,
    else each PNG replacing the file of its name) right after. An exception before that leaves
    neither output changed and no temporary behind; only a crash in the milliseconds between
    the two commits leaves the new npz beside the earlier PNGs.
    """
    if not pages or png is None:
        if out is not None:
            write_npz_atomic(out, arrays)
        return []
    with staged_folder(png, what="PNG folder") as tmp:
        write_pngs(tmp, pages)
        check_commit_folder(tmp, png)
        if out is not None:
            write_npz_atomic(out, arrays)
        return commit_folder(tmp, png)


def format_table(names: Sequence[str], result: Result, gap: np.ndarray, limit: int = 10,
                  spec: TargetSpec | None = None) -> str:
    """One line per input: its predicted class (name, with ``--class-names``) and that class's
    probability, the class explained (``A−B`` for a class difference ``spec``), Δ, Σ scores
    and their gap."""
    probs = probabilities(result.logits)
    cls = classes_of(result.logits)
    label = functools.partial(class_label, names=result.class_names)
    diff = f"{label(spec.a)}−{label(spec.b)}" if spec is not None and spec.kind == "diff" \
        else "-"
    w = max([9, len(diff)] + [len(label(c)) for c in range(probs.shape[1])])
    rows = [f"{'input':<20} {'predicted':>{w}} {'p':>6} {'target':>{w}} {'Δ':>10} "
            f"{'Σ scores':>10} {'|Σ−Δ|':>8}"]
    single = result.delta.ndim == 1
    for i, name in enumerate(names[:limit]):
        p = probs[i, cls[i]]
        if single:
            d, g = result.delta[i], gap[i]
            rows.append(f"{name[:20]:<20} {label(cls[i]):>{w}} {p:>6.3f} "
                        f"{label(result.targets[i]) if result.targets[i] >= 0 else diff:>{w}} "
                        f"{d:>10.4f} {result.scores[i].sum():>10.4f} {g:>8.1e}")
        else:
            rows.append(f"{name[:20]:<20} {label(cls[i]):>{w}} {p:>6.3f} {'all':>{w}} "
                        f"{'(per class)':>10} {'':>10} {gap[i].max():>8.1e}")
    if len(names) > limit:
        rows.append(f"… {len(names) - limit} more")
    return "\n".join(rows)


def score_arrays(args: argparse.Namespace, batch: Batch, result: Result, ref_text: str
                 ) -> dict[str, np.ndarray]:
    """What ``--out`` saves: the scores and what they explain. ``base_value`` is the explained
    value at the references, averaged over them as ``delta`` is, so that ``t(x) = base_value +
    delta`` and, for a mode that sums to Δ, ``t(x) = base_value + Σ scores``."""
    base = {} if result.base is None else {"base_value": result.base}
    return {
        "scores": result.scores, "delta": result.delta, **base, "logits": result.logits,
        "predictions": classes_of(result.logits),
        "probabilities": probabilities(result.logits).astype(np.float32),
        "targets": result.targets, "target": np.array(str(args.target)),
        "class_names": np.array(list(result.class_names or ())),
        "mode": np.array(args.mode), "reference": np.array(ref_text),
        "layer": np.array(args.layer or ""), "model": np.array(str(args.model)),
        "names": np.array(batch.names)}
