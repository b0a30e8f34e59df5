"""Flax linen layers with Keras's semantics and Keras's weight layouts.

Each module here computes exactly what the Keras layer of the same name computes at inference
(formulas checked against Keras 3.x), with plain ``lax``/``jnp`` ops so that jaxlift's interpreter
can trace them. Weights keep Keras's names and layouts, so ``.h5`` weights load without
transposes:

- ``Dense``: ``kernel`` (in, units), ``bias`` (units,)
- ``Conv``: ``kernel`` (*kernel_size, in // groups, filters), ``bias`` (filters,)
- ``BatchNorm``: ``gamma``, ``beta`` in the ``params`` collection; ``moving_mean``,
  ``moving_variance`` in ``batch_stats`` (inference only: the moving statistics are always used)
- ``PReLU``: ``alpha`` (input shape without batch, shared axes set to 1)

Layers with an ``activation`` take ``logits=True`` to return the pre-activation instead.
Shapes follow Keras: a batch axis first; ``channels_last`` (N, *spatial, C) unless
``data_format="channels_first"`` (N, C, *spatial).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlift.errors import InputValueError
from jaxlift.models.graph import ACTIVATION_NAMES

Array = jax.Array

# --------------------------------------------------------------------------- activations


def _hard_sigmoid(x: Array) -> Array:
    """Keras 3: ``relu6(x + 3) / 6``, i.e. ``clip(x / 6 + 1/2, 0, 1)``."""
    return jnp.clip(x / 6.0 + 0.5, 0.0, 1.0)


def _hard_sigmoid_keras2(x: Array) -> Array:
    """Keras 2 (tf.keras): ``clip(0.2 x + 1/2, 0, 1)`` — a different slope from Keras 3's."""
    return jnp.clip(0.2 * x + 0.5, 0.0, 1.0)


def _softsign(x: Array) -> Array:
    return x / (jnp.abs(x) + 1.0)


def _mish(x: Array) -> Array:
    return x * jnp.tanh(jax.nn.softplus(x))


def _hard_silu(x: Array) -> Array:
    return x * _hard_sigmoid(x)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "linear": lambda x: x,
    "relu": jax.nn.relu,
    "relu6": lambda x: jnp.clip(x, 0.0, 6.0),
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, negative_slope=0.2),
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),
    "log_softmax": lambda x: jax.nn.log_softmax(x, axis=-1),
    "elu": lambda x: jax.nn.elu(x, alpha=1.0),
    "selu": jax.nn.selu,
    "softplus": jax.nn.softplus,
    "softsign": _softsign,
    "swish": jax.nn.silu,
    "silu": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # Keras's default is the exact erf form
    "hard_sigmoid": _hard_sigmoid,
    "hard_sigmoid_keras2": _hard_sigmoid_keras2,
    "hard_silu": _hard_silu,
    "hard_swish": _hard_silu,
    "mish": _mish,
    "exponential": jnp.exp,
}
"""Keras activation names → functions (Keras 3 formulas, plus Keras 2's ``hard_sigmoid``)."""

assert set(ACTIVATIONS) == ACTIVATION_NAMES, set(ACTIVATIONS) ^ ACTIVATION_NAMES


def get_activation(name: str) -> Callable[[Array], Array]:
    """The function of a Keras activation name; ``KeyError`` naming the known ones otherwise."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise KeyError(
            f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}"
        ) from None


def _activate(x: Array, activation: str, logits: bool) -> Array:
    return x if logits else get_activation(activation)(x)


# --------------------------------------------------------------------------- helpers


def _spatial_axes(ndim: int, data_format: str) -> tuple[int, ...]:
    """Axes of the spatial dims of an (N, …) array in the given data format."""
    return tuple(range(1, ndim - 1)) if data_format == "channels_last" else tuple(range(2, ndim))


def _channel_axis(ndim: int, data_format: str) -> int:
    return ndim - 1 if data_format == "channels_last" else 1


def _conv_dimension_numbers(rank: int, data_format: str) -> lax.ConvDimensionNumbers:
    sp = "DHW"[-rank:] if rank <= 3 else None
    if sp is None:
        raise InputValueError(f"convolutions of rank {rank} are not supported")
    lhs = f"N{sp}C" if data_format == "channels_last" else f"NC{sp}"
    return lax.conv_dimension_numbers((1,) * (rank + 2), (1,) * (rank + 2), (lhs, f"{sp}IO", lhs))


def same_padding(n: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow/Keras "same" padding of one axis: (before, after), the extra one after."""
    eff = (k - 1) * d + 1
    out = -(-n // s)
    total = max((out - 1) * s + eff - n, 0)
    return total // 2, total - total // 2


def _window_counts(shape: Sequence[int], pool: Sequence[int], strides: Sequence[int]) -> np.ndarray:
    """How many real (unpadded) elements each output window of a "same" pooling covers."""
    counts = np.ones((), np.float32)
    for n, k, s in zip(shape, pool, strides):
        lo, _ = same_padding(n, k, s)
        out = -(-n // s)
        start = np.arange(out) * s - lo
        c = (np.minimum(start + k, n) - np.maximum(start, 0)).astype(np.float32)
        counts = np.multiply.outer(counts, c)
    return counts


# --------------------------------------------------------------------------- layers


class Dense(nn.Module):
    """Keras ``Dense``: ``act(x @ kernel + bias)`` on the last axis. (…, in) → (…, units)."""

    units: int
    activation: str = "linear"
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        kernel = self.param("kernel", nn.initializers.glorot_uniform(), (x.shape[-1], self.units))
        y = jnp.dot(x, kernel)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.units,))
        return _activate(y, self.activation, logits)


class Conv(nn.Module):
    """Keras ``Conv1D``/``Conv2D``/``Conv3D`` (``rank`` 1, 2, 3).

    (N, *spatial, C_in) → (N, *spatial', filters) for ``channels_last``; channel axis 1 for
    ``channels_first``. ``padding`` is "valid", "same" (TensorFlow's rule: the extra pad goes
    after) or, for ``rank=1``, "causal" (left padding only).
    """

    rank: int
    filters: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...] = (1,)
    padding: str = "valid"
    data_format: str = "channels_last"
    dilation_rate: tuple[int, ...] = (1,)
    groups: int = 1
    activation: str = "linear"
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        r = self.rank
        ks, st, dl = (tuple(v) * r if len(v) == 1 else tuple(v)
                      for v in (self.kernel_size, self.strides, self.dilation_rate))
        c_in = x.shape[_channel_axis(x.ndim, self.data_format)]
        kernel = self.param("kernel", nn.initializers.glorot_uniform(),
                            (*ks, c_in // self.groups, self.filters))
        if self.padding == "valid":
            pad = [(0, 0)] * r
        elif self.padding == "same":
            spatial = [x.shape[a] for a in _spatial_axes(x.ndim, self.data_format)]
            pad = [same_padding(n, k, s, d) for n, k, s, d in zip(spatial, ks, st, dl)]
        elif self.padding == "causal" and r == 1:
            pad = [((ks[0] - 1) * dl[0], 0)]
        else:
            raise InputValueError(f"padding {self.padding!r} is not supported for rank {r}")
        y = lax.conv_general_dilated(
            x, kernel, window_strides=st, padding=pad, rhs_dilation=dl,
            dimension_numbers=_conv_dimension_numbers(r, self.data_format),
            feature_group_count=self.groups)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.filters,))
            if self.data_format == "channels_first":
                bias = bias.reshape((self.filters,) + (1,) * r)
            y = y + bias
        return _activate(y, self.activation, logits)


class Pool(nn.Module):
    """Keras ``MaxPooling{1,2,3}D`` (``op="max"``) and ``AveragePooling{1,2,3}D`` (``"avg"``).

    ``reduce_window`` with ``lax.max`` (init −inf) or ``lax.add`` divided by the window size;
    with "same" padding the average divides by the count of real elements, as Keras does.
    (N, *spatial, C) → (N, *spatial', C) (channel axis 1 for ``channels_first``).
    """

    rank: int
    op: str
    pool_size: tuple[int, ...]
    strides: tuple[int, ...] | None = None
    padding: str = "valid"
    data_format: str = "channels_last"

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        r = self.rank
        pool = tuple(self.pool_size) * r if len(self.pool_size) == 1 else tuple(self.pool_size)
        st = pool if self.strides is None else tuple(self.strides)
        st = st * r if len(st) == 1 else st
        axes = _spatial_axes(x.ndim, self.data_format)
        window, strides = [1] * x.ndim, [1] * x.ndim
        for a, k, s in zip(axes, pool, st):
            window[a], strides[a] = k, s
        pad = self.padding.upper()
        if self.op == "max":
            return lax.reduce_window(x, -jnp.inf, lax.max, tuple(window), tuple(strides), pad)
        summed = lax.reduce_window(x, 0.0, lax.add, tuple(window), tuple(strides), pad)
        if self.padding == "valid":
            return summed / float(math.prod(pool))
        counts = _window_counts([x.shape[a] for a in axes], pool, st)
        shape = [1] * x.ndim
        for a, n in zip(axes, counts.shape):
            shape[a] = n
        return summed / jnp.asarray(counts.reshape(shape), x.dtype)


class GlobalPool(nn.Module):
    """Keras ``GlobalAveragePooling*D`` / ``GlobalMaxPooling*D``: (N, *spatial, C) → (N, C)
    (or (N, 1, …, 1, C) with ``keepdims``)."""

    op: str
    data_format: str = "channels_last"
    keepdims: bool = False

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        axes = _spatial_axes(x.ndim, self.data_format)
        if self.op == "max":
            return jnp.max(x, axis=axes, keepdims=self.keepdims)
        return jnp.mean(x, axis=axes, keepdims=self.keepdims)


class Flatten(nn.Module):
    """Keras ``Flatten``: (N, …) → (N, prod …). With ``channels_first`` the channel axis is
    moved last first, so the element order is Keras's (channels vary fastest)."""

    data_format: str = "channels_last"

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        if self.data_format == "channels_first" and x.ndim > 2:
            x = jnp.transpose(x, (0, *range(2, x.ndim), 1))
        return x.reshape((x.shape[0], -1))


class Reshape(nn.Module):
    """Keras ``Reshape``: (N, …) → (N, *target_shape); one −1 allowed."""

    target_shape: tuple[int, ...]

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        return x.reshape((x.shape[0], *self.target_shape))


class Permute(nn.Module):
    """Keras ``Permute``: ``dims`` are 1-based non-batch axes."""

    dims: tuple[int, ...]

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        return jnp.transpose(x, (0, *self.dims))


class Identity(nn.Module):
    """Layers that do nothing at inference (GaussianNoise, ActivityRegularization, …)."""

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        if train:
            raise NotImplementedError(
                f"layer {self.name!r} is an inference-only identity here; "
                "train=True is not supported")
        return x


class Dropout(nn.Module):
    """Keras ``Dropout`` and ``SpatialDropout{1,2,3}D`` (``spatial=True``: one mask per
    channel, shared over the spatial axes). The identity unless ``train=True``; then the
    module needs a ``dropout`` rng."""

    rate: float
    spatial: bool = False
    data_format: str = "channels_last"

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        if not train or self.rate == 0.0:
            return x
        bdims = _spatial_axes(x.ndim, self.data_format) if self.spatial else ()
        return nn.Dropout(self.rate, broadcast_dims=bdims)(x, deterministic=False)


class Activation(nn.Module):
    """Keras ``Activation``; with ``logits=True`` it returns its input."""

    activation: str

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        return _activate(x, self.activation, logits)


class Softmax(nn.Module):
    """Keras ``Softmax`` layer over ``axis`` (int or tuple); ``logits=True`` returns its input."""

    axis: int | tuple[int, ...] = -1

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        return x if logits else jax.nn.softmax(x, axis=self.axis)


class ReLU(nn.Module):
    """Keras ``ReLU`` layer: ``where(x > threshold, x, 0)`` (plain relu when threshold is 0),
    clipped to [0, max_value], minus ``negative_slope * relu(threshold − x)``."""

    max_value: float | None = None
    negative_slope: float = 0.0
    threshold: float = 0.0

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        if self.negative_slope != 0.0 and self.max_value is None and self.threshold == 0.0:
            return jax.nn.leaky_relu(x, negative_slope=self.negative_slope)
        y = jnp.where(x > self.threshold, x, 0.0) if self.threshold != 0.0 else jax.nn.relu(x)
        if self.max_value is not None:
            y = jnp.clip(y, 0.0, self.max_value)
        if self.negative_slope != 0.0:
            y = y - self.negative_slope * jax.nn.relu(self.threshold - x)
        return y


class LeakyReLU(nn.Module):
    """Keras ``LeakyReLU``: ``x`` if ``x ≥ 0`` else ``negative_slope · x``."""

    negative_slope: float = 0.3

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        return jax.nn.leaky_relu(x, negative_slope=self.negative_slope)


class ELU(nn.Module):
    """Keras ``ELU`` layer: ``x`` if ``x > 0`` else ``alpha (eˣ − 1)``."""

    alpha: float = 1.0

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        return jax.nn.elu(x, alpha=self.alpha)


class PReLU(nn.Module):
    """Keras ``PReLU``: ``relu(x) − alpha · relu(−x)``; ``alpha`` has the input's non-batch
    shape with the (1-based) ``shared_axes`` set to 1."""

    shared_axes: tuple[int, ...] | None = None

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        shape = list(x.shape[1:])
        for a in self.shared_axes or ():
            shape[a - 1] = 1
        alpha = self.param("alpha", nn.initializers.zeros, tuple(shape))
        return jax.nn.relu(x) - alpha * jax.nn.relu(-x)


class BatchNorm(nn.Module):
    """Keras ``BatchNormalization`` at inference: ``x · a + b`` with
    ``a = gamma / sqrt(moving_variance + epsilon)``, ``b = beta − moving_mean · a``
    (a fixed affine map). ``axis`` lists the normalised (feature) axes."""

    axis: tuple[int, ...] = (-1,)
    epsilon: float = 1e-3
    center: bool = True
    scale: bool = True

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        axes = tuple(a % x.ndim for a in self.axis)
        shape = tuple(x.shape[a] for a in axes)
        bshape = tuple(x.shape[a] if a in axes else 1 for a in range(x.ndim))
        mean = self.variable("batch_stats", "moving_mean", jnp.zeros, shape).value
        var = self.variable("batch_stats", "moving_variance", jnp.ones, shape).value
        a = lax.rsqrt(var + self.epsilon)
        if self.scale:
            a = a * self.param("gamma", nn.initializers.ones, shape)
        b = -mean * a
        if self.center:
            b = b + self.param("beta", nn.initializers.zeros, shape)
        return x * a.reshape(bshape) + b.reshape(bshape)


class ZeroPadding(nn.Module):
    """Keras ``ZeroPadding{1,2,3}D``: ``padding`` is one (before, after) pair per spatial axis."""

    padding: tuple[tuple[int, int], ...]
    data_format: str = "channels_last"

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        pads = [(0, 0)] * x.ndim
        for a, p in zip(_spatial_axes(x.ndim, self.data_format), self.padding):
            pads[a] = tuple(p)
        return jnp.pad(x, pads)


class Cropping(nn.Module):
    """Keras ``Cropping{1,2,3}D``: ``cropping`` is one (before, after) pair per spatial axis."""

    cropping: tuple[tuple[int, int], ...]
    data_format: str = "channels_last"

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        idx = [slice(None)] * x.ndim
        for a, (lo, hi) in zip(_spatial_axes(x.ndim, self.data_format), self.cropping):
            idx[a] = slice(lo, x.shape[a] - hi)
        return x[tuple(idx)]


class Merge(nn.Module):
    """Keras merge layers on a list of same-shaped arrays: ``op`` is one of add, subtract,
    multiply, average, maximum, minimum, concatenate (along ``axis``)."""

    op: str
    axis: int = -1

    @nn.compact
    def __call__(self, *xs: Array, logits: bool = False, train: bool = False) -> Array:
        if self.op == "concatenate":
            return jnp.concatenate(xs, axis=self.axis)
        if self.op == "subtract":
            if len(xs) != 2:
                raise InputValueError(f"Subtract takes exactly 2 inputs, got {len(xs)}")
            return xs[0] - xs[1]
        fn = {"add": jnp.add, "multiply": jnp.multiply, "maximum": jnp.maximum,
              "minimum": jnp.minimum, "average": jnp.add}[self.op]
        y = xs[0]
        for x in xs[1:]:
            y = fn(y, x)
        return y / float(len(xs)) if self.op == "average" else y
