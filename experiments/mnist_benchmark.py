"""The DeepLIFT paper's MNIST benchmark (Shrikumar et al. 2017, §4.1 and Fig. 5), with jaxlift.

Task: an image of original class ``c`` is to be turned into target class ``t`` by erasing
pixels. Every method scores the pixels for the logit of ``c`` (``S_c``) and of ``t`` (``S_t``)
— one ``jaxlift.attribute(..., target="all")`` call per method gives all ten rows, and the
two are read off — and pixels are ranked by ``S_diff = S_c − S_t``. Among the pixels with
``S_diff > 0``, the top ones (at most 157 = 20% of the 784 pixels) are erased, i.e. set to
the reference (black, 0). The measure is how far that moves the prediction from ``c`` to
``t``: the change of the log-odds of ``c`` against ``t``. For a softmax,
``log(p_c / p_t) = z_c − z_t`` (the pre-softmax logits), so each image contributes::

    Δ log-odds = (z_c − z_t)(x) − (z_c − z_t)(x with the pixels erased)

which is the paper's "increase in log-odds score of the target vs. the original class"
(bigger is better: the ranking found the pixels that make ``c`` look like ``t``). Pairs:
8→3, 8→6, 9→4, 4→9; images: the first ``--n`` test images whose true class is ``c`` (as the
paper, "images belonging to the original class", misclassified ones included).

Methods (DeepLIFT and integrated gradients use the all-black reference, as the paper):
gradient, gradient×input, guided backprop (and guided backprop×input), integrated gradients
with 5, 10 and 50 midpoint-rule steps (the paper's "integrated gradients-n", midpoint rule
over n intervals), DeepLIFT Rescale and RevealCancel, occlusion (a ``--occlusion-window``
square box set to black, stride 1), ε-LRP, SmoothGrad (50 noisy copies, noise level 0.15, over
the gradient), LIME and KernelSHAP (1000 coalitions of 2×2-pixel patches, one mask shared by
every image so that one call explains them all), and a random ranking as the control.

A global surrogate (``jaxlift.surrogate``: a depth-8 decision tree fitted to the network's
classes on 5000 training digits) is reported with its fidelity on the first 2000 test digits:
how far the network's decisions can be read as a small tree over pixels.

Writes to ``--out`` (default ``experiments/results/``): ``mnist_benchmark.md`` (mean ± sem
per method and pair, N, runtimes, summation-to-delta, the comparison with the paper),
``mnist_benchmark_box.png`` (box plots) and ``mnist_heatmaps.png`` (``S_c − S_t`` of every
method on one image per pair); with ``--save-scores`` also ``mnist_benchmark_scores.npz``
(inputs and the scores for ``c`` and ``t``, for checks).

    python -m experiments.mnist_benchmark            # 200 images per class, ≈ 5 CPU minutes
    python -m experiments.mnist_benchmark --smoke    # 6 images per class, seconds after compiling
"""
from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import mnist_common as mc
import jaxlift
from jaxlift import viz

PAIRS = ((8, 3), (8, 6), (9, 4), (4, 9))
MAX_ERASED = 157  # 20% of 784 pixels, as the paper
SMALL_BUDGETS = (20, 50)  # extra: the same protocol with fewer pixels erased at most
# Σ scores ≈ Δ. Not kernel_shap here: its group values sum to Δ, but every pixel of a 2×2
# patch carries its patch's value (as Captum), so the pixel sum is 4·Δ.
COMPLETE_MODES = ("integrated_gradients", "rescale", "reveal_cancel")
SURROGATE_FIT, SURROGATE_TEST, SURROGATE_DEPTH = 5000, 2000, 8


@dataclass(frozen=True)
class Method:
    """One attribution method of the benchmark."""

    name: str
    mode: str | None  # a jaxlift mode, or None for the random control
    short: str = ""  # column title of the heatmap figure
    options: dict = field(default_factory=dict)
    times_input: bool = False  # multiply the scores by the input (guided backprop × input)
    pairs_per_chunk: int = 256  # attribute(batch_size=...)


def patch_mask(side: int = 2) -> np.ndarray:
    """``(28, 28, 1)`` integer mask of ``side × side`` pixel patches (LIME/KernelSHAP groups)."""
    i = np.arange(28) // side
    return (i[:, None] * (-(-28 // side)) + i[None, :])[..., None].astype(np.int32)


def methods(occlusion_window: int = 2) -> list[Method]:
    """The benchmark's methods, in the order of the table."""
    ig = lambda n: Method(f"integrated gradients-{n}", "integrated_gradients",  # noqa: E731
                          f"IG-{n}", {"steps": n, "method": "riemann_middle"},
                          pairs_per_chunk=max(8, 640 // n))
    w = occlusion_window
    return [
        Method("random (control)", None, "random"),
        Method("gradient", "gradient", "gradient"),
        Method("guided backprop", "guided_backprop", "guided BP"),
        Method("guided backprop × input", "guided_backprop", "guided BP×in", times_input=True),
        Method("gradient × input", "grad_times_input", "grad×input"),
        ig(5), ig(10), ig(50),
        Method(f"occlusion {w}×{w}", "occlusion", f"occlusion {w}×{w}",
               {"window": (w, w, 1), "stride": 1}, pairs_per_chunk=8),
        Method("DeepLIFT Rescale", "rescale", "Rescale", pairs_per_chunk=128),
        Method("DeepLIFT RevealCancel", "reveal_cancel", "RevealCancel", pairs_per_chunk=128),
        Method("ε-LRP", "lrp_epsilon", "ε-LRP", pairs_per_chunk=128),
        Method("SmoothGrad", "smoothgrad", "SmoothGrad", {"samples": 50, "noise_level": 0.15},
               pairs_per_chunk=16),
        Method("LIME 2×2 patches", "lime", "LIME", {"feature_mask": patch_mask(2),
                                                     "n_samples": 1000}, pairs_per_chunk=2),
        Method("KernelSHAP 2×2 patches", "kernel_shap", "KernelSHAP",
               {"feature_mask": patch_mask(2), "n_samples": 1000}, pairs_per_chunk=2),
    ]


def scores_all_classes(method: Method, variables: dict, x: np.ndarray, *,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores of every pixel for every logit: ``(N, 10, 28, 28, 1)``, and ``Δ = z(x) − z(0)``
    ``(N, 10)`` for the reference-based modes (else None). One ``target="all"`` call."""
    if method.mode is None:  # random control: i.i.d. normal scores, ranking at random
        rng = np.random.default_rng(seed)
        return rng.standard_normal((len(x), 10) + x.shape[1:]).astype(np.float32), None
    refs = np.zeros((1,) + x.shape[1:], np.float32)  # all-black reference
    kw = dict(target="all", mode=method.mode, batch_size=method.pairs_per_chunk,
              return_delta=True)
    if method.options:
        kw["mode_options"] = method.options
    s, delta = jaxlift.attribute(mc.logits, variables, jnp.asarray(x), refs, **kw)
    s = np.asarray(s)
    if method.times_input:
        s = s * x[:, None]
    return s, np.asarray(delta)


def erase_mask(s_diff: np.ndarray, max_erased: int = MAX_ERASED) -> np.ndarray:
    """Pixels to erase: the top ``max_erased`` by ``s_diff`` among those with ``s_diff > 0``.

    ``s_diff: (N, *F)`` → bool ``(N, *F)``. Ties go to the lower flat index."""
    flat = s_diff.reshape(len(s_diff), -1).astype(np.float64)
    order = np.argsort(-flat, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(flat.shape[1])[None], axis=1)
    return ((rank < max_erased) & (flat > 0)).reshape(s_diff.shape)


def log_odds(z: np.ndarray, c: int, t: int) -> np.ndarray:
    """``log(p_c / p_t) = z_c − z_t`` from logits ``(N, 10)``."""
    return z[:, c] - z[:, t]


def log_odds_change(variables: dict, x: np.ndarray, mask: np.ndarray, c: int, t: int,
                    ref: float = 0.0) -> np.ndarray:
    """``(z_c − z_t)(x) − (z_c − z_t)(x erased)`` per image; erased pixels are set to ``ref``."""
    erased = np.where(mask, np.float32(ref), x)
    before = log_odds(mc.predict_logits(variables, x), c, t)
    after = log_odds(mc.predict_logits(variables, erased), c, t)
    return before - after


def slug(name: str) -> str:
    """A file-name-safe key for a method name (``"DeepLIFT Rescale"`` → ``deeplift_rescale``)."""
    out = "".join(ch if ch.isascii() and ch.isalnum() else "_" for ch in name.lower())
    return "_".join(filter(None, out.split("_")))


def sem(v: np.ndarray) -> float:
    """Standard error of the mean."""
    return float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def select_images(x: np.ndarray, y: np.ndarray, classes, n: int) -> dict[int, np.ndarray]:
    """Indices of the first ``n`` test images of each true class."""
    return {c: np.flatnonzero(y == c)[:n] for c in classes}


def run(args) -> dict:
    """Compute everything; returns a dict of results (also used by the tests)."""
    x_test, y_test = mc.load_mnist(args.data, "test")
    variables = mc.load_model(args.model)
    classes = sorted({c for c, _ in PAIRS})
    idx = select_images(x_test, y_test, classes, args.n)
    ms = methods(args.occlusion_window)
    if args.methods:
        ms = [m for m in ms if m.name in args.methods or m.mode is None]
    changes = {m.name: {} for m in ms}      # method -> pair -> (N,) Δ log-odds
    small = {m.name: {b: [] for b in SMALL_BUDGETS} for m in ms}  # budget -> [(N,) per pair]
    n_erased = {m.name: {} for m in ms}     # method -> pair -> (N,) pixels erased
    diffs = {m.name: {} for m in ms}        # method -> pair -> (N, 28, 28, 1) S_c − S_t
    seconds, gaps, saved = {}, {}, {}
    for m in ms:
        t0 = time.perf_counter()
        per_class = {c: scores_all_classes(m, variables, x_test[idx[c]], seed=args.seed + c)
                     for c in classes}
        seconds[m.name] = time.perf_counter() - t0
        if m.mode in COMPLETE_MODES:
            gaps[m.name] = float(max(np.abs(s.reshape(s.shape[0], 10, -1).sum(-1) - d).max()
                                     for s, d in per_class.values()))
        for c, t in PAIRS:
            s = per_class[c][0]
            diffs[m.name][(c, t)] = s[:, c] - s[:, t]
            mask = erase_mask(diffs[m.name][(c, t)])
            n_erased[m.name][(c, t)] = mask.reshape(len(mask), -1).sum(1)
            changes[m.name][(c, t)] = log_odds_change(variables, x_test[idx[c]], mask, c, t)
            for b in SMALL_BUDGETS:
                small[m.name][b].append(log_odds_change(
                    variables, x_test[idx[c]], erase_mask(diffs[m.name][(c, t)], b), c, t))
        if args.save_scores:
            for c in classes:
                saved[f"{slug(m.name)}_{c}"] = per_class[c][0]
        print(f"{m.name:28s} {seconds[m.name]:7.1f} s  mean Δlog-odds "
              + "  ".join(f"{c}→{t}: {changes[m.name][(c, t)].mean():6.2f}" for c, t in PAIRS),
              flush=True)
    sur = global_surrogate(args, variables, x_test, y_test)
    return dict(methods=[m.name for m in ms], short={m.name: m.short for m in ms}, changes=changes,
                small=small, n_erased=n_erased, diffs=diffs,
                seconds=seconds, gaps=gaps, idx=idx, x=x_test, y=y_test, saved=saved,
                variables=variables, surrogate=sur)


def global_surrogate(args, variables: dict, x_test: np.ndarray, y_test: np.ndarray):
    """A depth-8 tree fitted to the network's classes on training digits; its fidelity on
    test digits (``jaxlift.surrogate``)."""
    n_fit = 300 if args.smoke else SURROGATE_FIT
    n_test = 200 if args.smoke else SURROGATE_TEST
    x_fit, _ = mc.load_mnist(args.data, "train", limit=n_fit)
    t0 = time.perf_counter()
    sur = jaxlift.surrogate(mc.logits, variables, x_fit, x_test[:n_test],
                            y_test=y_test[:n_test], kind="tree", max_depth=SURROGATE_DEPTH)
    print(f"global surrogate: depth-{SURROGATE_DEPTH} tree on {n_fit} training digits, "
          f"fidelity {sur.fidelity:.3f} on {n_test} test digits (network accuracy "
          f"{sur.network_accuracy:.3f}, tree accuracy {sur.surrogate_accuracy:.3f}), "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    return sur


# --------------------------------------------------------------------------- outputs

def table(res: dict) -> str:
    """Markdown table: mean ± sem of Δ log-odds per method and pair, and over all pairs."""
    head = "| method | " + " | ".join(f"{c}→{t}" for c, t in PAIRS) + \
        " | all pairs | pixels erased (mean) | time (s) |"
    rows = [head, "|" + "---|" * (len(PAIRS) + 4)]
    for name in res["methods"]:
        ch = res["changes"][name]
        cells = [f"{ch[p].mean():.2f} ± {sem(ch[p]):.2f}" for p in PAIRS]
        allv = np.concatenate([ch[p] for p in PAIRS])
        erased = np.concatenate([res["n_erased"][name][p] for p in PAIRS]).mean()
        rows.append(f"| {name} | " + " | ".join(cells) +
                    f" | **{allv.mean():.2f} ± {sem(allv):.2f}** | {erased:.0f} | "
                    f"{res['seconds'][name]:.1f} |")
    return "\n".join(rows)


def budget_table(res: dict) -> str:
    """Markdown table: mean ± sem over all pairs when at most 20, 50 or 157 pixels are erased."""
    budgets = SMALL_BUDGETS + (MAX_ERASED,)
    rows = ["| method | " + " | ".join(f"≤ {b} pixels" for b in budgets) + " |",
            "|---|" + "---|" * len(budgets)]
    for name in res["methods"]:
        vals = [np.concatenate(res["small"][name][b]) for b in SMALL_BUDGETS]
        vals.append(np.concatenate([res["changes"][name][p] for p in PAIRS]))
        rows.append(f"| {name} | " + " | ".join(f"{v.mean():.2f} ± {sem(v):.2f}" for v in vals)
                    + " |")
    return "\n".join(rows)


def ranking(res: dict) -> list[tuple[str, float]]:
    """Methods by their mean Δ log-odds over all pairs, best first."""
    means = {n: float(np.concatenate([res["changes"][n][p] for p in PAIRS]).mean())
             for n in res["methods"]}
    return sorted(means.items(), key=lambda kv: -kv[1])


def all_pairs(res: dict, name: str) -> np.ndarray:
    """Δ log-odds of ``name`` over every pair, concatenated (same image order per method)."""
    return np.concatenate([res["changes"][name][p] for p in PAIRS])


def paired(res: dict, a: str, b: str) -> str:
    """``mean ± sem`` of the per-image difference a − b over all pairs (same images)."""
    d = all_pairs(res, a) - all_pairs(res, b)
    return f"{d.mean():+.2f} ± {sem(d):.2f}"


def comparison(res: dict) -> str:
    """Paragraphs comparing this run's ordering with the paper's, claim by claim."""
    order = ranking(res)
    mean = dict(order)
    names = set(mean)
    out = ["Ordering here (mean Δ log-odds over all pairs, best first): "
           + " > ".join(f"{n} ({v:.2f})" for n, v in order) + "."]
    rc, rs, gxi, gr = ("DeepLIFT RevealCancel", "DeepLIFT Rescale", "gradient × input",
                       "gradient")
    ig5, ig10, gbp = "integrated gradients-5", "integrated gradients-10", "guided backprop"
    if {rc, rs, gxi, gr, ig5, ig10, gbp} <= names:
        others = [n for n, _ in order if n not in (rc,) and not n.startswith("random")]
        out.append(
            "The paper (Fig. 5): RevealCancel best, then Rescale, then integrated gradients "
            "(5 and 10 steps) ≈ gradient×input, guided backprop and the plain gradient well "
            "behind. Claim by claim, with paired differences (mean ± sem of the per-image "
            "difference over the same images):")
        out.append(
            f"- RevealCancel best: **{'yes' if order[0][0] == rc else 'no'}** — ahead of "
            f"Rescale by {paired(res, rc, rs)}, of IG-10 by {paired(res, rc, ig10)}, of the "
            f"next best other method ({others[0]}) by {paired(res, rc, others[0])}.")
        out.append(
            f"- Rescale second: **{'yes' if order[1][0] == rs else 'no'}** — Rescale − IG-10 "
            f"{paired(res, rs, ig10)}, Rescale − gradient×input {paired(res, rs, gxi)}: with "
            "a zero reference on a ReLU network, Rescale, gradient×input and IG land close "
            "together here.")
        out.append(
            f"- IG-5 ≈ IG-10 ≈ gradient×input: IG-5 − IG-10 {paired(res, ig5, ig10)}, "
            f"IG-10 − gradient×input {paired(res, ig10, gxi)}.")
        out.append(
            f"- Guided backprop well behind: **{'yes' if mean[gbp] < mean[gxi] - 1 else 'no'}**"
            f" — guided backprop − gradient×input {paired(res, gbp, gxi)}.")
        behind = mean[gr] < mean[gxi] - 1
        erased = {n: float(np.concatenate([res["n_erased"][n][p] for p in PAIRS]).mean())
                  for n in (gr, gxi)}
        small = {n: float(np.concatenate(res["small"][n][SMALL_BUDGETS[0]]).mean())
                 for n in (gr, gxi, rc)}
        out.append(
            f"- Plain gradient well behind: **{'yes' if behind else 'no'}** — gradient − "
            f"gradient×input {paired(res, gr, gxi)} at ≤ {MAX_ERASED} pixels. The gradient "
            f"is also positive on black pixels, so it passes the S_c − S_t > 0 filter on "
            f"more pixels and erases {erased[gr]:.0f} on average against {erased[gxi]:.0f} "
            f"for gradient×input (erasing a black pixel changes nothing, erasing ink almost "
            f"always lowers z_c − z_t). With a smaller budget (≤ {SMALL_BUDGETS[0]} pixels, "
            f"table below) the gradient gets {small[gr]:.2f} against {small[gxi]:.2f} for "
            f"gradient×input and {small[rc]:.2f} for RevealCancel.")
    return "\n".join(out)


def box_plot(res: dict, path: Path) -> Path:
    """One panel per pair, one box per method."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    names = res["methods"]
    fig = Figure(figsize=(4.2 * len(PAIRS), 5.2), dpi=100)
    axes = fig.subplots(1, len(PAIRS), sharey=True)
    for ax, p in zip(axes, PAIRS):
        ax.boxplot([res["changes"][n][p] for n in names], showfliers=False)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=75, fontsize=7)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(f"{p[0]} → {p[1]}  (N = {len(res['changes'][names[0]][p])})")
    axes[0].set_ylabel(f"change in log-odds (z_c − z_t), ≤ {MAX_ERASED} pixels erased")
    fig.suptitle("MNIST: erase the pixels with the largest S_c − S_t > 0 (higher is better)")
    fig.tight_layout()
    return viz.save_png(fig, path)


def heatmaps(res: dict, path: Path) -> Path:
    """``S_c − S_t`` of every method for the first image of each pair, each cell scaled to
    max |value| = 1 (only the ranking matters for the benchmark; occlusion's scale would
    otherwise wash out the rest)."""
    names = [n for n in res["methods"] if not n.startswith("random")]
    imgs = np.stack([res["x"][res["idx"][c][0]] for c, _ in PAIRS])

    def unit(a):
        return a / max(float(np.abs(a).max()), 1e-12)

    by_method = {res["short"][n]: np.stack([unit(res["diffs"][n][p][0]) for p in PAIRS])
                 for n in names}
    fig = viz.method_grid(imgs, by_method, row_labels=[f"S_{c} − S_{t}" for c, t in PAIRS],
                          vmax=1.0, title="MNIST: S_c − S_t (original minus target class), "
                          "each map scaled to max |·| = 1; red = erased first", cell_size=1.6)
    return viz.save_png(fig, path)


def surrogate_line(sur) -> str:
    return (f"`jaxlift.surrogate`: a depth-{SURROGATE_DEPTH} decision tree fitted to the "
            f"network's predicted classes on {sur.n_fit} training digits agrees with the network "
            f"on **{sur.fidelity:.1%}** of {sur.n_test} test digits (fidelity); accuracy on "
            f"their true labels: network {sur.network_accuracy:.1%}, tree "
            f"{sur.surrogate_accuracy:.1%}.")


def report(res: dict, args, total_s: float) -> str:
    """``mnist_benchmark.md``."""
    n = {p: len(res["changes"][res["methods"][0]][p]) for p in PAIRS}
    gaps = "; ".join(f"{k}: {v:.2g}" for k, v in res["gaps"].items())
    cmd = "python -m experiments.mnist_benchmark" + (" --smoke" if args.smoke else
                                                     f" --n {args.n}")
    return f"""# MNIST benchmark: erasing pixels to turn one digit into another (DeepLIFT paper §4.1, Fig. 5)

Made by `{cmd}` in {total_s:.0f} s on {platform.machine()} CPU
({jax.device_count()} JAX device(s), a 2-core machine shared with other jobs); model
`experiments/results/mnist_cnn.h5` (`experiments/mnist_train.md`); inputs `x / 255`, reference
all black (0).

For each image of original class c, every method scores the pixels for logit c (S_c) and
logit t (S_t) — one `jaxlift.attribute(..., target="all")` call gives all ten rows. Pixels
with S_c − S_t > 0 are ranked by it and the top ones, at most {MAX_ERASED} (20%), are set to
black. Δ log-odds = (z_c − z_t)(x) − (z_c − z_t)(erased x), z the pre-softmax logits (for a
softmax, log(p_c/p_t) = z_c − z_t); higher is better. Images: the first N test images of
true class c (N per pair: {", ".join(f"{c}→{t}: {n[(c, t)]}" for c, t in PAIRS)}).
Integrated gradients-n: midpoint rule over n intervals, as the paper. Time: attribution
(compile included) for the {sum(len(v) for v in res['idx'].values())} images of classes
{", ".join(str(c) for c in res['idx'])}, all ten logits.

## Mean ± sem of Δ log-odds

{table(res)}

Summation-to-delta, max |Σ_i S_i − (z(x) − z(0))| over images and logits: {gaps}
(DeepLIFT is exact up to float32 rounding; integrated gradients approaches 0 as steps grow.
KernelSHAP's patch values sum to Δ exactly, but each pixel carries its patch's value, so it is
not in this pixel-sum check).

## Global surrogate

{surrogate_line(res["surrogate"])}

## Compared with the paper

{comparison(res)}

## The same protocol with fewer pixels erased (mean ± sem over all pairs)

Methods that mark more pixels with S_c − S_t > 0 may erase more of them; capping the number
erased at a small budget compares the top of each ranking only.

{budget_table(res)}

Figures: `mnist_benchmark_box.png` (box plots of Δ log-odds per pair), `mnist_heatmaps.png`
(S_c − S_t of each method on the first image of each pair).
"""


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = mc.parser(__doc__)
    ap.add_argument("--n", type=int, default=200,
                    help="test images per original class (8, 9, 4); default 200")
    ap.add_argument("--occlusion-window", type=int, default=2, help="occlusion box side")
    ap.add_argument("--methods", nargs="*", help="only these methods (by table name)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random control")
    ap.add_argument("--save-scores", action="store_true",
                    help="also write mnist_benchmark_scores.npz (inputs and scores)")
    ap.add_argument("--smoke", action="store_true", help="tiny run: 6 images per class")
    args = ap.parse_args(argv)
    if args.smoke:
        args.n = 6
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    t0 = time.perf_counter()
    res = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    box_plot(res, args.out / "mnist_benchmark_box.png")
    heatmaps(res, args.out / "mnist_heatmaps.png")
    if args.save_scores:
        np.savez_compressed(args.out / "mnist_benchmark_scores.npz",
                            **{f"x_{c}": res["x"][i] for c, i in res["idx"].items()},
                            **{f"scores_{k}": v for k, v in res["saved"].items()},
                            **{f"change_{slug(n)}_{c}_{t}": res["changes"][n][(c, t)]
                               for n in res["methods"] for c, t in PAIRS})
    total = time.perf_counter() - t0
    md = mc.write_text(args.out / "mnist_benchmark.md", report(res, args, total))
    print(f"wrote {md} ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
