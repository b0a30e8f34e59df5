"""jaxlift's errors: every one is a JaxliftError and is exported from ``jaxlift``, and no module
raises a bare builtin ``ValueError`` or ``TypeError`` (it raises ``InputValueError`` or
``InputTypeError``, which are those builtins too, so ``except ValueError`` keeps working)."""
from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

import jaxlift
from jaxlift.errors import InputTypeError, InputValueError, JaxliftError

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jaxlift"
BARE = ("ValueError", "TypeError")

# Exception classes of jaxlift that are not errors, with why: the test fails if one appears
# that is not named here.
NOT_ERRORS = {
    # BaseException, not Exception, on purpose: SIGTERM unwinds the command so that its
    # clean-ups run, and no `except Exception` on the way may swallow it
    "jaxlift.cli.main.Terminated",
    # a signal inside the program store, never raised to a caller: stored_programs.executable
    # catches it and compiles the program as it would without the store
    "jaxlift.stored_programs.NotStorable",
    # a signal inside the independence proof, never raised to a caller: why_not_proven turns it
    # into its answer
    "jaxlift.independence.GiveUp",
}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _bare_builtin_errors(source: str) -> list[tuple[int, str]]:
    """``(line, name)`` where ``source`` makes (calls) or raises a builtin ``ValueError`` or
    ``TypeError``; catching them (``except ValueError``) is fine."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BARE:
            found.append((node.lineno, node.func.id))
        elif (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Name)
              and node.exc.id in BARE):
            found.append((node.lineno, node.exc.id))
    return found


def test_the_finder_finds_bare_builtin_errors():
    src = ("def f(x):\n"
           "    if x:\n"
           "        raise ValueError('no')\n"
           "    try:\n"
           "        g()\n"
           "    except TypeError:\n"
           "        raise TypeError\n"
           "    return ValueError('made, to raise later')\n")
    assert sorted(_bare_builtin_errors(src)) == [(3, "ValueError"), (7, "TypeError"),
                                                 (8, "ValueError")]
    assert _bare_builtin_errors("raise InputValueError('x')\nexcept_ = ValueError\n") == []


def test_no_module_raises_a_bare_value_or_type_error():
    bad = {str(p.relative_to(ROOT.parent)): hits for p in sorted(ROOT.rglob("*.py"))
           if (hits := _bare_builtin_errors(p.read_text()))}
    assert bad == {}, "raise jaxlift.errors.InputValueError / InputTypeError instead"


def _exception_classes() -> dict[str, type]:
    """``module.Name`` → class, for every exception class defined at the top of a jaxlift
    module (the module is imported to resolve its bases)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text())
        names = [n.name for n in tree.body if isinstance(n, ast.ClassDef) and n.bases]
        if not names:
            continue
        module = importlib.import_module(_module_name(path))
        for name in names:
            cls = getattr(module, name)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                out[f"{module.__name__}.{name}"] = cls
    return out


def test_every_error_is_a_jaxlift_error_and_exported():
    classes = _exception_classes()
    assert len(classes) >= 10  # the finder sees the classes (errors.py alone has 7)
    assert NOT_ERRORS <= set(classes), "a class in NOT_ERRORS is gone: drop it from the list"
    problems = []
    for where, cls in classes.items():
        if where in NOT_ERRORS:
            continue
        if not issubclass(cls, Warning) and not issubclass(cls, JaxliftError):
            problems.append(f"{where} does not derive from JaxliftError")
        if getattr(jaxlift, cls.__name__, None) is not cls or cls.__name__ not in jaxlift.__all__:
            problems.append(f"{where} is not exported as jaxlift.{cls.__name__} (in __all__)")
    assert problems == []


def test_every_exported_error_name_resolves():
    exported = [n for n in jaxlift.__all__ if n.endswith(("Error", "Warning"))]
    assert len(exported) >= 13
    for name in exported:
        cls = getattr(jaxlift, name)
        assert issubclass(cls, Warning) or issubclass(cls, JaxliftError), name


@pytest.mark.parametrize("call,builtin", [
    (lambda: jaxlift.references.gaussian_kernel(sigma=-1.0), ValueError),
    (lambda: jaxlift.targets.pre_activation("not a function"), TypeError),
], ids=["value", "type"])
def test_bad_input_is_both_a_jaxlift_error_and_the_builtin(call, builtin):
    with pytest.raises(builtin) as info:  # what users' `except ValueError` catches
        call()
    assert isinstance(info.value, JaxliftError)
    assert isinstance(info.value, (InputValueError, InputTypeError))


def test_the_study_data_sets_error_is_a_jaxlift_error():
    from experiments.datasets.tu import TUFormatError

    e = TUFormatError("DS_A.txt", 3, "two numbers expected")
    assert isinstance(e, JaxliftError) and isinstance(e, ValueError)
    assert str(e) == "DS_A.txt:3: two numbers expected"
