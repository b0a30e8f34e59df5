"""The README's "Pictures" section: every picture it shows is committed, small and a PNG, and
(slow) its snippets, run by docs/images/make_pictures.py, make pictures of the same size."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

from jaxlift import viz

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "docs" / "images"


def _script():
    spec = importlib.util.spec_from_file_location("make_pictures", IMAGES / "make_pictures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKE = _script()
SECTION = MAKE.pictures_section((REPO / "README.md").read_text(encoding="utf-8"))


def test_every_picture_is_committed_and_small():
    names = MAKE.pictures(SECTION)
    assert names == ["image_views.png", "method_grid.png", "tabular.png", "sequence_logo.png",
                     "token_text.png"]
    for name in names:
        path = IMAGES / name
        assert path.stat().st_size < 200 * 1024, name
        with Image.open(path) as im:
            assert im.format == "PNG" and min(im.size) >= 200


def test_each_kind_of_picture_has_a_snippet_using_a_public_function():
    code = "\n".join(MAKE.snippets(SECTION))
    for name in ("image_attribution", "method_grid", "feature_bars", "sequence_logo",
                 "token_text", "legend_sentence"):
        assert f"viz.{name}(" in code and name in viz.__all__, name


@pytest.mark.slow  # about 20 s: the snippets compute scores with six methods
def test_the_snippets_make_the_pictures(tmp_path):
    made = MAKE.make(tmp_path)
    for path in made:
        with Image.open(path) as new, Image.open(IMAGES / path.name) as committed:
            assert new.size == committed.size, path.name
