"""Mutation harness: does the default test run catch a wrong score that still sums?

Summation-to-delta (ΣC = Δt) is necessary, not sufficient: a rule can move credit from one
input to another and keep the sum. Each entry of :data:`MUTATIONS` is one small, plausible bug
in a rule or the interpreter — ``(name, file, exact old text, new text)`` — and the test files
that should catch it. For each selected mutation the harness

1. copies the repository (``git ls-files``: tracked files and untracked ones git does not
   ignore) to a temporary folder,
2. applies that one mutation, failing loudly when its old text is not found exactly once (the
   rules are edited by others too: a stale mutation must not pass as "caught"),
3. runs the default test selection (``-m "not slow"``) on the copy — the mutation's own test
   files, or with ``--full`` the whole default run — with ``PYTHONPATH`` at the copy, ``-x``
   (stop at the first failure) and ``-n 2``,
4. records whether a test failed, which (the first failing test ids) and how long it took.

Results are kept per mutation in ``experiments/results/mutations.json`` (a run of a few
mutations updates their rows) and written as a table to ``experiments/results/mutations.md``.
Every mutation must be caught: the exit status is 1 if one is not (or is stale).

It runs on demand, not in CI (each mutation is a test run of its own)::

    python benchmarks/mutations.py --list
    python benchmarks/mutations.py --check                 # every old text found exactly once?
    python benchmarks/mutations.py                         # all, against their test files
    python benchmarks/mutations.py min_no_swap rc_one_sided --full   # these, whole default run
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"
SHARED_DATA = Path(os.environ.get("JAXLIFT_SHARED_DATA", REPO.parent / "shared" / "data"))

# the test files most mutations are checked against (the oracle files and the core files)
ORACLES = ("tests/test_oracle_rules.py", "tests/test_oracle_limits.py")
CORE = ("tests/test_core_exact.py", "tests/test_reveal_cancel.py", "tests/test_core_api.py")


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One bug: ``old`` (found exactly once in ``file``) replaced by ``new``; ``tests``: the
    test files run against it (default selection); ``sums``: whether the bug keeps ΣC = Δt
    (so that only a test of values can catch it)."""

    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    what: str
    sums: bool


MUTATIONS: tuple[Mutation, ...] = (
    # ---- the seven of issue 30 -------------------------------------------------------------
    Mutation(
        "rescale_times_1.01", "jaxlift/rules/rescale.py",
        "    return [m.map(lambda v: v * ratio)]",
        "    return [m.map(lambda v: v * ratio * 1.01)]",
        CORE, "Rescale's multiplier Δy/Δx scaled by 1.01", sums=False),
    Mutation(
        "rc_term_sign", "jaxlift/rules/reveal_cancel.py",
        "    dyp = 0.5 * (fp - y0) + 0.5 * (y - fn)",
        "    dyp = 0.5 * (fp - y0) - 0.5 * (y - fn)",
        CORE, "the sign of one of RevealCancel's two Δy⁺ terms", sums=False),
    Mutation(
        "rc_one_sided", "jaxlift/rules/reveal_cancel.py",
        "    dyp = 0.5 * (fp - y0) + 0.5 * (y - fn)\n    dyn = 0.5 * (fn - y0) + 0.5 * (y - fp)",
        "    dyp = fp - y0\n    dyn = y - fp",
        ORACLES + CORE, "RevealCancel's split one-sided (Δy⁺ = f(x0+Δx⁺) − f(x0), Δy⁻ the "
        "rest) instead of averaged over both orders", sums=True),
    Mutation(
        "min_no_swap", "jaxlift/rules/maxrule.py",
        "    if ctx.op.primitive in _MIN_LIKE:\n        at_up, at_down = at_down, at_up",
        "    if False:\n        at_up, at_down = at_down, at_up",
        ORACLES, "min/reduce_min routed like max (the roles of input and reference not "
        "swapped)", sums=True),
    Mutation(
        "rc_dense_zero_as_positive", "jaxlift/rules/linear.py",
        "    mx = (total + jnp.sign(ctx.delta_in(i)) * diff) / 2",
        "    mx = (total + jnp.where(ctx.delta_in(i) >= 0, 1.0, -1.0) * diff) / 2",
        ORACLES, "dense RevealCancel backward: Δx = 0 treated as positive (L⁺ᵀm⁺ + L⁻ᵀm⁻) "
        "instead of Lᵀ(m⁺ + m⁻)/2", sums=True),
    Mutation(
        "rescale_zero_dx_multiplier_0", "jaxlift/rules/rescale.py",
        "    return jnp.where(finite_values(ctx), m, 0)",
        "    return jnp.where(finite_values(ctx) & (dx != 0), m, 0)",
        ORACLES, "Rescale's multiplier 0 where Δx = 0 (instead of the slope)", sums=True),
    Mutation(
        "near_zero_guard_dropped", "jaxlift/rules/rescale.py",
        "    return jnp.where(jnp.abs(slope * dx - dy) <= rounding, slope, quotient)",
        "    return jnp.where(dx == 0, slope, quotient)",
        ORACLES, "the near-zero guard dropped: Δy/Δx even where it is rounding noise",
        sums=True),
    # ---- guards ----------------------------------------------------------------------------
    Mutation(
        "guard_too_loose", "jaxlift/rules/rescale.py",
        "ROUNDING_ULPS = 4\n",
        "ROUNDING_ULPS = 4e6\n",
        ORACLES, "the near-zero guard a million times too loose: the slope replaces Δy/Δx "
        "where it loses part of Δy (a kink inside a tiny interval)", sums=False),
    Mutation(
        "rc_limit_of_the_wrong_side", "jaxlift/rules/reveal_cancel.py",
        "    mp = exact_multiplier(dyp, p, (d0 + dfn) / 2, rounding)",
        "    mp = exact_multiplier(dyp, p, (d0 + dfp) / 2, rounding)",
        ORACLES, "RevealCancel's limit of m⁺ where Δx⁺ = 0 taken at x0 + Δx⁺ instead of "
        "x0 + Δx⁻", sums=True),
    Mutation(
        "rc_undefined_point_kept", "jaxlift/rules/reveal_cancel.py",
        "            | ~jnp.isfinite(fp + fn + mp + mn) | far)",
        "            | far)",
        ORACLES, "RevealCancel keeps its split where f is undefined at x0 + Δx± (sqrt of a "
        "negative): the Rescale fallback dropped", sums=False),
    Mutation(
        "rc_clipped_point_kept", "jaxlift/rules/reveal_cancel.py",
        "    if guards:  # a point only a clamp keeps in f's domain is an undefined point too",
        "    if False:  # a point only a clamp keeps in f's domain is an undefined point too",
        ("tests/test_reveal_cancel.py",), "RevealCancel keeps its split where only a clip keeps "
        "x0 + Δx± in f's domain (rsqrt of a one-pass variance clipped at 0: Flax's LayerNorm): "
        "exact scores 50× the two-pass layer norm's", sums=True),
    Mutation(
        "rc_shift_split_kept", "jaxlift/rules/reveal_cancel.py",
        '    if op.eqn is None or op.primitive not in ("add", "sub"):',
        '    if True or op.eqn is None or op.primitive not in ("add", "sub"):',
        ("tests/test_reveal_cancel.py",), "RevealCancel splits softmax's z − stop_gradient(max z) "
        "by the linear rule: the largest element's parts ±Δz become opposing e^{|Δz|} (exact "
        "scores 9× the unshifted softmax's)", sums=True),
    # ---- swaps and signs -------------------------------------------------------------------
    Mutation(
        "max_up_down_swapped", "jaxlift/rules/maxrule.py",
        "    at_up, at_down = (ctx.xs, ctx.ys[0]), (ctx.rs, ctx.y0s[0])",
        "    at_up, at_down = (ctx.rs, ctx.y0s[0]), (ctx.xs, ctx.ys[0])",
        ORACLES + ("tests/test_core_exact.py",),
        "max: the rise credited to the reference's argmax, the fall to the input's",
        sums=True),
    Mutation(
        "scaled_no_sign_swap", "jaxlift/rules/linear.py",
        "        p, n = ctx.split_in(i)\n        wp, wn = jnp.maximum(w, 0), jnp.minimum(w, 0)\n"
        "        pos = pos + wp * p + wn * n\n        neg = neg + wp * n + wn * p",
        "        p, n = ctx.split_in(i)\n        wp, wn = jnp.maximum(w, 0), jnp.minimum(w, 0)\n"
        "        pos = pos + w * p\n        neg = neg + w * n",
        ORACLES, "RevealCancel: a negative scale keeps Δx⁺ as the positive part (no swap)",
        sums=False),
    Mutation(
        "dense_split_by_net_sign", "jaxlift/rules/linear.py",
        "    return [(pos, (l_dx - l_abs) / 2)]",
        "    return [(jnp.maximum(l_dx, 0), jnp.minimum(l_dx, 0))]",
        ORACLES, "RevealCancel's dense split by the sign of the net Δz instead of term by "
        "term (Δz⁺ = Σ positive terms)", sums=False),
    Mutation(
        "step_two_live_sign", "jaxlift/rules/logic.py",
        "    result[b] = SplitMultipliers.of(unbroadcast(-m * slope, jnp.shape(ctx.xs[b])))",
        "    result[b] = SplitMultipliers.of(unbroadcast(m * slope, jnp.shape(ctx.xs[b])))",
        ORACLES, "a comparison a ≷ b of two live values: m_b = +Δp/(Δa − Δb)", sums=False),
    Mutation(
        "logic_and_or_swapped", "jaxlift/rules/logic.py",
        '        w = other if name == "and" else 1 - other',
        '        w = other if name == "or" else 1 - other',
        ORACLES, "boolean and/or: each other's Shapley weight", sums=False),
    # ---- routing ---------------------------------------------------------------------------
    Mutation(
        "maxpool_ties_to_first", "jaxlift/rules/maxrule.py",
        "    if ctx.op.primitive in _WINDOWED:",
        "    if False:",
        ORACLES + ("tests/test_core_exact.py",),
        "max/min-pooling ties: the whole share to one extreme (JAX's own transpose) "
        "instead of split equally", sums=True),
    Mutation(
        "genomics_default_conv_as_dense", "jaxlift/rules/reveal_cancel.py",
        '_DENSE = {"dot_general"}',
        '_DENSE = {"dot_general", "conv_general_dilated"}',
        ("tests/test_reveal_cancel.py",), "genomics_default: RevealCancel after convolutions "
        "too", sums=True),
    # ---- products, quotients, selects ------------------------------------------------------
    Mutation(
        "product_one_sided", "jaxlift/rules/product.py",
        "        mids[i] = (wide(ctx.xs[i]) + wide(ctx.rs[i])) / 2",
        "        mids[i] = wide(ctx.xs[i]) if i == ctx.live_float[0] else wide(ctx.rs[i])",
        ORACLES, "product a·b: m_a = b0, m_b = a (exact, one-sided) instead of the Shapley "
        "midpoints", sums=True),
    Mutation(
        "quotient_one_sided", "jaxlift/rules/product.py",
        "    ma = m.pos * 0.5 * (1 / b + 1 / b0)\n    mb = -m.pos * (a + a0) / (2 * b * b0)",
        "    ma = m.pos / b\n    mb = -m.pos * a0 / (b * b0)",
        ORACLES, "quotient a/b: m_a = 1/b, m_b = −a0/(b·b0) (exact, one-sided) instead of "
        "the midpoints", sums=True),
    Mutation(
        "select_flip_one_sided", "jaxlift/rules/logic.py",
        "    m_c0 = jnp.where(shapley, half, jnp.where(flips, 0, 1 - p))\n"
        "    m_c1 = jnp.where(shapley, half, jnp.where(flips, 0, p))\n"
        "    d_mid = ((c1 - c0) + (c10 - c00)) / 2",
        "    m_c0 = jnp.where(shapley, 1 - p, jnp.where(flips, 0, 1 - p))\n"
        "    m_c1 = jnp.where(shapley, p, jnp.where(flips, 0, p))\n"
        "    d_mid = (c10 - c00) + 0 * half",
        ORACLES, "select with a live predicate that flips: the input's case takes all "
        "(exact, one-sided) instead of the Shapley split", sums=True),
    # ---- loops -----------------------------------------------------------------------------
    Mutation(
        "scan_carry_multiplier_dropped", "jaxlift/rules/loops.py",
        "        new_m_k = [got(nc + i, m) for i, m in enumerate(m_k)]",
        "        new_m_k = [jax.tree_util.tree_map(jnp.zeros_like, m) for m in m_k]",
        ("tests/test_loops.py",), "scan backward: the carry's multipliers not passed to the "
        "step before", sums=False),
    Mutation(
        "scan_consts_last_step_only", "jaxlift/rules/loops.py",
        "        new_m_c = [jax.tree_util.tree_map(jnp.add, acc, got(i, acc))",
        "        new_m_c = [jax.tree_util.tree_map(lambda a, b: b, acc, got(i, acc))",
        ("tests/test_loops.py",), "scan backward: a live loop constant's multipliers kept "
        "from one step instead of added up", sums=False),
    Mutation(
        "scan_rc_carry_split_frozen", "jaxlift/rules/loops.py",
        "        new_split = [None if s is None else tuple(a.astype(b.dtype) for a, b in zip(n, s))\n"
        "                     for n, s in zip(splits[:nk], k_split)]",
        "        new_split = list(k_split)",
        ("tests/test_loops.py",), "scan in RevealCancel: the carry's split not updated "
        "from step to step (a nonlinearity reading the carry falls back to Rescale's "
        "multiplier)", sums=True),
    # ---- interpreter and linear family -----------------------------------------------------
    Mutation(
        "fanout_overwrites", "jaxlift/interpreter.py",
        "            mult[a] = m if a not in mult else mult[a] + m",
        "            mult[a] = m",
        CORE, "interpreter: a variable used twice keeps one use's multiplier", sums=False),
    Mutation(
        "conv_phase_kernel_not_flipped", "jaxlift/rules/_conv.py",
        "                      flip=[(\"t\", d) for d in range(n)])",
        "                      flip=[])",
        ("tests/test_conv_transpose.py",), "strided conv transpose by phases: the kernel's "
        "taps not reversed", sums=False),
    Mutation(
        "hypothetical_reference_term_dropped", "jaxlift/hypothetical.py",
        "    dot = jnp.sum(r * m, axis=-1, keepdims=True)                 # Σ_c r[l, c]·m[l, c]",
        "    dot = 0 * jnp.sum(r * m, axis=-1, keepdims=True)",
        ORACLES, "hypothetical contributions without the reference's Σ_c r·m term",
        sums=False),
    # ---- checks --------------------------------------------------------------------------
    Mutation(
        "finite_flag_without_scores", "jaxlift/_ops.py",
        "    leaves = jax.tree_util.tree_leaves((res, delta) + ((x, refs) if check_inputs else ()))",
        "    leaves = jax.tree_util.tree_leaves((delta,) + ((x, refs) if check_inputs else ()))",
        ("tests/test_dispatch.py", "tests/test_errors.py"), "the finite flag leaves the scores "
        "out: NaN scores from finite inputs returned", sums=True),
    Mutation(
        "padded_rows_counted", "jaxlift/certificate.py",
        "            gap, bound = gap[:real], bound[:real]",
        "            pass",
        ("tests/test_certificate.py",), "a refusal over chunks counts the padded last chunk's "
        "copies of the last input as pairs", sums=True),
    # ---- programs kept and shared ----------------------------------------------------------
    Mutation(
        "kept_program_served_after_a_patch", "jaxlift/stored_programs.py",
        "    now = jaxlift_state(tuple(then))",
        "    return True",
        ("tests/test_stored_programs.py",), "a program kept in the process served after a rule "
        "was replaced at run time: the rules it was compiled with run, not those in place", sums=True),
    Mutation(
        "pred_rows_taken_as_weights", "jaxlift/targets.py",
        "    return jnp.where(jnp.isnan(seed), predicted.astype(seed.dtype), seed)",
        "    return seed",
        ("tests/test_targets_as_data.py",), "target='pred' run as data weighs the outputs with "
        "its NaN rows instead of each input's predicted class", sums=False),
)


class StaleMutation(RuntimeError):
    """A mutation's old text is not found exactly once: the code it targets has changed."""


def by_name() -> dict[str, Mutation]:
    names = [m.name for m in MUTATIONS]
    assert len(set(names)) == len(names), "mutation names must be unique"
    return {m.name: m for m in MUTATIONS}


def mutated_text(mutation: Mutation, root: Path) -> str:
    """The mutated text of ``mutation.file`` under ``root``; raises :class:`StaleMutation`."""
    path = root / mutation.file
    if not path.is_file():
        raise StaleMutation(f"{mutation.name}: {mutation.file} does not exist")
    text = path.read_text()
    count = text.count(mutation.old)
    if count != 1:
        raise StaleMutation(f"{mutation.name}: its old text occurs {count} times in "
                            f"{mutation.file} (expected exactly once): update the mutation")
    return text.replace(mutation.old, mutation.new)


def repo_files(root: Path) -> list[str]:
    """Tracked files and untracked ones git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=root, check=True, capture_output=True).stdout
    return [f for f in out.decode().split("\0") if f and (root / f).is_file()]


def copy_repo(dest: Path) -> None:
    for f in repo_files(REPO):
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, target)


_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.M)


def run_tests(root: Path, tests: list[str], workers: int, timeout: float) -> dict:
    """The default selection of ``tests`` (all of it when empty) under ``root``, stopping at
    the first failure: ``{"passed": bool, "failing": [test ids], "seconds", "tail"}``."""
    env = dict(os.environ, PYTHONPATH=str(root), JAXLIFT_SHARED_DATA=str(SHARED_DATA),
               PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:randomly",
           "-p", "no:cacheprovider", "-rfE", "--no-header", "--tb=line"]
    if workers > 1:
        cmd += ["-n", str(workers)]
    cmd += tests
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                              timeout=timeout)
        out, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        code = "timeout"
    seconds = time.time() - t0
    failing = list(dict.fromkeys(_FAILED.findall(out)))
    return {"passed": code == 0, "code": code, "failing": failing, "seconds": round(seconds, 1),
            "tail": out[-2000:]}


def revision() -> str:
    """The commit the harness runs on (``-dirty``: with uncommitted changes)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return head + ("-dirty" if dirty else "")


def run_one(mutation: Mutation, full: bool, workers: int, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"mutation-{mutation.name}-") as tmp:
        root = Path(tmp)
        copy_repo(root)
        (root / mutation.file).write_text(mutated_text(mutation, root))
        tests = [] if full else [t for t in mutation.tests if (root / t).exists()]
        if not full and not tests:
            raise StaleMutation(f"{mutation.name}: none of its test files exist: "
                                f"{mutation.tests}")
        res = run_tests(root, tests, workers, timeout)
    caught = not res["passed"] and res["code"] != "timeout" and bool(res["failing"])
    return {"name": mutation.name, "file": mutation.file, "what": mutation.what,
            "sums": mutation.sums, "caught": caught, "by": res["failing"][:3],
            "selection": "default run" if full else " ".join(Path(t).name for t in tests),
            "seconds": res["seconds"], "code": res["code"], "revision": revision(),
            "tail": "" if caught else res["tail"]}


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def write_table(results: dict, path: Path) -> None:
    order = [m.name for m in MUTATIONS]
    rows = [results[n] for n in order if n in results]
    caught = sum(r["caught"] for r in rows)
    lines = [
        "# Mutation harness: does the default test run catch a wrong score?",
        "",
        "Written by `python benchmarks/mutations.py` (see its docstring). Each row is one bug "
        "put into a copy of the repository; the default selection (`-m \"not slow\"`) of the "
        "listed test files (or of the whole default run) ran against it with `-x -n 2`. "
        "\"keeps ΣC = Δt\": whether the bug leaves summation-to-delta intact by its "
        "construction (so that only a test of values can catch it); \"revision\": the commit "
        "the row was run on.",
        "",
        f"{caught} of {len(rows)} mutations caught"
        + ("" if len(rows) == len(MUTATIONS) else f" ({len(MUTATIONS)} listed)") + ".",
        "",
        "| mutation | file | what | keeps ΣC = Δt | selection | caught | first failing test(s) "
        "| seconds | revision |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        by = "<br>".join(f"`{t}`" for t in r["by"]) or "—"
        lines.append(f"| `{r['name']}` | `{r['file']}` | {r['what']} | "
                     f"{'yes' if r['sums'] else 'no'} | {r['selection']} | "
                     f"{'**yes**' if r['caught'] else '**NO**'} | {by} | {r['seconds']:.0f} | "
                     f"{r.get('revision', '')} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--full", action="store_true",
                        help="run the whole default selection, not the mutation's test files")
    parser.add_argument("-n", "--workers", type=int, default=2, help="pytest-xdist workers")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per mutation")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--check", action="store_true",
                        help="only check that every selected mutation still applies")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the first run of the unmutated selection (which must pass: "
                             "otherwise every mutation would look caught)")
    parser.add_argument("--results", type=Path, default=RESULTS / "mutations.json")
    parser.add_argument("--table", type=Path, default=RESULTS / "mutations.md")
    args = parser.parse_args(argv)

    table = by_name()
    unknown = [n for n in args.names if n not in table]
    if unknown:
        parser.error(f"unknown mutation(s) {unknown}; --list shows them")
    selected = [table[n] for n in args.names] if args.names else list(MUTATIONS)
    if args.list:
        for m in selected:
            print(f"{m.name:38} {m.file:32} {m.what}")
        return 0

    stale = []
    for m in selected:  # every mutation must apply before any test runs
        try:
            mutated_text(m, REPO)
        except StaleMutation as exc:
            stale.append(str(exc))
    if stale:
        print("STALE:\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    if args.check:
        print(f"{len(selected)} mutation(s) apply")
        return 0

    if args.baseline:
        with tempfile.TemporaryDirectory(prefix="mutation-baseline-") as tmp:
            copy_repo(Path(tmp))
            tests = [] if args.full else sorted({t for m in selected for t in m.tests})
            res = run_tests(Path(tmp), tests, args.workers, args.timeout)
        print(f"baseline: {'passed' if res['passed'] else 'FAILED'} in {res['seconds']:.0f} s")
        if not res["passed"]:
            print(res["tail"], file=sys.stderr)
            return 1

    results = {k: v for k, v in load_results(args.results).items() if k in table}
    missed = []
    for m in selected:
        r = run_one(m, args.full, args.workers, args.timeout)
        results[m.name] = r
        print(f"{m.name:38} {'caught' if r['caught'] else 'MISSED':7} {r['seconds']:6.0f} s  "
              f"{', '.join(r['by']) or r['code']}", flush=True)
        if not r["caught"]:
            missed.append(m.name)
            print(r["tail"], file=sys.stderr)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        write_table(results, args.table)
    print(f"{len(selected) - len(missed)} of {len(selected)} caught; table: {args.table}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
