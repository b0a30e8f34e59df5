"""The test suite's own bookkeeping: the cases conftest.py leaves to the slow step exist."""
import ast
from pathlib import Path

from conftest import SLOW_CASES

TESTS = Path(__file__).resolve().parent


def test_every_slow_case_names_a_test_function_that_exists():
    """A renamed test would silently come back into the default run (or vanish from both):
    each entry's file must define the named function."""
    missing = []
    for case in SLOW_CASES:
        file, name = case.split("::")
        name = name.split("[")[0]
        tree = ast.parse((TESTS / file).read_text(encoding="utf-8"))
        functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        if name not in functions:
            missing.append(case)
    assert missing == []


def test_every_slow_case_says_what_covers_it_by_default():
    assert all(len(why) > 20 for why in SLOW_CASES.values())
