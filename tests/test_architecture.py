"""The shape of the code: data flows one way (face → pipeline → methods → interpreter → rules),
no import circles (late imports inside functions count), no module imports another's private
names, models and file formats know nothing of the interpreter, no arrow runs back up (rules
know nothing of the program, the interpreter or the methods; models know nothing of file
formats), and no two rooms (a top-level module or a subpackage) import each other."""
from __future__ import annotations

import ast
import functools
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jaxlift"


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    return mods


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, str | None]]:
    """``(module, imported name or None)`` for every jaxlift import in ``name``, at any depth."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base.split(".")[0] != "jaxlift":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append((full, None) if full in MODULES else (base, alias.name))
        elif isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.split(".")[0] == "jaxlift"]
    return found


@functools.lru_cache(maxsize=None)
def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _ in _imports(m) if t in MODULES and t != m} for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_circles():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_another_modules_private_names():
    bad = [(m, t, n) for m in MODULES for t, n in _imports(m)
           if n is not None and n.startswith("_") and not n.startswith("__")]
    assert bad == []


def _reaches(graph, start: str, targets: tuple[str, ...]) -> set[str]:
    """Modules among ``targets`` (by prefix) that ``start`` imports directly."""
    return {t for t in graph[start] if t.startswith(targets)}


LAYERS = [  # (modules, what they must not import)
    pytest.param(("jaxlift.rules",),
                 ("jaxlift.interpreter", "jaxlift.methods", "jaxlift.pipeline", "jaxlift.api",
                  "jaxlift.cli"), id="rules"),
    pytest.param(("jaxlift.rules",), ("jaxlift.program",), id="rules-program"),
    pytest.param(("jaxlift.interpreter", "jaxlift.program"),
                 ("jaxlift.methods", "jaxlift.pipeline", "jaxlift.api", "jaxlift.cli"),
                 id="interpreter"),
    pytest.param(("jaxlift.methods",), ("jaxlift.pipeline", "jaxlift.api", "jaxlift.cli"),
                 id="methods"),
    pytest.param(("jaxlift.pipeline",), ("jaxlift.api", "jaxlift.cli"), id="pipeline"),
    pytest.param(("jaxlift.models", "jaxlift.io"),
                 ("jaxlift.interpreter", "jaxlift.rules", "jaxlift.methods", "jaxlift.pipeline",
                  "jaxlift.api", "jaxlift.program"), id="models-and-io"),
    pytest.param(("jaxlift.models",), ("jaxlift.io", "jaxlift.cli", "jaxlift.viz"),
                 id="models-know-no-file-formats"),
]


@pytest.mark.parametrize("layer,forbidden", LAYERS)
def test_data_flows_one_way(layer, forbidden):
    graph = _graph()
    bad = {m: sorted(_reaches(graph, m, forbidden)) for m in graph if m.startswith(layer)}
    assert {m: v for m, v in bad.items() if v} == {}


def _room(module: str) -> str:
    """A module's room: its subpackage (``jaxlift.rules.linear`` → ``jaxlift.rules``), or the
    module itself at the top level (``jaxlift.program``)."""
    return ".".join(module.split(".")[:2])


def _rooms_importing_each_other(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Pairs of rooms ``(a, b)``, ``a < b``, in which some module of each imports one of the
    other (late imports count)."""
    arrows = {(_room(m), _room(t)) for m, targets in graph.items() for t in targets}
    return {(a, b) for a, b in arrows if a < b and (b, a) in arrows}


def test_the_room_finder_finds_two_rooms_importing_each_other():
    graph = {"jaxlift.io.a": {"jaxlift.models.b"}, "jaxlift.models.b": set(),
             "jaxlift.models.c": {"jaxlift.io.d"}, "jaxlift.io.d": set(),
             "jaxlift.rules.e": {"jaxlift.rules.f"}, "jaxlift.rules.f": {"jaxlift.rules.e"}}
    assert _rooms_importing_each_other(graph) == {("jaxlift.io", "jaxlift.models")}


def test_no_two_rooms_import_each_other():
    """io ⇄ models, program ⇄ rules and the like: a pair of rooms that import each other is
    one room in two places (the jaxpr helpers the rules and the program share live below both,
    in jaxpr_walk)."""
    assert _rooms_importing_each_other(_graph()) == set()


# --------------------------------------------------------------------------- the rule registry
# Which rule applies to a primitive must not depend on the order in which the rule files are
# imported: each primitive has one owner file, and any other registration declares itself
# shared=True (its live masks are not the owner's, checked) or overrides=rule (it wins there).

SHARED = {  # primitive -> (owner file, files that share it)
    "mul": ("linear", {"product"}), "dot_general": ("linear", {"product"}),
    "conv_general_dilated": ("linear", {"product"}), "div": ("linear", {"product"}),
    "select_n": ("linear", {"logic"}),
}


def _registrations():
    import jaxlift.rules  # noqa: F401  (registers every family)
    from jaxlift.rules import registry
    return registry.registrations()


def test_each_primitive_has_one_owner_file_and_the_rest_is_declared():
    by_primitive: dict[str, list] = {}
    for r in _registrations():
        by_primitive.setdefault(r.primitive, []).append(r)
    assert len(by_primitive) > 40  # the record sees the registrations
    owners = {p: [r.module for r in rs if r.relation == "owner"] for p, rs in by_primitive.items()}
    assert {p: o for p, o in owners.items() if len(o) != 1} == {}
    assert all(r.module.startswith("jaxlift.rules.") for rs in by_primitive.values() for r in rs)
    # no file registers a primitive twice, and another file's registration is declared
    for p, rs in by_primitive.items():
        modules = [r.module for r in rs]
        assert len(modules) == len(set(modules)), (p, modules)
    shared = {p: (owners[p][0].rsplit(".", 1)[1],
                  {r.module.rsplit(".", 1)[1] for r in rs if r.relation != "owner"})
              for p, rs in by_primitive.items() if len(rs) > 1}
    assert shared == SHARED


def test_the_registry_refuses_an_undeclared_second_rule(monkeypatch):
    from jaxlift.errors import InputValueError
    from jaxlift.rules import registry
    from jaxlift.rules.registry import Rule

    # a real primitive, registered again without a word: refused, and nothing changes
    before = registry.registrations()
    mul = registry.lookup("mul", (True, False))
    with pytest.raises(InputValueError, match="'mul' already has its rule 'scaled' from "
                                              "jaxlift.rules.linear"):
        registry.register("mul", Rule("again", backward=lambda ctx, m: m), registry.one_live)
    assert registry.registrations() == before and registry.lookup("mul", (True, False)) is mul

    # on a scratch copy of the registry: each declaration is checked
    monkeypatch.setattr(registry, "_RULES", {})
    monkeypatch.setattr(registry, "_RECORD", [])
    one, two, better = (Rule(n, backward=lambda ctx, m: m) for n in ("one", "two", "better"))
    registry.register("p", one, registry.one_live)
    with pytest.raises(InputValueError, match="already has its rule 'one'"):
        registry.register("p", two, registry.several_live)
    with pytest.raises(InputValueError, match=r"both it and rule 'one' apply to live mask \(True,\)"):
        registry.register("p", two, registry.always, shared=True)  # says shared, but overlaps
    registry.register("p", two, registry.several_live, shared=True)
    assert registry.lookup("p", (True, False)) is one
    assert registry.lookup("p", (True, True)) is two
    with pytest.raises(InputValueError, match="overlap|apply to live mask"):
        registry.register("p", better, registry.always, overrides=one)  # overlaps 'two' too
    with pytest.raises(InputValueError, match="not registered for 'p'"):
        registry.register("p", better, registry.one_live, overrides=Rule("x", backward=None))
    registry.register("p", better, registry.one_live, overrides=one)
    assert registry.lookup("p", (False, True)) is better
    assert registry.lookup("p", (True, True)) is two
    assert [r.relation for r in registry.registrations()] == ["owner", "shared", "overrides"]
