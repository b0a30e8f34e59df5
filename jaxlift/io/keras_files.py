"""One entry point for Keras model files: ``load_keras(path)`` reads a legacy HDF5 ``.h5``
(Keras 2 or 3) or a Keras 3 ``.keras`` zip archive, chosen by the file's content (not its
name); ``keras_info(path)`` describes either."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import h5py

from jaxlift.io import keras_h5, keras_v3
from jaxlift.io.keras_config import KerasFormatError, PathLike, existing_file

if TYPE_CHECKING:
    from jaxlift.models.generic import KerasModel

__all__ = ["load_keras", "keras_info", "keras_format"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def keras_format(path: PathLike) -> str:
    """``"keras"`` for a zip archive, ``"h5"`` for an HDF5 file; ``FileNotFoundError`` for a
    missing file, ``KerasFormatError`` for anything else."""
    p = existing_file(path)
    with open(p, "rb") as fh:
        head = fh.read(8)
    if head.startswith(keras_v3.ZIP_MAGIC):
        return "keras"
    if head == HDF5_MAGIC or h5py.is_hdf5(p):
        return "h5"
    raise KerasFormatError(f"{path}: not a readable HDF5 file (.h5) nor a zip archive "
                           f"(.keras) — not a Keras model file, or truncated/corrupt (it starts "
                           f"with {head!r})")


def load_keras(path: PathLike) -> tuple[KerasModel, dict[str, Any]]:
    """Read a Keras model file — ``.h5`` (Keras 2/3) or ``.keras`` (Keras 3) — as
    ``(model, variables)``: ``model.apply(variables, xb)`` gives the outputs,
    ``model.apply(variables, xb, logits=True)`` the pre-activation to explain (see
    ``load_keras_h5``)."""
    if keras_format(path) == "keras":
        return keras_v3.load_keras_v3(path)
    return keras_h5.load_keras_h5(path)


def keras_info(path: PathLike) -> str:
    """A Keras-``summary()``-like description of a ``.h5`` or ``.keras`` model file."""
    if keras_format(path) == "keras":
        return keras_v3.keras_v3_info(path)
    return keras_h5.keras_info(path)
