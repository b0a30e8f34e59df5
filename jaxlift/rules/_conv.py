"""The transpose of a strided convolution w.r.t. its input, by phase (sub-pixel) decomposition.

``jax.vjp`` of ``lax.conv_general_dilated`` w.r.t. ``lhs`` is one convolution of the cotangent
dilated by the strides (``lhs_dilation = window_strides``): for stride ``s`` in ``N`` spatial
dims, about ``1 − 1/s^N`` of its multiply-adds hit the inserted zeros. Splitting the input
positions by their phase modulo the stride turns it into one dense stride-1 convolution with
``s^N`` times the output channels, followed by a depth-to-space interleave.

Per spatial dim (the decomposition is separable), with the forward
``y[o] = Σ_j x[s·o + j − lo]·w[j]`` (``o < O``, ``j < k``) and its transpose
``g[p] = Σ_{s·o + j − lo = p} m[o]·w[j]``: pad the kernel with zeros to ``T·s`` taps
(``T = ceil(k/s)``), write ``p + lo = s·q + r`` (``0 ≤ r < s``) and ``j = s·t + r``; then

    g[s·q + r − lo] = Σ_{t<T} m[q − t]·w[s·t + r],

a stride-1 correlation of ``m`` (padded ``T − 1`` before and ``Q − O`` after, with
``Q = ceil((lo + n)/s)`` for an input of size ``n``) with the kernel
``K[a, (r, c)] = w[s·(T − 1 − a) + r, c]``, then an interleave of the phases ``r`` and a crop.
"""
from __future__ import annotations

import math
from typing import Any, Hashable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

Label = Hashable
Groups = Sequence[Sequence[Label]]


def _zero(x: jax.Array) -> jax.Array:
    return jnp.zeros((), x.dtype)


def _rearrange(x: jax.Array, groups_in: Groups, groups_out: Groups, sizes: dict,
               flip: Sequence[Label] = ()) -> jax.Array:
    """Regroup ``x``'s axes: axis ``i`` of ``x`` is the row-major merge of the labelled axes
    ``groups_in[i]``; the result's axis ``i`` merges ``groups_out[i]`` (the same labels, any
    order and grouping). Axes labelled in ``flip`` are reversed on the way."""
    src = [label for group in groups_in for label in group]
    dst = [label for group in groups_out for label in group]
    x = x.reshape([sizes[label] for label in src])
    if flip:
        x = lax.rev(x, [src.index(label) for label in flip])
    perm = [src.index(label) for label in dst]
    if perm != sorted(perm):
        x = lax.transpose(x, perm)
    return x.reshape([math.prod(sizes[label] for label in group) for group in groups_out])


def _applies(window_strides: Sequence[int], lhs_dilation: Sequence[int],
             rhs_dilation: Sequence[int], feature_group_count: int,
             batch_group_count: int) -> bool:
    """Whether the phase decomposition applies (no dilation, no groups) and helps (a stride)."""
    return (any(s != 1 for s in window_strides)
            and all(d == 1 for d in lhs_dilation) and all(d == 1 for d in rhs_dilation)
            and feature_group_count == 1 and batch_group_count == 1)


def _packing(lhs_spec: Sequence[int]) -> tuple:
    """Order of the labels packed into the emitted conv's output feature axis: the phases
    ``("r", d)`` in the order of their spatial axes in ``lhs``, and the input channel ``"c"``
    last when ``lhs``'s feature axis follows its spatial axes (channels-last), else first, so the
    depth-to-space interleave moves whole channel vectors (channels-last) or whole planes."""
    spatial = lhs_spec[2:]
    phases = tuple(("r", d) for d in sorted(range(len(spatial)), key=lambda d: spatial[d]))
    return phases + ("c",) if lhs_spec[1] > max(spatial) else ("c",) + phases


def phase_kernel(w: jax.Array, rhs_spec: Sequence[int], strides: Sequence[int],
                 taps: Sequence[int], packing: Sequence[Label]) -> jax.Array:
    """``K[a, o, (r, c)] = w[s·(T − 1 − a) + r, c, o]`` per spatial dim (zero past the kernel),
    in ``w``'s layout: spatial axes of size ``T = taps``, the out-channel axis unchanged, the
    in-channel axis of size ``Π s · C_in`` packed in ``packing`` order. ``rhs_spec`` is
    ``(out feature, in feature, spatial…)`` axes of ``w``."""
    n = len(strides)
    ks = [w.shape[rhs_spec[2 + d]] for d in range(n)]
    pads = [(0, 0, 0)] * w.ndim
    for d in range(n):
        pads[rhs_spec[2 + d]] = (0, taps[d] * strides[d] - ks[d], 0)
    w = lax.pad(w, _zero(w), pads) if any(p[1] for p in pads) else w
    sizes = {"o": w.shape[rhs_spec[0]], "c": w.shape[rhs_spec[1]]}
    sizes.update({("t", d): taps[d] for d in range(n)})
    sizes.update({("r", d): strides[d] for d in range(n)})
    role = {rhs_spec[0]: (("o",), ("o",)), rhs_spec[1]: (("c",), tuple(packing))}
    role.update({rhs_spec[2 + d]: ((("t", d), ("r", d)), (("t", d),)) for d in range(n)})
    return _rearrange(w, [role[a][0] for a in range(w.ndim)],
                      [role[a][1] for a in range(w.ndim)], sizes,
                      flip=[("t", d) for d in range(n)])


def depth_to_space(g: jax.Array, lhs_spec: Sequence[int], strides: Sequence[int],
                   packing: Sequence[Label]) -> jax.Array:
    """Interleave the phases packed in ``g``'s feature axis (``Π s · C`` channels, ``packing``
    order) into its spatial axes, ``(…, q_d, …, (r…, c)) → (…, s_d·q_d + r_d, …, c)``, in
    the layout ``lhs_spec`` (``(batch, feature, spatial…)`` axes)."""
    n = len(strides)
    sizes = {"b": g.shape[lhs_spec[0]], "c": g.shape[lhs_spec[1]] // math.prod(strides)}
    sizes.update({("q", d): g.shape[lhs_spec[2 + d]] for d in range(n)})
    sizes.update({("r", d): strides[d] for d in range(n)})
    role = {lhs_spec[0]: (("b",), ("b",)), lhs_spec[1]: (tuple(packing), ("c",))}
    role.update({lhs_spec[2 + d]: ((("q", d),), (("q", d), ("r", d))) for d in range(n)})
    return _rearrange(g, [role[a][0] for a in range(g.ndim)],
                      [role[a][1] for a in range(g.ndim)], sizes)


def _explicit_padding(padding: Any, lhs_shape: Sequence[int], w_shape: Sequence[int],
                      dimension_numbers: lax.ConvDimensionNumbers,
                      window_strides: Sequence[int]) -> list:
    """``padding`` as ``(lo, hi)`` pairs (a jaxpr's form); a string (``"SAME"`` …) is resolved."""
    if not isinstance(padding, str):
        return [tuple(p) for p in padding]
    lhs_spec, rhs_spec, _ = dimension_numbers
    ins = [lhs_shape[a] for a in lhs_spec[2:]]
    ks = [w_shape[a] for a in rhs_spec[2:]]
    return list(lax.padtype_to_pads(ins, ks, window_strides, padding))


def strided_input_transpose(
        m: jax.Array, w: jax.Array, *, lhs_shape: Sequence[int], window_strides: Sequence[int],
        padding: Any, lhs_dilation: Sequence[int], rhs_dilation: Sequence[int],
        dimension_numbers: lax.ConvDimensionNumbers, feature_group_count: int,
        batch_group_count: int, precision: Any = None, preferred_element_type: Any = None,
        out_sharding: Any = None) -> jax.Array | None:
    """The transpose of ``lax.conv_general_dilated(·, w, ...)`` w.r.t. its input, applied to the
    cotangent ``m`` — what ``jax.vjp`` gives — as one dense stride-1 convolution and a
    depth-to-space interleave: per spatial dim
    ``g[s·q + r − lo] = Σ_{t<T} m[q − t]·w[s·t + r]``, ``T = ceil(k/s)`` (module docstring).

    Takes the parameters of a ``conv_general_dilated`` jaxpr equation (``dimension_numbers`` a
    ``lax.ConvDimensionNumbers``, ``padding`` ``(lo, hi)`` pairs or a padding string) and the
    input's shape ``lhs_shape``. ``m`` has the conv output's shape and layout (``out_spec``),
    ``w`` the kernel's (``rhs_spec``); the result has ``lhs_shape`` in ``lhs``'s layout. The
    emitted conv takes ``m`` in ``out_spec``, a kernel in ``w``'s layout with ``T`` taps per dim
    and ``Π s · C_in`` output channels, and writes ``lhs_spec``: ``(B, Q…, Π s·C_in)`` for
    NHWC, ``Q = ceil((lo + n)/s)``. ``precision`` and ``preferred_element_type`` are passed to it;
    ``out_sharding`` (the forward output's) is ignored. The result's dtype is
    ``preferred_element_type`` or ``m``'s (``jax.vjp`` then casts to ``lhs``'s dtype).

    Returns ``None`` where the decomposition does not apply or does not help: every stride 1,
    any ``lhs_dilation`` or ``rhs_dilation`` ≠ 1, ``feature_group_count`` or
    ``batch_group_count`` ≠ 1.
    """
    del out_sharding
    if not _applies(window_strides, lhs_dilation, rhs_dilation, feature_group_count,
                    batch_group_count):
        return None
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    pads = _explicit_padding(padding, lhs_shape, w.shape, dimension_numbers, window_strides)
    strides = tuple(window_strides)
    ins = [lhs_shape[a] for a in lhs_spec[2:]]
    ks = [w.shape[a] for a in rhs_spec[2:]]
    outs = [m.shape[a] for a in out_spec[2:]]
    taps = [-(-k // s) for k, s in zip(ks, strides)]
    # Q ≥ 1 even where the input lies wholly in negative low padding (its transpose is 0)
    qs = [max(-(-(lo + n) // s), 1) for (lo, _), n, s in zip(pads, ins, strides)]
    packing = _packing(lhs_spec)
    if w.dtype != m.dtype:
        w = w.astype(m.dtype)
    kernel = phase_kernel(w, rhs_spec, strides, taps, packing)
    g = lax.conv_general_dilated(
        m, kernel, window_strides=(1,) * len(strides),
        padding=[(t - 1, q - o) for t, q, o in zip(taps, qs, outs)],
        dimension_numbers=lax.ConvDimensionNumbers(
            out_spec, (rhs_spec[1], rhs_spec[0]) + tuple(rhs_spec[2:]), lhs_spec),
        precision=precision, preferred_element_type=preferred_element_type)
    g = depth_to_space(g, lhs_spec, strides, packing)
    crop = [(0, 0, 0)] * g.ndim
    for d, ((lo, _), n, q, s) in enumerate(zip(pads, ins, qs, strides)):
        crop[lhs_spec[2 + d]] = (-lo, n - s * q + lo, 0)
    return lax.pad(g, _zero(g), crop)
