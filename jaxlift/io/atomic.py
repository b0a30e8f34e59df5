"""Files written whole or not at all."""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None], *,
                     what: str = "file") -> Path:
    """``write(fh)`` fills a temporary file beside ``path``, which then replaces ``path``
    (``os.replace``): readers never see a half-written file, and a failure leaves none behind.

    A folder that cannot take the temporary file raises ``OSError`` naming ``what``, the file and
    the folder.
    """
    path = Path(path)
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
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
