"""The README's table of modes, rendered from the method table (:data:`jaxlift.methods.METHODS`)
so that every method, option and default it lists is the one the code has.

    python -m jaxlift.methods.table               # print the Markdown table
    python -m jaxlift.methods.table --write README.md   # replace the table between its markers

``tests/test_method_defaults.py`` compares the README's table with :func:`modes_table`.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

from jaxlift.errors import InputValueError
from jaxlift.methods.base import REQUIRED, Method

BEGIN = ("<!-- modes table: generated from jaxlift.methods.METHODS by "
         "`python -m jaxlift.methods.table --write README.md` -->")
END = "<!-- end of the modes table -->"


def format_default(value) -> str:
    """An option's default as the table shows it: ``50``, ``'gausslegendre'``, ``None``,
    ``required``."""
    if value is REQUIRED:
        return "required"
    return f"`{value!r}`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def completeness_text(method: Method) -> str:
    """Whether the method's scores sum to ``Δt``, in words."""
    if method.completeness == "exact":
        if any(o.name == "feature_mask" for o in method.options):
            return "yes, summed over feature groups (every feature carries its group's value)"
        return "yes, exactly"
    if method.completeness == "limit":
        return "as its parameter grows (`jaxlift.completeness_gap` measures the gap)"
    return "no"


def refs_text(method: Method) -> str:
    """Whether the method needs references."""
    if callable(method.needs_refs):
        return "as its `base`"
    return "yes" if method.needs_refs else "no (`refs=None`)"


def options_text(method: Method) -> str:
    """``name`` = default: what it is, for every option; the arguments of ``attribute`` that
    only the DeepLIFT methods take, for those."""
    if method.scope == "interpreter" and not method.options:
        return "none (`max_mode=`, `gating=`, `layer=`, `mesh=` apply)"
    if not method.options:
        return "none"
    return "; ".join(f"`{o.name}` = {format_default(o.default)}: {o.doc}" for o in method.options)


def modes_table(methods: Mapping[str, Method]) -> str:
    """The Markdown table of ``methods`` (name → :class:`Method`): what each computes, whether
    it sums to ``Δt``, whether it needs references, its options with their defaults, its
    cost."""
    rows = ["| mode | what it computes | sums to Δt? | needs refs? | options (`mode_options`, "
            "default) | cost |", "|---|---|---|---|---|---|"]
    for name, m in methods.items():
        cells = (f"`{name}`", m.summary, completeness_text(m), refs_text(m), options_text(m),
                 m.cost or "—")
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def table_in(text: str) -> str | None:
    """The table between :data:`BEGIN` and :data:`END` in ``text`` (``None`` without them)."""
    if BEGIN not in text or END not in text:
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def replace_table(text: str, table: str) -> str:
    """``text`` with the table between the markers replaced by ``table``."""
    if table_in(text) is None:
        raise InputValueError(f"no table markers; put {BEGIN!r} and {END!r} where the table goes")
    head, rest = text.split(BEGIN, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{rest.split(END, 1)[1]}"


def main(argv: list[str] | None = None) -> int:
    from jaxlift.methods import METHODS

    ap = argparse.ArgumentParser(prog="python -m jaxlift.methods.table",
                                 description="Print the README's table of modes, or write it.")
    ap.add_argument("--write", metavar="README.md", help="replace the table in this file")
    args = ap.parse_args(argv)
    table = modes_table(METHODS)
    if args.write is None:
        print(table)
        return 0
    path = Path(args.write)
    path.write_text(replace_table(path.read_text(encoding="utf-8"), table), encoding="utf-8")
    print(f"wrote the table of {len(METHODS)} modes into {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
