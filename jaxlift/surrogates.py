"""A global surrogate: an interpretable model trained to imitate the network's decisions
(Molnar, *Interpretable Machine Learning*, "Global surrogate"; Craven & Shavlik 1996).

``surrogate(fn, params, x_fit, x_test)`` labels ``x_fit`` with the network's predicted classes
``ŷ = argmax_c fn(params, x)_c``, fits a scikit-learn decision tree (``kind="tree"``) or an
L1-penalized logistic regression (``kind="logistic"``) to ``(flatten(x_fit), ŷ)``, and measures
its **fidelity** on held-out data: ``mean_i 1{s(x_test_i) = ŷ_i}``, the share of test examples
on which the surrogate agrees with the network (not with the truth). With the true labels
``y_test``, both accuracies are reported as well. This answers "which simple rule does the
network follow overall?", a different question from per-example attributions.

scikit-learn is imported only when a surrogate is fitted.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from jaxlift.errors import InputTypeError, InputValueError

KINDS = ("tree", "logistic")


@dataclasses.dataclass(frozen=True)
class Surrogate:
    """A fitted global surrogate.

    ``estimator``: the fitted scikit-learn model (input: examples flattened to ``(N, F)``);
    ``fidelity``: agreement with the network's classes on ``x_test``, in [0, 1];
    ``network_accuracy`` / ``surrogate_accuracy``: against ``y_test`` (None without labels);
    ``importances``: one value per input feature, the example's shape (the tree's impurity
    importances, which sum to 1; for the logistic model the mean ``|coefficient|`` over the
    classes' rows); ``classes``: the network's classes seen in ``x_fit``."""

    kind: str
    estimator: Any
    fidelity: float
    network_accuracy: float | None
    surrogate_accuracy: float | None
    importances: np.ndarray
    classes: np.ndarray
    n_fit: int
    n_test: int

    def predict(self, x: Any) -> np.ndarray:
        """The surrogate's classes for examples ``x`` ``(N, *S)``."""
        x = np.asarray(x)
        return self.estimator.predict(x.reshape(x.shape[0], -1))


def predicted_classes(fn: Callable, params: Any, x: Any, batch_size: int = 1024) -> np.ndarray:
    """``argmax_c fn(params, x)_c`` for every example ``(N,)``, in batches of ``batch_size``.
    ``fn`` must return class scores ``(N, C)`` with ``C ≥ 2``."""
    n = x.shape[0]
    out = []
    for i in range(0, n, batch_size):
        y = jnp.asarray(fn(params, x[i:i + batch_size]))
        if y.ndim != 2 or y.shape[1] < 2 or y.shape[0] != min(batch_size, n - i):
            raise InputValueError(f"surrogate needs fn to return class scores of shape (N, C) with "
                                  f"C ≥ 2, got shape {tuple(y.shape)} for {min(batch_size, n - i)} "
                                  "examples (for one logit z, return jnp.stack([-z, z], -1))")
        if not bool(jnp.all(jnp.isfinite(y))):
            raise InputValueError("surrogate: fn returned non-finite class scores")
        out.append(np.asarray(jnp.argmax(y, axis=1)))
    return np.concatenate(out)


def _check_examples(name: str, x: Any) -> np.ndarray:
    if isinstance(x, (dict, list, tuple)):
        raise InputTypeError(f"surrogate {name} must be one array (N, *S), not a pytree")
    try:
        a = np.asarray(x)
    except Exception:
        raise InputTypeError(f"surrogate {name} must be a concrete array, not a traced value") \
            from None
    if a.ndim < 2 or a.shape[0] < 1:
        raise InputValueError(f"surrogate {name} must have shape (N, *S) with N ≥ 1 and at least one "
                              f"feature axis, got {a.shape}")
    if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
        raise InputTypeError(f"surrogate {name} must be numeric, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise InputValueError(f"surrogate {name} has non-finite values")
    return a


def _make_estimator(kind: str, max_depth: int | None, c: float, seed: int):
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.tree import DecisionTreeClassifier
    except ImportError:
        raise ImportError("jaxlift.surrogate needs scikit-learn, an optional dependency: pip "
                          "install 'jaxlift[methods]' (or pip install scikit-learn)") from None
    if kind == "tree":
        return DecisionTreeClassifier(max_depth=max_depth, random_state=seed)
    return LogisticRegression(C=c, l1_ratio=1.0, solver="saga", max_iter=2000,
                              random_state=seed)


def surrogate(fn: Callable, params: Any, x_fit: Any, x_test: Any, *, kind: str = "tree",
              y_test: Any = None, max_depth: int | None = 4, C: float = 0.1,
              batch_size: int = 1024, seed: int = 0) -> Surrogate:
    """Fit a global surrogate of ``fn`` (see the module doc) and measure its fidelity.

    ``x_fit`` ``(N, *S)``, ``x_test`` ``(M, *S)``: examples (the network is run on them;
    their labels are the network's classes). ``kind``: ``"tree"`` (a depth-``max_depth``
    CART tree; None: grown until pure) or ``"logistic"`` (multinomial logistic regression with an
    L1 penalty of inverse strength ``C``: small ``C``, few features). ``y_test`` ``(M,)``:
    true labels, for the two accuracies.
    """
    if kind not in KINDS:
        raise InputValueError(f"unknown surrogate kind {kind!r}; choose one of {', '.join(KINDS)}")
    if max_depth is not None and (isinstance(max_depth, bool) or not isinstance(max_depth, int)
                                  or max_depth < 1):
        raise InputValueError(f"surrogate max_depth must be a positive int or None, got "
                              f"{max_depth!r}")
    if isinstance(C, bool) or not isinstance(C, (int, float)) or not 0 < C < float("inf"):
        raise InputValueError(f"surrogate C must be a positive finite number, got {C!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputValueError(f"surrogate batch_size must be a positive int, got {batch_size!r}")
    xf = _check_examples("x_fit", x_fit)
    xt = _check_examples("x_test", x_test)
    if xf.shape[1:] != xt.shape[1:]:
        raise InputValueError(f"surrogate x_fit examples {xf.shape[1:]} and x_test examples "
                              f"{xt.shape[1:]} differ in shape")
    labels = None
    if y_test is not None:
        labels = np.asarray(y_test)
        if labels.shape != (xt.shape[0],):
            raise InputValueError(f"surrogate y_test must have shape ({xt.shape[0]},) (one label per "
                                  f"x_test example), got {labels.shape}")
    y_fit = predicted_classes(fn, params, jnp.asarray(xf), batch_size)
    y_net = predicted_classes(fn, params, jnp.asarray(xt), batch_size)
    classes = np.unique(y_fit)
    if kind == "logistic" and classes.size < 2:
        raise InputValueError(f"surrogate kind='logistic' needs the network to predict at least two "
                              f"classes on x_fit; it predicts only class {classes[0]}")
    est = _make_estimator(kind, max_depth, float(C), seed)
    est.fit(xf.reshape(xf.shape[0], -1), y_fit)
    y_sur = est.predict(xt.reshape(xt.shape[0], -1))
    if kind == "tree":
        imp = est.feature_importances_
    else:
        imp = np.abs(np.atleast_2d(est.coef_)).mean(axis=0)
    return Surrogate(
        kind=kind, estimator=est,
        fidelity=float(np.mean(y_sur == y_net)),
        network_accuracy=None if labels is None else float(np.mean(y_net == labels)),
        surrogate_accuracy=None if labels is None else float(np.mean(y_sur == labels)),
        importances=np.asarray(imp, np.float64).reshape(xf.shape[1:]),
        classes=classes, n_fit=int(xf.shape[0]), n_test=int(xt.shape[0]))


__all__ = ["surrogate", "Surrogate", "predicted_classes"]
