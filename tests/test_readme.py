"""The README's "Your model" snippets run as they are (Flax linen, Flax NNX, Equinox, a Keras
file, plain jnp), and the package gives the submodules the README uses as attributes."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KINDS = ("Flax linen", "Flax NNX", "Equinox", "Keras", "Plain `jnp`")


def your_model_snippets() -> list[tuple[str, str]]:
    """(kind, code) of each ```python block of the README's "## Your model" section, the kind
    being the bold label of the paragraph before it."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^## Your model\n(.*?)^## ", text, re.S | re.M)
    assert m, "README.md has no '## Your model' section"
    section = m.group(1)
    out = []
    for block in re.finditer(r"\*\*(.+?)\*\*.*?```python\n(.*?)```", section, re.S):
        out.append((block.group(1), block.group(2)))
    return out


SNIPPETS = your_model_snippets()


def test_every_kind_of_model_has_a_snippet():
    labels = [kind for kind, _ in SNIPPETS]
    assert len(labels) == len(KINDS)
    for want, have in zip(KINDS, labels):
        assert want in have, (want, have)


@pytest.mark.parametrize("kind, code", SNIPPETS, ids=[k.split()[-1].strip("`.") for k, _ in
                                                     SNIPPETS])
def test_snippet_runs(kind, code):
    if "equinox" in code:
        pytest.importorskip("equinox")
    assert "jaxlift.attribute(" in code and "assert " in code  # each checks its own result
    exec(compile(code, f"README.md ({kind})", "exec"), {"__name__": "readme_snippet"})


def test_submodules_are_attributes_of_the_package():
    """``import jaxlift`` alone gives jaxlift.references, jaxlift.concepts, … (on first use)."""
    code = ("import jaxlift; print(jaxlift.references.zeros_like.__name__, "
            "jaxlift.concepts.top_features.__name__, callable(jaxlift.attribute), "
            "'references' in dir(jaxlift))\n"
            "try:\n    jaxlift.nonexistent\nexcept AttributeError as e:\n    print(e)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["zeros_like top_features True True",
                                     "module 'jaxlift' has no attribute 'nonexistent'"]
