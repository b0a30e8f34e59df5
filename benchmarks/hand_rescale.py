"""The least a DeepLIFT Rescale program computes, written by hand for the MNIST CNN: the
first-call floor of ``benchmarks/bench_compile.py`` (its ``hand_rescale`` row).

For a network of dense layers, convolutions and ReLUs, Rescale's scores are the gradient of the
network in which each ReLU's derivative is replaced by its secant ``m = Δy/Δx`` between input and
reference (``relu'(x)`` where ``Δx = 0``), times ``Δx``: one forward pass on the references, one
on the inputs, one backward pass per pair. Here that is a ``custom_vjp`` ReLU, ``jax.grad``,
two ``vmap``s and a mean over references — no guard for small ``Δx`` (docs/design.md §9.1), no
finite flag, no certificate, no batch-independence proof: what jaxlift's own program adds to
this is what keeps its scores exact or refused. The scores equal jaxlift's to float rounding
on the benchmark's inputs (checked by :func:`check`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _conv(h, layer):
    return jax.lax.conv_general_dilated(h, layer["kernel"], (2, 2), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + layer["bias"]


def _net(p, image, relu, target: int):
    """The MNIST CNN's logit ``target`` for one (28, 28, 1) image, ``relu(i, z)`` its i-th ReLU."""
    h = relu(0, _conv(image[None], p["conv2d"]))
    h = relu(1, _conv(h, p["conv2d_1"])).reshape(1, -1)
    h = relu(2, h @ p["dense"]["kernel"] + p["dense"]["bias"])
    return (h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"])[0, target]


@jax.custom_vjp
def _secant_relu(z, z0):
    return jax.nn.relu(z)


def _secant_fwd(z, z0):
    dz = z - z0
    moved = dz != 0
    m = jnp.where(moved, (jax.nn.relu(z) - jax.nn.relu(z0)) / jnp.where(moved, dz, 1),
                  (z > 0).astype(z.dtype))
    return jax.nn.relu(z), m


def _secant_bwd(m, g):
    return g * m, None


_secant_relu.defvjp(_secant_fwd, _secant_bwd)


def hand_rescale(target: int):
    """``f(params, x, refs) -> (scores (N, 28, 28, 1), Δt (N,))``, averaged over references."""
    def reference_side(p, r):
        pre: list = []
        out = _net(p, r, lambda i, z: pre.append(z) or jax.nn.relu(z), target)
        return out, pre

    def pair(p, image, r, r_out, pre):
        t = lambda v: _net(p, v, lambda i, z: _secant_relu(z, pre[i]), target)  # noqa: E731
        value, grad = jax.value_and_grad(t)(image)
        return grad * (image - r), value - r_out

    def per_input(p, refs, image):
        r_out, pre = jax.vmap(reference_side, in_axes=(None, 0))(p, refs)
        scores, delta = jax.vmap(pair, in_axes=(None, None, 0, 0, 0))(p, image, refs, r_out, pre)
        return scores.mean(0), delta.mean(0)

    def f(params, x, refs):
        return jax.vmap(per_input, in_axes=(None, None, 0))(params["params"], refs, x)
    return f


def check(fn, params, x, refs, target: int) -> float:
    """The largest difference between the hand-written scores and jaxlift's (``fn`` the
    model's apply), over the largest score."""
    import jaxlift
    mine, _ = jax.jit(hand_rescale(target))(params, x, refs)
    theirs = jaxlift.attribute(fn, params, x, refs, target=target)
    return float(jnp.abs(mine - theirs).max() / jnp.abs(theirs).max())
