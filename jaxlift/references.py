"""Reference (baseline) choice for DeepLIFT — seed 000's "method used for choosing the reference".

DeepLIFT explains ``t(x) - t(r)`` for a reference ``r``; the choice of ``r`` decides what the
scores mean. This module offers the usual choices as pure functions of arrays:

* :func:`zeros_like` — the all-zero (black image) reference;
* :func:`blurred` — a heavily Gaussian-blurred copy of each image (keeps colour and layout,
  drops edges and texture);
* :func:`shuffled` — random permutations of each input's features;
* :func:`dinucleotide_shuffle` — shuffles of a one-hot DNA sequence that keep every
  dinucleotide count (the genomics reference of the DeepLIFT paper);
* :func:`near_uniform` — seed 000's advice: search a data set for the inputs whose prediction
  is closest to "can't tell" (0.5 for a sigmoid, 1/C for each of C softmax classes).

Shapes: a batch of inputs is ``x: (N, *F)`` (``F`` the feature shape of one input). A
*reference callable* has the signature ``ref_fn(x, key) -> refs`` with ``refs`` either
``(N, K, *F)`` — ``K`` references per input — or ``(K, *F)`` — ``K`` references shared by all
inputs. :func:`as_ref_fn` and the ``*_ref_fn`` factories turn every choice above into such a
callable; :func:`broadcast_references` brings either form to ``(N, K, *F)``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift._ops import in_host_memory
from jaxlift.errors import InputValueError

Array = Any  # a numpy or jax array
RefFn = Callable[[Array, Any], Array]

__all__ = [
    "zeros_like",
    "gaussian_kernel",
    "blur_matrix",
    "blurred",
    "shuffled",
    "dinucleotide_shuffle",
    "dinucleotide_counts",
    "prediction_distance",
    "near_uniform",
    "NearUniform",
    "broadcast_references",
    "as_ref_fn",
    "zeros_ref_fn",
    "blur_ref_fn",
    "shuffle_ref_fn",
    "dinucleotide_ref_fn",
    "constant_ref_fn",
    "hold",
    "held_leaves",
]


# ----------------------------------------------------------------------------------- zeros
def zeros_like(x: Array) -> jax.Array:
    """The all-zero reference: ``r = 0`` with the shape and dtype of ``x`` (any shape)."""
    return jnp.zeros_like(jnp.asarray(x))


# ------------------------------------------------------------------------------------ blur
def gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Normalised 1-D Gaussian weights ``w_d ∝ exp(-d²/(2σ²))`` for ``d = -R..R``.

    ``R = int(truncate·σ + 0.5)`` (the radius ``scipy.ndimage.gaussian_filter`` uses), and
    ``Σ_d w_d = 1``. Returns shape ``(2R + 1,)``, float64.
    """
    if not np.isfinite(sigma) or sigma <= 0:
        raise InputValueError(f"gaussian_kernel: sigma must be a positive finite number, got {sigma!r}")
    if not np.isfinite(truncate) or truncate <= 0:
        raise InputValueError(f"gaussian_kernel: truncate must be positive, got {truncate!r}")
    radius = int(truncate * sigma + 0.5)
    d = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (d / sigma) ** 2)
    return w / w.sum()


def _reflect_index(i: np.ndarray, n: int) -> np.ndarray:
    """Map any integer index onto ``0..n-1`` by half-sample ("symmetric") reflection.

    The extended signal is ``… x1 x0 | x0 x1 … x_{n-1} | x_{n-1} x_{n-2} …`` (edge sample
    repeated — scipy's ``mode='reflect'``, numpy's ``pad(mode='symmetric')``); it has period
    ``2n``, so arbitrarily large offsets are handled.
    """
    i = np.mod(i, 2 * n)
    return np.where(i < n, i, 2 * n - 1 - i)


def blur_matrix(n: int, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The ``(n, n)`` matrix ``B`` of a 1-D Gaussian blur with reflect padding: ``y = B @ x``.

    ``B[i, j] = Σ_{d : refl(i + d) = j} w_d`` with ``w = gaussian_kernel(sigma, truncate)`` and
    ``refl`` the symmetric reflection of :func:`_reflect_index`. Rows sum to 1, so constant
    signals are unchanged. Building the padding into the matrix makes the blur exact for any
    radius, even one longer than the signal.
    """
    if n < 1:
        raise InputValueError(f"blur_matrix: the axis length must be >= 1, got {n}")
    w = gaussian_kernel(sigma, truncate)
    radius = (w.size - 1) // 2
    rows = np.repeat(np.arange(n), w.size)
    cols = _reflect_index(rows + np.tile(np.arange(-radius, radius + 1), n), n)
    b = np.zeros((n, n), dtype=np.float64)
    np.add.at(b, (rows, cols), np.tile(w, n))
    return b


def blurred(
    x: Array,
    sigma: float | Sequence[float] | None = None,
    *,
    spatial_axes: Sequence[int] = (1, 2),
    truncate: float = 4.0,
) -> jax.Array:
    """Gaussian blur of a batch of images along its spatial axes — a "blurred copy" reference.

    For ``x: (N, H, W, C)`` and the default ``spatial_axes=(1, 2)``::

        y[n, i, j, c] = Σ_{a, b} B_H[i, a] · B_W[j, b] · x[n, a, b, c]

    with ``B`` the reflect-padded 1-D blur matrices of :func:`blur_matrix` (the Gaussian is
    separable, so one matrix product per axis). Reflect padding (edge sample repeated, as
    ``scipy.ndimage.gaussian_filter(mode='reflect')``) keeps constant images constant.

    Args:
      x: array of any rank; only ``spatial_axes`` are blurred (negative axes allowed).
      sigma: standard deviation in pixels, one per spatial axis or a single number.
        ``None`` (default) is a *heavy* blur: ``σ = max(1, size/8)`` per axis, e.g. σ = 32 on a
        256-pixel side — only the coarse brightness layout survives.
      spatial_axes: the axes to blur.
      truncate: kernel radius in standard deviations (as scipy).

    ``sigma`` and the shapes are static (the blur matrices are built with numpy), so the
    function can be ``jit``-ted with ``x`` traced.

    Returns:
      a float array of the shape of ``x`` (float32 unless ``x`` is float64).
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    axes = [_normalise_axis(a, x.ndim, "blurred") for a in spatial_axes]
    if len(set(axes)) != len(axes):
        raise InputValueError(f"blurred: spatial_axes has repeated axes: {tuple(spatial_axes)}")
    if sigma is None:
        sigmas = [max(1.0, x.shape[a] / 8.0) for a in axes]
    elif np.ndim(sigma) == 0:
        sigmas = [float(sigma)] * len(axes)
    else:
        sigmas = [float(s) for s in sigma]
        if len(sigmas) != len(axes):
            raise InputValueError(
                f"blurred: got {len(sigmas)} sigmas for {len(axes)} spatial axes {tuple(spatial_axes)}"
            )
    y = x
    for axis, s in zip(axes, sigmas):
        b = jnp.asarray(blur_matrix(x.shape[axis], s, truncate), dtype=x.dtype)
        # contract B[i, a] with y's `axis`, then put the new axis back where it was
        y = jnp.moveaxis(jnp.tensordot(b, y, axes=([1], [axis])), 0, axis)
    return y


def _normalise_axis(axis: int, ndim: int, who: str) -> int:
    if not -ndim <= axis < ndim:
        raise InputValueError(f"{who}: axis {axis} is out of range for an array of rank {ndim}")
    return axis % ndim


# --------------------------------------------------------------------------------- shuffle
def shuffled(x: Array, key: jax.Array, num: int = 10, *, axis: int | None = None) -> jax.Array:
    """``num`` independent random permutations of the features of each input.

    For ``x: (N, *F)`` returns ``(N, num, *F)``: ``out[n, k]`` is ``x[n]`` with its features
    permuted by a fresh uniformly random permutation ``π_{n,k}``.

    Args:
      x: a batch ``(N, *F)`` (rank >= 2).
      key: a JAX PRNG key.
      num: references per input, ``K >= 1``.
      axis: ``None`` (default) permutes all ``prod(F)`` feature entries jointly (pixels of an
        image, every entry of a vector). An integer permutes only along that axis of ``x``
        (not the batch axis 0), moving whole slices — e.g. ``axis=1`` on one-hot sequences
        ``(N, L, 4)`` shuffles positions and keeps each row one-hot (a mononucleotide shuffle).
    """
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise InputValueError(f"shuffled: x must be a batch (N, *features) of rank >= 2, got shape {x.shape}")
    _check_num(num, "shuffled")
    n = x.shape[0]
    if axis is None:
        flat = x.reshape(n, -1)
        perm_len = flat.shape[1]
    else:
        ax = _normalise_axis(axis, x.ndim, "shuffled")
        if ax == 0:
            raise InputValueError("shuffled: axis 0 is the batch axis; pick a feature axis")
        flat = jnp.moveaxis(x, ax, 1)
        perm_len = flat.shape[1]
    keys = jax.random.split(key, n * num)
    keys = keys.reshape((n, num) + keys.shape[1:])  # raw uint32 keys keep their trailing (2,)

    def one(row, row_keys):
        return jax.vmap(lambda k: jnp.take(row, jax.random.permutation(k, perm_len), axis=0))(row_keys)

    out = jax.vmap(one)(flat, keys)  # (N, K, perm_len, ...)
    if axis is None:
        return out.reshape(n, num, *x.shape[1:])
    return jnp.moveaxis(out, 2, ax + 1)


def _check_num(num: int, who: str) -> None:
    if not isinstance(num, (int, np.integer)) or isinstance(num, bool) or num < 1:
        raise InputValueError(f"{who}: num must be a positive integer, got {num!r}")


# ------------------------------------------------------------------- dinucleotide shuffle
def _as_generator(key_or_rng: Any) -> np.random.Generator:
    """A numpy Generator from a JAX key, a numpy Generator, or an int seed."""
    if isinstance(key_or_rng, np.random.Generator):
        return key_or_rng
    if isinstance(key_or_rng, (int, np.integer)) and not isinstance(key_or_rng, bool):
        return np.random.default_rng(int(key_or_rng))
    try:
        arr = jnp.asarray(key_or_rng)
    except TypeError as e:
        raise InputValueError(
            f"expected a JAX PRNG key, a numpy Generator or an int seed, got {type(key_or_rng).__name__}"
        ) from e
    if jnp.issubdtype(arr.dtype, jax.dtypes.prng_key):
        arr = jax.random.key_data(arr)
    if arr.dtype != jnp.uint32:
        raise InputValueError(f"expected a JAX PRNG key, got an array of dtype {arr.dtype}")
    return np.random.default_rng(np.asarray(arr).ravel().tolist())


def _onehot_to_symbols(onehot: Array, who: str) -> tuple[np.ndarray, int]:
    """Rows of a one-hot ``(L, A)`` → symbols ``(L,)``; all-zero rows (e.g. ``N``) → symbol ``A``."""
    oh = np.asarray(onehot)
    if oh.ndim != 2:
        raise InputValueError(f"{who}: expected a one-hot sequence of shape (L, A), got shape {oh.shape}")
    rows_ok = np.all((oh == 0) | (oh == 1), axis=1) & (oh.sum(axis=1) <= 1)
    if not rows_ok.all():
        bad = int(np.flatnonzero(~rows_ok)[0])
        raise InputValueError(
            f"{who}: row {bad} is not one-hot (entries must be 0/1 with at most one 1): {oh[bad].tolist()}"
        )
    a = oh.shape[1]
    sym = np.where(oh.sum(axis=1) == 1, oh.argmax(axis=1), a)
    return sym.astype(np.int64), a


def _symbols_to_onehot(sym: np.ndarray, a: int, dtype) -> np.ndarray:
    """``(..., L)`` symbols → ``(..., L, A)`` one-hot; symbol ``A`` becomes an all-zero row."""
    return (sym[..., None] == np.arange(a)).astype(dtype)


def dinucleotide_counts(onehot: Array) -> np.ndarray:
    """Counts of adjacent symbol pairs: ``D[a, b] = #{i : s_i = a, s_{i+1} = b}``.

    ``onehot: (..., L, A)`` → ``(..., A+1, A+1)`` int64, where index ``A`` counts all-zero rows
    (unknown bases).
    """
    oh = np.asarray(onehot)
    if oh.ndim < 2:
        raise InputValueError(f"dinucleotide_counts: expected (..., L, A), got shape {oh.shape}")
    a = oh.shape[-1]
    sym = np.where(oh.sum(-1) == 1, oh.argmax(-1), a)
    ext = (sym[..., None] == np.arange(a + 1)).astype(np.int64)  # (..., L, A+1)
    return np.einsum("...ia,...ib->...ab", ext[..., :-1, :], ext[..., 1:, :])


def _random_arborescence(succ: dict[int, list[int]], root: int, rng: np.random.Generator) -> dict[int, int]:
    """A random spanning arborescence directed towards ``root`` (Wilson's algorithm).

    ``succ[v]`` is the multiset of successors of ``v`` (one entry per edge). Loop-erased random
    walks from every vertex until the tree is hit; each step takes a uniformly random edge
    instance, so an arborescence made of edge instances ``e_v`` has probability ``∝ 1``, i.e.
    the "last exit edge" of each vertex is drawn exactly as the Altschul–Erickson method asks
    (uniform over valid last-edge sets), without rejection. Returns ``{v: next(v)}`` for every
    ``v ≠ root``.
    """
    in_tree = {root}
    nxt: dict[int, int] = {}
    for start in sorted(succ):
        u = start
        while u not in in_tree:
            nxt[u] = succ[u][rng.integers(len(succ[u]))]
            u = nxt[u]
        u = start
        while u not in in_tree:
            in_tree.add(u)
            u = nxt[u]
    return {v: nxt[v] for v in succ if v != root}


def _dinuc_shuffle_symbols(sym: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random sequence with the same first symbol and dinucleotide counts.

    Altschul & Erickson (1985): a sequence is an Eulerian path in the multigraph with one edge
    ``s_i → s_{i+1}`` per position. Every Eulerian path from ``s_0`` ending at ``z = s_{L-1}`` is
    fixed by (a) the last edge leaving each vertex ``v ≠ z`` — these must form a spanning
    arborescence towards ``z`` — and (b) any order of the other out-edges of each vertex.
    Draw (a) with :func:`_random_arborescence`, (b) by shuffling, then walk from ``s_0``.
    """
    n = sym.size
    if n <= 2:
        return sym.copy()
    succ: dict[int, list[int]] = {}
    for a, b in zip(sym[:-1].tolist(), sym[1:].tolist()):
        succ.setdefault(a, []).append(b)
    last = int(sym[-1])
    tree = _random_arborescence(succ, last, rng)
    order: dict[int, list[int]] = {}
    for v, outs in succ.items():
        outs = list(outs)
        if v in tree:
            outs.remove(tree[v])  # drop one instance of the last edge …
        rng.shuffle(outs)
        if v in tree:
            outs.append(tree[v])  # … and use it last
        order[v] = outs[::-1]  # pop() from the end = first in order
    out = np.empty(n, dtype=sym.dtype)
    out[0] = v = int(sym[0])
    for i in range(1, n):
        v = order[v].pop()
        out[i] = v
    return out


UNKNOWN_MODES = ("symbol", "fixed")


def dinucleotide_shuffle(onehot: Array, key_or_rng: Any, num: int = 10, *,
                         unknown: str = "symbol") -> np.ndarray:
    """``num`` shuffles of a one-hot sequence that preserve every dinucleotide count exactly.

    Args:
      onehot: ``(L, A)`` one-hot sequence (``A = 4`` for DNA); all-zero rows (unknown base
        ``N``) are allowed.
      key_or_rng: a JAX PRNG key, a ``numpy.random.Generator`` or an int seed. Runs on the host
        (numpy); not traceable by ``jit``.
      num: number of shuffles ``K``.
      unknown: what to do with ``N`` rows.

        * ``"symbol"`` (default, as the original deeplift's ``dinuc_shuffle``): ``N`` is a
          fifth symbol, shuffled like the others; the counts of pairs with ``N`` are kept too
          (:func:`dinucleotide_counts` index ``A``), but ``N`` may move.
        * ``"fixed"``: every ``N`` stays where it is, and each maximal run of known bases
          between ``N`` rows is shuffled on its own (keeping its first and last base and its
          dinucleotide counts). The counts of adjacent known-base pairs
          (``dinucleotide_counts(s)[:A, :A]``) are preserved, and a reference has ``N``
          exactly where the input has (so ``Δx = 0`` there).

    Returns:
      ``(K, L, A)`` array of the input's dtype. For every shuffle ``s'``:
      ``dinucleotide_counts(s') == dinucleotide_counts(s)`` (for ``unknown="fixed"``: on the
      known-base pairs, and within every run), ``s'_0 = s_0``, ``s'_{L-1} = s_{L-1}``, and so
      also the mononucleotide counts are preserved. Each shuffle (each run's, for ``"fixed"``)
      is uniform among all such sequences (the Altschul–Erickson Eulerian-walk method:
      random last-edge arborescence, then a random walk; see :func:`_dinuc_shuffle_symbols`).
    """
    _check_num(num, "dinucleotide_shuffle")
    if unknown not in UNKNOWN_MODES:
        raise InputValueError(f"dinucleotide_shuffle: unknown must be 'symbol' or 'fixed', "
                              f"got {unknown!r}")
    sym, a = _onehot_to_symbols(onehot, "dinucleotide_shuffle")
    rng = _as_generator(key_or_rng)
    if unknown == "symbol":
        out = np.stack([_dinuc_shuffle_symbols(sym, rng) for _ in range(num)])
    else:
        out = np.stack([_shuffle_known_runs(sym, rng, a) for _ in range(num)])
    return _symbols_to_onehot(out, a, np.asarray(onehot).dtype)


def known_runs(sym: np.ndarray, unknown_symbol: int) -> list[tuple[int, int]]:
    """Half-open ``[start, stop)`` ranges of the maximal runs of symbols ``!= unknown_symbol``."""
    known = np.concatenate([[False], sym != unknown_symbol, [False]])
    edges = np.flatnonzero(np.diff(known.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _shuffle_known_runs(sym: np.ndarray, rng: np.random.Generator, a: int) -> np.ndarray:
    """:func:`_dinuc_shuffle_symbols` of each run of known symbols of ``sym (L,)``; the
    unknown ones (symbol ``a``, as :func:`_onehot_to_symbols` gives them) stay put."""
    out = sym.copy()
    for lo, hi in known_runs(sym, a):
        out[lo:hi] = _dinuc_shuffle_symbols(sym[lo:hi], rng)
    return out


# ---------------------------------------------------------------------- near-uniform search
class NearUniform(NamedTuple):
    """Result of :func:`near_uniform` with ``return_indices=True``."""

    references: np.ndarray  # (K, *F)
    scores: np.ndarray  # (K,) distance to uniform, ascending
    indices: np.ndarray  # (K,) positions in `data`


def _as_class_probs(p: np.ndarray, from_logits: bool) -> np.ndarray:
    """Predictions ``(N,)``, ``(N, 1)`` or ``(N, C)`` → class probabilities ``(N, max(C, 2))``."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if p.ndim != 2 or p.shape[1] < 1:
        raise InputValueError(
            f"near_uniform: predict_fn must return (N,), (N, 1) or (N, C) predictions, got shape {p.shape}"
        )
    if p.shape[1] == 1:
        q = 1.0 / (1.0 + np.exp(-p[:, 0])) if from_logits else p[:, 0]
        probs = np.stack([1.0 - q, q], axis=1)
    elif from_logits:
        z = p - p.max(axis=1, keepdims=True)
        e = np.exp(z)
        probs = e / e.sum(axis=1, keepdims=True)
    else:
        probs = p
    if not from_logits:
        if not np.all(np.isfinite(probs)) or probs.min() < -1e-6 or probs.max() > 1 + 1e-6:
            raise InputValueError(
                "near_uniform: predictions are not probabilities in [0, 1]; "
                "pass from_logits=True if predict_fn returns logits"
            )
        if p.shape[1] > 1 and not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
            raise InputValueError(
                "near_uniform: the C-class predictions do not sum to 1 per row; "
                "pass from_logits=True if predict_fn returns logits"
            )
    return probs


def prediction_distance(probs: Array, distance: str = "max_abs") -> np.ndarray:
    """Distance of class probabilities ``(N, C)`` from the uniform ``u = 1/C``; returns ``(N,)``.

    * ``"max_abs"`` (default): ``max_c |p_c − 1/C|``. For one sigmoid output ``q`` (given as
      ``C = 2``, ``p = (1−q, q)``) this is ``|q − 0.5|``.
    * ``"l1"``: ``Σ_c |p_c − 1/C|``.
    * ``"kl"``: ``KL(u ‖ p) = Σ_c (1/C) log((1/C) / p_c)`` (``+∞`` where some ``p_c = 0``), which
      punishes any class the model has nearly ruled out.
    All are 0 exactly at the uniform prediction.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise InputValueError(f"prediction_distance: expected (N, C) probabilities with C >= 2, got {p.shape}")
    c = p.shape[1]
    if distance == "max_abs":
        return np.abs(p - 1.0 / c).max(axis=1)
    if distance == "l1":
        return np.abs(p - 1.0 / c).sum(axis=1)
    if distance == "kl":
        with np.errstate(divide="ignore"):
            return np.sum((1.0 / c) * (np.log(1.0 / c) - np.log(p)), axis=1)
    raise InputValueError(f"prediction_distance: unknown distance {distance!r}; use 'max_abs', 'l1' or 'kl'")


def near_uniform(
    predict_fn: Callable[[Array], Array],
    data: Array,
    num: int = 10,
    *,
    batch_size: int = 256,
    distance: str = "max_abs",
    from_logits: bool = False,
    return_indices: bool = False,
) -> tuple[np.ndarray, np.ndarray] | NearUniform:
    """Search ``data`` for the ``num`` inputs whose prediction is closest to uniform.

    Seed 000: "choose one for which output of the classification is almost same for all
    classes, … search over the whole training dataset predictions". Predictions are computed
    in batches of ``batch_size``; each input gets the score ``prediction_distance(p, distance)``
    (``|p − 0.5|`` for a single sigmoid output; ``max_c |p_c − 1/C|`` by default for ``C``
    softmax classes), and the ``num`` smallest are returned, ascending (ties: lower index first).

    Args:
      predict_fn: ``(B, *F) -> (B,) | (B, 1) | (B, C)``: probabilities (sigmoid/softmax), or
        logits with ``from_logits=True``.
      data: ``(N, *F)`` candidate inputs.
      num: ``K <= N``.

    Returns:
      ``(references (K, *F), scores (K,))``, or a :class:`NearUniform` with ``indices`` too when
      ``return_indices=True``.
    """
    _check_num(num, "near_uniform")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputValueError(f"near_uniform: batch_size must be a positive integer, got {batch_size!r}")
    data_np = np.asarray(data) if not isinstance(data, jax.Array) else data
    n = data_np.shape[0] if np.ndim(data_np) > 0 else 0
    if n == 0:
        raise InputValueError("near_uniform: data is empty")
    if num > n:
        raise InputValueError(f"near_uniform: asked for num={num} references from only {n} inputs")
    scores = []
    for start in range(0, n, batch_size):
        pred = np.asarray(predict_fn(data_np[start : start + batch_size]))
        if pred.shape[:1] != (min(batch_size, n - start),):
            raise InputValueError(
                f"near_uniform: predict_fn returned shape {pred.shape} for a batch of "
                f"{min(batch_size, n - start)} inputs"
            )
        scores.append(prediction_distance(_as_class_probs(pred, from_logits), distance))
    all_scores = np.concatenate(scores)
    idx = np.argsort(all_scores, kind="stable")[:num]
    refs = np.asarray(data_np[idx])
    if return_indices:
        return NearUniform(refs, all_scores[idx], idx)
    return refs, all_scores[idx]


# ----------------------------------------------------------------- reference callables
def broadcast_references(refs: Array, x: Array) -> jax.Array:
    """Bring references to ``(N, K, *F)`` for a batch ``x: (N, *F)``.

    ``refs`` may be ``(*F,)`` (one shared reference, K = 1), ``(K, *F)`` (K shared references)
    or ``(N, K, *F)`` (per input). Anything else is a ValueError naming both shapes.
    """
    refs = jnp.asarray(refs)
    x_shape = tuple(np.shape(x))
    if len(x_shape) < 1:
        raise InputValueError("broadcast_references: x must be a batch (N, *features)")
    n, feat = x_shape[0], x_shape[1:]
    if refs.shape == feat:
        refs = refs[None]
    if refs.ndim == len(feat) + 1 and refs.shape[1:] == feat:
        return jnp.broadcast_to(refs[None], (n, *refs.shape))
    if refs.ndim == len(feat) + 2 and refs.shape[0] == n and refs.shape[2:] == feat:
        return refs
    raise InputValueError(
        f"references of shape {refs.shape} do not fit inputs of shape {x_shape}: expected "
        f"{feat}, (K, *{feat}) or ({n}, K, *{feat})"
    )


def hold(x: Mapping[str, Array], refs: Mapping[str, Array], keys: Sequence[str]) -> dict:
    """Per-input references ``(N, K, *S)`` in which the inputs named ``keys`` keep the input's
    own values: they are held fixed in every pair (``Δ = 0``), so nothing of ``Δt`` is carried
    by them — an attention or padding mask passed beside the token ids, when the embeddings are
    explained at a marked layer (``layer=``): the cut is then exact. Held integer or boolean
    inputs (a mask, position ids), and for contributions held float inputs too (a float mask),
    are read as fixed per example (:func:`held_leaves`): indices and biases ``fn`` computes from
    them alone are fixed too.

    ``x``: a dict of input batches ``(N, *S)``; ``refs``: a dict with the other keys' references,
    ``(K, *S)`` shared or ``(N, K, *S)`` per input (the held keys may be absent). Returns a dict
    with every key of ``x``: held keys are ``x[key]`` repeated K times, the others broadcast to
    ``(N, K, *S)``."""
    held = set(keys)
    missing = held - set(x)
    if missing:
        raise InputValueError(f"hold: keys {sorted(missing)} are not inputs (x has {sorted(x)})")
    free = [key for key in x if key not in held]
    if not free:
        raise InputValueError("hold: every input is held; nothing would be explained")
    absent = [key for key in free if key not in refs]
    if absent:
        raise InputValueError(f"hold: refs has no reference for {absent}")
    out = {key: broadcast_references(refs[key], x[key]) for key in free}
    k = out[free[0]].shape[1]
    for key in held:
        v = jnp.asarray(x[key])
        out[key] = jnp.broadcast_to(v[:, None], (v.shape[0], k) + v.shape[1:])
    return {key: out[key] for key in x}


def held_leaves(x, refs, floats: bool = False) -> tuple:
    """A flag per leaf of ``x``: an integer or boolean leaf (any leaf, with ``floats``) equal
    to its per-input references ``(N, K, *S)`` in every pair, as :func:`hold` makes them (a
    padding mask, position ids). Such a leaf carries nothing, and indices or masks computed from
    it alone are fixed for every pair: the interpreter reads it as fixed per input, and its
    scores are 0. ``()`` where references are shared, a leaf is traced, or every leaf would be
    held. ``floats`` is for calls that return no multiplier of such a leaf (:func:`floats_held`):
    its contribution is 0 however it is read, while its multipliers, read live, keep their
    values (a float mask's slope)."""
    x_leaves, r_leaves = jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(refs)
    if len(x_leaves) < 2 or len(x_leaves) != len(r_leaves) or any(
            isinstance(l, jax.core.Tracer) for l in x_leaves + r_leaves):
        return ()  # one leaf held would be every leaf
    flags = []
    for a, r in zip(x_leaves, r_leaves):
        dtype = jnp.result_type(a)
        flags.append(bool(
            (floats or jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_))
            and np.ndim(r) == np.ndim(a) + 1 and np.shape(r)[0] == np.shape(a)[0]
            and _equal_in_every_pair(a, r)))
    return tuple(flags) if any(flags) and not all(flags) else ()


def _equal_in_every_pair(a, r) -> bool:
    """``r[i, j] == a[i]`` for every pair, the first pair first: a leaf that moves differs there
    almost always, so only leaves that may be held pay for the whole comparison (a host copy of
    their references, on every call, the one-dispatch path's too)."""
    if not bool(np.all(_on_host(r, (slice(0, 1), slice(0, 1)))
                       == _on_host(a, slice(0, 1))[:, None])):
        return False
    return bool(np.all(np.asarray(r) == np.asarray(a)[:, None]))


def _on_host(v, index) -> np.ndarray:
    """``v[index]`` as a NumPy array: a NumPy array or a CPU jax array read in place and cut
    there (a jax array cut eagerly would compile a slice per shape, ~20 ms each on a first
    call); an accelerator's array cut on its device, so only the cut is copied."""
    if not in_host_memory(v):
        return np.asarray(v[index])
    return np.asarray(v)[index]


def floats_held(what: str, layer: str | None, layer_bypass: str) -> bool:
    """Whether :func:`held_leaves` holds float leaves too: for contributions, and for
    multipliers at a marked layer that return none of the inputs' own."""
    return what == "contributions" or (layer is not None and layer_bypass != "credit")


def zeros_ref_fn() -> RefFn:
    """``ref_fn(x, key) -> (1, *F)`` zeros (one shared black reference)."""

    def ref_fn(x: Array, key: Any = None) -> jax.Array:
        x = jnp.asarray(x)
        return jnp.zeros((1, *x.shape[1:]), x.dtype)

    return ref_fn


def blur_ref_fn(sigma: float | Sequence[float] | None = None, *, spatial_axes: Sequence[int] = (1, 2)) -> RefFn:
    """``ref_fn(x, key) -> (N, 1, *F)``: each input's own blurred copy (:func:`blurred`)."""

    def ref_fn(x: Array, key: Any = None) -> jax.Array:
        return blurred(x, sigma, spatial_axes=spatial_axes)[:, None]

    return ref_fn


def shuffle_ref_fn(num: int = 10, *, axis: int | None = None) -> RefFn:
    """``ref_fn(x, key) -> (N, num, *F)``: :func:`shuffled` permutations of each input."""
    _check_num(num, "shuffle_ref_fn")

    def ref_fn(x: Array, key: Any) -> jax.Array:
        if key is None:
            raise InputValueError("shuffle_ref_fn: a PRNG key is required")
        return shuffled(x, key, num, axis=axis)

    return ref_fn


def dinucleotide_ref_fn(num: int = 10, *, unknown: str = "symbol") -> RefFn:
    """``ref_fn(x, key) -> (N, num, L, A)``: dinucleotide shuffles of each sequence of ``x: (N, L, A)``.

    Host-side (numpy): call it outside ``jit``. Input ``n`` uses the generator seeded by
    ``(key, n)``, so results do not depend on batching. ``unknown`` says what happens to
    ``N`` (all-zero) rows: see :func:`dinucleotide_shuffle`.
    """
    _check_num(num, "dinucleotide_ref_fn")
    if unknown not in UNKNOWN_MODES:
        raise InputValueError(f"dinucleotide_ref_fn: unknown must be 'symbol' or 'fixed', "
                              f"got {unknown!r}")

    def ref_fn(x: Array, key: Any) -> np.ndarray:
        xs = np.asarray(x)
        if xs.ndim != 3:
            raise InputValueError(f"dinucleotide_ref_fn: expected one-hot sequences (N, L, A), got shape {xs.shape}")
        base = _as_generator(key).integers(2**63)
        return np.stack(
            [dinucleotide_shuffle(s, np.random.default_rng([int(base), i]), num, unknown=unknown)
             for i, s in enumerate(xs)]
        )

    return ref_fn


def constant_ref_fn(refs: Array) -> RefFn:
    """``ref_fn(x, key) -> refs``: fixed references ``(K, *F)`` (or ``(*F,)``, made ``(1, *F)``)."""
    refs = jnp.asarray(refs)

    def ref_fn(x: Array, key: Any = None) -> jax.Array:
        feat = tuple(np.shape(x))[1:]
        r = refs[None] if refs.shape == feat else refs
        if r.shape[1:] != feat:
            raise InputValueError(f"constant_ref_fn: references {refs.shape} do not fit inputs {np.shape(x)}")
        return r

    return ref_fn


_NAMED = {
    "zeros": zeros_ref_fn,
    "blur": blur_ref_fn,
    "shuffle": shuffle_ref_fn,
    "dinucleotide": dinucleotide_ref_fn,
}


def as_ref_fn(reference: Any, **options: Any) -> RefFn:
    """Any reference choice → a callable ``ref_fn(x, key) -> (N, K, *F) | (K, *F)``.

    * a name: ``"zeros"``, ``"blur"`` (options ``sigma``, ``spatial_axes``), ``"shuffle"``
      (``num``, ``axis``), ``"dinucleotide"`` (``num``);
    * an array ``(*F,)`` or ``(K, *F)``: fixed shared references (:func:`constant_ref_fn`) —
      e.g. the output of :func:`near_uniform`;
    * a callable ``f(x, key)``: returned wrapped so that its output shape is checked against
      ``x`` (it must return ``(N, K, *F)`` or ``(K, *F)``).
    """
    if isinstance(reference, str):
        if reference not in _NAMED:
            raise InputValueError(f"as_ref_fn: unknown reference {reference!r}; known: {sorted(_NAMED)}")
        return _NAMED[reference](**options)
    if options:
        raise InputValueError(f"as_ref_fn: options {sorted(options)} only apply to named references")
    if callable(reference):

        def checked(x: Array, key: Any = None) -> Array:
            out = reference(x, key)
            broadcast_references(out, x)  # raises on a bad shape
            if tuple(np.shape(out)) == tuple(np.shape(x))[1:]:
                return jnp.asarray(out)[None]  # a single shared reference → (1, *F)
            return out

        return checked
    try:
        arr = jnp.asarray(reference)
    except TypeError as e:
        raise InputValueError(
            f"as_ref_fn: expected a name, an array or a callable, got {type(reference).__name__}"
        ) from e
    return constant_ref_fn(arr)
