"""The scores: :func:`jaxlift.attribute` run for the command's target (each input's predicted
class, an index, every class, or a class difference) and what they explain (:class:`Result`)."""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import numpy as np

from jaxlift.cli.model import LoadedModel, classes_of, predict
from jaxlift.cli.options import TargetSpec, check_class_names, check_target_classes


ALL_TARGETS_MAX = 16
"""With the default target (each input's predicted class), models with at most this many
outputs are explained for every class at once and each input's class picked out; larger ones
run once per predicted class."""


@dataclasses.dataclass
class Result:
    """Scores and what they explain. ``targets``: the class explained per input (-1 for a
    class difference or ``all``); ``logits``: the model's outputs (N, T) (T = 1 for a sigmoid
    model, whose classes are ``[−z, z]``); ``base``: the explained value at the references,
    ``t(r)`` averaged over each input's references (:func:`base_values`; ``(N,)``, or
    ``(N, T)`` for every class), so that ``t(x) = base + Δ`` and, where the scores sum to
    ``Δ``, ``t(x) = base + Σ scores``."""

    scores: np.ndarray
    delta: np.ndarray
    targets: np.ndarray
    logits: np.ndarray
    class_names: tuple[str, ...] | None = None
    base: np.ndarray | None = None  # t(r), averaged over each input's references as delta is


def explain(loaded: LoadedModel, x: np.ndarray, refs: np.ndarray, spec: TargetSpec, *,
            mode: str, layer: str | None = None, batch_size: int | str | None = "auto",
            progress: bool = False, logits: np.ndarray | None = None,
            precision: str = "default", mode_options: dict | None = None,
            class_names: tuple[str, ...] | None = None) -> Result:
    """Scores of ``x`` against ``refs`` for the target ``spec`` by ``mode``; the targets are
    classes (for a single-logit model: 0 = the negated logit, 1 = the logit)."""
    import jaxlift

    check_target_classes(spec, loaded.n_classes, loaded.binary)
    check_class_names(class_names, loaded.n_classes, loaded.binary)
    fn = loaded.class_fn(layer)
    if logits is None:
        logits = predict(loaded, x, batch_size if isinstance(batch_size, int) else 64)
    run = functools.partial(jaxlift.attribute, fn, loaded.variables, mode=mode, layer=layer,
                            batch_size=batch_size, progress=progress,
                            return_delta=True, precision=precision,
                            mode_options=mode_options or None)
    n = len(x)
    if spec.kind == "index":
        s, d = run(x, refs, target=spec.a)
        targets = np.full(n, spec.a)
    elif spec.kind == "diff":
        s, d = run(x, refs, target=jaxlift.class_difference(spec.a, spec.b))
        targets = np.full(n, -1)
    elif spec.kind == "all":
        s, d = run(x, refs, target="all")
        targets = np.full(n, -1)
    else:
        targets = classes_of(logits)
        s, d = explain_per_class(run, x, refs, targets, loaded.n_classes)
    base = base_values(loaded, refs, spec, targets, n,
                       batch_size if isinstance(batch_size, int) else 64)
    return Result(np.asarray(s), np.asarray(d), targets, logits, class_names, base)


def base_values(loaded: LoadedModel, refs: np.ndarray, spec: TargetSpec, targets: np.ndarray,
                n: int, batch: int = 64) -> np.ndarray:
    """The explained value at the references, ``t(r)``, averaged over each input's references
    as ``Δ = t(x) − mean_k t(r_k)`` is: ``(N,)`` float32, or ``(N, T)`` for ``--target all``.
    ``refs``: ``(K, *S)`` shared or ``(N, K, *S)`` per input; ``targets``: the class per input
    (for ``pred`` and an index); classes of a single-logit model are ``[−z, z]``."""
    shape = loaded.input_shape
    per_input = refs.ndim == len(shape) + 2
    out = predict(loaded, refs.reshape(-1, *shape).astype(np.float32), batch).astype(np.float64)
    if loaded.binary:
        out = np.concatenate([-out, out], axis=1)
    out = out.reshape((n, -1, out.shape[-1]) if per_input else (1, -1, out.shape[-1]))
    if spec.kind == "all":
        value = out
    elif spec.kind == "diff":
        value = out[..., spec.a] - out[..., spec.b]
    else:
        value = np.take_along_axis(np.broadcast_to(out, (n, *out.shape[1:])),
                                   np.asarray(targets)[:, None, None], axis=-1)[..., 0]
    value = np.broadcast_to(value.mean(axis=1), (n, *value.shape[2:]))
    return np.ascontiguousarray(value, dtype=np.float32)


def explain_per_class(run: Callable, x: np.ndarray, refs: np.ndarray, cls: np.ndarray,
                       n_outputs: int, all_max: int = ALL_TARGETS_MAX
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Scores of each input for its own class ``cls[i]``: one run for every class at once
    (few outputs), else one run per distinct class."""
    per_input = refs.ndim == x.ndim + 1
    classes = np.unique(cls)
    idx = np.arange(len(x))
    if len(classes) == 1:
        s, d = run(x, refs, target=int(classes[0]))
        return np.asarray(s), np.asarray(d)
    if n_outputs <= all_max:
        s, d = run(x, refs, target="all")
        return np.asarray(s)[idx, cls], np.asarray(d)[idx, cls]
    scores, delta = None, None
    for c in classes:
        sel = idx[cls == c]
        s, d = run(x[sel], refs[sel] if per_input else refs, target=int(c))
        s, d = np.asarray(s), np.asarray(d)
        if scores is None:
            scores = np.zeros((len(x), *s.shape[1:]), s.dtype)
            delta = np.zeros((len(x), *d.shape[1:]), d.dtype)
        scores[sel], delta[sel] = s, d
    return scores, delta


def summation_gap(scores: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """|Σ scores − Δ| per input (and target): summation-to-delta holds when this is ~0."""
    lead = delta.ndim
    total = scores.reshape(*scores.shape[:lead], -1).sum(axis=-1, dtype=np.float64)
    return np.abs(total - delta)
