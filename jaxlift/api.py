"""``jaxlift.attribute`` and ``jaxlift.multipliers``: DeepLIFT over inputs × references.

``fn(params, xb)`` is called the way a model is called for prediction: a batch in (leading axis),
a batch of outputs out. jaxlift traces it at one example, interprets the jaxpr on every
(input, reference) pair with ``vmap`` over N inputs × K references, and ``jit``-compiles the
whole once per (fn, target, mode, shapes). Examples of a batch are assumed not to interact.

Shapes (for each leaf of the pytree ``x``, with ``S`` an example's shape):

* ``x``: ``(N, *S)``; ``refs``: ``(K, *S)`` shared by all inputs, ``(N, K, *S)`` one set per
  input, or a callable ``ref_fn(x, key)`` returning either;
* result: ``(N, *S)`` averaged over references, ``(N, K, *S)`` with ``average_refs=False``; with
  ``target="all"`` an axis of size T (the number of outputs) follows N (and K).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp

from jaxlift import pipeline
from jaxlift.errors import InputTypeError


if TYPE_CHECKING:
    from jaxlift.methods import Method
    from jaxlift.rules.composites import Composite

# ---------------------------------------------------------------------------------------------
# Targets

def token_scores(scores: Any, axis: int = -1) -> Any:
    """One score per token from scores at an embedding layer: ``s_t = Σ_e C_{t,e}``, the sum
    over the embedding axis (``(N, T, E) → (N, T)``; a pytree of such arrays maps leaf by
    leaf). Summation-to-delta carries over: ``Σ_t s_t = Σ_{t,e} C_{t,e}``. For additive scores
    (DeepLIFT, gradient × input, integrated gradients); occlusion copies a window's drop to
    every feature in it, so its per-token score is the mean over the embedding, not the sum.

    Scores of a value with named axes (a penzai ``NamedArray`` marked with
    :func:`jaxlift.layer`) come back named too, with N as a positional prefix; their data keep
    the library's axis order, so a positional ``axis`` means nothing there and is refused: sum
    the embedding by name (penzai: ``pz.nx.nmap(lambda v: v.sum())(scores.tag_prefix("example")
    .untag("embedding"))``)."""
    named = [leaf for leaf in jax.tree_util.tree_leaves(scores, is_leaf=_has_named_axes)
             if _has_named_axes(leaf)]
    if named:
        raise InputTypeError(
            f"token_scores sums a positional axis, and these scores are a "
            f"{type(named[0]).__name__} with named axes {dict(named[0].named_shape)} (and N as "
            "a positional prefix), whose data keep their own axis order: sum the embedding axis "
            "by its name instead; for penzai, pz.nx.nmap(lambda v: v.sum())(scores.tag_prefix("
            "'example').untag('embedding')).unwrap('example', ...)")
    return jax.tree_util.tree_map(lambda s: jnp.sum(s, axis=axis), scores)


def _has_named_axes(value) -> bool:
    return hasattr(value, "named_shape") and hasattr(value, "data_array")


# ---------------------------------------------------------------------------------------------
# Public API

_DOC_ARGS = """
    Args:
      fn: ``fn(params, xb) -> outputs``, called on a batch ``xb`` (leading axis), e.g. a Flax
        ``model.apply``.
      params: pytree of parameters (fixed: ``Δ = 0``).
      x: pytree of input batches, each leaf ``(N, *S)``.
      refs: references ``(K, *S)`` shared by all inputs, ``(N, K, *S)`` per input, or a
        callable ``ref_fn(x, key)`` returning either.
      target: what to explain in each example's output ``o``: ``None`` (``o`` has one element),
        an int (``o[..., i]``), a tuple index, a callable ``o -> scalar``, ``"all"`` (every
        output; an axis of size T after N), or per input: N indices (a list or 1-D integer
        array), ``"pred"`` (each input's argmax) or ``class_difference(a, b)`` with arrays.
      mode: a method of the table :data:`jaxlift.methods.METHODS` by name — DeepLIFT's
        ``"rescale"``, ``"reveal_cancel"``, ``"genomics_default"``; ``"gradient"``,
        ``"grad_times_input"``, ``"guided_backprop"``, ``"lrp_epsilon"`` (``refs`` may be
        ``None``); ``"integrated_gradients"``, ``"occlusion"``, ``"shapley_sampling"`` … — a
        :class:`~jaxlift.methods.Method` of one's own, or a
        :class:`~jaxlift.rules.composites.Composite` (DeepLIFT with one's own rules).
      max_mode: ``"preserving"`` (exact) or ``"gradient"`` (the original's max-pooling).
      average_refs: average over the K references (else keep a K axis after N).
      batch_size: the number of (input, reference) pairs per compiled chunk (constant memory);
        ``"auto"`` sizes chunks from memory (:mod:`jaxlift.chunking`: cache-sized on the CPU, a
        quarter of free memory on an accelerator); ``None`` runs everything at once. Results do
        not depend on it. Integrated gradients sizes ``"auto"`` chunks counting each step as a
        pair; the other baseline modes run ``"auto"`` at once.
      layer: score the variable marked ``jaxlift.layer(v, layer)`` instead of the inputs, or,
        when ``fn`` marks none of that name, the output of the module it names — a Flax linen
        or Haiku module ``fn`` calls, a submodule of a model from ``from_nnx``/``from_equinox``
        — by full path (``"bert/embeddings/word_embeddings"``), unique end
        (``"word_embeddings"``) or wildcard pattern (every match, one cut):
        :mod:`jaxlift.named_layers`.
      key: PRNG key passed to a callable ``refs``.
      progress: a progress bar over chunks: ``True`` always, ``False`` never, ``None`` (the
        default) on a terminal for runs longer than two seconds.
      return_delta: also return ``Δt = t(x) − t(r)`` (averaged like the result).
      check_finite: refuse NaN/Inf in x, refs and params (when they are concrete). The check
        runs inside the compiled program and is read with the result: no extra dispatch.
      mesh: a ``jax.sharding.Mesh``: split the inputs over all its devices (DeepLIFT modes);
        N is padded to a multiple of the device count. Results equal the one-device run.
      mode_options: the method's options (``steps``/``method`` for integrated gradients,
        ``window``/``stride`` for occlusion, ``num_permutations``/``feature_mask`` for Shapley
        sampling, ``epsilon`` for ε-LRP …; each method's ``options`` in
        :mod:`jaxlift.methods`). Unknown keys and bad values are an error.
      gating: the rule for a product of a gate ``g = σ(·)`` and a signal ``s`` (LSTM/GRU
        cells): ``"shapley"`` (the default; exact: ``m_s = (g + g0)/2``, ``m_g = (s + s0)/2``)
        or ``"gate_as_weight"`` (Arras et al. 2017: ``m_s = g``, ``m_g = 0``; misses
        ``s0·Δg`` of each product's difference, so scores do not sum to delta where the
        reference's signal is non-zero: compare with ``return_delta=True``).
      precision: ``"default"`` follows JAX's matmul precision (fast; float32 convolutions and
        dots run in TF32 on recent NVIDIA GPUs, so scores miss Δt by ~1e-5 of Σ|C|);
        ``"highest"`` compiles the whole program under
        ``jax.default_matmul_precision("highest")`` (exact float32, several times slower on
        such GPUs). On the CPU both are exact float32. See :func:`jaxlift.flag_gaps`.
      check_completeness: the completeness certificate of the DeepLIFT modes
        (:mod:`jaxlift.certificate`): every pair's ``|ΣC − Δt|`` is compared, inside the
        compiled program, with a bound set by the float type's rounding; ``"raise"`` (the
        default) raises :class:`~jaxlift.errors.CompletenessError` naming the pairs, the gap
        and its likely cause instead of returning scores that do not sum; ``"warn"`` warns
        and returns them; ``"off"`` skips it. Inside your own ``jax.jit`` nothing can be
        raised: a failing pair's scores are NaN. Methods that do not promise completeness
        (gradients, integrated gradients, ε-LRP, sampling methods, ``max_mode="gradient"``,
        ``gating="gate_as_weight"``) are never refused for it.
      layer_bypass: with ``layer=``, what to do with the share of ``Δt`` that reaches the
        target *around* the marked layer (a residual around it, a second input beside it, a
        padding mask computed from the same token ids): ``"refuse"`` (the default; the
        certificate refuses pairs where that share is not zero, naming the path) or
        ``"credit"``: return ``LayerScores(layer, bypass)``, the layer's scores and the
        inputs' share (shaped like ``x``), which together sum to ``Δt``.
"""


def attribute(fn: Callable, params: Any, x: Any, refs: Any, *, target=None,
              mode: "str | Method | Composite" = "rescale", max_mode: str = "preserving", average_refs: bool = True,
              batch_size: int | str | None = "auto", layer: str | None = None,
              key: jax.Array | None = None, progress: bool | None = None,
              return_delta: bool = False, check_finite: bool = True,
              mode_options: dict | None = None, mesh=None, gating: str = "shapley",
              precision: str = "default", check_completeness: "str | bool" = "raise",
              layer_bypass: str = "refuse"):
    """DeepLIFT contribution scores ``C(Δx_i → Δt)`` of every input feature.

    Summation-to-delta: ``Σ_i C_i = t(x) − t(r)`` for each pair (and on average over
    references) in the DeepLIFT modes with their default options (``max_mode="preserving"``,
    ``gating="shapley"``), checked on every call by the completeness certificate; the README's
    table of modes says which other methods promise it.
    """
    return pipeline.run("contributions", fn, params, x, refs, target=target, mode=mode,
                max_mode=max_mode, average_refs=average_refs, batch_size=batch_size,
                layer_name=layer, key=key, progress=progress, return_delta=return_delta,
                check_finite=check_finite, mode_options=mode_options, mesh=mesh,
                gating=gating, precision=precision, check_completeness=check_completeness,
                layer_bypass=layer_bypass)


def multipliers(fn: Callable, params: Any, x: Any, refs: Any, *, target=None,
                mode: "str | Method | Composite" = "rescale", max_mode: str = "preserving", average_refs: bool = True,
                batch_size: int | str | None = "auto", layer: str | None = None,
                key: jax.Array | None = None, progress: bool | None = None,
                return_delta: bool = False, check_finite: bool = True,
                mode_options: dict | None = None, mesh=None, gating: str = "shapley",
                precision: str = "default", check_completeness: "str | bool" = "raise",
                layer_bypass: str = "refuse"):
    """DeepLIFT multipliers ``m_i = C(Δx_i → Δt)/Δx_i`` (the contribution per unit of
    difference-from-reference), shaped like :func:`attribute`'s result.

    With ``average_refs=True`` the multipliers are averaged over references.
    """
    return pipeline.run("multipliers", fn, params, x, refs, target=target, mode=mode,
                max_mode=max_mode, average_refs=average_refs, batch_size=batch_size,
                layer_name=layer, key=key, progress=progress, return_delta=return_delta,
                check_finite=check_finite, mode_options=mode_options, mesh=mesh,
                gating=gating, precision=precision, check_completeness=check_completeness,
                layer_bypass=layer_bypass)


attribute.__doc__ += _DOC_ARGS
multipliers.__doc__ += _DOC_ARGS
