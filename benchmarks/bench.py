"""jaxlift performance table: every figure a ratio measured in this one run, on this machine.

For the MNIST CNN (docs/design.md §21) and the real cats-vs-dogs CNN:

* jaxlift ``rescale`` / ``reveal_cancel`` / ``genomics_default`` ÷ ``jax.grad`` of the same
  function vmapped over the same N×K (input, reference) pairs (the floor);
* Captum ``DeepLift`` (torch CPU, the same weights, the same N×K pairs in batches) ÷ jaxlift
  ``rescale``; Captum ``IntegratedGradients`` (50 steps) ÷ jaxlift ``rescale``; jaxlift IG-50 ÷
  jaxlift ``rescale``;
* scaling of jaxlift ``rescale`` on the MNIST CNN from 1 to 10⁵ pairs, chunked by
  ``batch_size``: seconds per pair and peak resident memory (each point in a fresh process);
* data-set scale: pairs/s of ``jaxlift.attribute_dataset`` streaming 10⁵ pairs (10⁶ too on a
  GPU) from an ``.npy`` on disk to a scores store, ÷ ``jaxlift.attribute`` on the same inputs
  in memory (``--dataset-only`` runs just this row).

Medians of ``--repeats`` runs after a warm-up call; compile time (first call) is reported apart.
Writes ``experiments/results/BENCH.md``.

    python -m benchmarks.bench              # the full table (~10-20 min on 2 CPU cores)
    python -m benchmarks.bench --quick      # smaller N, fewer scaling points
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxlift
from benchmarks.internals import auto_chunk_inputs
from benchmarks.models import CATS, cats_model, mnist_model
from benchmarks.timing import RESULTS, ChildFailed, peak_rss_bytes, run_child, timed, write_report


# ----------------------------------------------------------------------------------- models

def torch_port(variables, kind: str):
    """The same network in torch (NCHW), for Captum. Activations are permuted to NHWC before
    flattening so the dense weights are used as they are."""
    import torch
    from torch import nn

    params = variables["params"]
    layers = [params[k] for k in params]  # Keras order: convs then denses

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            convs = [l for l in layers if l["kernel"].ndim == 4]
            denses = [l for l in layers if l["kernel"].ndim == 2]
            strides = 2 if kind == "mnist" else 1
            self.convs = nn.ModuleList()
            for c in convs:
                k = np.asarray(c["kernel"])  # HWIO
                conv = nn.Conv2d(k.shape[2], k.shape[3], k.shape[0], stride=strides)
                conv.weight.data = torch.tensor(k.transpose(3, 2, 0, 1).copy())
                conv.bias.data = torch.tensor(np.asarray(c["bias"]).copy())
                self.convs.append(conv)
            self.relus = nn.ModuleList(nn.ReLU() for _ in range(len(convs) + len(denses)))
            self.pools = nn.ModuleList(nn.MaxPool2d(2) for _ in convs) if kind == "cats" else None
            self.denses = nn.ModuleList()
            for d in denses:
                w = np.asarray(d["kernel"])
                lin = nn.Linear(w.shape[0], w.shape[1])
                lin.weight.data = torch.tensor(w.T.copy())
                lin.bias.data = torch.tensor(np.asarray(d["bias"]).copy())
                self.denses.append(lin)

        def forward(self, x):
            for i, conv in enumerate(self.convs):
                x = self.relus[i](conv(x))
                if self.pools is not None:
                    x = self.pools[i](x)
            x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
            n = len(self.convs)
            for j, lin in enumerate(self.denses):
                x = lin(x)
                if j < len(self.denses) - 1:
                    x = self.relus[n + j](x)
            return x

    return Net().eval()


# ----------------------------------------------------------------------------------- timing

def captum_best(net, x, refs, target, method, batches) -> tuple[float, int]:
    """Captum at its own best batching: ``(seconds, pairs per batch)``, the fastest of
    ``batches`` (one timed run each after a warm-up)."""
    best = None
    for b in batches:
        t = captum_time(net, x, refs, target, method, 1, batch=b)
        if best is None or t < best[0]:
            best = (t, b)
    return best


def captum_time(net, x, refs, target, method, repeats, batch=512, steps=50):
    """Captum over all N×K pairs, in batches of ``batch`` pairs (IG: internal batching)."""
    import torch
    from captum.attr import DeepLift, IntegratedGradients

    torch.set_num_threads(os.cpu_count() or 1)
    n, k = x.shape[0], refs.shape[0]
    xt = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy())
    rt = torch.tensor(np.asarray(refs).transpose(0, 3, 1, 2).copy())
    pairs_x = xt.repeat_interleave(k, 0)
    pairs_r = rt.repeat(n, 1, 1, 1)
    explainer = DeepLift(net) if method == "deeplift" else IntegratedGradients(net)

    def run():
        out = []
        for s in range(0, pairs_x.shape[0], batch):
            xb, rb = pairs_x[s:s + batch], pairs_r[s:s + batch]
            if method == "deeplift":
                out.append(explainer.attribute(xb, rb, target=target))
            else:
                out.append(explainer.attribute(xb, rb, target=target, n_steps=steps,
                                               internal_batch_size=batch))
        return torch.cat(out).reshape(n, k, *pairs_x.shape[1:]).mean(1)

    return timed(run, max(1, repeats))[0]


def torch_grad_time(net, x, refs, target, repeats, batch) -> tuple[float, str]:
    """torch autograd's gradient of the target w.r.t. the input over the same N×K pairs (each
    pair at its input, like the ``jax.grad`` floor), in batches of ``batch`` pairs, on CUDA when
    torch has it: ``(median seconds, device)``."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(os.cpu_count() or 1)
    net = net.to(device)
    k = refs.shape[0]
    xt = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy(), device=device)
    pairs = xt.repeat_interleave(k, 0)

    def run():
        out = []
        for s in range(0, pairs.shape[0], batch):
            xb = pairs[s:s + batch].clone().requires_grad_(True)
            (g,) = torch.autograd.grad(net(xb)[:, target].sum(), xb)
            out.append(g)
        res = torch.cat(out)
        if device == "cuda":
            torch.cuda.synchronize()
        return res

    return timed(run, max(1, repeats))[0], device


def precision_rows(fn, variables, x, refs, target, repeats) -> list[str]:
    """Per ``precision``: the relative completeness gap per pair (``jaxlift.flag_gaps``: median
    and max over the N×K pairs, and how many exceed 1e-4) and the time of ``rescale``. On a CPU
    both precisions are exact float32; on a recent NVIDIA GPU ``"default"`` runs TF32."""
    rows = ["| precision | median gap | max gap | pairs over 1e-4 | rescale median (s) | "
            "time ÷ default |", "|---|---|---|---|---|---|"]
    base = None
    for precision in ("default", "highest"):
        c, d = jaxlift.attribute(fn, variables, x, refs, target=target, average_refs=False,
                                 return_delta=True, precision=precision)
        gap, over = jaxlift.flag_gaps(c, d, threshold=1e-4)
        gap = np.asarray(gap)
        t, _ = timed(lambda precision=precision: jaxlift.attribute(fn, variables, x, refs, target=target,
                                                                   precision=precision), repeats)
        base = t if base is None else base
        rows.append(f"| {precision} | {np.median(gap):.1e} | {gap.max():.1e} | "
                    f"{int(np.sum(over))} of {gap.size} | {t:.3f} | {t / base:.2f} |")
    return rows


def model_rows(name, fn, variables, shape, n, k, target, repeats, captum, torch_net):
    kx, kr = jax.random.split(jax.random.PRNGKey(1))
    x = jax.random.uniform(kx, (n,) + shape)
    refs = jax.random.uniform(kr, (k,) + shape) * 0.2

    def scalar(p, xe):
        return fn(p, xe[None])[0, target]

    pairs = jnp.broadcast_to(x[:, None], (n, k) + shape).reshape((-1,) + shape)
    grad = jax.jit(jax.vmap(jax.grad(scalar, argnums=1), in_axes=(None, 0)))
    # the chunk jaxlift's batch_size="auto" picks; the floor gets the same chunking if it helps
    chunk = k * auto_chunk_inputs(fn, target, variables, x, n, k)
    t_whole, c_whole = timed(lambda: grad(variables, pairs), repeats)
    t_chunked, c_chunked = timed(lambda: [grad(variables, pairs[s:s + chunk])
                                          for s in range(0, n * k, chunk)], repeats)
    t_grad, c_grad = min((t_whole, c_whole), (t_chunked, c_chunked))
    out = {}
    for mode in ("rescale", "reveal_cancel", "genomics_default"):
        out[mode] = timed(lambda mode=mode: jaxlift.attribute(fn, variables, x, refs, target=target,
                                                              mode=mode), repeats)
    out["whole"] = timed(lambda: jaxlift.attribute(fn, variables, x, refs, target=target,
                                                   batch_size=None), repeats)
    out["ig50"] = timed(lambda: jaxlift.attribute(
        fn, variables, x, refs, target=target, mode="integrated_gradients",
        mode_options={"steps": 50, "method": "riemann_middle"}), 1)
    big = x.shape[1] > 64  # 256×256 inputs: small batches keep IG's steps in memory
    if captum:
        out["captum_deeplift"] = captum_best(torch_net, x, refs, target, "deeplift",
                                             (4, 16) if big else (256, 512, 2048))
        out["captum_ig50"] = captum_best(torch_net, x, refs, target, "ig",
                                         (8,) if big else (512,))
    if torch_net is not None:
        out["torch_grad"] = torch_grad_time(torch_net, x, refs, target, repeats,
                                            4 * chunk if x.shape[1] > 64 else 512)
    rows = [f"### {name}: N = {n} inputs × K = {k} references = {n * k} pairs, target {target}",
            "", f"jaxlift's `batch_size=\"auto\"` runs chunks of {chunk} pairs here.", "",
            "| method | median (s) | first call incl. compile (s) | ratio |", "|---|---|---|---|",
            f"| jax.grad over the N×K pairs, one batch | {t_whole:.3f} | {c_whole:.2f} | "
            f"{t_whole / t_grad:.2f}× floor |",
            f"| jax.grad over the N×K pairs, chunks of {chunk} | {t_chunked:.3f} | "
            f"{c_chunked:.2f} | {t_chunked / t_grad:.2f}× floor |"]
    if "torch_grad" in out:
        t_tg, dev = out["torch_grad"]
        rows.append(f"| torch autograd gradient over the N×K pairs ({dev}) | {t_tg:.3f} | – | "
                    f"{t_tg / t_grad:.2f}× floor |")
    for mode in ("rescale", "reveal_cancel", "genomics_default"):
        t, c = out[mode]
        rows.append(f"| jaxlift {mode} | {t:.3f} | {c:.2f} | **{t / t_grad:.2f}× grad** |")
    t_r = out["rescale"][0]
    rows.append(f"| jaxlift rescale, one batch (`batch_size=None`) | {out['whole'][0]:.3f} | "
                f"{out['whole'][1]:.2f} | {out['whole'][0] / t_grad:.2f}× grad |")
    rows.append(f"| jaxlift integrated_gradients (50 steps) | {out['ig50'][0]:.3f} | "
                f"{out['ig50'][1]:.2f} | {out['ig50'][0] / t_r:.1f}× jaxlift rescale |")
    if captum:
        (t_dl, b_dl), (t_ig, b_ig) = out["captum_deeplift"], out["captum_ig50"]
        rows.append(f"| Captum DeepLift (torch CPU, best of its batch sizes: {b_dl} pairs) | "
                    f"{t_dl:.3f} | – | **jaxlift rescale is {t_dl / t_r:.1f}× faster** |")
        rows.append(f"| Captum IntegratedGradients (50 steps, batches of {b_ig}) | {t_ig:.3f} | "
                    f"– | {t_ig / t_r:.1f}× jaxlift rescale |")
    rows += ["", f"Completeness gap per precision ({name.split(' (')[0]}, "
             "`jaxlift.flag_gaps` of `average_refs=False` scores: |ΣC − Δt| / max(Σ|C|, |Δt|) "
             "per pair):", ""]
    rows += precision_rows(fn, variables, x, refs, target, repeats)
    return rows + [""]


# ---------------------------------------------------------------------------------- scaling

def scaling_point(pairs: int, batch_size) -> dict:
    """Run in a fresh process: seconds per pair and peak RSS for ``pairs`` pairs."""
    fn, variables, shape = mnist_model()
    k = min(8, pairs)
    n = max(1, pairs // k)
    x = jax.random.uniform(jax.random.PRNGKey(1), (n,) + shape)
    refs = jnp.zeros((k,) + shape)
    batch_size = batch_size if batch_size == "auto" else int(batch_size)
    run = lambda: jaxlift.attribute(fn, variables, x, refs, target=3,  # noqa: E731
                                    batch_size=batch_size)
    t0 = time.perf_counter()
    jax.block_until_ready(run())
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(run())
    t = time.perf_counter() - t0
    rss_mb = peak_rss_bytes() / 2**20
    return {"pairs": n * k, "seconds": t, "first": first, "per_pair_ms": 1e3 * t / (n * k),
            "peak_rss_mb": rss_mb}


def scaling_rows(points, batch_size):
    rows = [f"### Scaling: jaxlift rescale, MNIST CNN, K = 8 zero references, "
            f"batch_size = {batch_size!r} (each point a fresh process)", "",
            "| pairs | run (s) | ms per pair | peak resident memory (MB) |", "|---|---|---|---|"]
    for p in points:
        try:
            r = run_child("benchmarks.bench", ["--scaling-point", str(p), "--batch-size",
                                               str(batch_size)], timeout=3600)
        except ChildFailed as e:
            rows.append(f"| {p} | failed: {e} | | |")
            continue
        rows.append(f"| {r['pairs']} | {r['seconds']:.3f} | {r['per_pair_ms']:.4f} | "
                    f"{r['peak_rss_mb']:.0f} |")
    return rows + [""]


# ----------------------------------------------------------------------------- data-set scale

def dataset_rows(fn, variables, shape, points, repeats, k=8, chunk_size=1024) -> list[str]:
    """Pairs/s of ``attribute_dataset`` (inputs streamed from an ``.npy``, scores written to a
    store, ``outputs=False`` so both sides compute the same thing) and of ``attribute`` on the
    same inputs held in memory; medians of ``repeats`` runs after a warm-up run of each."""
    from jaxlift.dataset import attribute_dataset
    rows = [f"### Data-set scale: jaxlift rescale, MNIST CNN, K = {k} zero references, "
            f"chunks of {chunk_size} inputs", "",
            "| pairs | in memory (pairs/s) | streamed from disk (pairs/s) | streamed ÷ in memory "
            "(time) |", "|---|---|---|---|"]
    refs = np.zeros((k,) + shape, np.float32)
    for pairs in points:
        n = pairs // k
        with tempfile.TemporaryDirectory(prefix="jaxlift-bench-") as tmp:
            path = Path(tmp) / "x.npy"
            x = np.lib.format.open_memmap(path, "w+", np.float32, (n,) + shape)
            for s in range(0, n, 10_000):
                x[s:s + 10_000] = np.random.default_rng(s).uniform(
                    size=(min(10_000, n - s),) + shape)
            x.flush()
            del x
            x_mem = np.load(path)

            def in_memory(x_mem=x_mem):
                return jax.block_until_ready(jaxlift.attribute(
                    fn, variables, x_mem, refs, target=3, return_delta=True, progress=False))

            def streamed(path=path):
                shutil.rmtree(Path(tmp) / "out", ignore_errors=True)
                attribute_dataset(fn, variables, path, refs, out=Path(tmp) / "out", target=3,
                                  chunk_size=chunk_size, outputs=False, progress=False,
                                  quiet=True)

            t_mem, _ = timed(in_memory, repeats)
            t_disk, _ = timed(streamed, repeats)
        rows.append(f"| {n * k} | {n * k / t_mem:,.0f} | {n * k / t_disk:,.0f} | "
                    f"{t_disk / t_mem:.2f} |")
    return rows + ["", "Target: streaming costs ≤ 10 % over in memory (ratio ≤ 1.10). The "
                   "streamed run reads the inputs from the page cache (the file was just "
                   "written) and writes scores, Δ and gaps to disk.", ""]


# ------------------------------------------------------------------------------------- main

def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-captum", action="store_true")
    ap.add_argument("--scaling-point", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", default="auto",
                    help='pairs per chunk in the scaling runs (default "auto")')
    ap.add_argument("--out", default=str(RESULTS / "BENCH.md"))
    ap.add_argument("--n-mnist", type=int, help="MNIST inputs (default 1024, 256 --quick)")
    ap.add_argument("--no-cats", action="store_true", help="skip the cats-vs-dogs CNN")
    ap.add_argument("--no-torch", action="store_true",
                    help="no torch rows (Captum, torch autograd)")
    ap.add_argument("--scaling-points", help="comma-separated pair counts for the scaling table "
                    "(default 1,…,10⁵; 10⁶ too on a GPU); 'none' skips it")
    ap.add_argument("--dataset-points", help="comma-separated pair counts for the data-set row "
                    "(default 10⁵; 10⁶ too on a GPU); 'none' skips it")
    ap.add_argument("--dataset-only", action="store_true",
                    help="only the data-set row (streamed from disk vs in memory)")
    args = ap.parse_args(argv)
    if args.scaling_point:
        print(json.dumps(scaling_point(args.scaling_point, args.batch_size)))
        return
    captum = not (args.no_captum or args.no_torch)
    n_mnist, n_cats = (256, 4) if args.quick else (1024, 8)
    n_mnist = args.n_mnist or n_mnist
    gpu = jax.devices()[0].platform != "cpu"
    points = [1, 100, 10_000] if args.quick else [1, 10, 100, 1_000, 10_000, 100_000]
    if gpu and not args.quick:
        points.append(1_000_000)
    if args.scaling_points:
        points = ([] if args.scaling_points == "none"
                  else [int(p) for p in args.scaling_points.split(",")])
    ds_points = [100_000, 1_000_000] if gpu and not args.quick else [100_000]
    if args.dataset_points:
        ds_points = ([] if args.dataset_points == "none"
                     else [int(p) for p in args.dataset_points.split(",")])
    t_start = time.perf_counter()
    fn, variables, shape = mnist_model()
    if args.dataset_only:
        lines = dataset_rows(fn, variables, shape, ds_points, args.repeats)
        print("\n".join(lines))
        return
    lines = ["# jaxlift benchmark", "",
             f"Machine: {platform.machine()} {platform.processor() or 'CPU'}, {os.cpu_count()} "
             f"cores, jax {jax.__version__} on {jax.devices()[0].platform}; medians of "
             f"{args.repeats} runs after warm-up, every ratio measured in this one run. "
             "Command: `python -m benchmarks.bench " + " ".join(sys.argv[1:] if argv is None
                                                                  else argv) + "`.",
             ""]
    lines += model_rows("MNIST CNN (docs/design.md §21, 239,594 parameters)", fn, variables, shape,
                        n_mnist, 8, 3, args.repeats, captum,
                        None if args.no_torch else torch_port(variables, "mnist"))
    if (CATS / "model.h5").exists() and not args.no_cats:
        cfn, cvars, cshape = cats_model()
        lines += model_rows("cats-vs-dogs CNN (Keras 2.13 model, 256×256×1)", cfn, cvars, cshape,
                            n_cats, 2, 0, args.repeats, captum,
                            None if args.no_torch else torch_port(cvars, "cats"))
    if points:
        lines += scaling_rows(points, args.batch_size)
    if ds_points:
        lines += dataset_rows(fn, variables, shape, ds_points, args.repeats)
    if gpu:
        lines += ["## GPU", "", f"Run on {jax.devices()[0].device_kind}; the scaling table's "
                  "last row gives pairs per second at 10⁶ pairs (1 / ms per pair × 1000).", ""]
    else:
        lines += ["## GPU", "",
                  "No GPU figures: the sessions that made this table had no accelerator lent "
                  "(the device tool reported the task was not drawn for one). On a machine with "
                  "a GPU, `pip install -e .[cuda]` and rerun `python -m benchmarks.bench`: the "
                  "same table, plus a scaling row at 10⁶ pairs.", ""]
    lines += [f"Total benchmark time: {time.perf_counter() - t_start:.0f} s.", ""]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
