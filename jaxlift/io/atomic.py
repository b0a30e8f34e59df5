"""Files written whole or not at all, folders of files moved into place together, and the
removal of the temporaries a killed writer leaves.

Every temporary made here is hidden and named after its target, its owner and ``jaxlift-tmp``::

    .scores.npz.jaxlift-tmp-4242@myhost-k3j9x1ab.tmp     (a file being written)
    .heatmaps.jaxlift-tmp-4242@myhost-0f3a9c2e.tmp       (a folder being filled)

so that one left by a process that died on ``SIGKILL`` (nothing can clean up after that) is
recognised, by its owner's process id and host, and removed by :func:`remove_stale_temporaries`.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

TEMP_MARK = "jaxlift-tmp"
STALE_AFTER_S = 60.0
"""A temporary whose owner cannot be checked (another host, or a live process that may have
reused a dead owner's id) counts as stale once untouched for this many seconds."""
_MAX_STEM = 150  # keeps temporary names within the usual 255-byte limit

_TEMP_RE = re.compile(rf"\.(?P<stem>.+)\.{TEMP_MARK}-(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]*)"
                      r"-[A-Za-z0-9_]+\.tmp")


@functools.lru_cache(maxsize=1)
def _host() -> str:
    """This machine's name as temporary names carry it (letters, digits and ``-``)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32]


def temp_prefix(name: str) -> str:
    """The start of the name of a temporary for target file or folder ``name`` made by this
    process: ``.NAME.jaxlift-tmp-PID@HOST-`` (NAME cut to 150 characters)."""
    return f".{name[:_MAX_STEM]}.{TEMP_MARK}-{os.getpid()}@{_host()}-"


def temp_owner(name: str) -> tuple[str, int, str] | None:
    """``(target name, pid, host)`` of a temporary's file name made by :func:`temp_prefix`;
    None for any other name."""
    m = _TEMP_RE.fullmatch(name)
    return None if m is None else (m["stem"], int(m["pid"]), m["host"])


def _pid_alive(pid: int) -> bool | None:
    """Whether process ``pid`` exists on this machine; None where that cannot be asked."""
    if os.name != "posix":
        return None  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return None
    return True


def _last_touched(path: Path) -> float:
    """Latest modification time of ``path`` and, for a folder, of its entries."""
    times = [path.lstat().st_mtime]
    if path.is_dir() and not path.is_symlink():
        with os.scandir(path) as it:
            for e in it:
                with contextlib.suppress(OSError):
                    times.append(e.stat(follow_symlinks=False).st_mtime)
    return max(times)


def is_stale(path: Path, *, max_age: float = STALE_AFTER_S, now: float | None = None) -> bool:
    """Whether ``path`` is a jaxlift temporary that no running writer owns.

    Stale: its owner, on this host, is dead or is this very process (whose writers remove
    their own temporaries when they fail, so one under its id is from an earlier process with
    the same id); or, whoever the owner, it has been untouched for ``max_age`` seconds. Any
    name :func:`temp_prefix` did not make is never stale.
    """
    owner = temp_owner(path.name)
    if owner is None:
        return False
    _, pid, host = owner
    if host == _host() and (pid == os.getpid() or _pid_alive(pid) is False):
        return True
    try:
        age = (time.time() if now is None else now) - _last_touched(path)
    except OSError:
        return False  # gone already
    return age >= max_age


def remove_stale_temporaries(folder: str | os.PathLike, name: str | None = None, *,
                             max_age: float = STALE_AFTER_S) -> list[Path]:
    """Remove the stale (:func:`is_stale`) temporaries in ``folder`` for target ``name`` (any
    target when None) and return them. Call it before this process writes these targets.

    Only names made by :func:`temp_prefix` are touched; a missing folder holds none; entries
    that vanish or cannot be removed meanwhile (another run cleaning up) are skipped.
    """
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for e in entries:
        owner = temp_owner(e.name)
        if owner is None or (name is not None and owner[0] != name[:_MAX_STEM]):
            continue
        path = folder / e.name
        if not is_stale(path, max_age=max_age):
            continue
        try:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except OSError:
            continue
        removed.append(path)
    return removed


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None], *,
                     what: str = "file") -> Path:
    """``write(fh)`` fills a temporary file beside ``path``, which then replaces ``path``
    (``os.replace``): readers never see a half-written file, and a failure leaves none behind
    (a process killed meanwhile leaves a temporary that :func:`remove_stale_temporaries`
    recognises).

    A folder that cannot take the temporary file raises ``OSError`` naming ``what``, the file and
    the folder.
    """
    path = Path(path)
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OSError(exc.errno or errno.EACCES,
                      f"cannot save {what} {path.name!r}: folder is not writable "
                      f"({exc.strerror})", os.path.abspath(folder)) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _destination(dest: str | os.PathLike) -> Path:
    """``dest`` as an absolute path, through a symbolic link if it is one (so that a temporary
    beside it is on the same filesystem as what it becomes)."""
    path = os.path.abspath(dest)
    return Path(os.path.realpath(path) if os.path.islink(path) else path)


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones this call created,
    outermost first."""
    missing = []
    while not os.path.lexists(folder) and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    created = []
    for p in reversed(missing):
        try:
            os.mkdir(p)
        except FileExistsError:
            continue
        created.append(p)
    return created


def _make_temp_folder(dest: Path, what: str) -> Path:
    """A new empty folder ``.NAME.jaxlift-tmp-PID@HOST-XXXXXXXX.tmp`` beside ``dest``, with
    the permissions ``os.mkdir`` gives (``0o777`` less the umask, as a folder made for
    ``dest`` directly would have)."""
    for _ in range(100):
        tmp = dest.parent / f"{temp_prefix(dest.name)}{secrets.token_hex(4)}.tmp"
        try:
            os.mkdir(tmp)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OSError(exc.errno or errno.EACCES,
                          f"cannot save {what} {dest.name!r}: folder is not writable "
                          f"({exc.strerror})", str(dest.parent)) from exc
        return tmp
    raise FileExistsError(errno.EEXIST, f"cannot save {what} {dest.name!r}: no free temporary "
                          "folder name", str(dest.parent))


@contextlib.contextmanager
def staged_folder(dest: str | os.PathLike, *, what: str = "files") -> Iterator[Path]:
    """A fresh empty temporary folder beside ``dest`` (its missing parents created), to fill
    and then move into place with :func:`commit_folder` inside the ``with`` block.

    The temporary folder does not outlive the block: unless committed, it is removed with what
    it holds, on success or on any exception (``KeyboardInterrupt`` included), and so are the
    parents made for it that are still empty. Only ``SIGKILL`` (or a power cut) can leave it,
    under a name that :func:`remove_stale_temporaries` recognises.
    """
    dest = _destination(dest)
    created = _make_parents(dest.parent)
    tmp = None
    try:
        tmp = _make_temp_folder(dest, what)
        yield tmp
    finally:
        if tmp is not None and os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        for p in reversed(created):
            with contextlib.suppress(OSError):
                os.rmdir(p)  # fails, as it should, once it holds dest


def check_commit_folder(tmp: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Raise ``IsADirectoryError`` if :func:`commit_folder` would have to replace a folder
    in ``dest`` by a file of ``tmp``; it moves nothing."""
    dest = _destination(dest)
    for name in sorted(os.listdir(tmp)):
        target = dest / name
        if target.is_dir() and not target.is_symlink():
            raise IsADirectoryError(errno.EISDIR, f"cannot replace folder {name!r} by a file",
                                    str(target))


def commit_folder(tmp: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Move the files of ``tmp`` (a folder from :func:`staged_folder`) into ``dest`` and
    return their new paths.

    ``dest`` absent: ``tmp`` is renamed to ``dest``, one atomic step, so all the files appear
    at once. ``dest`` existing (a folder the user has, even empty, is never replaced): each file
    of ``tmp`` replaces the one of the same name in ``dest`` (``os.replace``, each atomic; the
    other entries of ``dest`` are left as they are), then ``tmp`` is removed. These renames take
    milliseconds; a process killed among them leaves some files replaced and the others in
    ``tmp``, for :func:`remove_stale_temporaries`. Nothing is moved if a file would replace a
    folder (``IsADirectoryError``, see :func:`check_commit_folder`).
    """
    tmp, dest = Path(tmp), _destination(dest)
    names = sorted(os.listdir(tmp))
    if not os.path.lexists(dest):
        try:
            os.rename(tmp, dest)
            return [dest / n for n in names]
        except OSError as exc:  # made meanwhile by someone else: merge into it
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not dest.is_dir():
                raise
    check_commit_folder(tmp, dest)
    for n in names:
        os.replace(tmp / n, dest / n)
    os.rmdir(tmp)
    return [dest / n for n in names]
