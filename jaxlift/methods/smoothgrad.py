"""``smoothgrad``: average another method over noisy copies of the input (Smilkov et al.,
"SmoothGrad: removing noise by adding noise", 2017; Captum's ``NoiseTunnel``).

For each input ``x`` (each leaf of it): ``σ = noise_level · (max x − min x)`` (the paper's noise
level, per input), ``n = samples`` copies ``x̃_s = x + σ ε_s`` with ``ε_s ~ N(0, I)`` drawn from
the input's key, and the base method's scores ``a_s`` on each copy (the reference, when the base
takes one, is not perturbed — as Captum). ``variant`` (Captum's names and formulas):

* ``"smoothgrad"``: ``mean_s a_s`` (multipliers: the mean of the base's, when it has them);
* ``"smoothgrad_sq"``: ``mean_s a_s²``;
* ``"vargrad"``: ``mean_s (a_s − mean a)²`` (the population variance, Adebayo et al. 2018).

Options: ``base`` (a method name of the table with a kernel — ``"gradient"`` by default — or a
:class:`~jaxlift.methods.base.Method`), ``base_options`` (a dict of the base's options: numbers,
strings, tuples; they key the compilation, so arrays are refused), ``samples`` (50: the paper's
choice, its Fig. 4 shows the maps settle by 50; Captum's default of 5 is visibly noisy),
``noise_level`` (0.15: the middle of the paper's recommended 10–20 %), ``variant``.
No completeness: the noisy copies have their own ``Δt``.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxlift.errors import InputTypeError, InputValueError
from jaxlift.methods import base
from jaxlift.methods.catalog import BASE_METHODS

NAME = "smoothgrad"
VARIANTS = ("smoothgrad", "smoothgrad_sq", "vargrad")

# the methods of the table it can smooth by name: those with a kernel (any other kernel Method
# can be passed as a value)
BASES = {m.name: m for m in BASE_METHODS if m.kernel is not None}


def lookup(name_or_method: Any) -> base.Method:
    """The base :class:`Method` (a value, or a name looked up in the table), which must have a
    kernel (scope ``"pair"`` or ``"input"``) and not be ``smoothgrad`` itself."""
    if isinstance(name_or_method, base.Method):
        m = name_or_method
    elif isinstance(name_or_method, str):
        if name_or_method not in BASES:
            raise InputValueError(f"unknown {NAME} base {name_or_method!r}; choose one of "
                                  f"{', '.join(sorted(BASES))} or pass a Method with a kernel")
        m = BASES[name_or_method]
    else:
        raise InputTypeError(f"{NAME} base must be a method name or a Method, got {name_or_method!r}")
    if m.kernel is None:
        raise InputValueError(f"{NAME} base {m.name!r} is an interpreter method; smoothgrad wraps "
                              "methods with a kernel (gradient, grad_times_input, "
                              "integrated_gradients, …)")
    if m.name == NAME:
        raise InputValueError(f"{NAME} base cannot be {NAME} itself")
    return m


def _check_base_options(v) -> tuple:
    if v is None:
        return ()
    if isinstance(v, tuple) and all(isinstance(i, tuple) and len(i) == 2 for i in v):
        v = dict(v)
    if not isinstance(v, dict):
        raise InputTypeError(f"{NAME} base_options must be a dict or None, got {type(v).__name__}")
    items = tuple(sorted(v.items()))
    try:
        hash(items)
    except TypeError:
        bad = [k for k, val in items if not _hashable(val)]
        raise InputTypeError(f"{NAME} base_options {bad} are not hashable (numbers, strings, tuples);"
                             " array options of the base are not supported under smoothgrad") \
            from None
    return items


def _hashable(v) -> bool:
    try:
        hash(v)
        return True
    except TypeError:
        return False


def _base_and_options(opts: dict) -> tuple[base.Method, dict]:
    m = lookup(opts["base"])
    return m, m.check_options(dict(opts["base_options"]))


def _prepare(opts: dict, example_shape, key) -> dict:
    m, base_opts = _base_and_options(opts)
    arrays = m.prepare(base_opts, example_shape, key) if m.prepare is not None else {}
    return {"base": arrays}


def noise_scale(x: jax.Array, noise_level: float) -> jax.Array:
    """``σ = noise_level · (max x − min x)`` over one example's leaf (a scalar)."""
    return noise_level * (jnp.max(x) - jnp.min(x))


def noisy_copies(x, key, samples: int, noise_level: float):
    """``(leaves, treedef)``: each leaf of ``x`` as ``(samples, *leaf.shape)`` copies
    ``x + σ ε_s``, ``σ`` from :func:`noise_scale`, ``ε`` standard normal from
    ``split(key, n_leaves)[leaf]``."""
    leaves, tree = jax.tree_util.tree_flatten(x)
    keys = jax.random.split(key, len(leaves))
    return [leaf + noise_scale(leaf, noise_level).astype(leaf.dtype)
            * jax.random.normal(k, (samples,) + leaf.shape, leaf.dtype)
            for leaf, k in zip(leaves, keys)], tree


def combine(attrs: jax.Array, variant: str) -> jax.Array:
    """Reduce ``(n, ...)`` per-sample scores over the sample axis: mean, mean of squares, or
    population variance ``mean((a − mean a)²)``."""
    if variant == "smoothgrad":
        return attrs.mean(axis=0)
    if variant == "smoothgrad_sq":
        return (attrs * attrs).mean(axis=0)
    centered = attrs - attrs.mean(axis=0, keepdims=True)
    return (centered * centered).mean(axis=0)


def _kernel(f, params, x, r, *, opts, arrays, key):
    """One input (and reference, if the base takes one): ``samples`` noisy copies through the
    base kernel, vmapped, then :func:`combine`."""
    m, base_opts = _base_and_options(opts)
    if m.single_array and len(jax.tree_util.tree_leaves(x)) != 1:
        raise InputTypeError(f"{NAME} base {m.name!r} needs x to be a single array")
    n = opts["samples"]
    noise_key, base_key = jax.random.split(key)
    noisy, tree = noisy_copies(x, noise_key, n, opts["noise_level"])
    base_r = r if m.scope_for(base_opts) == "pair" else None

    def one(xs_leaves, k):
        xs = jax.tree_util.tree_unflatten(tree, xs_leaves)
        return m.kernel(f, params, xs, base_r, opts=base_opts, arrays=arrays["base"], key=k)

    attrs, mults = jax.vmap(one)(noisy, jax.random.split(base_key, n))
    attr = jax.tree_util.tree_map(lambda a: combine(a, opts["variant"]), attrs)
    mult = None
    if opts["variant"] == "smoothgrad" and mults is not None:
        mult = jax.tree_util.tree_map(lambda a: a.mean(axis=0), mults)
    return attr, mult


def _rows(opts: dict) -> int:
    m, base_opts = _base_and_options(opts)
    per = m.rows_per_pair(base_opts) if m.rows_per_pair is not None else 1
    return opts["samples"] * per


def _check_base(v):
    lookup(v)           # a clear error now for an unknown name or a method without a kernel
    return v


METHOD = base.Method(
    name=NAME,
    summary="SmoothGrad / NoiseTunnel: another method (`base`) averaged over `samples` noisy "
            "copies of the input, σ = noise_level·(max x − min x)",
    cost="`samples` × the base",
    scope="pair",
    kernel=_kernel,
    options=(
        base.Option("base", "gradient", "the method to smooth (a name or a Method)",
                    _check_base),
        base.Option("base_options", None, "options of the base method (hashable values)",
                    _check_base_options),
        base.Option("samples", 50, "noisy copies per input", base.positive_int(NAME, "samples")),
        base.Option("noise_level", 0.15, "σ / (max x − min x)",
                    base.non_negative_float(NAME, "noise_level")),
        base.Option("variant", "smoothgrad", "smoothgrad, smoothgrad_sq or vargrad",
                    base.one_of(NAME, "variant", VARIANTS)),
    ),
    needs_refs=lambda opts: lookup(opts["base"]).requires_refs(dict(opts["base_options"])),
    scope_of=lambda opts: lookup(opts["base"]).scope_for(dict(opts["base_options"])),
    completeness="none",
    prepare=_prepare,
    rows_per_pair=_rows,
)
