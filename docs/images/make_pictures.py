"""Make the pictures of the README's "Pictures" section by running its snippets.

The README is the source: its ```python blocks under "## Pictures" run in order, in one
namespace, with this folder (or ``--out``) as the working directory, so the files they save
(``save="image_views.png"``, ``shown.save_png("token_text.png")``) land beside this script, and
the code a reader copies is the code that made the pictures. Uses the MNIST model and digits
shipped in ``jaxlift/data`` and small synthetic models; no download.

    python docs/images/make_pictures.py              # rewrite docs/images/*.png
    python docs/images/make_pictures.py --out /tmp/p
"""
from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE.parents[1] / "README.md"


def pictures_section(text: str) -> str:
    """The text of the README's "## Pictures" section."""
    m = re.search(r"^## Pictures\n(.*?)^## ", text, re.S | re.M)
    if not m:
        raise SystemExit("README.md has no '## Pictures' section")
    return m.group(1)


def snippets(section: str) -> list[str]:
    """The section's ```python blocks, in order."""
    return re.findall(r"```python\n(.*?)```", section, re.S)


def pictures(section: str) -> list[str]:
    """The PNG files the section shows (``docs/images/NAME.png`` → ``NAME.png``)."""
    return re.findall(r"\]\(docs/images/([\w.-]+\.png)\)", section)


def make(out: Path) -> list[Path]:
    """Run the snippets in ``out``; returns the pictures the section shows, as written."""
    import matplotlib
    matplotlib.use("Agg")
    section = pictures_section(README.read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    here = os.getcwd()
    namespace: dict = {"__name__": "readme_pictures"}
    try:
        os.chdir(out)
        for i, code in enumerate(snippets(section)):
            t0 = time.perf_counter()
            exec(compile(code, f"README.md (Pictures, snippet {i + 1})", "exec"), namespace)
            print(f"snippet {i + 1}: {time.perf_counter() - t0:.1f} s")
    finally:
        os.chdir(here)
    files = [out / name for name in pictures(section)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"the snippets did not write {missing}")
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE, help="folder for the PNGs (default: here)")
    args = ap.parse_args()
    for f in make(args.out):
        print(f"wrote {f} ({f.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
