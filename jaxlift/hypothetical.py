"""Hypothetical contributions for one-hot sequence inputs (as the original deeplift's genomics
utilities compute them for TF-MoDISco).

For a one-hot input ``x`` of shape ``(L, A)`` (L positions over an alphabet of A letters, e.g.
A = 4 bases) and references ``r_k``, with per-reference multipliers ``m_k = m(x → t; r_k)``:

    hyp[l, a] = mean_k Σ_c (e_a[c] − r_k[l, c]) · m_k[l, c]
              = mean_k ( m_k[l, a] − Σ_c r_k[l, c] · m_k[l, c] )

the contribution position ``l`` *would* make if it held letter ``a`` (``e_a`` the one-hot of
``a``), with the multipliers of the actual input. This is deeplift's
``get_hypothetical_contribs_func_onehot`` (project the hypothetical difference-from-reference
onto the multipliers and sum over the alphabet axis), averaged over references like its
shuffled-reference helpers. At the actual letter it gives the actual contribution of the
position: ``Σ_a x[l, a]·hyp[l, a] = Σ_c C[l, c]`` with ``C`` = ``attribute(...)``.

Per-pair completeness gaps (``return_gaps=True``, :func:`genomics_scores`) are taken *before*
the mean over references and before any projection onto the one-hot input: for each input
``n`` and reference ``k``,

    gap[n, k] = Σ_leaves Σ_i (x_n − r_nk)_i · m_nk,i − (t(x_n) − t(r_nk))

over every input leaf (a control track too), i.e. ``Σ C − Δt`` of the unprojected per-pair
contributions ``C``: zero up to float rounding in the DeepLIFT modes. Averaging first (or
projecting first, as Captum's delta does) can hide a pair that misses.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift._ops import mean_axis
from jaxlift.errors import InputValueError
from jaxlift.gaps import completeness_gap


class GenomicsScores(NamedTuple):
    """What :func:`genomics_scores` returns (shapes for ``x: (N, L, A)``, K references;
    ``target="all"`` adds a T axis after N, and after K in ``gaps``)."""

    hypothetical: jax.Array  # (N, L, A): hypothetical contributions (TF-MoDISco's input)
    projected: jax.Array     # (N, L, A) hypothetical × one-hot; (N, L) with per_position=True
    gaps: jax.Array          # (N, K): Σ C − Δt per (input, reference), before averaging


def hypothetical_contributions(fn: Callable, params: Any, x, refs, *, target=None,
                               mode: str = "rescale", max_mode: str = "preserving",
                               batch_size: int | str | None = "auto", key: jax.Array | None = None,
                               progress: bool | None = None, mode_options: dict | None = None,
                               check_onehot: bool = True, sequence_key: str | None = None,
                               return_gaps: bool = False):
    """Hypothetical contributions ``(N, L, A)`` (``(N, T, L, A)`` for ``target="all"``).

    Args:
      fn, params, target, mode, max_mode, batch_size, key, progress, mode_options: as for
        :func:`jaxlift.attribute` (any mode; its multipliers are used).
      x: one-hot inputs ``(N, L, A)`` (more leading example axes are fine: the last axis is the
        alphabet). Rows of zeros (e.g. ``N`` bases) are allowed.
      refs: ``(K, L, A)``, ``(N, K, L, A)`` or a callable ``ref_fn(x, key)`` returning either
        (e.g. dinucleotide shuffles).
      check_onehot: refuse ``x`` whose last axis is not one-hot (when ``x`` is concrete).
      sequence_key: for a model with several inputs (``x`` and ``refs`` dicts, e.g. a sequence
        and a control track or fixed profile weights), the key of the one-hot sequence: its
        hypothetical contributions are returned (the other inputs are explained alongside, with
        their own references, and not returned; give a control track references equal to
        itself to give it zero contribution).
      return_gaps: also return the per-pair completeness gaps ``(N, K)`` (``(N, K, T)`` for
        ``target="all"``): ``Σ C − Δt`` of the unprojected contributions of every input leaf,
        per (input, reference), before the mean over references (the module docstring).

    Returns:
      ``hyp``, or ``(hyp, gaps)`` with ``return_gaps=True``.
    """
    hyp, gaps = _hypothetical_and_gaps(
        fn, params, x, refs, sequence_key, target=target, mode=mode, max_mode=max_mode,
        batch_size=batch_size, key=key, progress=progress, mode_options=mode_options,
        check_onehot=check_onehot, with_gaps=return_gaps)
    return (hyp, gaps) if return_gaps else hyp


def genomics_scores(fn: Callable, params: Any, x, refs, *, target=None, mode: str = "rescale",
                    max_mode: str = "preserving", batch_size: int | str | None = "auto",
                    key: jax.Array | None = None, progress: bool | None = None,
                    mode_options: dict | None = None, check_onehot: bool = True,
                    sequence_key: str | None = None,
                    per_position: bool = False) -> GenomicsScores:
    """Hypothetical scores, projected scores and per-pair gaps from one attribution run.

    ``projected = hyp · x`` (the one-hot sequence), which equals the averaged contributions of
    ``attribute`` summed over the alphabet at each position and placed at the actual letter;
    with ``per_position=True`` it is summed over the alphabet: ``Σ_a hyp[l, a]·x[l, a]``,
    shape ``(N, L)``. Arguments as for :func:`hypothetical_contributions`; returns a
    :class:`GenomicsScores`.

    ``N`` bases (all-zero rows of ``x``) project to 0. Where a reference has a base at such a
    position, ``attribute`` gives it ``−Σ_c r[l, c]·m[l, c] ≠ 0`` (the move from that base to
    "nothing"), so then ``Σ projected ≠ mean Δt``; shuffles made with
    ``dinucleotide_shuffle(..., unknown="fixed")`` keep ``N`` in the references too, and the
    projected scores sum to ``mean_k Δt_k`` again (up to the gaps).
    """
    hyp, gaps = _hypothetical_and_gaps(
        fn, params, x, refs, sequence_key, target=target, mode=mode, max_mode=max_mode,
        batch_size=batch_size, key=key, progress=progress, mode_options=mode_options,
        check_onehot=check_onehot, with_gaps=True)
    seq = jnp.asarray(x[sequence_key] if sequence_key is not None else x)
    return GenomicsScores(hyp, project_onehot(hyp, seq, per_position), gaps)


def project_onehot(hyp, x, per_position: bool = False) -> jax.Array:
    """``hyp · x`` for hypothetical scores ``hyp (N, [T,] *S, A)`` and one-hot ``x (N, *S, A)``
    (the T axis of ``target="all"`` broadcast); summed over the alphabet with
    ``per_position``."""
    x = jnp.asarray(x)
    if hyp.ndim == x.ndim + 1:
        x = x[:, None]
    out = hyp * x
    return jnp.sum(out, axis=-1) if per_position else out


def pair_gaps(m, delta, x, refs) -> jax.Array:
    """``Σ_leaves Σ_i (x − r)_i · m_i − Δt`` per pair, from per-reference multipliers ``m``
    (leaves ``(N, K, [T,] *S)``), ``Δt`` ``(N, K[, T])``, inputs (leaves ``(N, *S)``) and
    references (leaves ``(K, *S)`` or ``(N, K, *S)``); x, refs and m share a tree."""
    t_axis = jnp.ndim(delta) == 3

    def contribution(xl, rl, ml):
        xl, rl = jnp.asarray(xl), jnp.asarray(rl)
        r = rl if rl.ndim == xl.ndim + 1 else rl[None]
        diff = xl[:, None] - r                                   # (N | 1, K, *S)
        return (diff[:, :, None] if t_axis else diff) * ml
    return completeness_gap(jax.tree_util.tree_map(contribution, x, refs, m), delta)


def _hypothetical_and_gaps(fn, params, x, refs, sequence_key, *, target, mode, max_mode,
                           batch_size, key, progress, mode_options, check_onehot, with_gaps):
    """``(hyp, gaps or None)`` of the one-hot ``x`` (or the leaf ``x[sequence_key]``)."""
    from jaxlift.api import multipliers
    if sequence_key is not None:
        if not (isinstance(x, dict) and isinstance(refs, dict) and sequence_key in x
                and sequence_key in refs):
            raise InputValueError(f"sequence_key {sequence_key!r} needs x and refs to be dicts "
                                  f"holding that key (got x {type(x).__name__}, refs "
                                  f"{type(refs).__name__})")
        seq, seq_refs = jnp.asarray(x[sequence_key]), jnp.asarray(refs[sequence_key])
        check_sequence(seq, check_onehot)
    else:
        x = seq = jnp.asarray(x)
        check_sequence(seq, check_onehot)
        if callable(refs):
            refs = refs(x, jax.random.PRNGKey(0) if key is None else key)
        refs = seq_refs = jnp.asarray(refs)
    res = multipliers(fn, params, x, refs, target=target, mode=mode, max_mode=max_mode,
                      average_refs=False, batch_size=batch_size, progress=progress,
                      mode_options=mode_options, key=key, return_delta=with_gaps)
    m, delta = res if with_gaps else (res, None)
    hyp = project_hypothetical(m[sequence_key] if sequence_key is not None else m, seq, seq_refs)
    return hyp, (pair_gaps(m, delta, x, refs) if with_gaps else None)


def check_sequence(x, check_onehot: bool) -> None:
    """Refuse ``x`` that is not a batch of sequences ``(N, L, A)``, or (when ``check_onehot``
    and ``x`` is concrete) not one-hot along its last axis (all-zero rows allowed)."""
    if x.ndim < 3:
        raise InputValueError(f"x must be a batch of one-hot sequences (N, L, A); got shape {x.shape}")
    if check_onehot and not isinstance(x, jax.core.Tracer):
        xa = np.asarray(x)
        if not (np.isin(xa, (0, 1)).all() and (xa.sum(-1) <= 1).all()):
            raise InputValueError("x is not one-hot along its last axis (values must be 0/1 with at "
                                  "most one 1 per position); pass check_onehot=False to override")


def project_hypothetical(m, x, refs) -> jax.Array:
    """``mean_k (m_k − Σ_c r_k[..., c]·m_k[..., c])`` from per-reference multipliers ``m``
    ``(N, K, [T,] *S)`` and references ``(K, *S)`` or ``(N, K, *S)``."""
    per_input = refs.ndim == x.ndim + 1
    r = refs if per_input else jnp.broadcast_to(refs[None], (x.shape[0],) + refs.shape)
    if m.ndim == r.ndim + 1:                                     # target="all": a T axis
        r = r[:, :, None]
    dot = jnp.sum(r * m, axis=-1, keepdims=True)                 # Σ_c r[l, c]·m[l, c]
    return mean_axis(m - dot, 1)
