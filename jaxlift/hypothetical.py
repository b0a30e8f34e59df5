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
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift._ops import mean_axis


def hypothetical_contributions(fn: Callable, params: Any, x, refs, *, target=None,
                               mode: str = "rescale", max_mode: str = "preserving",
                               batch_size: int | str | None = "auto", key: jax.Array | None = None,
                               progress: bool | None = None, mode_options: dict | None = None,
                               check_onehot: bool = True,
                               sequence_key: str | None = None) -> jax.Array:
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
        their own references, and not returned).
    """
    from jaxlift.api import multipliers
    if sequence_key is not None:
        return _hypothetical_of_leaf(fn, params, x, refs, sequence_key, target=target,
                                     mode=mode, max_mode=max_mode, batch_size=batch_size,
                                     key=key, progress=progress, mode_options=mode_options,
                                     check_onehot=check_onehot)
    x = jnp.asarray(x)
    check_sequence(x, check_onehot)
    if callable(refs):
        refs = refs(x, jax.random.PRNGKey(0) if key is None else key)
    refs = jnp.asarray(refs)
    m = multipliers(fn, params, x, refs, target=target, mode=mode, max_mode=max_mode,
                    average_refs=False, batch_size=batch_size, progress=progress,
                    mode_options=mode_options)                  # (N, K, [T,] *S)
    return project_hypothetical(m, x, refs)


def check_sequence(x, check_onehot: bool) -> None:
    """Refuse ``x`` that is not a batch of sequences ``(N, L, A)``, or (when ``check_onehot``
    and ``x`` is concrete) not one-hot along its last axis (all-zero rows allowed)."""
    if x.ndim < 3:
        raise ValueError(f"x must be a batch of one-hot sequences (N, L, A); got shape {x.shape}")
    if check_onehot and not isinstance(x, jax.core.Tracer):
        xa = np.asarray(x)
        if not (np.isin(xa, (0, 1)).all() and (xa.sum(-1) <= 1).all()):
            raise ValueError("x is not one-hot along its last axis (values must be 0/1 with at "
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


def _hypothetical_of_leaf(fn, params, x, refs, sequence_key, *, target, mode, max_mode,
                          batch_size, key, progress, mode_options, check_onehot) -> jax.Array:
    """:func:`hypothetical_contributions` of the leaf ``x[sequence_key]`` of a dict input."""
    from jaxlift.api import multipliers
    if not (isinstance(x, dict) and isinstance(refs, dict) and sequence_key in x
            and sequence_key in refs):
        raise ValueError(f"sequence_key {sequence_key!r} needs x and refs to be dicts holding "
                         f"that key (got x {type(x).__name__}, refs {type(refs).__name__})")
    seq = jnp.asarray(x[sequence_key])
    check_sequence(seq, check_onehot)
    m = multipliers(fn, params, x, refs, target=target, mode=mode, max_mode=max_mode,
                    average_refs=False, batch_size=batch_size, progress=progress,
                    mode_options=mode_options, key=key)
    return project_hypothetical(m[sequence_key], seq, jnp.asarray(refs[sequence_key]))
