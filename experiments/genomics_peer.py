"""The peer side by side: the genomics study's model in PyTorch, explained by tangermeme.

Issue 18, part 4. ``experiments/genomics.py`` trains the BPNet-style model and saves its
weights (``genomics_model.npz``); here the same weights go into an exact PyTorch port
(``TorchBPNet``: ``nn.Conv1d`` with ``padding="same"`` and the same dilations, one ``nn.ReLU``
module per use so that tangermeme's hooks see every nonlinearity), which takes the input's
profile weights as a second argument — tangermeme passes ``args`` unchanged to the reference
rows, so the weights are the input's on both sides, the target jaxlift explains with
``profile_explained``. Both explain the same held-out sequences against the *same*
dinucleotide shuffles (jaxlift's, passed to tangermeme as a ``(N, K, 4, L)`` tensor) with
DeepLIFT's Rescale rule (tangermeme's ``deep_lift_shap``; jaxlift ``mode="rescale"``).

Measures: the largest difference of the hypothetical contributions and of the per-position
scores (projected on the observed letters), relative to the largest score; throughput in
(sequence, reference) pairs per second on this machine (each timed after a warm-up call,
tangermeme at its best of a few batch sizes); jaxlift's per-pair completeness gap
``|Σ C − Δt|`` beside tangermeme's convergence delta (the same quantity computed from its
multipliers, ``raw_outputs=True``, with the torch model's outputs).

    python -m experiments.genomics_peer [--n 32] [--out experiments/results]

Needs ``pip install tangermeme`` (the ``genomics`` extra); refuses with that message otherwise.
"""
from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def study_module():
    """``experiments/genomics.py`` as a module (imported when first asked for: it imports JAX)."""
    return importlib.import_module("experiments.genomics")


def torch_model(params: dict):
    """The exact PyTorch port of ``genomics.bpnet_apply``'s profile path with the profile target
    ``Σ w (l − mean l)``: ``forward(X (N, 4, L), w (N, L)) → (N, 1)``."""
    import torch
    from torch import nn

    def conv(p, dilation=1):
        k = np.asarray(p["k"])                                     # (W, Cin, Cout)
        c = nn.Conv1d(k.shape[1], k.shape[2], k.shape[0], dilation=dilation, padding="same")
        with torch.no_grad():
            c.weight.copy_(torch.from_numpy(np.ascontiguousarray(k.transpose(2, 1, 0))))
            c.bias.copy_(torch.from_numpy(np.asarray(p["b"])))
        return c

    class TorchBPNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv0, self.relu0 = conv(params["conv0"]), nn.ReLU()
            self.dil = nn.ModuleList([conv(p, 2 ** (i + 1)) for i, p in enumerate(params["dil"])])
            self.relus = nn.ModuleList([nn.ReLU() for _ in params["dil"]])
            self.prof = conv(params["prof"])

        def forward(self, X, w):
            h = self.relu0(self.conv0(X))
            for c, r in zip(self.dil, self.relus):
                h = h + r(c(h))
            logits = self.prof(h)[:, 0]
            return (w * (logits - logits.mean(-1, keepdim=True))).sum(-1, keepdim=True)

    return TorchBPNet().eval()


def load_params(path: Path) -> dict:
    """The weights saved by ``genomics.save_params``."""
    with np.load(path) as f:
        flat = dict(f)
    n = len({k.split("/")[1] for k in flat if k.startswith("dil/")})
    get = lambda pre: {"k": flat[f"{pre}/k"], "b": flat[f"{pre}/b"]}   # noqa: E731
    return {"conv0": get("conv0"), "dil": [get(f"dil/{i}") for i in range(n)],
            "prof": get("prof"),
            **{h: {"w": flat[f"{h}/w"], "b": flat[f"{h}/b"]} for h in ("cnt", "clf1", "clf2")}}


def run(n: int, out: Path, log=print) -> dict:
    try:
        import torch
        from tangermeme.deep_lift_shap import deep_lift_shap
    except ImportError as e:
        raise SystemExit(f"genomics_peer needs tangermeme and torch (pip install tangermeme): "
                         f"{e}") from None
    import jax
    import jaxlift
    g = study_module()
    torch.set_num_threads(2)
    cfg = g.Config()
    params = load_params(out / "genomics_model.npz")
    rng = np.random.default_rng(cfg.seed)
    g.make_data(cfg.n_train, cfg, rng)                     # same stream as the study
    test = g.make_data(cfg.n_test, cfg, rng)
    keep = np.flatnonzero(test["present"].any(1))[:n]
    x = test["x"][keep]
    refs = g.shuffles(x, cfg.n_shuffles, seed=cfg.seed + 1000)
    xw, rw = g.explain_inputs(params, x, refs)
    pairs = len(x) * cfg.n_shuffles
    model = torch_model(params)
    X = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1)))
    R = torch.from_numpy(np.ascontiguousarray(refs.transpose(0, 1, 3, 2)))
    W = torch.from_numpy(np.array(xw["w"]))

    # the port computes what the JAX model computes
    with torch.no_grad():
        t_torch = model(X, W)[:, 0].numpy()
    t_jax = np.asarray(g.profile_explained(params, xw))
    port_err = float(np.abs(t_torch - t_jax).max())
    log(f"port: max |t_torch − t_jax| = {port_err:.2e} (|t| up to {np.abs(t_jax).max():.2f})")

    def jl(hyp=False):
        if hyp:
            return jaxlift.hypothetical_contributions(g.profile_explained, params, xw, rw,
                                                      mode="rescale", sequence_key="seq",
                                                      progress=False)
        return jaxlift.attribute(g.profile_explained, params, xw, rw, mode="rescale",
                                 progress=False)["seq"]

    def tm(batch, hyp=False, raw=False):
        return deep_lift_shap(model, X, args=(W,), references=R, batch_size=batch,
                              hypothetical=hyp, raw_outputs=raw, device="cpu",
                              warning_threshold=1e9)

    jax.block_until_ready(jl())                                      # warm-up (compile)
    t0 = time.perf_counter()
    c_jl = np.asarray(jax.block_until_ready(jl()))
    jl_s = time.perf_counter() - t0
    tm_times = {}
    for batch in (32, 128, 400):
        tm(batch)                                                    # warm-up
        t0 = time.perf_counter()
        c_tm = tm(batch).numpy().transpose(0, 2, 1)
        tm_times[batch] = time.perf_counter() - t0
    best = min(tm_times, key=tm_times.get)
    log(f"jaxlift rescale {pairs / jl_s:.0f} pairs/s; tangermeme "
        + ", ".join(f"batch {b}: {pairs / s:.0f}" for b, s in tm_times.items()) + " pairs/s")

    # scores: per position (observed letter) and hypothetical
    pos_jl, pos_tm = c_jl.sum(-1), c_tm.sum(-1)
    scale = float(np.abs(pos_jl).max())
    pos_err = float(np.abs(pos_jl - pos_tm).max())
    h_jl = np.asarray(jl(hyp=True))
    h_tm = tm(best, hyp=True).numpy().transpose(0, 2, 1)
    hyp_err = float(np.abs(h_jl - h_tm).max())
    hyp_scale = float(np.abs(h_jl).max())

    # completeness per pair: jaxlift's gap, tangermeme's convergence delta (from its
    # multipliers and the torch model's outputs, in float64)
    gaps_jl = g.pair_gaps(params, xw, rw, "rescale")
    m_tm = tm(best, raw=True).numpy().astype(np.float64)             # (N, K, 4, L)
    with torch.no_grad():
        t_ref = model(R.reshape(-1, 4, x.shape[1]),
                      W.repeat_interleave(cfg.n_shuffles, 0))[:, 0].numpy()
    d_out = t_torch[:, None].astype(np.float64) - t_ref.reshape(len(x), -1)
    d_in = ((X.numpy()[:, None] - R.numpy()).astype(np.float64) * m_tm).sum((2, 3))
    deltas_tm = np.abs(d_out - d_in)
    res = {"n": len(x), "pairs": pairs, "port_err": port_err, "jaxlift_pairs_s": pairs / jl_s,
           "tangermeme_pairs_s": {b: pairs / s for b, s in tm_times.items()},
           "speedup": tm_times[best] / jl_s, "pos_err": pos_err, "pos_scale": scale,
           "hyp_err": hyp_err, "hyp_scale": hyp_scale, "gap_jaxlift_max": float(gaps_jl.max()),
           "gap_jaxlift_median": float(np.median(gaps_jl)),
           "delta_tm_max": float(deltas_tm.max()), "delta_tm_median": float(np.median(deltas_tm)),
           "abs_dt_median": float(np.median(np.abs(d_out))), "tm_batch": best}
    log(res)
    write_report(res, out)
    return res


def write_report(r: dict, out: Path) -> None:
    import platform, os  # noqa: E401
    import tangermeme
    import torch
    tm = ", ".join(f"{v:.0f} (batch {b})" for b, v in r["tangermeme_pairs_s"].items())
    lines = [
        "# Genomics peer: jaxlift vs tangermeme's deep_lift_shap on the same weights",
        "",
        f"`python -m experiments.genomics_peer` ({platform.machine()}, {os.cpu_count()} CPU "
        f"cores, torch {torch.__version__} with 2 threads, tangermeme "
        f"{getattr(tangermeme, '__version__', '?')}): the model of `genomics.md` ported to "
        f"PyTorch, {r['n']} held-out sequences × 20 dinucleotide shuffles = {r['pairs']} "
        "pairs, the same references for both, DeepLIFT Rescale on the profile target "
        "(weights fixed at the input).",
        "",
        "| | value |",
        "|---|---|",
        f"| port: max \\|t_torch − t_jax\\| | {r['port_err']:.1e} |",
        f"| per-position scores: max \\|jaxlift − tangermeme\\| (max \\|score\\|) | "
        f"{r['pos_err']:.1e} ({r['pos_scale']:.2e}) |",
        f"| hypothetical contributions: max \\|jaxlift − tangermeme\\| (max \\|score\\|) | "
        f"{r['hyp_err']:.1e} ({r['hyp_scale']:.2e}) |",
        f"| jaxlift rescale, pairs / s | **{r['jaxlift_pairs_s']:.0f}** |",
        f"| tangermeme deep_lift_shap, pairs / s | {tm} |",
        f"| speed-up over tangermeme's best | **{r['speedup']:.1f}×** |",
        f"| jaxlift per-pair gap \\|Σ C − Δt\\|: max, median | {r['gap_jaxlift_max']:.1e}, "
        f"{r['gap_jaxlift_median']:.1e} |",
        f"| tangermeme convergence delta: max, median | {r['delta_tm_max']:.1e}, "
        f"{r['delta_tm_median']:.1e} |",
        f"| median \\|Δt\\| | {r['abs_dt_median']:.2f} |",
        "",
    ]
    (out / "genomics_peer.md").write_text("\n".join(lines))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=32, help="sequences to explain")
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "results")
    args = ap.parse_args(argv)
    return run(args.n, args.out)


if __name__ == "__main__":
    main()
