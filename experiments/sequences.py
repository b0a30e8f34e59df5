"""Token sequences with a planted, order-dependent rule: which attribution method finds it?

Issue 15's study. A synthetic task whose truth is known, three small Flax models trained with
optax, and a comparison of attribution methods at the embedding layer.

**Data.** Sequences of ``length`` token ids from a vocabulary of ``vocab`` tokens: id 0 is the
pad (sequences have random lengths in ``[min_len, length]`` and are padded at the end), ids 1
and 2 are the two signal tokens A and B, every other id is a distractor drawn uniformly. Each
sequence holds A and/or B at random positions (never anywhere else):

* class 1: A appears *before* B;
* class 0, in equal thirds: only A, only B, or B before A (the reverse order).

So neither token alone decides the class: the model has to read the order. The planted
positions are recorded: they are the truth (k = 2 tokens for the positive class).

**Models** (Flax linen; the output is one logit per sequence, > 0 meaning class 1):
an LSTM (``nn.RNN(nn.LSTMCell)``), a GRU (``nn.RNN(nn.GRUCell)``) and a one-block transformer
(learned positional embedding, pre-LayerNorm ``nn.MultiHeadDotProductAttention`` with a causal
mask, an MLP, mean pooling over the positions, a dense head). Each embeds the ids with an
``nn.Embed`` whose pad row is held at zero (as PyTorch's ``padding_idx``) and marks the
embedding output with ``jaxlift.layer(h, "emb")``. Trained with optax Adam on binary
cross-entropy, fixed seeds.

**Attribution.** The target is the logit; the reference is the all-pad sequence (an all-zero
embedding); integer ids are not differentiable, so every score lives at the embedding output
(``(T, E)`` per sequence) and a token's score is the sum over its embedding axis.
DeepLIFT ``rescale`` and ``reveal_cancel`` (``layer="emb"``), each with both gating rules of
docs/design.md §11.3: ``gating="shapley"`` (exact) and ``gating="gate_as_weight"`` (Arras et al. 2017,
the gate's credit goes to the signal; leaves a completeness gap). Baselines: gradient×input,
integrated gradients and occlusion — these modes do not take ``layer=``, so they run on the
part of the model above the embedding (``from_embedding``), with the embedding output as
the input and the pad embedding (zero) as the reference; occlusion's window is one whole
token (1 × E), i.e. "replace one token by the pad".

**Measures**, on held-out sequences of the positive class: top-k accuracy (k = 2: the two
highest-scoring tokens are exactly the planted A and B), both by the signed score toward the
predicted class and by |score|; the completeness gap ``|Σ scores − Δlogit| / |Δlogit|`` of
every (sequence, reference) pair (max and median); and the seconds each method took on the
held-out set (after a warm-up call with the same shapes, so compile time is excluded).

Writes ``sequences.md`` (table) and ``sequences.png`` (token-score heat strips) to ``--out``
(default ``experiments/results``)::

    python -m experiments.sequences            # the full study, ≈ 3 CPU minutes
    python -m experiments.sequences --quick    # small settings (the tests), ≈ 2.5 CPU minutes

Most of the time is compiling (one program per model × method, 21 in all, each traced and
compiled once; the timed calls take ≤ 1.3 s), so ``--quick`` saves little: it trains on
fewer sequences for fewer epochs and explains 32 sequences instead of 200.
"""
from __future__ import annotations

import argparse
import inspect
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from math import comb
from pathlib import Path
from typing import Callable

import numpy as np

# Many small programs are compiled: skip LLVM's expensive passes (as the tests do).
os.environ.setdefault("XLA_FLAGS", "--xla_llvm_disable_expensive_passes=true")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import jaxlift  # noqa: E402
from jaxlift import viz  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"
PAD, TOKEN_A, TOKEN_B = 0, 1, 2
MODEL_NAMES = ("LSTM", "GRU", "transformer")
DEEPLIFT_MODES = ("rescale", "reveal_cancel")
GATINGS = ("shapley", "gate_as_weight")
FIGURE_METHODS = ("rescale", "reveal_cancel", "grad×input")
EPS32 = float(np.finfo(np.float32).eps)


# ------------------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class Config:
    """Everything that fixes a run (recorded in the results)."""

    vocab: int = 20            # token ids 0..vocab-1: 0 pad, 1 = A, 2 = B, the rest distractors
    length: int = 24           # T, padded length
    min_len: int = 12          # shortest unpadded sequence
    n_train: int = 4000
    n_test: int = 1000         # accuracy is measured here; the explained set is drawn from it
    n_explain: int = 200       # held-out positive sequences explained
    emb: int = 16              # embedding width E
    hidden: int = 32           # RNN state / transformer MLP width
    heads: int = 2
    epochs: int = 5
    batch: int = 64
    lr: float = 3e-3
    ig_steps: int = 32         # integrated gradients, Gauss-Legendre nodes
    n_figure: int = 3          # sequences in the figure
    seed: int = 0


QUICK = Config(n_train=2000, n_test=500, n_explain=32, epochs=5)


# ------------------------------------------------------------------------------------- data
def make_data(n: int, cfg: Config, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n`` sequences with their truth.

    Returns ``ids`` (n, T) int32, ``label`` (n,) int32 (1 iff A comes before B), ``length``
    (n,), ``kind`` (n,): 0 A before B, 1 only A, 2 only B, 3 B before A; ``pos_a``, ``pos_b``
    (n,): where A and B were planted (-1 where absent). Half the sequences are of class 1.
    """
    kind = np.where(rng.random(n) < 0.5, 0, rng.integers(1, 4, n))
    length = rng.integers(cfg.min_len, cfg.length + 1, n)
    ids = rng.integers(3, cfg.vocab, (n, cfg.length)).astype(np.int32)
    ids[np.arange(cfg.length)[None, :] >= length[:, None]] = PAD
    pos_a = np.full(n, -1)
    pos_b = np.full(n, -1)
    for i in range(n):
        first, second = np.sort(rng.choice(length[i], 2, replace=False))
        if kind[i] == 0:
            pos_a[i], pos_b[i] = first, second
        elif kind[i] == 1:
            pos_a[i] = first
        elif kind[i] == 2:
            pos_b[i] = first
        else:
            pos_b[i], pos_a[i] = first, second
    rows = np.arange(n)
    ids[rows[pos_a >= 0], pos_a[pos_a >= 0]] = TOKEN_A
    ids[rows[pos_b >= 0], pos_b[pos_b >= 0]] = TOKEN_B
    return dict(ids=ids, label=(kind == 0).astype(np.int32), length=length, kind=kind,
                pos_a=pos_a, pos_b=pos_b)


def order_rule(ids: np.ndarray) -> np.ndarray:
    """The label computed from the tokens alone: 1 iff some A comes before some B."""
    out = np.zeros(len(ids), np.int32)
    for i, row in enumerate(ids):
        a, b = np.flatnonzero(row == TOKEN_A), np.flatnonzero(row == TOKEN_B)
        out[i] = int(len(a) > 0 and len(b) > 0 and a.min() < b.max())
    return out


# ----------------------------------------------------------------------------------- models
class _Embedded(nn.Module):
    """Shared embedding: ``nn.Embed`` with the pad row held at zero, marked ``"emb"``."""

    def embed_ids(self, ids: jax.Array) -> jax.Array:
        h = self.embed(ids) * (ids != PAD)[..., None].astype(jnp.float32)
        return jaxlift.layer(h, "emb")

    def __call__(self, ids: jax.Array) -> jax.Array:
        """Logits ``(B,)`` of a batch of ids ``(B, T)``."""
        return self.from_embedding(self.embed_ids(ids))


class RNNClassifier(_Embedded):
    """Embedding → ``nn.RNN`` of an LSTM or GRU cell → last output → dense logit."""

    vocab: int
    emb: int
    hidden: int
    cell: str = "lstm"

    def setup(self):
        self.embed = nn.Embed(self.vocab, self.emb)
        cell = nn.LSTMCell(self.hidden) if self.cell == "lstm" else nn.GRUCell(self.hidden)
        self.rnn = nn.RNN(cell)
        self.head = nn.Dense(1)

    def from_embedding(self, h: jax.Array) -> jax.Array:
        """Logits ``(B,)`` from the embedding output ``(B, T, E)``."""
        return self.head(self.rnn(h)[:, -1])[:, 0]


class TransformerClassifier(_Embedded):
    """Embedding + learned positions → one pre-LN block (causal self-attention, MLP) → mean
    over positions → dense logit."""

    vocab: int
    emb: int
    hidden: int
    length: int
    heads: int = 2

    def setup(self):
        self.embed = nn.Embed(self.vocab, self.emb)
        self.pos = self.param("pos", nn.initializers.normal(0.1), (self.length, self.emb))
        self.ln1, self.ln2 = nn.LayerNorm(), nn.LayerNorm()
        self.attn = nn.MultiHeadDotProductAttention(num_heads=self.heads, deterministic=True)
        self.mlp_in, self.mlp_out = nn.Dense(self.hidden), nn.Dense(self.emb)
        self.head = nn.Dense(1)

    def from_embedding(self, h: jax.Array) -> jax.Array:
        """Logits ``(B,)`` from the embedding output ``(B, T, E)``."""
        x = h + self.pos
        mask = nn.make_causal_mask(jnp.ones(x.shape[:2]))
        x = x + self.attn(self.ln1(x), mask=mask)
        x = x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.ln2(x))))
        return self.head(x.mean(1))[:, 0]


def build_model(name: str, cfg: Config) -> nn.Module:
    """The model called ``name`` (one of :data:`MODEL_NAMES`) at ``cfg``'s sizes."""
    if name == "transformer":
        return TransformerClassifier(cfg.vocab, cfg.emb, cfg.hidden, cfg.length, cfg.heads)
    return RNNClassifier(cfg.vocab, cfg.emb, cfg.hidden, cell=name.lower())


# --------------------------------------------------------------------------------- training
def train(model: nn.Module, cfg: Config, data: dict, seed: int) -> tuple[dict, float]:
    """Adam on binary cross-entropy of the logit, minibatches of ``cfg.batch``; returns
    ``(variables, seconds)``."""
    t0 = time.perf_counter()
    ids, y = data["ids"], data["label"].astype(np.float32)
    params = model.init(jax.random.PRNGKey(seed), jnp.asarray(ids[:2]))["params"]
    opt = optax.adam(cfg.lr)
    state = opt.init(params)

    @jax.jit
    def step(params, state, xb, yb):
        loss = lambda p: optax.sigmoid_binary_cross_entropy(  # noqa: E731
            model.apply({"params": p}, xb), yb).mean()
        grads = jax.grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    rng = np.random.default_rng(seed)
    steps = len(ids) // cfg.batch
    for _ in range(cfg.epochs):
        order = rng.permutation(len(ids))[:steps * cfg.batch].reshape(steps, cfg.batch)
        for b in order:
            params, state = step(params, state, ids[b], y[b])
    return {"params": params}, time.perf_counter() - t0


def predict(fwd: Callable, variables: dict, ids: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Logits ``(N,)`` of the jitted ``fwd = jax.jit(model.apply)``, ``batch`` sequences at a
    time (one compiled shape)."""
    pad = (-len(ids)) % batch
    x = np.concatenate([ids, np.zeros((pad, ids.shape[1]), ids.dtype)])
    out = [np.asarray(fwd(variables, jnp.asarray(x[i:i + batch]))) for i in range(0, len(x), batch)]
    return np.concatenate(out)[:len(ids)]


# ------------------------------------------------------------------------------ attribution
def supports_gating() -> bool:
    """Whether this jaxlift's ``attribute`` takes ``gating=`` (docs/design.md §11.3)."""
    return "gating" in inspect.signature(jaxlift.attribute).parameters


def token_scores(scores: np.ndarray, mode: str) -> np.ndarray:
    """One score per token ``(N, T)`` from scores at the embedding ``(N, T, E)``: the sum over
    the embedding axis (``jaxlift.token_scores`` when this jaxlift has it). Occlusion gives
    every feature of a window the window's output drop (as Captum), so a one-token window's
    E features each hold that token's drop: its token score is their mean, not their sum."""
    if mode == "occlusion":
        return np.asarray(scores).mean(-1)
    if hasattr(jaxlift, "token_scores"):
        return np.asarray(jaxlift.token_scores(scores))
    return np.asarray(scores).sum(-1)


@dataclass(frozen=True)
class Method:
    """One attribution method: a DeepLIFT mode and gating, or a baseline mode."""

    name: str
    mode: str
    gating: str | None = None         # DeepLIFT only
    options: dict | None = None       # baselines' mode_options

    @property
    def deeplift(self) -> bool:
        return self.gating is not None


def methods(cfg: Config, emb: int) -> list[Method]:
    """The compared methods, in the table's order (gate-as-weight only where supported)."""
    out = []
    for mode in DEEPLIFT_MODES:
        for g in GATINGS:
            if g == "shapley" or supports_gating():
                out.append(Method(f"{mode}" + ("" if g == "shapley" else " (gate-as-weight)"),
                                  mode, gating=g))
    out += [Method("grad×input", "grad_times_input"),
            Method(f"IG-{cfg.ig_steps}", "integrated_gradients", options={"steps": cfg.ig_steps}),
            Method("occlusion", "occlusion", options={"window": (1, emb)})]
    return out


class Explainer:
    """Runs the methods on one trained model. DeepLIFT explains ``model.apply`` at the marked
    ``"emb"`` layer (references as pad ids); the baselines explain ``from_embedding`` with the
    embedding output as input and the zero (pad) embedding as reference."""

    def __init__(self, model: nn.Module, variables: dict):
        self.model, self.variables = model, variables
        self.full: Callable = model.apply
        self.upper: Callable = lambda v, h: model.apply(v, h, method="from_embedding")
        self.embed: Callable = jax.jit(lambda v, ids: model.apply(v, ids, method="embed_ids"))

    def __call__(self, m: Method, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (N, T, E), delta (N,))`` of method ``m`` on the sequences ``ids``."""
        ref_ids = np.full((1, ids.shape[1]), PAD, np.int32)
        if m.deeplift:
            kw = {"gating": m.gating} if supports_gating() else {}
            s, d = jaxlift.attribute(self.full, self.variables, jnp.asarray(ids),
                                     jnp.asarray(ref_ids), mode=m.mode, layer="emb",
                                     return_delta=True, progress=False, **kw)
        else:
            x = self.embed(self.variables, jnp.asarray(ids))
            r = self.embed(self.variables, jnp.asarray(ref_ids))
            s, d = jaxlift.attribute(self.upper, self.variables, x, r, mode=m.mode,
                                     mode_options=m.options, return_delta=True, progress=False)
        return np.asarray(s), np.asarray(d)

    def rounding_scale(self, ids: np.ndarray) -> np.ndarray:
        """``κ`` per sequence (README, "Exact or refused"): ``|t| + Σ|∂t/∂θ·θ| + Σ|∂t/∂h·h|``
        at the embedding ``h`` of the input plus the same at the reference's: how far
        rounding the forward pass of the logit can move it, in units of eps."""
        v = self.variables

        def t(p, h):
            return self.upper(p, h[None])[0]

        def kappa(h):
            gp, gh = jax.grad(t, argnums=(0, 1))(v, h)
            terms = jax.tree_util.tree_map(lambda g, a: jnp.abs(g * a).sum(), gp, v)
            return jnp.abs(t(v, h)) + sum(jax.tree_util.tree_leaves(terms)) + jnp.abs(gh * h).sum()

        h = self.embed(v, jnp.asarray(ids))
        k = jax.jit(jax.vmap(kappa))(jnp.concatenate([h, jnp.zeros_like(h[:1])]))
        return np.asarray(k[:-1] + k[-1], np.float64)


def timed(explain: Explainer, m: Method, ids: np.ndarray):
    """``(scores, delta, seconds, warm-up seconds)``: a warm-up call (it compiles), then the
    timed call."""
    t0 = time.perf_counter()
    explain(m, ids)
    t1 = time.perf_counter()
    s, d = explain(m, ids)
    return s, d, time.perf_counter() - t1, t1 - t0


# ---------------------------------------------------------------------------------- measures
def predicted_sign(logits: np.ndarray) -> np.ndarray:
    """+1 where the predicted class is 1, −1 where it is 0."""
    return np.where(logits > 0, 1.0, -1.0)


def top_k_hits(tok: np.ndarray, truth: np.ndarray, sign: np.ndarray | None) -> np.ndarray:
    """Per sequence: whether the ``k = truth.shape[1]`` top tokens are exactly the planted
    ones, ranked by ``sign · score`` (toward the predicted class) or by ``|score|`` when
    ``sign`` is None."""
    k = truth.shape[1]
    key = np.abs(tok) if sign is None else tok * sign[:, None]
    top = np.argsort(-key, axis=1, kind="stable")[:, :k]
    return np.array([set(t) == set(p) for t, p in zip(top, truth)])


def intruders(tok: np.ndarray, truth: np.ndarray, sign: np.ndarray) -> np.ndarray:
    """Where the non-planted tokens ranked in the signed top k sit: counts ``(before A,
    between A and B, after B)``, with ``truth[:, 0] < truth[:, 1]`` the positions of A, B."""
    k = truth.shape[1]
    top = np.argsort(-(tok * sign[:, None]), axis=1, kind="stable")[:, :k]
    counts = np.zeros(3, int)
    for t, (a, b) in zip(top, truth):
        for p in set(t) - {a, b}:
            counts[0 if p < a else (1 if p < b else 2)] += 1
    return counts


def planted_share(tok: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per sequence: the planted tokens' share of the total |score|, Σ_planted |s| / Σ |s|."""
    mag = np.abs(tok.astype(np.float64))
    return np.take_along_axis(mag, truth, 1).sum(1) / np.maximum(mag.sum(1), 1e-30)


def chance_top_k(length: np.ndarray, k: int) -> float:
    """Top-k accuracy of a random ranking of the non-pad tokens: mean of 1 / C(L, k)."""
    return float(np.mean([1.0 / comb(int(n), k) for n in length]))


def completeness_gaps(tok: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``|Σ token scores − Δ| / |Δ|`` per pair (sums in float64)."""
    total = tok.astype(np.float64).sum(1)
    return np.abs(total - delta) / np.abs(delta.astype(np.float64))


def rounding_error(scores: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``|Σ C − Δ| / max(Σ|C|, |Δ|)`` per pair: the completeness gap on the scale at which
    float32 rounds (the README's "exact or refused" bound)."""
    s = scores.reshape(len(scores), -1).astype(np.float64)
    return np.abs(s.sum(1) - delta) / np.maximum(np.abs(s).sum(1), np.abs(delta))


def bound_ratio(scores: np.ndarray, delta: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    """``|Σ C − Δ|`` over the README's float32 bound ``1e-5·max(Σ|C|, |Δ|) + 64·eps·κ``, per
    pair: at most 1 where jaxlift's exactness promise holds."""
    s = scores.reshape(len(scores), -1).astype(np.float64)
    bound = 1e-5 * np.maximum(np.abs(s).sum(1), np.abs(delta)) + 64 * EPS32 * kappa
    return np.abs(s.sum(1) - delta) / bound


# -------------------------------------------------------------------------------------- run
def run(cfg: Config, log: Callable = print) -> dict:
    """Train the three models, explain the held-out positives, measure. Returns a dict
    (config, data, per-model accuracies and per-method results with raw scores)."""
    t_start, cpu_start = time.perf_counter(), time.process_time()
    rng = np.random.default_rng(cfg.seed)
    train_data, test = make_data(cfg.n_train, cfg, rng), make_data(cfg.n_test, cfg, rng)
    pos = np.flatnonzero(test["label"] == 1)[:cfg.n_explain]
    ids = test["ids"][pos]
    truth = np.stack([test["pos_a"][pos], test["pos_b"][pos]], 1)
    res = dict(config=asdict(cfg), ids=ids, truth=truth, length=test["length"][pos],
               chance=chance_top_k(test["length"][pos], 2), gating=supports_gating(),
               models={})
    for mi, name in enumerate(MODEL_NAMES):
        model = build_model(name, cfg)
        variables, train_s = train(model, cfg, train_data, seed=cfg.seed + mi)
        fwd = jax.jit(model.apply)
        logits = predict(fwd, variables, test["ids"])
        acc = float(((logits > 0) == test["label"]).mean())
        train_acc = float(((predict(fwd, variables, train_data["ids"]) > 0)
                           == train_data["label"]).mean())
        log(f"{name}: train {train_acc:.3f} test {acc:.3f} ({train_s:.1f} s)")
        explain, sign = Explainer(model, variables), predicted_sign(logits[pos])
        kappa = explain.rounding_scale(ids)
        rows = {}
        for m in methods(cfg, cfg.emb):
            s, d, sec, warm = timed(explain, m, ids)
            tok = token_scores(s, m.mode)
            gaps = completeness_gaps(tok, d)
            rows[m.name] = dict(mode=m.mode, gating=m.gating, scores=s, delta=d, tokens=tok,
                                seconds=sec, warmup_seconds=warm, gap_max=float(gaps.max()),
                                gap_median=float(np.median(gaps)),
                                top_signed=float(top_k_hits(tok, truth, sign).mean()),
                                top_abs=float(top_k_hits(tok, truth, None).mean()),
                                share=float(planted_share(tok, truth).mean()),
                                bound_ratio=float(bound_ratio(s, d, kappa).max()),
                                intruders=intruders(tok, truth, sign))
            log(f"  {m.name:32s} top-2 {rows[m.name]['top_signed']:.3f} / "
                f"{rows[m.name]['top_abs']:.3f}  gap max {gaps.max():.1e}  {sec:.2f} s "
                f"(warm-up {warm:.1f} s)")
        res["models"][name] = dict(test_acc=acc, train_acc=train_acc, train_seconds=train_s,
                                   logits=logits[pos], kappa=kappa, methods=rows)
    res["seconds"] = time.perf_counter() - t_start
    res["cpu_seconds"] = time.process_time() - cpu_start
    return res


# ---------------------------------------------------------------------------------- outputs
def table(res: dict) -> str:
    """The markdown table: one row per model × method."""
    lines = ["| model | method | top-2 acc, signed | top-2 acc, \\|score\\| | "
             "planted share | gap max | gap median | seconds | warm-up s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, mres in res["models"].items():
        for mname, r in mres["methods"].items():
            lines.append(f"| {name} | {mname} | {r['top_signed']:.3f} | {r['top_abs']:.3f} | "
                         f"{r['share']:.2f} | {r['gap_max']:.1e} | {r['gap_median']:.1e} | {r['seconds']:.2f} | "
                         f"{r['warmup_seconds']:.1f} |")
    return "\n".join(lines)


def findings(res: dict) -> str:
    """Bullet points read off the results: the best method per model, what gate-as-weight
    changed, and the completeness of the exact modes."""
    out = []
    for name, m in res["models"].items():
        rows = m["methods"]
        best = max(rows.values(), key=lambda r: r["top_signed"])["top_signed"]
        winners = ", ".join(k for k, r in rows.items() if r["top_signed"] == best)
        line = f"* **{name}**: best signed top-2 {best:.3f} ({winners})"
        gaw = {k: r for k, r in rows.items() if r["gating"] == "gate_as_weight"}
        same = [k for k, r in gaw.items()
                if np.array_equal(r["scores"], rows[r["mode"]]["scores"])]
        if gaw and len(same) == len(gaw):
            line += ("; gate-as-weight gives the same scores as the Shapley rule (the model "
                     "has no `logistic` gate)")
        elif gaw:
            line += "; gate-as-weight vs Shapley, signed top-2 " + ", ".join(
                f"{r['mode']} {r['top_signed']:.3f} vs {rows[r['mode']]['top_signed']:.3f} "
                f"(median gap {r['gap_median']:.1e})" for r in gaw.values())
        n = rows["rescale"]["intruders"]
        if n.sum():
            line += (f"; the {n.sum()} non-planted tokens in Rescale's top 2 lie {n[0]} before "
                     f"A, {n[1]} between A and B, {n[2]} after B")
        out.append(line + ".")
    exact = [r for m in res["models"].values() for r in m["methods"].values()
             if r["gating"] == "shapley"]
    scaled = max(float(np.max(rounding_error(r["scores"], r["delta"]))) for r in exact)
    ratio = max(r["bound_ratio"] for r in exact)
    out.append(f"* Shapley-gating DeepLIFT sums to Δlogit on every pair to "
               f"{max(r['gap_max'] for r in exact):.1e} of |Δlogit|, {scaled:.1e} of "
               f"max(Σ|C|, |Δlogit|): at most {ratio:.2f} × the README's float32 bound "
               "(1e-5 · max(Σ|C|, |Δlogit|) + 64 eps κ, κ the rounding scale of the logit's "
               "forward pass, |t| + Σ|∂t/∂θ·θ| + Σ|∂t/∂h·h| at the input and the reference) — "
               + ("inside it on every pair." if ratio <= 1 else "**outside it**."))
    return "\n".join(out)


def report(res: dict, argv_text: str) -> str:
    """``sequences.md``."""
    c = res["config"]
    acc = "; ".join(f"{n} {100 * m['test_acc']:.1f}% (train {100 * m['train_acc']:.1f}%, "
                    f"{m['train_seconds']:.0f} s)" for n, m in res["models"].items())
    gating = ("both gating rules of docs/design.md §11.3 (`gating=\"shapley\"`, the default, and "
              "`gating=\"gate_as_weight\"`)" if res["gating"] else
              "the default gating only: this jaxlift's `attribute` has no `gating=` yet, so "
              "the gate-as-weight rows are missing")
    return f"""# Token sequences with a planted order rule: attribution methods compared

Made by `python -m experiments.sequences{argv_text}` in {res['seconds']:.0f} s
({res['cpu_seconds']:.0f} s of CPU time, most of it compiling) on {platform.machine()} CPU
({jax.device_count()} JAX device(s), a 2-core machine shared with other jobs), seed
{c['seed']}.

**Task.** {c['n_train']} training and {c['n_test']} test sequences of up to {c['length']}
tokens (lengths {c['min_len']}–{c['length']}, padded with id 0 at the end) over {c['vocab']}
token ids; class 1 iff token A (id {TOKEN_A}) appears before token B (id {TOKEN_B}); class 0,
in equal thirds: only A, only B, or B before A. Distractors: ids 3–{c['vocab'] - 1}, uniform.
The planted positions of A and B are the truth.

**Models** (Flax linen, optax Adam lr {c['lr']}, batch {c['batch']}, {c['epochs']} epochs,
embedding width {c['emb']}, hidden {c['hidden']}); test accuracy: {acc}.

**Attribution** of the logit of the {len(res['ids'])} first test sequences of class 1,
against the all-pad reference (a zero embedding: the pad row of each `nn.Embed` is held at
zero), at the embedding output (`jaxlift.layer(h, "emb")`); a token's score is the sum over
its {c['emb']} embedding values. DeepLIFT runs with `layer="emb"` and {gating}.
The baselines (`grad_times_input`, `integrated_gradients` with {c['ig_steps']} Gauss-Legendre
steps, `occlusion` with a one-token window (1 × {c['emb']}) set to the pad) do not take
`layer=` in jaxlift, so they run on the model above the embedding (`from_embedding`), with
the embedding output as the input and the zero pad embedding as the reference — what
`layer="emb"` would mean for them.

**Columns.** *top-2 acc*: the fraction of sequences whose two highest-scoring tokens are
exactly the planted A and B — *signed*: ranked by the score toward the predicted class
(score × sign of the logit); *|score|*: ranked by magnitude. A random ranking scores
{res['chance']:.4f}. *planted share*: the planted tokens' share of Σ|token score|
(mean over sequences). *gap*: |Σ token scores − Δlogit| / |Δlogit| over the pairs (float32
scores, summed in float64; occlusion's token score is the output drop when that token alone
is set to the pad, so its sum counts every interaction once per token involved). \
*seconds*: the attribution of all {len(res['ids'])} sequences, after a
warm-up call with the same shapes (compile excluded); *warm-up s*: that first call (tracing,
checks, compiling — on a shared machine, so only a rough guide).

{table(res)}

{findings(res)}

Figure `sequences.png`: token scores (sum over the embedding) of {c['n_figure']} sequences,
for each model under Rescale, RevealCancel and gradient×input; the planted A and B are
marked in red.
"""


def figure(res: dict, path: Path) -> Path:
    """Heat strips: rows model × method, columns sequences; token ids as tick labels."""
    from matplotlib.figure import Figure
    n = min(res["config"]["n_figure"], len(res["ids"]))
    rows = [(mn, me) for mn in res["models"] for me in FIGURE_METHODS]
    fig = Figure(figsize=(5.2 * n, 0.75 * len(rows) + 0.6), dpi=100, layout="constrained")
    axes = fig.subplots(len(rows), n, squeeze=False)
    for (mn, me), row in zip(rows, axes):
        tok = res["models"][mn]["methods"][me]["tokens"]
        for j, ax in enumerate(row):
            L = int(res["length"][j])
            v = viz.symmetric_limit(tok[j, :L])
            ax.imshow(tok[j, None, :L], cmap="RdBu_r", vmin=-v, vmax=v, aspect="auto")
            ax.set_yticks([])
            ax.set_xticks(range(L), [str(t) for t in res["ids"][j, :L]], fontsize=6)
            for p in res["truth"][j]:
                ax.get_xticklabels()[p].set_color("red")
                ax.get_xticklabels()[p].set_fontweight("bold")
            if j == 0:
                ax.set_ylabel(f"{mn}\n{me}", rotation=0, ha="right", va="center", fontsize=8)
            ax.text(1.005, 0.5, f"±{v:.2g}", transform=ax.transAxes, fontsize=6, va="center")
            if mn == MODEL_NAMES[0] and me == FIGURE_METHODS[0]:
                ax.set_title(f"sequence {j} (colour scale ± per strip, right)", fontsize=8)
    return viz.save_png(fig, path)


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file (no half-written results)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    ap.add_argument("--quick", action="store_true", help="small settings (the tests)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-explain", type=int, help="held-out positive sequences explained")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the study and write ``sequences.md`` and ``sequences.png``; returns :func:`run`'s
    dict."""
    args = parse(argv)
    cfg = replace(QUICK if args.quick else Config(), seed=args.seed)
    if args.n_explain:
        cfg = replace(cfg, n_explain=args.n_explain)
    res = run(cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    figure(res, args.out / "sequences.png")
    shown = " ".join(argv if argv is not None else sys.argv[1:])
    shown = " ".join(a for a in shown.split() if not a.startswith("--out") and a != str(args.out))
    md = write_text(args.out / "sequences.md", report(res, f" {shown}" if shown else ""))
    print(f"wrote {md} ({res['seconds']:.0f} s)")
    return res


if __name__ == "__main__":
    main()
