"""``ism``: in-silico mutagenesis of one-hot sequences, the genomics baseline.

For a one-hot sequence ``x`` of shape ``(L, A)`` (L positions over an alphabet of A letters,
A = 4 for DNA) and the target ``t``, every single-letter substitution is evaluated:

    ism[i, b] = t(x with letter b at position i) − t(x)

where "letter b at position i" replaces row ``i`` by the one-hot ``e_b``. At the observed letter
the substitution is the identity, so for one-hot rows ``ism[i, x_i] = 0`` exactly (set, not
computed: a batched forward pass may round differently from the unbatched one). An unknown base
``N`` (an all-zero row) has no observed letter: all A substitutions are scored. ``ism[i, b] < 0``
means position ``i`` with its observed letter supports ``t`` more than ``b`` would.

Option ``center="mean"`` gives the common per-position mean-centred variant
``ism[i, b] − (1/A) Σ_c ism[i, c]``: each position's scores sum to zero over the alphabet, and at
the observed letter the value is ``−(1/A) Σ_c ism[i, c]``, which is positive when mutating the
position lowers ``t`` on average — a per-position importance comparable with DeepLIFT's scores
at the observed letter (``(ism_centred · x).sum(-1)``).

Cost: ``L · A`` forward passes of ``fn`` per sequence (all ``vmap``ped; batched in groups of
``perturbations_per_eval`` with ``lax.map`` to bound memory). Needs no reference: ``refs`` only
shape the result and define ``Δt``. The scores do not sum to ``Δt``. Multipliers are
``ism/Δx`` (0 where ``Δx = 0``), as for every kernel method without multipliers of its own.

Option ``sequence_key``: for a model with several inputs (``x`` a dict, e.g. a sequence and a
control track), the key of the one-hot leaf to mutate; the other leaves keep their values and
get zero scores.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxlift.errors import InputTypeError, InputValueError
from jaxlift.methods.base import Method, Option, one_of, optional_positive_int
from jaxlift.methods.groups import map_batched

CENTERS = ("none", "mean")


def substitution_grid(length: int, alphabet: int) -> tuple[jax.Array, jax.Array]:
    """``(positions, letters)``, each ``(L·A,)``: substitution ``j`` puts letter ``j % A`` at
    position ``j // A`` (row-major over ``(L, A)``)."""
    j = jnp.arange(length * alphabet, dtype=jnp.int32)
    return j // alphabet, j % alphabet


def substitute(seq: jax.Array, position, letter) -> jax.Array:
    """``seq`` ``(L, A)`` with row ``position`` replaced by the one-hot of ``letter``."""
    return seq.at[position].set(jax.nn.one_hot(letter, seq.shape[-1], dtype=seq.dtype))


def observed_mask(seq: jax.Array) -> jax.Array:
    """``(L, A)`` booleans: True where row ``i`` already is the one-hot ``e_b`` (the
    substitution is the identity). All False on an all-zero row (unknown base)."""
    eye = jnp.eye(seq.shape[-1], dtype=seq.dtype)
    return jnp.all(seq[:, None, :] == eye[None], axis=-1)


def center_per_position(scores: jax.Array) -> jax.Array:
    """``s[..., i, b] − mean_c s[..., i, c]``: mean-centred over the alphabet (last) axis."""
    return scores - jnp.mean(scores, axis=-1, keepdims=True)


def _sequence_of(x: Any, key: str | None) -> jax.Array:
    if key is None:
        if not isinstance(x, jax.Array) and not hasattr(x, "shape"):
            raise InputTypeError("ism needs x to be one array of one-hot sequences (N, L, A), or a "
                                 "dict with mode_options={'sequence_key': KEY} naming the sequence")
        return x
    if not isinstance(x, dict) or key not in x:
        have = sorted(x) if isinstance(x, dict) else type(x).__name__
        raise InputValueError(f"ism sequence_key {key!r} must be a key of the input dict x (got "
                              f"{have})")
    return x[key]


def _with_sequence(x: Any, key: str | None, seq: jax.Array) -> Any:
    return seq if key is None else {**x, key: seq}


def ism_scores(f, params, x, *, sequence_key: str | None = None, center: str = "none",
               perturbations_per_eval: int | None = None) -> jax.Array:
    """ISM of one example: ``([T,] L, A)``, ``t(x with b at i) − t(x)`` (see the module doc).

    ``f(params, x_example)`` is the target of one example (a scalar, or ``(T,)``); the sequence
    (``x`` or ``x[sequence_key]``) must be ``(L, A)``."""
    seq = _sequence_of(x, sequence_key)
    if seq.ndim != 2:
        raise InputValueError(f"ism needs one-hot sequences (N, L, A); an example has shape "
                              f"{tuple(seq.shape)}")
    length, alphabet = seq.shape
    t_x = f(params, x)
    positions, letters = substitution_grid(length, alphabet)

    def mutated(pl):
        return f(params, _with_sequence(x, sequence_key, substitute(seq, pl[0], pl[1])))

    t_mut = map_batched(mutated, jnp.stack([positions, letters], 1), perturbations_per_eval)
    diff = (t_mut - t_x).reshape((length, alphabet) + t_mut.shape[1:])
    diff = jnp.moveaxis(diff, (0, 1), (diff.ndim - 2, diff.ndim - 1))   # ([T,] L, A)
    diff = jnp.where(observed_mask(seq), jnp.zeros_like(diff), diff)
    return center_per_position(diff) if center == "mean" else diff


def kernel(f, params, x, r, *, opts, arrays, key):
    scores = ism_scores(f, params, x, sequence_key=opts["sequence_key"], center=opts["center"],
                        perturbations_per_eval=opts["perturbations_per_eval"])
    k = opts["sequence_key"]
    if k is None:
        return scores, None
    lead = scores.shape[:-2]                                  # the T axis of target="all"
    out = {name: jnp.zeros(lead + jnp.shape(leaf), scores.dtype) for name, leaf in x.items()}
    out[k] = scores
    return out, None


def _check_key(v):
    if v is not None and not isinstance(v, str):
        raise InputValueError(f"ism sequence_key must be None or a str (a key of the input dict), "
                              f"got {v!r}")
    return v


def _rows(opts) -> int:
    return 1 + (opts["perturbations_per_eval"] or 4096)


METHOD = Method(
    name="ism",
    summary="in-silico mutagenesis: t(x with letter b at position i) − t(x), every single-letter "
            "substitution of a one-hot (L, A) sequence",
    cost="L·A forwards per input (every substitution)",
    scope="input", kernel=kernel, needs_refs=False, rows_per_pair=_rows,
    options=(Option("center", "none", "'none' (raw differences, 0 at the observed letter) or "
                    "'mean' (mean-centred over the alphabet at each position)",
                    one_of("ism", "center", CENTERS)),
             Option("perturbations_per_eval", None, "substituted sequences per batch (memory)",
                    optional_positive_int("ism", "perturbations_per_eval")),
             Option("sequence_key", None, "for a dict x: the key of the one-hot sequence leaf",
                    _check_key)))
