"""attribute_dataset: streamed from every kind of source, equal to jaxlift.attribute, resumable
(bit-identical after interruptions and SIGKILL), refused on a changed run, split over processes
(jax.distributed on localhost), with memory that does not grow with N."""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift.dataset import attribute_dataset
from jaxlift.io import scores_store, sources
from jaxlift.io.atomic import temp_prefix
from jaxlift.io.scores_store import (FingerprintMismatchError, ScoresStoreError, leftover_files,
                                     open_scores)

REPO = Path(__file__).resolve().parents[1]
SHAPE = (3, 4)
N, CHUNK = 50, 16


def mlp(p, x):
    h = jax.nn.relu(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"])
    return h @ p["w2"] + p["b2"]


def mlp_params(seed=0, hidden=8, d=12, classes=3):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return {"w1": jax.random.normal(k1, (d, hidden)), "b1": jnp.full(hidden, 0.1),
            "w2": jax.random.normal(k2, (hidden, classes)), "b2": jnp.zeros(classes)}


P = mlp_params()
X = np.random.default_rng(0).normal(size=(N, *SHAPE)).astype(np.float32)
REFS = np.random.default_rng(1).normal(size=(2, *SHAPE)).astype(np.float32)


def run(tmp_path, source, name="out", refs=REFS, **kw):
    kw = {"target": 1, "chunk_size": CHUNK, "quiet": True, **kw}
    return attribute_dataset(mlp, P, source, refs, out=tmp_path / name, **kw)


def files_of(path: Path, manifest: bool = True) -> dict[str, bytes]:
    """Every file of a store by name, with its bytes (the manifest names the source)."""
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())
            if manifest or p.name != "manifest.json"}


@pytest.fixture(scope="module")
def reference_store(tmp_path_factory):
    """The scores of X from an .npy file, as a store, and its bytes."""
    tmp = tmp_path_factory.mktemp("ref")
    np.save(tmp / "x.npy", X)
    out = run(tmp, tmp / "x.npy")
    return out, files_of(out)


def test_store_equals_attribute_and_holds_only_its_arrays(reference_store):
    out, _ = reference_store
    got = open_scores(out)
    s, d = jaxlift.attribute(mlp, P, X, REFS, target=1, return_delta=True)
    assert set(got) == {"scores", "delta", "gap", "outputs"}
    assert got["scores"].shape == (N, *SHAPE) and isinstance(got["scores"], np.memmap)
    np.testing.assert_allclose(got["scores"], s, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["delta"], d, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["outputs"], mlp(P, X), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got["gap"], got["scores"].reshape(N, -1).sum(
        1, dtype=np.float64) - got["delta"].astype(np.float64))
    assert np.abs(got["gap"]).max() < 1e-4
    assert leftover_files(out) == []
    assert sorted(os.listdir(out)) == ["delta.npy", "gap.npy", "manifest.json", "outputs.npy",
                                       "scores.npy"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["n"] == N and manifest["chunk_size"] == CHUNK


def test_every_source_kind_reads_the_same_rows(tmp_path, reference_store):
    _, want = reference_store
    np.savez_compressed(tmp_path / "x.npz", other=np.zeros(3), x=X)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("group/x", data=X, chunks=(7, *SHAPE))
    batches = [X[:5], X[5:23], X[23:24], X[24:]]  # not aligned with the chunks
    kinds = {"npz": str(tmp_path / "x.npz") + ":x", "h5": tmp_path / "x.h5",
             "array": X, "memmap": np.lib.format.open_memmap(tmp_path / "m.npy", "w+",
                                                              np.float32, X.shape),
             "list": batches, "generator": lambda: iter(batches)}
    kinds["memmap"][:] = X
    want = {k: v for k, v in want.items() if k != "manifest.json"}
    for name, source in kinds.items():
        out = run(tmp_path, source, name=name)
        assert files_of(out, manifest=False) == want, name


def test_image_folder_and_explicit_sources(tmp_path):
    from PIL import Image
    from jaxlift.io.images import load_image
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (6, 8), np.uint8)).save(folder / f"{i:02d}.png")
    (folder / "notes.txt").write_text("not an image")
    src = sources.as_source(folder, image_size=(3, 4), grayscale=True)
    assert src.names == [f"{i:02d}.png" for i in range(5)] and src.row_shape == (3, 4, 1)
    want = np.stack([load_image(folder / n, (3, 4), True) for n in src.names])
    np.testing.assert_array_equal(np.concatenate([c for _, c in src.chunks(2)]), want)
    refs = np.zeros((1, 3, 4, 1), np.float32)
    out = run(tmp_path, folder, refs=refs, image_size=(3, 4), grayscale=True, chunk_size=2)
    s = jaxlift.attribute(mlp, P, want, refs, target=1)
    np.testing.assert_allclose(open_scores(out)["scores"], s, rtol=1e-6, atol=1e-6)
    # npz members stream without loading the whole array, chunks skipped on request
    np.savez(tmp_path / "plain.npz", X)
    got = list(sources.NpzSource(tmp_path / "plain.npz").chunks(16, lambda i: i != 1))
    assert [i for i, _ in got] == [0, 1, 2, 3] and got[1][1] is None
    np.testing.assert_array_equal(got[3][1], X[48:])
    np.testing.assert_array_equal(sources.NpzSource(tmp_path / "plain.npz").read(3, 9), X[3:9])


def test_per_input_references_from_a_file(tmp_path):
    r = np.random.default_rng(3).normal(size=(N, 3, *SHAPE)).astype(np.float32)
    np.save(tmp_path / "r.npy", r)
    out = run(tmp_path, X, refs=tmp_path / "r.npy")
    s, d = jaxlift.attribute(mlp, P, X, r, target=1, return_delta=True)
    got = open_scores(out)
    np.testing.assert_allclose(got["scores"], s, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["delta"], d, rtol=1e-6, atol=1e-6)


def test_interrupted_run_resumes_to_the_same_bytes(tmp_path, reference_store):
    _, want = reference_store
    die_at = {"row": None}

    def flaky():  # batches of 8 rows; dies when it reaches row die_at["row"]
        for b in range(0, N, 8):
            if b == die_at["row"]:
                raise KeyboardInterrupt
            yield X[b:b + 8]

    src = sources.IterableSource(flaky, n=N)  # the same inputs as X, so X resumes it
    die_at["row"] = 40  # chunks 0 and 1 (rows 0-31) are done, chunk 2 never is
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, src)
    out = tmp_path / "out"
    assert scores_store.done_chunks(out) == {0, 1}
    with pytest.raises(ScoresStoreError, match="incomplete: 2 of 4 chunks done"):
        open_scores(out)
    # a temporary left by a killed writer (a dead process id) is removed on resume
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = out / "chunks" / temp_prefix("00000002.npz").replace(str(os.getpid()), dead)
    stale = stale.with_name(stale.name + "abc.tmp")
    stale.write_bytes(b"half a chunk")
    want = {k: v for k, v in want.items() if k != "manifest.json"}
    run(tmp_path, X)
    assert files_of(out, manifest=False) == want and leftover_files(out) == []
    # an already complete store is left as it is
    run(tmp_path, X)
    assert files_of(out, manifest=False) == want


def test_changed_run_is_refused_naming_what_changed(tmp_path, reference_store):
    out, want = reference_store
    src = out.parent / "x.npy"
    cases = {
        "params": dict(params=mlp_params(seed=5)),
        "references": dict(refs=REFS + 1),
        "options": dict(target=2),
        "program": dict(fn=lambda p, x: mlp(p, jnp.tanh(x))),
        "inputs": dict(source=X[::-1].copy()),
        "chunk_size": dict(chunk_size=8),
    }
    for what, change in cases.items():
        kw = {"fn": mlp, "params": P, "source": src, "refs": REFS, "target": 1,
              "chunk_size": CHUNK, **change}
        with pytest.raises(FingerprintMismatchError, match=f"changed: {what}") as e:
            attribute_dataset(kw.pop("fn"), kw.pop("params"), kw.pop("source"), kw.pop("refs"),
                              out=out, quiet=True, **kw)
        assert e.value.changed[0].startswith(what) and len(e.value.changed) == 1
    assert files_of(out) == want


def test_processes_split_the_chunks(tmp_path, reference_store):
    """Process 1 of 2, then process 0 (which assembles the store): the one-process bytes."""
    _, want = reference_store
    run(tmp_path, X, process_index=1, process_count=2)
    assert scores_store.done_chunks(tmp_path / "out") == {1, 3}
    assert not (tmp_path / "out" / "scores.npy").exists()
    run(tmp_path, X, process_index=0, process_count=2)
    assert files_of(tmp_path / "out", manifest=False) == {
        k: v for k, v in want.items() if k != "manifest.json"}


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="chunk_size=0"):
        run(tmp_path, X, chunk_size=0)
    with pytest.raises(TypeError, match="return_delta"):
        run(tmp_path, X, return_delta=False)
    with pytest.raises(ValueError, match=r"refs of shape \(2, 4, 3\)"):
        run(tmp_path, X, refs=np.zeros((2, 4, 3), np.float32))
    with pytest.raises(ValueError, match="not a callable"):
        run(tmp_path, X, refs=lambda x, key: x)
    with pytest.raises(ValueError, match="process_index=2"):
        run(tmp_path, X, process_index=2, process_count=2)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.txt").write_text("x")
    with pytest.raises(ScoresStoreError, match="not a jaxlift scores store"):
        attribute_dataset(mlp, P, X, REFS, out=tmp_path / "photos", target=1, quiet=True)
    with pytest.raises(ScoresStoreError, match="no manifest.json"):
        open_scores(tmp_path / "photos")
    with pytest.raises(sources.SourceError, match="no such file"):
        sources.as_source(tmp_path / "missing.npy")
    with pytest.raises(sources.SourceError, match="holds 2 arrays"):
        np.savez(tmp_path / "two.npz", a=X, b=X)
        sources.as_source(tmp_path / "two.npz")
    with pytest.raises(sources.SourceError, match="one-shot iterator"):
        sources.as_source(iter([X]))
    with pytest.raises(sources.SourceError, match="expected float32"):
        run(tmp_path, [X[:20], X[20:].astype(np.float64)], name="mixed")
    (tmp_path / "trunc.npy").write_bytes((REPO / "pyproject.toml").read_bytes()[:10])
    with pytest.raises(sources.SourceError, match="not an .npy file"):
        sources.as_source(tmp_path / "trunc.npy")


# ------------------------------------------------------------------ subprocess tests (slow)

SCRIPT = textwrap.dedent("""
    import sys, os
    sys.path.insert(0, {repo!r})
    import jax, jax.numpy as jnp, numpy as np
    {setup}
    from jaxlift.dataset import attribute_dataset

    def fn(p, x):
        h = jax.nn.relu(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"])
        return h @ p["w2"]

    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    d = int(np.prod(np.load({x!r}, mmap_mode="r").shape[1:]))
    p = {{"w1": jax.random.normal(k1, (d, {hidden})) / np.sqrt(d), "b1": jnp.full({hidden}, .1),
         "w2": jax.random.normal(k2, ({hidden}, 10))}}
    refs = np.random.default_rng(1).uniform(size=({k},) + np.load({x!r}, mmap_mode="r").shape[1:]
                                           ).astype(np.float32)
    attribute_dataset(fn, p, {x!r}, refs, out={out!r}, target=3, chunk_size={chunk},
                      progress=False, quiet=True)
    {after}
""")


def script(tmp_path, x, out, *, k=8, hidden=16, chunk=64, setup="", after="", name="run.py"):
    path = tmp_path / name
    path.write_text(SCRIPT.format(repo=str(REPO), x=str(x), out=str(out), k=k, hidden=hidden,
                                  chunk=chunk, setup=setup, after=after))
    return path


def env():
    e = dict(os.environ)
    e.setdefault("XLA_FLAGS", "--xla_llvm_disable_expensive_passes=true")
    return e


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path):
    x = np.random.default_rng(0).uniform(size=(2000, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    whole = script(tmp_path, tmp_path / "x.npy", tmp_path / "whole", name="whole.py")
    subprocess.run([sys.executable, whole], check=True, env=env(), timeout=600)
    want = files_of(tmp_path / "whole")
    out = tmp_path / "killed"
    killed = script(tmp_path, tmp_path / "x.npy", out, name="killed.py")
    rng = random.Random(1234)
    kills = 0
    for _attempt in range(5):
        proc = subprocess.Popen([sys.executable, killed], env=env())
        target = rng.randint(1, 30)  # chunks done before the kill (32 in all)
        deadline = time.time() + 300
        while (proc.poll() is None and time.time() < deadline
               and len(scores_store.done_chunks(out)) < target):
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        if (out / "scores.npy").exists() and json.loads(
                (out / "manifest.json").read_text())["complete"]:
            break
    assert kills >= 3
    subprocess.run([sys.executable, killed], check=True, env=env(), timeout=600)
    assert files_of(out) == want
    assert leftover_files(out) == []
    assert not [p for p in tmp_path.rglob("*") if "jaxlift-tmp" in p.name]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_jax_distributed_equal_one(tmp_path):
    x = np.random.default_rng(0).uniform(size=(700, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    one = script(tmp_path, tmp_path / "x.npy", tmp_path / "one", name="one.py")
    subprocess.run([sys.executable, one], check=True, env=env(), timeout=600)
    port = free_port()
    setup = ("jax.distributed.initialize(coordinator_address='localhost:{port}', "
             "num_processes=2, process_id=int(sys.argv[1]))").format(port=port)
    after = "assert jax.process_count() == 2; print('rank', jax.process_index(), 'done')"
    two = script(tmp_path, tmp_path / "x.npy", tmp_path / "two", setup=setup, after=after,
                 name="two.py")
    procs = [subprocess.Popen([sys.executable, two, str(r)], env=env(), stdout=subprocess.PIPE,
                              text=True) for r in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all(f"rank {r} done" in o for r, o in enumerate(outs))
    assert files_of(tmp_path / "two") == files_of(tmp_path / "one")


PEAK = ("rss = [int(l.split()[1]) for l in open('/proc/self/status') "
        "if l.startswith('VmHWM')][0]; print('PEAK_KB', rss)")


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_n(tmp_path):
    """10⁴ and 10⁵ MNIST-size inputs × 8 references streamed from a .npy: peak RSS within 10 %."""
    peaks = {}
    for n in (10_000, 100_000):
        path = tmp_path / f"x{n}.npy"
        x = np.lib.format.open_memmap(path, "w+", np.float32, (n, 28, 28))
        for s in range(0, n, 10_000):
            x[s:s + 10_000] = np.random.default_rng(s).uniform(size=(min(10_000, n - s), 28, 28))
        x.flush()
        del x
        py = script(tmp_path, path, tmp_path / f"out{n}", chunk=1024, after=PEAK,
                    name=f"rss{n}.py")
        res = subprocess.run([sys.executable, py], env=env(), timeout=1200,
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-3000:]
        peaks[n] = int(res.stdout.split("PEAK_KB")[1].split()[0])
        got = open_scores(tmp_path / f"out{n}")
        assert got["scores"].shape == (n, 28, 28)
        assert np.abs(got["gap"]).max() < 1e-3
        os.unlink(path)
    print("peak RSS (kB) by N:", peaks)
    assert peaks[100_000] <= 1.10 * peaks[10_000], peaks


@pytest.mark.slow  # two compilations of the shipped CNN: ~9 s on 2 busy cores
def test_cli_streams_into_a_folder_and_resumes(tmp_path, capsys):
    from jaxlift import cli
    data = REPO / "jaxlift" / "data"
    with np.load(data / "mnist_digits.npz") as z:
        digits = z[z.files[0]][:20]
    np.save(tmp_path / "d.npy", digits)
    argv = ["attribute", str(data / "mnist_small.h5"), str(tmp_path / "d.npy"), "--target", "3",
            "--mode", "rescale", "-q"]
    assert cli.main(argv + ["--out", str(tmp_path / "st")]) == 0
    assert cli.main(argv + ["--out", str(tmp_path / "s.npz")]) == 0
    got, want = open_scores(tmp_path / "st"), np.load(tmp_path / "s.npz")
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["delta"], want["delta"], rtol=1e-5, atol=1e-6)
    assert cli.main(argv + ["--out", str(tmp_path / "st")]) == 0  # complete: nothing to do
    capsys.readouterr()
    assert cli.main(argv[:3] + ["--target", "4", "-q", "--out", str(tmp_path / "st")]) == 1
    assert "changed: options" in capsys.readouterr().err
    assert cli.main(argv[:3] + ["--out", str(tmp_path / "st2")]) == 2  # a usage error
    assert "--target pred" in capsys.readouterr().err
