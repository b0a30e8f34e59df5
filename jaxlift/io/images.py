"""Images → float arrays, with Pillow.

``load_image`` reproduces the preprocessing of the cats-vs-dogs model shipped in
``../shared/data/catsordogs``: Pillow's ``convert("L")`` (ITU-R 601-2 luma,
``L = (299 R + 587 G + 114 B) / 1000`` rounded to uint8), Pillow's ``resize`` with
``Image.BILINEAR`` (which, when shrinking, widens its filter — an antialiased bilinear,
unlike TensorFlow's ``tf.image.resize``), then ``/ 255``. With exactly this pipeline Keras gives
0.2818982 (test1.jpeg) and 0.8673469 (test2.jpeg); TF-style grayscale weights or a
non-antialiased resize move the 3rd–4th decimal.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxlift.errors import InputValueError


def load_image(path: str | os.PathLike, size: tuple[int, int] | None = None,
               grayscale: bool = False) -> np.ndarray:
    """Read an image as float32 in [0, 1], shape (H, W, C) with C = 1 (grayscale) or 3 (RGB).

    ``size`` is (height, width) to resize to with Pillow's bilinear filter; None keeps the
    original size. Raises ``FileNotFoundError`` / ``ValueError`` naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        with Image.open(p) as im:
            im = im.convert("L" if grayscale else "RGB")
            if size is not None:
                h, w = size
                im = im.resize((int(w), int(h)), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except UnidentifiedImageError as e:
        raise InputValueError(f"{path}: not an image Pillow can read: {e}") from None
    return arr[..., None] if arr.ndim == 2 else arr
