"""``occlusion`` (Zeiler & Fergus 2014): for each position of a box-shaped window sliding over
the example's axes, replace the box by the reference and record ``t(x) − t(x with the box
occluded)``; each feature gets the mean over the windows covering it.

Options ``window`` (int or tuple, one per axis of the example; default ``"auto"``,
:func:`jaxlift.methods.groups.default_window`: ``⌈H/8⌉ × ⌈W/8⌉`` pixels across all channels for an
image ``(H, W, C)``, one position across the last axis for ``(T, F)``, one feature for a vector),
``stride`` (default ``"auto"``: half the default window, rounded up, with the default window; 1
with a window you give), ``perturbations_per_eval``. Windows start at ``0, s, 2s, …, ⌈(S−w)/s⌉·s``; the last one is
clipped at the edge (as Captum). ``x`` must be one array. Does not sum to ``Δt``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift.errors import InputTypeError, InputValueError
from jaxlift.methods.base import Method, Option
from jaxlift.methods.groups import AUTO, default_window, map_batched, perturbations_option


def _tuple_of(name: str, v, ndim: int) -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (int(v),) * ndim
    try:
        t = tuple(int(i) for i in v)
    except TypeError:
        raise InputTypeError(f"occlusion {name} must be an int or a tuple of ints, got {v!r}") from None
    if len(t) != ndim:
        raise InputValueError(f"occlusion {name} {t} must have one entry per axis of an example "
                              f"({ndim} axes)")
    if any(i < 1 for i in t):
        raise InputValueError(f"occlusion {name} {t} must be positive")
    return t


def occlusion_grid(shape: tuple[int, ...], window, stride) -> tuple[tuple, tuple, tuple]:
    """``(window, stride, counts)``: validated window/stride (``"auto"`` resolved for ``shape``, see
    the module doc) and the number of window positions per axis, ``⌈(S − w)/s⌉ + 1`` (Captum's
    count; the last window is clipped at the edge)."""
    ndim = len(shape)
    if isinstance(window, str) and window == AUTO:
        window, auto_stride = default_window(tuple(shape))
        stride = auto_stride if isinstance(stride, str) and stride == AUTO else stride
    elif isinstance(stride, str) and stride == AUTO:
        stride = 1
    w = _tuple_of("window", window, ndim)
    s = _tuple_of("stride", stride, ndim)
    for d, (n, wd, _sd) in enumerate(zip(shape, w, s)):
        if wd > n:
            raise InputValueError(f"occlusion window {w} is larger than the example {shape} on axis {d}")
    counts = tuple(math.ceil((n - wd) / sd) + 1 for n, wd, sd in zip(shape, w, s))
    return w, s, counts


def _box_mask(shape, start, window):
    """Boolean mask of the box ``[start, start + window)`` (clipped) in an array of ``shape``."""
    mask = jnp.ones(shape, dtype=bool)
    for d, (_n, w) in enumerate(zip(shape, window)):
        idx = jax.lax.broadcasted_iota(jnp.int32, shape, d)
        mask = mask & (idx >= start[d]) & (idx < start[d] + w)
    return mask


def kernel(f, params, x, r, *, opts, arrays, key):
    """Occlusion of one pair (single-array example): ``attr`` of shape ``([T,] *S)``."""
    shape = x.shape
    window, stride, counts = occlusion_grid(shape, opts["window"], opts["stride"])
    grid = np.stack(np.meshgrid(*[np.arange(c) * s for c, s in zip(counts, stride)],
                                indexing="ij"), -1).reshape(-1, len(shape))
    t_x = f(params, x)

    def occluded(start):
        return t_x - f(params, jnp.where(_box_mask(shape, start, window), r, x))

    diffs = map_batched(occluded, jnp.asarray(grid, jnp.int32),
                        opts["perturbations_per_eval"])                      # (P, [T])
    diffs = jnp.moveaxis(diffs.reshape(counts + diffs.shape[1:]), tuple(range(len(counts))),
                         tuple(range(diffs.ndim - 1, diffs.ndim - 1 + len(counts))))
    # Σ_p diff_p · box_p is the transpose of "sum over each window" (a VALID window sum over
    # the example padded so that the clipped last windows are whole).
    padded = tuple((c - 1) * s + w for c, s, w in zip(counts, stride, window))

    def window_sum(a):
        return jax.lax.reduce_window(a, np.array(0, a.dtype), jax.lax.add, window, stride,
                                     "VALID")

    zeros = jnp.zeros(padded, x.dtype)
    _, pull = jax.vjp(window_sum, zeros)

    def spread(d):
        (tot,) = pull(d.astype(x.dtype))
        return tot[tuple(slice(0, n) for n in shape)]

    cover = spread(jnp.ones(counts, x.dtype))
    total = spread(diffs) if diffs.ndim == len(counts) else jax.vmap(spread)(diffs)
    return total / cover, None


def _as_tuple(v):
    """An int stays an int, ``"auto"`` stays itself; a sequence becomes a tuple of ints
    (hashable: it keys the compilation). Its length and signs are checked against the example's
    shape later."""
    if isinstance(v, str) and v == AUTO:
        return v
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    try:
        return tuple(int(i) for i in v)
    except (TypeError, ValueError):
        raise InputTypeError(f"occlusion window and stride must be an int, a tuple of ints or "
                             f"'auto', got {v!r}") from None


def _prepare(opts, shape, key) -> dict:
    occlusion_grid(shape, opts["window"], opts["stride"])  # refuse a bad window early
    return {}


METHOD = Method(
    name="occlusion",
    summary="occlusion: the drop of t when a sliding window is replaced by the reference",
    cost="one forward per window position",
    scope="pair", kernel=kernel, single_array=True, prepare=_prepare,
    options=(Option("window", AUTO, "the box, e.g. (3, 3, 1); 'auto': ⌈H/8⌉×⌈W/8⌉ pixels × all "
                    "channels for an image (H, W, C), one position for (T, F), one feature for "
                    "(F,)", _as_tuple),
             Option("stride", AUTO, "the step between windows; 'auto': half the auto window, "
                    "1 with a window you give", _as_tuple),
             perturbations_option("occlusion", "occluded inputs")))
