"""Data sets read chunk by chunk: ``.npy``, ``.npz``, HDF5 datasets, folders of images, arrays,
and any iterable of batches.

A source has ``n`` (rows; None while unknown, for an iterator), ``row_shape`` and ``dtype``
(of one row), and :meth:`Source.chunks`, which yields ``(index, rows)`` for consecutive chunks
of ``size`` rows (the last one shorter), reading only the chunks asked for. Memory: one chunk.

* :class:`NpySource` reads an ``.npy`` file with positioned reads (``os.pread``) rather than a
  memory map: the file's pages then stay in the page cache and do not count towards the
  process's resident memory, which therefore does not grow with N.
* :class:`NpzSource` streams one member of an ``.npz`` (compressed or not).
* :class:`Hdf5Source` slices an HDF5 dataset (h5py).
* :class:`ImageFolderSource` reads the image files of a folder in sorted name order, resized to
  a given (height, width), as float32 in [0, 1] (:func:`jaxlift.io.images.load_image`).
* :class:`ArraySource` wraps anything with ``shape``, ``dtype`` and row slicing (a NumPy array,
  an ``np.memmap``, an ``h5py.Dataset``, a Zarr array).
* :class:`IterableSource` re-chunks an iterable of batches ``(b, *row_shape)``; it must be
  re-iterable (a list, or a callable returning a fresh iterator) for a run to resume.

:func:`as_source` picks one from a path or object.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from jaxlift.errors import InputValueError, JaxliftError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


class SourceError(JaxliftError, ValueError):
    """A data set that cannot be read as asked; the message names the file and the problem."""


def _check_rows(arr: np.ndarray, row_shape: tuple[int, ...], dtype: np.dtype, what: str
                ) -> np.ndarray:
    if arr.shape[1:] != tuple(row_shape) or arr.dtype != dtype:
        raise SourceError(f"{what}: a batch of {arr.dtype}{arr.shape[1:]} rows, expected "
                          f"{dtype}{tuple(row_shape)} like the first batch")
    return arr


class Source:
    """A data set of ``n`` rows of ``row_shape`` and ``dtype``, read a chunk at a time."""

    n: int | None
    row_shape: tuple[int, ...]
    dtype: np.dtype
    name: str = "data set"

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a NumPy array (random-access sources)."""
        raise NotImplementedError

    def chunks(self, size: int, wanted: Callable[[int], bool] = lambda i: True
               ) -> Iterator[tuple[int, np.ndarray | None]]:
        """``(i, rows i·size … (i+1)·size)`` for every chunk ``i`` in order; the rows are None
        where ``wanted(i)`` is false (not read)."""
        for i in range(-(-self.n // size)):
            yield i, (self.read(i * size, min(self.n, (i + 1) * size)) if wanted(i) else None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}: {self.n} × {self.dtype}{self.row_shape})"


class ArraySource(Source):
    """Rows of an array-like object (``shape``, ``dtype``, ``obj[a:b]``)."""

    def __init__(self, array: Any, name: str = "array"):
        if not hasattr(array, "shape") or not hasattr(array, "dtype") or len(array.shape) < 1:
            raise SourceError(f"{name}: not an array with a leading batch axis")
        self.array, self.name = array, name
        self.n, self.row_shape = int(array.shape[0]), tuple(array.shape[1:])
        self.dtype = np.dtype(array.dtype)

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[start:stop])


class NpySource(Source):
    """An ``.npy`` file read with positioned reads (C order, no object dtype)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.name = str(self.path)
        try:
            with open(self.path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                shape, fortran, dtype = _read_header(fh, version)
                self.offset = fh.tell()
        except FileNotFoundError:
            raise SourceError(f"{self.path}: no such file") from None
        except ValueError as exc:
            raise SourceError(f"{self.path}: not an .npy file ({exc})") from None
        if dtype.hasobject:
            raise SourceError(f"{self.path}: object arrays cannot be streamed")
        if len(shape) < 1:
            raise SourceError(f"{self.path}: a 0-d array; expected a leading batch axis")
        if fortran and len(shape) > 1:
            raise SourceError(f"{self.path}: Fortran-order array; save it in C order "
                              "(np.save(path, np.ascontiguousarray(x)))")
        self.n, self.row_shape, self.dtype = shape[0], tuple(shape[1:]), dtype
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * dtype.itemsize
        size = os.path.getsize(self.path)
        if size < self.offset + self.n * self.row_bytes:
            raise SourceError(f"{self.path}: truncated ({size} bytes, the header announces "
                              f"{self.offset + self.n * self.row_bytes})")

    def read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, *self.row_shape), self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        fd = os.open(self.path, os.O_RDONLY)
        try:
            pos, got = self.offset + start * self.row_bytes, 0
            while got < len(view):
                k = os.preadv(fd, [view[got:]], pos + got) if hasattr(os, "preadv") else \
                    _pread_into(fd, view[got:], pos + got)
                if k == 0:
                    raise SourceError(f"{self.path}: ended early (truncated while reading?)")
                got += k
        finally:
            os.close(fd)
        return out


def _pread_into(fd: int, view: memoryview, pos: int) -> int:
    data = os.pread(fd, len(view), pos)
    view[:len(data)] = data
    return len(data)


def _read_header(fh, version) -> tuple[tuple[int, ...], bool, np.dtype]:
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fh)
    raise InputValueError(f"unsupported .npy format version {version}")


class NpzSource(Source):
    """One member of an ``.npz`` file, streamed (compressed or not): ``key`` names it, or the
    file has exactly one array."""

    def __init__(self, path: str | os.PathLike, key: str | None = None):
        self.path = Path(path)
        try:
            with zipfile.ZipFile(self.path) as zf:
                names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
        except FileNotFoundError:
            raise SourceError(f"{self.path}: no such file") from None
        except zipfile.BadZipFile as exc:
            raise SourceError(f"{self.path}: not an .npz file ({exc})") from None
        if key is None:
            if len(names) != 1:
                raise SourceError(f"{self.path}: holds {len(names)} arrays ({', '.join(names)});"
                                  " name the one to read (NpzSource(path, key) or PATH:KEY)")
            key = names[0]
        if key not in names:
            raise SourceError(f"{self.path}: no array {key!r} (it has {', '.join(names)})")
        self.key, self.name = key, f"{self.path}:{key}"
        with self._open() as (fh, shape, fortran, dtype):
            pass
        if dtype.hasobject or len(shape) < 1 or (fortran and len(shape) > 1):
            raise SourceError(f"{self.name}: cannot stream an object, 0-d or Fortran-order "
                              "array")
        self.n, self.row_shape, self.dtype = shape[0], tuple(shape[1:]), dtype
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * dtype.itemsize

    def _open(self):
        import contextlib

        @contextlib.contextmanager
        def opened():
            with zipfile.ZipFile(self.path) as zf, zf.open(self.key + ".npy") as fh:
                try:
                    header = _read_header(fh, np.lib.format.read_magic(fh))
                except ValueError as exc:
                    raise SourceError(f"{self.name}: not an .npy member ({exc})") from None
                yield (fh, *header)
        return opened()

    def chunks(self, size: int, wanted: Callable[[int], bool] = lambda i: True
               ) -> Iterator[tuple[int, np.ndarray | None]]:
        with self._open() as (fh, *_):
            for i in range(-(-self.n // size)):
                rows = min(size, self.n - i * size)
                if not wanted(i):
                    fh.seek(rows * self.row_bytes, os.SEEK_CUR)
                    yield i, None
                    continue
                data = fh.read(rows * self.row_bytes)
                if len(data) != rows * self.row_bytes:
                    raise SourceError(f"{self.name}: ended early (truncated file)")
                yield i, np.frombuffer(data, self.dtype).reshape(rows, *self.row_shape)

    def read(self, start: int, stop: int) -> np.ndarray:
        with self._open() as (fh, *_):
            fh.seek(start * self.row_bytes, os.SEEK_CUR)
            data = fh.read((stop - start) * self.row_bytes)
        return np.frombuffer(data, self.dtype).reshape(stop - start, *self.row_shape)


class Hdf5Source(ArraySource):
    """A dataset of an HDF5 file (``dataset``: its path in the file; optional when the file
    holds exactly one dataset)."""

    def __init__(self, path: str | os.PathLike, dataset: str | None = None):
        import h5py
        self.path = Path(path)
        try:
            self.file = h5py.File(self.path, "r")
        except FileNotFoundError:
            raise SourceError(f"{self.path}: no such file") from None
        except OSError as exc:
            raise SourceError(f"{self.path}: not an HDF5 file ({exc})") from None
        if dataset is None:
            found: list[str] = []
            self.file.visititems(lambda k, v: found.append(k)
                                 if isinstance(v, h5py.Dataset) else None)
            if len(found) != 1:
                raise SourceError(f"{self.path}: holds {len(found)} datasets "
                                  f"({', '.join(found[:10])}); name one (PATH:DATASET)")
            dataset = found[0]
        obj = self.file.get(dataset)
        if not isinstance(obj, h5py.Dataset):
            raise SourceError(f"{self.path}: no dataset {dataset!r}")
        super().__init__(obj, f"{self.path}:{dataset}")


class ImageFolderSource(Source):
    """The image files of ``folder`` (sorted by name) as float32 ``(H, W, C)`` in [0, 1],
    resized to ``size = (H, W)``; C = 1 with ``grayscale`` else 3. ``names`` lists the files
    in row order."""

    def __init__(self, folder: str | os.PathLike, size: tuple[int, int],
                 grayscale: bool = False):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder}: not a folder of images")
        self.files = sorted(p for p in self.folder.iterdir()
                            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not self.files:
            raise SourceError(f"{self.folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        if len(size) != 2 or min(size) < 1:
            raise SourceError(f"{self.folder}: image size {size!r}: give (height, width)")
        self.names = [p.name for p in self.files]
        self.size, self.grayscale, self.name = tuple(size), grayscale, str(self.folder)
        self.n, self.row_shape = len(self.files), (*self.size, 1 if grayscale else 3)
        self.dtype = np.dtype(np.float32)

    def read(self, start: int, stop: int) -> np.ndarray:
        from jaxlift.io.images import load_image
        return np.stack([load_image(p, self.size, self.grayscale)
                         for p in self.files[start:stop]])


class IterableSource(Source):
    """Batches ``(b, *row_shape)`` from ``batches`` (an iterable, or a callable returning a
    fresh iterator each time), re-cut into chunks. ``n`` is unknown until the end (or given)."""

    def __init__(self, batches: Iterable | Callable[[], Iterable], n: int | None = None,
                 name: str = "iterable of batches"):
        if isinstance(batches, Iterator):
            raise SourceError(f"{name}: a one-shot iterator cannot be read twice (once to "
                              "check its shape, and again to resume a run); pass a list or a "
                              "callable returning a fresh iterator")
        self.batches, self.name, self.n = batches, name, n
        first = next(iter(self._iterate()), None)
        if first is None:
            raise SourceError(f"{name}: no batches")
        self.row_shape, self.dtype = tuple(first.shape[1:]), first.dtype

    def _iterate(self) -> Iterator[np.ndarray]:
        it = self.batches() if callable(self.batches) else self.batches
        for b in it:
            b = np.asarray(b)
            if b.ndim < 1:
                raise SourceError(f"{self.name}: a batch without a leading batch axis")
            yield b

    def chunks(self, size: int, wanted: Callable[[int], bool] = lambda i: True
               ) -> Iterator[tuple[int, np.ndarray | None]]:
        pending: list[np.ndarray] = []
        count, i = 0, 0
        for b in self._iterate():
            pending.append(_check_rows(b, self.row_shape, self.dtype, self.name))
            count += len(b)
            while count >= size:
                rows = np.concatenate(pending) if len(pending) > 1 else pending[0]
                yield i, (rows[:size] if wanted(i) else None)
                pending, count, i = [rows[size:]], count - size, i + 1
        if count:
            yield i, (np.concatenate(pending) if wanted(i) else None)
            i += 1
        total = (i - 1) * size + count if count else i * size
        if self.n is not None and self.n != total:
            raise SourceError(f"{self.name}: gave {total} rows, expected {self.n}")
        self.n = total


def as_source(obj: Any, *, image_size: tuple[int, int] | None = None,
              grayscale: bool = False) -> Source:
    """A :class:`Source` for ``obj``: a Source as is; a path (``x.npy``, ``x.npz`` or
    ``x.npz:KEY``, ``x.h5`` or ``x.h5:DATASET``, a folder of images with ``image_size``); an
    array-like (NumPy, memmap, h5py, Zarr); or an iterable of batches (a list or a callable
    returning a fresh iterator)."""
    if isinstance(obj, Source):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        text = os.fspath(obj)
        path, _, key = text.rpartition(":") if ":" in Path(text).name else (text, "", "")
        path = path or text
        suffix = Path(path).suffix.lower()
        if Path(text).is_dir():
            if image_size is None:
                raise SourceError(f"{text}: a folder of images needs image_size=(H, W)")
            return ImageFolderSource(text, image_size, grayscale)
        if suffix == ".npy" and not key:
            return NpySource(path)
        if suffix == ".npz":
            return NpzSource(path, key or None)
        if suffix in HDF5_SUFFIXES:
            return Hdf5Source(path, key or None)
        raise SourceError(f"{text}: not a data set jaxlift reads (.npy, .npz[:KEY], "
                          ".h5[:DATASET], or a folder of images)")
    if hasattr(obj, "shape") and hasattr(obj, "dtype") and hasattr(obj, "__getitem__"):
        return ArraySource(obj)
    if callable(obj) or isinstance(obj, Iterable):
        return IterableSource(obj)
    raise SourceError(f"cannot read inputs from a {type(obj).__name__}: give a path, an "
                      "array or an iterable of batches")


class MappedSource(Source):
    """``f`` applied to every chunk of ``source`` (e.g. uint8 pixels → floats / 255); ``f``
    maps rows ``(b, *row_shape)`` to rows ``(b, *new row shape)`` of ``dtype``."""

    def __init__(self, source: Source, f: Callable[[np.ndarray], np.ndarray],
                 dtype: Any, row_shape: tuple[int, ...] | None = None):
        self.source, self.f, self.dtype = source, f, np.dtype(dtype)
        self.row_shape = source.row_shape if row_shape is None else tuple(row_shape)
        self.name = source.name

    @property
    def n(self) -> int | None:  # type: ignore[override]
        return self.source.n

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.f(self.source.read(start, stop))

    def chunks(self, size: int, wanted: Callable[[int], bool] = lambda i: True
               ) -> Iterator[tuple[int, np.ndarray | None]]:
        for i, rows in self.source.chunks(size, wanted):
            yield i, None if rows is None else self.f(rows)
