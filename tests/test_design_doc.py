"""The design document is the project's own: every "docs/design.md §N" cited in the code, the
tests, the studies or the README names a section that exists, and nothing cites the working
notes outside the repository ("DESIGN §N")."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DESIGN = REPO / "docs" / "design.md"
CITATION = re.compile(r"docs/design\.md((?:,? ?§\d+(?:\.\d+)?)+)")
SECTION = re.compile(r"§(\d+(?:\.\d+)?)")


def _sources() -> list[Path]:
    files = [REPO / "README.md"]
    for folder in ("jaxlift", "tests", "experiments", "benchmarks"):
        files += [p for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".md")]
    return [p for p in files if p.is_file() and p != Path(__file__).resolve()]


def _sections() -> set[str]:
    heads = re.findall(r"^#{2,3} §(\d+(?:\.\d+)?) ", DESIGN.read_text(encoding="utf-8"), re.M)
    return set(heads)


def citations(text: str) -> list[str]:
    """Section numbers cited as ``docs/design.md §9.1, §17`` in ``text``."""
    return [n for m in CITATION.finditer(text) for n in SECTION.findall(m.group(1))]


def test_citation_parser_reads_several_sections():
    assert citations("see docs/design.md §9.1, §17 and docs/design.md §5") == ["9.1", "17", "5"]


def test_every_cited_section_exists():
    sections = _sections()
    assert {"1", "9.1", "18", "21"} <= sections
    missing = sorted({(str(p.relative_to(REPO)), n) for p in _sources()
                      for n in citations(p.read_text(encoding="utf-8", errors="replace"))
                      if n not in sections})
    assert missing == []


def test_nothing_cites_the_notes_outside_the_repository():
    stale = sorted(str(p.relative_to(REPO)) for p in _sources()
                   if "DESIGN §" in p.read_text(encoding="utf-8", errors="replace"))
    assert stale == []
