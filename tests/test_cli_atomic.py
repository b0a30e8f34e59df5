"""A run's outputs appear together or not at all, and no temporary outlives it.

The helpers of :mod:`jaxlift.io.atomic` are checked directly (owner-named temporaries, which
of them are stale, a staged folder and its commit); ``jaxlift attribute`` is then failed
in-process while it renders or saves (nothing changes, nothing is left), stopped by SIGTERM
(it cleans up) and killed by SIGKILL at two points (its leftovers are removed by the next run,
which writes complete outputs).
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxlift import cli, viz
from jaxlift.io import atomic

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "jaxlift" / "data" / "mnist_small.h5"
DIGITS = REPO / "jaxlift" / "data" / "mnist_digits.npz"
N = 4  # inputs per run: 4 PNGs, rendered in about a second


def temporaries(folder: Path) -> list[str]:
    """Everything under ``folder`` that an atomic writer made as a temporary."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if atomic.TEMP_MARK in p.name or p.name.endswith(".tmp"))


def snapshot(folder: Path) -> dict[str, bytes]:
    """The files under ``folder`` and their bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def temp_name(target: str, pid: int, host: str | None = None, tail: str = "abc12345") -> str:
    return f".{target}.{atomic.TEMP_MARK}-{pid}@{atomic._host() if host is None else host}-{tail}.tmp"


def assert_complete(folder: Path, npz: str = "s.npz", png: str = "png") -> None:
    """``npz`` holds all N inputs' scores and ``png`` one valid PNG per input."""
    with np.load(folder / npz) as z:
        assert z["scores"].shape == (N, 28, 28, 1)
    names = sorted(p.name for p in (folder / png).iterdir())
    assert names == [f"input_{i:04d}.png" for i in range(N)]
    for name in names:
        with Image.open(folder / png / name) as im:
            im.verify()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("atomic_inputs")
    with np.load(DIGITS) as z:
        np.save(d / "digits.npy", z["x"][:N])
    return d / "digits.npy"


# ============================================================================ the helpers


def test_temporary_names_carry_target_and_owner(tmp_path):
    name = atomic.temp_prefix("scores.npz") + "k3j_9x1a.tmp"
    assert atomic.temp_owner(name) == ("scores.npz", os.getpid(), atomic._host())
    assert atomic.temp_owner(temp_name("my.pngs", 7, "a-b-c")) == ("my.pngs", 7, "a-b-c")
    for other in ("scores.npz", ".scores.npz.k3j9x1ab.tmp", ".scores.npz.jaxlift-tmp-x@h-a.tmp"):
        assert atomic.temp_owner(other) is None
    atomic.write_atomically(tmp_path / ("x" * 250), lambda fh: fh.write(b"long name"))
    assert (tmp_path / ("x" * 250)).read_bytes() == b"long name"  # the temporary's name fit


def test_remove_stale_temporaries(tmp_path):
    dead, alive = dead_pid(), os.getppid()
    old = time.time() - 2 * atomic.STALE_AFTER_S
    stale = [temp_name("s.npz", dead), temp_name("s.npz", os.getpid(), tail="own"),
             temp_name("s.npz", alive, tail="old"), temp_name("s.npz", 1, "otherhost", "old")]
    kept = [temp_name("s.npz", alive), temp_name("s.npz", 1, "otherhost"),
            temp_name("t.npz", dead), ".s.npz.mybackup.tmp", "s.npz"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"")
    for name in stale[2:] + kept[-2:]:
        os.utime(tmp_path / name, (old, old))
    folder = tmp_path / temp_name("png", dead)  # a folder with PNGs in it
    folder.mkdir()
    (folder / "input_0000.png").write_bytes(b"png")

    removed = atomic.remove_stale_temporaries(tmp_path, "s.npz")
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + [folder.name])
    removed = atomic.remove_stale_temporaries(tmp_path)  # of any target
    assert sorted(removed) == sorted([folder, tmp_path / kept[2]])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept[:2] + kept[3:])
    assert atomic.remove_stale_temporaries(tmp_path / "missing") == []


def test_staged_folder_leaves_nothing_on_error(tmp_path):
    dest = tmp_path / "a" / "b" / "png"
    with pytest.raises(KeyboardInterrupt):
        with atomic.staged_folder(dest) as tmp:
            assert tmp.parent == dest.parent and atomic.temp_owner(tmp.name)[:2] == (
                "png", os.getpid())
            (tmp / "x.png").write_bytes(b"x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []  # the parents it made are gone too
    with atomic.staged_folder(dest) as tmp:
        pass  # not committed
    assert list(tmp_path.iterdir()) == []


def test_commit_folder_new_and_existing(tmp_path):
    dest = tmp_path / "png"
    with atomic.staged_folder(dest) as tmp:
        (tmp / "a.png").write_bytes(b"new a")
        inode = tmp.stat().st_ino
        assert atomic.commit_folder(tmp, dest) == [dest / "a.png"]
    assert dest.stat().st_ino == inode  # one rename: the files appeared together
    (dest / "notes.txt").write_bytes(b"mine")
    inode = dest.stat().st_ino
    with atomic.staged_folder(dest) as tmp:
        (tmp / "a.png").write_bytes(b"newer a")
        (tmp / "b.png").write_bytes(b"new b")
        atomic.commit_folder(tmp, dest)
    assert dest.stat().st_ino == inode  # an existing folder is kept, its files replaced
    assert snapshot(dest) == {"a.png": b"newer a", "b.png": b"new b", "notes.txt": b"mine"}
    (dest / "c.png").mkdir()
    with pytest.raises(IsADirectoryError):
        with atomic.staged_folder(dest) as tmp:
            (tmp / "b.png").write_bytes(b"newest b")
            (tmp / "c.png").write_bytes(b"c")
            atomic.commit_folder(tmp, dest)
    assert snapshot(dest) == {"a.png": b"newer a", "b.png": b"new b", "notes.txt": b"mine"}
    assert temporaries(tmp_path) == []


# ============================================================================ in-process


@pytest.fixture(scope="module")
def computed(inputs) -> cli.Result:
    """The scores of the inputs, computed once for the in-process runs."""
    loaded = cli.load_model(MODEL)
    x = cli.load_batch([str(inputs)], loaded.input_shape, "inputs").x
    return cli.explain(loaded, x, np.zeros((1, *loaded.input_shape), np.float32),
                       cli.TargetSpec("pred"), mode="reveal_cancel")


@pytest.fixture
def fast_explain(monkeypatch, computed) -> None:
    """In-process runs reuse ``computed`` instead of compiling again: what they check starts
    after the scores are known (tests/test_cli.py runs the whole command)."""
    monkeypatch.setattr(cli.commands, "explain", lambda *args, **kwargs: computed)


def attribute(tmp_path: Path, inputs: Path, capsys) -> tuple[int, str]:
    """``jaxlift attribute`` in-process, writing s.npz and png/ in ``tmp_path``."""
    try:
        code = cli.main(["attribute", str(MODEL), str(inputs), "--out", str(tmp_path / "s.npz"),
                         "--png", str(tmp_path / "png"), "-q"])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("where, exc, earlier", [
    ("png", OSError(errno.ENOSPC, "No space left on device"), False),
    ("png", KeyboardInterrupt(), True),
    ("npz", OSError(errno.ENOSPC, "No space left on device"), True),
], ids=["png-full-disk", "png-ctrl-c-over-earlier-run", "npz-full-disk-over-earlier-run"])
def test_failure_changes_nothing(where, exc, earlier, tmp_path, inputs, capsys, monkeypatch,
                                 fast_explain):
    """A failure after the first PNG, or while the npz is saved, leaves the outputs as they
    were (absent, or an earlier run's) and no temporary."""
    if earlier:
        (tmp_path / "s.npz").write_bytes(b"earlier scores")
        (tmp_path / "png").mkdir()
        (tmp_path / "png" / "input_0000.png").write_bytes(b"earlier png")
    before = snapshot(tmp_path)
    if where == "png":
        save_png, calls = viz.save_png, []

        def fail_after_first(fig, path, **kw):
            calls.append(path)
            if len(calls) > 1:
                raise exc
            return save_png(fig, path, **kw)

        monkeypatch.setattr(viz, "save_png", fail_after_first)
    else:
        def fail(*a, **k):
            raise exc
        monkeypatch.setattr(np, "savez", fail)
    code, err = attribute(tmp_path, inputs, capsys)
    assert code == (130 if isinstance(exc, KeyboardInterrupt) else 1), err
    if where == "png":
        assert len(calls) == 2
    assert snapshot(tmp_path) == before
    assert (tmp_path / "png").exists() == earlier
    assert temporaries(tmp_path) == []


def test_existing_folder_and_leftovers(tmp_path, inputs, capsys, fast_explain):
    """Into an existing folder: the run's PNGs replace those of their names, other files stay;
    leftovers of killed runs are removed first, those of a live run are not."""
    png = tmp_path / "png"
    png.mkdir()
    (png / "input_0000.png").write_bytes(b"earlier png")
    (png / "input_0099.png").write_bytes(b"from a bigger earlier run")
    (png / "notes.txt").write_bytes(b"mine")
    dead, alive = dead_pid(), os.getppid()
    left = [tmp_path / temp_name("s.npz", dead), tmp_path / temp_name("png", dead),
            png / temp_name("input_0001.png", dead)]
    left[0].write_bytes(b"")
    left[1].mkdir()
    (left[1] / "input_0000.png").write_bytes(b"half a run")
    left[2].write_bytes(b"")
    live = tmp_path / temp_name("s.npz", alive)
    live.write_bytes(b"")

    code, err = attribute(tmp_path, inputs, capsys)
    assert code == 0, err
    assert temporaries(tmp_path) == [live.name]
    assert (png / "notes.txt").read_bytes() == b"mine"
    assert (png / "input_0099.png").read_bytes() == b"from a bigger earlier run"
    (png / "notes.txt").unlink()
    (png / "input_0099.png").unlink()
    assert_complete(tmp_path)


# ============================================================================ signals


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory) -> Path:
    """A persistent compilation cache the subprocesses share: each run after the first skips
    XLA compilation (about half of its time)."""
    return tmp_path_factory.mktemp("jax_cache")


def start(cwd: Path, inputs: Path, jax_cache: Path) -> subprocess.Popen:
    """``python -m jaxlift.cli attribute`` writing s.npz and png/ in ``cwd``."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "JAX_COMPILATION_CACHE_DIR": str(jax_cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "jaxlift.cli", "attribute", str(MODEL), str(inputs),
         "--out", "s.npz", "--png", "png", "-q"],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def png_staging(cwd: Path, owner: subprocess.Popen | None = None) -> list[Path]:
    """The temporary folders for png/ in ``cwd`` (of process ``owner`` only, if given)."""
    return sorted(p for p in cwd.glob(f".png.{atomic.TEMP_MARK}-*")
                  if owner is None or atomic.temp_owner(p.name)[1] == owner.pid)


def stop_when(proc: subprocess.Popen, ready, sig: int, timeout: float = 240) -> None:
    """Send ``sig`` to ``proc`` as soon as ``ready()`` holds (polled every 2 ms), then reap it;
    fails if the process ends first."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, f"ended before the signal: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.002)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_sigterm_cleans_up(tmp_path, inputs, jax_cache):
    proc = start(tmp_path, inputs, jax_cache)
    stop_when(proc, lambda: png_staging(tmp_path, proc), signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.returncode == 143, err
    assert err == "jaxlift: terminated\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sigkill_then_rerun(tmp_path, inputs, jax_cache):
    """Killed as it starts rendering, then after its first PNG; the next run removes what the
    killed ones left and writes complete outputs."""
    first = start(tmp_path, inputs, jax_cache)
    stop_when(first, lambda: png_staging(tmp_path, first), signal.SIGKILL)
    assert first.returncode == -signal.SIGKILL
    left = png_staging(tmp_path)
    assert [atomic.temp_owner(p.name)[1] for p in left] == [first.pid]
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "png").exists()

    second = start(tmp_path, inputs, jax_cache)
    stop_when(second, lambda: any(p.glob("*.png") for p in png_staging(tmp_path, second)),
              signal.SIGKILL)
    assert second.returncode == -signal.SIGKILL
    assert [atomic.temp_owner(p.name)[1] for p in png_staging(tmp_path)] == [second.pid]
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "png").exists()

    third = start(tmp_path, inputs, jax_cache)
    _, err = third.communicate(timeout=240)
    assert third.returncode == 0, err
    assert_complete(tmp_path)
    assert temporaries(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["png", "s.npz"]
