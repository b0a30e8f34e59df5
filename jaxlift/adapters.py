"""One-line adapters from model libraries to the ``(fn, params)`` pair that
:func:`jaxlift.attribute` explains.

``attribute(fn, params, x, refs)`` wants ``fn(params, xb)``: a batch ``xb`` of shape ``(N, *S)``
in, a batch of outputs ``(N, *T)`` out, with everything the model reads passed through
``params`` (a pytree). Each adapter builds that ``fn`` from a model object and changes nothing
else: the scores are those of the same model in inference mode (BatchNorm reading its running
statistics, Dropout off), so ``Σ scores = fn(params, x) − fn(params, r)`` per (input, reference)
pair as for any ``fn``.

* :func:`from_nnx` — a Flax NNX module (``nnx.split`` into a graph definition and its state);
* :func:`from_equinox` — an Equinox module, which computes **one** example: ``fn`` ``vmap`` s it
  over the batch;
* :func:`from_linen` — a Flax linen module and its variables (``params`` plus collections such as
  BatchNorm's ``batch_stats``), with fixed keyword arguments of ``model.apply``.

The ``fn`` of :func:`from_nnx` and :func:`from_equinox` has a method ``fn.map_module(t)``: the
same function computing with ``t(module)`` in place of the module (``t`` may change the module
it is given: ``fn`` builds a fresh one per call). ``attribute(..., layer="name")`` marks a
submodule's output through it (:mod:`jaxlift.named_layers`).

The adapters import their library only when called, and nothing of jaxlift's interpreter.
"""
from __future__ import annotations

from typing import Any, Callable

from jaxlift.errors import InputTypeError, InputValueError

__all__ = ["from_nnx", "from_equinox", "from_linen"]

Fn = Callable[[Any, Any], Any]


def from_nnx(model: Any, *, eval_mode: bool = True) -> tuple[Fn, Any]:
    """``(fn, params)`` for a Flax NNX module ``model`` (called as ``model(xb)`` on a batch).

    ``params`` is the module's state without its random-number streams (``nnx.Param`` weights
    and any other array variables such as BatchNorm's ``nnx.BatchStat`` running mean and
    variance); ``fn(params, xb) = nnx.merge(graphdef, params, rng_state)(xb)``. The RNG state
    (``nnx.Rngs`` counters and keys, integer and key dtypes) is held by ``fn`` rather than
    explained. With ``eval_mode=True`` (the default) a clone of ``model`` is put in evaluation
    mode first (``.eval()``: BatchNorm uses its running statistics, Dropout is off); ``model``
    itself is not changed. With ``eval_mode=False`` the module is used in the mode it is in
    (a BatchNorm in training mode mixes a batch's examples, which ``attribute`` refuses).
    """
    from flax import nnx

    if not isinstance(model, nnx.Module):
        raise InputTypeError(f"from_nnx takes a flax.nnx.Module, got {type(model).__name__}"
                             + (" (a linen module: use jaxlift.from_linen(model, variables))"
                           if _is_linen(model) else ""))
    if eval_mode:
        model = nnx.clone(model)
        model.eval()
    graphdef, rng_state, params = nnx.split(model, nnx.RngState, ...)
    return _nnx_fn(graphdef, rng_state, None), params


def _nnx_fn(graphdef, rng_state, transform) -> Fn:
    from flax import nnx

    def fn(state, xb):
        module = nnx.merge(graphdef, state, rng_state)
        return (module if transform is None else transform(module))(xb)

    fn.map_module = lambda t: _nnx_fn(graphdef, rng_state, _then(transform, t))
    return fn


def from_equinox(module: Any, *, inference: bool = True,
                 call: Callable[[Any, Any], Any] | None = None) -> tuple[Fn, Any]:
    """``(fn, params)`` for an Equinox module computing one example, ``module(x) -> y``.

    ``eqx.partition(module, eqx.is_inexact_array)`` splits it into ``params`` (its floating-point
    arrays: the weights) and the static rest; ``fn(params, xb) = vmap(m)(xb)`` with
    ``m = eqx.combine(params, static)``, so ``xb`` is ``(N, *S)`` and the output ``(N, *T)``.
    ``inference=True`` (the default) applies ``eqx.nn.inference_mode`` first (Dropout off).
    ``call(m, x)`` replaces ``m(x)`` for modules called otherwise, e.g. with a state:
    ``call=lambda m, x: m(x, state)[0]``.
    """
    import equinox as eqx

    if not isinstance(module, eqx.Module):
        raise InputTypeError(f"from_equinox takes an equinox.Module, got {type(module).__name__}")
    if inference:
        module = eqx.nn.inference_mode(module, True)
    params, static = eqx.partition(module, eqx.is_inexact_array)
    one = call if call is not None else (lambda m, x: m(x))
    return _equinox_fn(static, one, None), params


def _equinox_fn(static, one, transform) -> Fn:
    import equinox as eqx
    import jax

    def fn(p, xb):
        m = eqx.combine(p, static)
        m = m if transform is None else transform(m)
        return jax.vmap(lambda x: one(m, x))(xb)

    fn.map_module = lambda t: _equinox_fn(static, one, _then(transform, t))
    return fn


def _then(first, second):
    """``second ∘ first`` (``second`` alone when ``first`` is ``None``)."""
    return second if first is None else (lambda m: second(first(m)))


def from_linen(model: Any, variables: Any, **apply_kwargs: Any) -> tuple[Fn, Any]:
    """``(fn, params)`` for a Flax linen module: ``fn(variables, xb) =
    model.apply(variables, xb, **apply_kwargs)`` and ``params = variables`` (every collection:
    ``params``, ``batch_stats``, …).

    Give the keyword arguments that put the module in inference mode, e.g. ``train=False`` for
    a module whose BatchNorm has ``use_running_average=not train``. ``mutable=`` is refused
    (``apply`` would return the updated collections too, and an update means a statistic of the
    batch); a module that tries to update a collection anyway (BatchNorm in training mode)
    raises a ``ValueError`` saying so when ``attribute`` traces ``fn``.
    """
    import flax.errors
    import flax.linen as nn

    if not isinstance(model, nn.Module):
        raise InputTypeError(f"from_linen takes a flax.linen.Module, got {type(model).__name__}"
                             + (" (an NNX module: use jaxlift.from_nnx(model))"
                           if _is_nnx(model) else ""))
    if "mutable" in apply_kwargs:
        raise InputValueError("from_linen: mutable= is not supported; DeepLIFT explains the model "
                              "in inference mode, where no collection changes — pass the argument "
                              "that selects it instead (e.g. train=False)")
    if not hasattr(variables, "keys") or "params" not in variables:
        raise InputValueError("from_linen: variables must be the dict returned by model.init, with "
                              f"a 'params' collection; got {type(variables).__name__}"
                              + (f" with keys {sorted(variables.keys())}"
                            if hasattr(variables, "keys") else ""))

    def fn(v, xb):
        try:
            return model.apply(v, xb, **apply_kwargs)
        except flax.errors.ModifyScopeVariableError as e:
            raise InputValueError(
                f"{type(model).__name__}.apply tried to update a variable ({e}); a layer is in "
                "training mode (BatchNorm with use_running_average=False computes statistics "
                "of the batch). Pass the argument that puts it in inference mode to "
                "from_linen, e.g. jaxlift.from_linen(model, variables, train=False)") from None

    return fn, variables


def _is_linen(obj: Any) -> bool:
    try:
        import flax.linen as nn
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, nn.Module)


def _is_nnx(obj: Any) -> bool:
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, nnx.Module)
