"""Hypothetical scores into TF-MoDISco: do the planted motifs come back?

Issue 18, part 3. Loads the model ``experiments/genomics.py`` trained
(``genomics_model.npz``), computes jaxlift's hypothetical contributions
(``jaxlift.hypothetical_contributions``, DeepLIFT ``rescale``, 20 dinucleotide shuffles per
sequence, the profile target with fixed weights) for ``--n`` held-out sequences, writes them in
the layout modisco-lite's ``modisco motifs -s ohe.npz -a shap.npz`` reads — ``(N, 4, L)``
one-hot and hypothetical scores, ``arr_0`` of an ``.npz`` — and runs modisco-lite's
``TFMoDISco`` on them (read back from those files, transposed to ``(N, L, 4)`` as its CLI does).

Each discovered pattern's PPM is matched against the planted PWMs (``genomics.PWMS``) by the
best Pearson correlation of the flattened matrices over every offset (overlap ≥ 6 bp) and
both strands; a planted motif counts as recovered when some positive pattern matches it with
r ≥ 0.8. Writes ``genomics_modisco.md`` and ``genomics_modisco.png`` (logomaker logos:
discovered CWMs beside the planted PWMs as information-content logos).

    python -m experiments.genomics_modisco [--n 400]

Needs ``pip install modisco-lite logomaker`` (the ``genomics`` extra).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def best_match(ppm: np.ndarray, pwm: np.ndarray, min_overlap: int = 6) -> tuple[float, int, bool]:
    """``(r, offset, reverse)``: the largest Pearson correlation between the overlapping columns
    of ``ppm`` ``(P, 4)`` and ``pwm`` (or its reverse complement) ``(M, 4)``, over offsets with
    at least ``min_overlap`` shared columns."""
    best = (-1.0, 0, False)
    for rev in (False, True):
        q = pwm[::-1, ::-1] if rev else pwm
        for off in range(-(len(q) - min_overlap), len(ppm) - min_overlap + 1):
            a0, b0 = max(0, off), max(0, -off)
            n = min(len(ppm) - a0, len(q) - b0)
            if n < min_overlap:
                continue
            a, b = ppm[a0:a0 + n].ravel(), q[b0:b0 + n].ravel()
            r = float(np.corrcoef(a, b)[0, 1])
            if r > best[0]:
                best = (r, off, rev)
    return best


def information_content(ppm: np.ndarray) -> np.ndarray:
    """``ppm`` scaled per position by its information content (bits): a classic motif logo."""
    p = np.clip(ppm, 1e-6, 1)
    ic = 2 + (p * np.log2(p)).sum(1, keepdims=True)
    return ppm * ic


def run(n: int, out: Path, log=print) -> dict:
    import importlib.util
    try:
        from modiscolite.tfmodisco import TFMoDISco
        if importlib.util.find_spec("logomaker") is None:
            raise ImportError("No module named 'logomaker'")
    except ImportError as e:
        raise SystemExit(f"genomics_modisco needs modisco-lite and logomaker "
                         f"(pip install modisco-lite logomaker): {e}") from None
    import jax
    import jaxlift
    from experiments.genomics_peer import load_params, study_module
    g = study_module()
    cfg = g.Config()
    params = load_params(out / "genomics_model.npz")
    rng = np.random.default_rng(cfg.seed)
    g.make_data(cfg.n_train, cfg, rng)
    test = g.make_data(cfg.n_test, cfg, rng)
    x = test["x"][:n]
    refs = g.shuffles(x, cfg.n_shuffles, seed=cfg.seed + 2000)
    xw, rw = g.explain_inputs(params, x, refs)
    t0 = time.perf_counter()
    hyp = np.asarray(jax.block_until_ready(jaxlift.hypothetical_contributions(
        g.profile_explained, params, xw, rw, mode="rescale", sequence_key="seq",
        progress=False)))
    hyp_s = time.perf_counter() - t0
    log(f"hypothetical contributions of {n} sequences × {cfg.n_shuffles} shuffles: {hyp_s:.0f} s")
    np.savez_compressed(out / "genomics_ohe.npz", x.transpose(0, 2, 1).astype(np.float32))
    np.savez_compressed(out / "genomics_shap.npz", hyp.transpose(0, 2, 1).astype(np.float32))
    ohe = np.load(out / "genomics_ohe.npz")["arr_0"].transpose(0, 2, 1)
    shap = np.load(out / "genomics_shap.npz")["arr_0"].transpose(0, 2, 1)
    t0 = time.perf_counter()
    pos, neg = TFMoDISco(one_hot=ohe, hypothetical_contribs=shap, max_seqlets_per_metacluster=2000,
                         sliding_window_size=15, flank_size=5, n_leiden_runs=4,
                         target_seqlet_fdr=0.05, min_metacluster_size=20,
                         final_min_cluster_size=20)
    modisco_s = time.perf_counter() - t0
    pos = pos or []
    log(f"modisco-lite: {len(pos)} positive, {len(neg or [])} negative patterns, {modisco_s:.0f} s")
    patterns = []
    for k, p in enumerate(pos):
        ppm, cwm = np.asarray(p.sequence), np.asarray(p.contrib_scores)
        matches = {name: best_match(ppm, pwm) for name, pwm in g.PWMS.items()}
        name = max(matches, key=lambda m: matches[m][0])
        patterns.append({"k": k, "n_seqlets": len(p.seqlets), "ppm": ppm, "cwm": cwm,
                         "match": name, "r": matches[name][0], "all": matches})
    recovered = {name: max([q["r"] for q in patterns if q["match"] == name], default=None)
                 for name in g.PWMS}
    res = {"n": n, "hyp_seconds": hyp_s, "modisco_seconds": modisco_s, "patterns": patterns,
           "recovered": recovered, "n_negative": len(neg or [])}
    figure(res, g, out / "genomics_modisco.png")
    write_report(res, g, out)
    return res


def figure(res: dict, g, path: Path) -> None:
    import logomaker
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    pats = res["patterns"]
    rows = max(len(pats), len(g.PWMS))
    fig, axes = plt.subplots(rows, 2, figsize=(12, 1.8 * rows), squeeze=False)
    for i in range(rows):
        for ax in axes[i]:
            ax.axis("off")
        if i < len(pats):
            p = pats[i]
            ax = axes[i, 0]
            ax.axis("on")
            logomaker.Logo(pd.DataFrame(p["cwm"], columns=list("ACGT")), ax=ax)
            ax.set_title(f"pattern {p['k']} CWM ({p['n_seqlets']} seqlets): best match "
                         f"{p['match']} r = {p['r']:.2f}", fontsize=9)
        if i < len(g.PWMS):
            name = list(g.PWMS)[i]
            ax = axes[i, 1]
            ax.axis("on")
            logomaker.Logo(pd.DataFrame(information_content(g.PWMS[name]),
                                        columns=list("ACGT")), ax=ax)
            ax.set_title(f"planted {name}: {g.MOTIFS[name][0]} ({g.MOTIFS[name][1]}), bits",
                         fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(res: dict, g, out: Path) -> None:
    lines = ["# Genomics: TF-MoDISco (modisco-lite) on jaxlift's hypothetical contributions", "",
             f"`python -m experiments.genomics_modisco`: {res['n']} held-out sequences "
             "(all, with or without motifs), DeepLIFT rescale hypothetical contributions of the "
             f"profile target against 20 dinucleotide shuffles each ({res['hyp_seconds']:.0f} s), "
             "written as `(N, 4, L)` `.npz` (`genomics_ohe.npz`, `genomics_shap.npz`, the "
             "layout of `modisco motifs -s … -a …`; not committed, 4.7 MB), read back and given to modisco-lite's "
             f"`TFMoDISco` ({res['modisco_seconds']:.0f} s; window 15, flank 5, FDR 0.05, 4 "
             "Leiden runs).", "",
             "| planted motif | recovered (best pattern r ≥ 0.8) | best r |", "|---|---|---:|"]
    for name, r in res["recovered"].items():
        lines.append(f"| {name} `{g.MOTIFS[name][0]}` | {'yes' if r is not None and r >= 0.8 else 'no'} "
                     f"| {'—' if r is None else f'{r:.2f}'} |")
    lines += ["", "| pattern | seqlets | best match | r |", "|---|---:|---|---:|"]
    for p in res["patterns"]:
        lines.append(f"| {p['k']} | {p['n_seqlets']} | {p['match']} | {p['r']:.2f} |")
    lines += ["", f"Negative patterns: {res['n_negative']}.", "",
              "![discovered CWMs beside the planted PWMs](genomics_modisco.png)", ""]
    (out / "genomics_modisco.md").write_text("\n".join(lines))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=400, help="sequences")
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "results")
    args = ap.parse_args(argv)
    return run(args.n, args.out)


if __name__ == "__main__":
    main()
