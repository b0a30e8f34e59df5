"""Compiled programs kept by what they are made from: in this process, and on disk between
processes (docs/design.md §20.6).

JAX's persistent compilation cache keys an executable on the lowered program, so a second
process still traces the user's ``fn``, runs the interpreter's walk over it and lowers the
result before the cache can answer: on the first-call benchmark that left a second process at
0.32–0.47× of the first. Here a jaxlift program is also kept under a key that needs none of
that work, only a description of what the program is made from:

* the user's function, as the text of the jaxpr of one example's target (the forward pass the
  interpreter walks) and of the VJP of every custom derivative rule in it (which Rescale's
  ``f'`` reads), with the bytes of every constant they close over;
* the program's static options, described by :func:`describe` (built from jaxlift's own
  functions and plain values only);
* the shapes, dtypes and pytree structures of the arguments;
* the environment: jaxlift's source (a digest of every file), the JAX and jaxlib versions, the
  backend, the device and the CPU.

The same key serves within a process: the last :data:`KEPT` executables are kept by it
(:class:`Shelf`), so that a program asked for under another ``fn`` object — a model built again
when a notebook cell runs again, a new ``lambda`` at every call — that traces to the same
jaxpr runs without compiling again, where ``jax.jit`` (keyed on the function object) would
compile it again. That tier is on whether or not the store is.

Anything that cannot be described faithfully is not stored, and the program compiles as it
always does: a host callback in ``fn`` (the jaxpr names the function but not its code), a rule
registered from outside jaxlift, a user's composite, arguments on another device, a caller's
trace. The store is on where JAX's own cache is on (``jax_compilation_cache_dir`` set to a local
folder: it lives in its ``jaxlift`` subfolder) and honours JAX's
``jax_persistent_cache_min_compile_time_secs``; ``JAXLIFT_PROGRAM_STORE=0`` turns it off, and
the in-process tier with it. Its files are loaded with ``pickle`` and run as machine code: as
with JAX's cache, point it only at a folder you trust.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pickle
import platform
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift._ops import example_structs
from jaxlift.jaxpr_walk import bind_eqn, nested_jaxprs
from jaxlift.program import trace_settings, traced_program
from jaxlift.rules import registry
from jaxlift.targets import per_example

STORE_SWITCH = "JAXLIFT_PROGRAM_STORE"
HIT_EVENT = "/jaxlift/program_store/hit"
KEPT_HIT_EVENT = "/jaxlift/program_store/kept_hit"
SAVED_EVENT = "/jaxlift/program_store/saved"
SUFFIX = ".jaxlift-program"


class NotStorable(Exception):
    """What a program is made from cannot be described faithfully: it is compiled, not stored."""


def switched_off() -> bool:
    """``JAXLIFT_PROGRAM_STORE=0``: programs are kept neither on disk nor in the process."""
    return os.environ.get(STORE_SWITCH, "1") == "0"


def store_dir() -> Path | None:
    """The folder programs are kept in, or ``None`` when the store is off: JAX's persistent
    cache is not set to a local folder, or :func:`switched_off`."""
    if switched_off() or not jax.config.jax_enable_compilation_cache:
        return None
    root = jax.config.jax_compilation_cache_dir
    if not root or "://" in str(root):
        return None
    return Path(root) / "jaxlift"


@functools.cache
def source_digest() -> str:
    """SHA-256 of every Python file of the jaxlift package (its path and bytes): a program
    kept by one version of the code is never run by another."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@functools.cache
def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


@functools.cache
def environment() -> str:
    """What a compiled program depends on besides itself: code versions, backend, device, CPU,
    and the XLA flags of this process."""
    import jaxlib

    device = jax.devices()[0]
    return repr((source_digest(), jax.__version__, jaxlib.__version__, sys.version_info[:2],
                 device.platform, device.device_kind, device.client.platform_version,
                 platform.machine(), hashlib.sha256(_cpu_flags().encode()).hexdigest(),
                 os.environ.get("XLA_FLAGS", "")))


def describe(obj: Any) -> str:
    """Deterministic text of a static option: plain values, tuples, dataclasses and enums of
    jaxlift's own modules, and jaxlift's functions (by module and name, with what their
    closures hold: their code is in :func:`source_digest`). Anything else raises
    :class:`NotStorable`."""
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        return f"{type(obj).__name__}:{obj!r}"
    if isinstance(obj, (tuple, list, frozenset)):
        items = sorted(map(describe, obj)) if isinstance(obj, frozenset) else map(describe, obj)
        return f"{type(obj).__name__}(" + ",".join(items) + ")"
    if isinstance(obj, dict):
        return "dict(" + ",".join(sorted(f"{describe(k)}={describe(v)}"
                                         for k, v in obj.items())) + ")"
    if isinstance(obj, functools.partial):
        return (f"partial({describe(obj.func)},{describe(obj.args)},"
                f"{describe(dict(obj.keywords))})")
    module = getattr(obj, "__module__", None) or type(obj).__module__
    if not str(module).startswith("jaxlift"):
        raise NotStorable(f"{obj!r} is not jaxlift's own")
    if isinstance(obj, types.FunctionType):
        cells = tuple(c.cell_contents for c in obj.__closure__ or ())
        return (f"fn:{obj.__module__}.{obj.__qualname__}({describe(cells)},"
                f"{describe(obj.__defaults__)})")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        return f"{type(obj).__module__}.{type(obj).__qualname__}{describe(fields)}"
    if hasattr(obj, "_asdict"):  # a NamedTuple
        return f"{type(obj).__module__}.{type(obj).__qualname__}{describe(obj._asdict())}"
    raise NotStorable(f"cannot describe {type(obj).__qualname__}")


def jaxpr_text(closed) -> str:
    """A closed jaxpr as text, with a digest of the bytes, shape and dtype of every constant it
    closes over — its own and those of the closed jaxprs nested in its equations (a ``jit``
    call, a ``cond`` branch, a loop body: their text names a constant, not its value);
    :class:`NotStorable` for a host callback (its text names no code)."""
    text = str(closed.jaxpr)
    if "callback" in text or "0xXXXX" in text:
        raise NotStorable("fn calls back into Python")
    h = hashlib.sha256()
    for c in _constants(closed):
        a = np.asarray(c)
        h.update(repr((a.shape, str(a.dtype))).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return text + "\nconsts:" + h.hexdigest()


def _constants(closed) -> list:
    """The constants of ``closed`` and of every closed jaxpr nested in it, in equation order."""
    found = list(closed.consts)

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            for sub, consts in nested_jaxprs(eqn.params):
                found.extend(consts)
                visit(sub)
    visit(closed.jaxpr)
    return found


def arguments_text(args: tuple) -> str:
    """Pytree structures, shapes and dtypes of a call's arguments."""
    leaves, treedef = jax.tree_util.tree_flatten(args)
    return str(treedef) + ";" + ";".join(str(jax.typeof(l)) for l in leaves)


def _call_key(args: tuple) -> tuple | None:
    """The in-process key of a call's arguments, or ``None`` where the stored executable cannot
    serve them: a tracer (a caller's transformation), an array placed on another device than
    the default one (the executable was compiled for that one), a leaf this cannot key."""
    leaves, treedef = jax.tree_util.tree_flatten(args)
    default = jax.devices()[0]
    key = []
    try:
        for leaf in leaves:
            if isinstance(leaf, jax.core.Tracer):
                return None
            if isinstance(leaf, jax.Array):  # PRNG key arrays too (no weak_type there)
                if leaf.sharding.device_set != {default}:
                    return None
                key.append((type(leaf), leaf.shape, leaf.dtype,
                            getattr(leaf, "weak_type", False)))
            elif isinstance(leaf, np.ndarray):
                key.append((np.ndarray, leaf.shape, leaf.dtype))
            else:
                key.append((type(leaf), np.shape(leaf)))
        out = treedef, tuple(key)
        hash(out)
    except Exception:  # noqa: BLE001 an odd leaf: the call runs as jax.jit runs it
        return None
    return out


def program_fingerprint(params, x, *_, fn, static) -> str:
    """What a program of ``fn`` with the options ``static`` is made from, as text, for the
    arguments ``(params, x, ...)`` of its call (the rest are in :func:`arguments_text`): the
    options (``static[0]["target"]`` the target); the jaxpr of one example's target
    (:func:`~jaxlift.program.traced_program`'s trace, shared with the call — the forward pass
    the interpreter walks, and what a kernel method calls); the VJP of every
    ``custom_jvp``/``custom_vjp`` call in it (the rules Rescale's ``f'`` and the gradients read,
    which the call's text names but does not hold); the global settings a trace reads.
    :class:`NotStorable` where a rule comes from outside jaxlift or ``fn`` cannot be traced
    so."""
    outside = sorted({r.module for r in registry.registrations()
                      if not r.module.startswith("jaxlift")})
    if outside:
        raise NotStorable(f"rules registered from {outside}")
    options = describe(static)
    program, _ = traced_program(per_example(fn, static[0]["target"]), params,
                                example_structs(x, True))
    parts = [options, jaxpr_text(program.source), custom_rules_text(program.source.jaxpr),
             repr(trace_settings())]
    return "\n".join(parts)


def custom_rules_text(jaxpr) -> str:
    """The jaxprs of the VJP of every ``custom_jvp_call`` and ``custom_vjp_call`` equation of
    ``jaxpr`` (and of the calls, loops and branches inside it), one per rule and operand
    shapes: what the user's derivative rules compute."""
    texts: dict = {}

    def visit(jx):
        for eqn in jx.eqns:
            name = eqn.primitive.name
            if name in ("custom_jvp_call", "custom_vjp_call"):
                rules = tuple(id(eqn.params[k]) for k in ("jvp", "fwd", "bwd", "call_jaxpr")
                              if k in eqn.params)
                key = (name, rules, tuple(str(v.aval) for v in eqn.invars))
                if key not in texts:
                    texts[key] = jaxpr_text(_vjp_of(eqn))
                continue
            for sub, _ in nested_jaxprs(eqn.params):
                visit(sub)
    visit(jaxpr)
    return "\n".join(texts.values())


def _vjp_of(eqn):
    """The jaxpr of the VJP of one equation at its operands' shapes."""
    structs = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars]

    def pulled(*operands):
        out, pull = jax.vjp(lambda *a: bind_eqn(eqn, list(a), wide=True), *operands)
        return out, pull(jax.tree_util.tree_map(jnp.ones_like, out))
    return jax.make_jaxpr(pulled)(*structs)


def _load(path: Path):
    payload, in_tree, out_tree = pickle.loads(path.read_bytes())
    from jax.experimental.serialize_executable import deserialize_and_load
    return deserialize_and_load(payload, in_tree, out_tree)


def _save(path: Path, compiled) -> None:
    from jax.experimental.serialize_executable import serialize
    data = pickle.dumps(serialize(compiled))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # atomic: a reader sees the whole file or none
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    jax.monitoring.record_event(SAVED_EVENT)


def jaxlift_state(modules=None) -> dict[str, tuple]:
    """What jaxlift's loaded modules hold now, by identity: ``{module: ((name, id), ...)}`` over
    their attributes (not their submodules, not dunder names), for ``modules`` or every
    loaded ``jaxlift`` module. A rule or helper replaced at run time (a test's monkeypatch, a
    user's patch) changes it; a later import adds names, which :func:`same_state` ignores."""
    names = modules if modules is not None else sorted(
        n for n in sys.modules if n == "jaxlift" or n.startswith("jaxlift."))
    state = {}
    for name in names:
        module = sys.modules.get(name)
        state[name] = () if module is None else tuple(
            (k, id(v)) for k, v in vars(module).items()
            if not k.startswith("__") and not isinstance(v, types.ModuleType))
    return state


def same_state(then: dict[str, tuple]) -> bool:
    """Whether every attribute :func:`jaxlift_state` saw in ``then`` is still the same object."""
    now = jaxlift_state(tuple(then))
    for name, items in then.items():
        current = dict(now[name])
        if any(current.get(k) != i for k, i in items):
            return False
    return True


class Shelf:
    """The last ``size`` executables compiled in this process, by the key of what they are
    made from (:func:`executable`): a program asked for again under another ``fn`` object (a
    model built again in a notebook, a new ``lambda`` at each call) that traces to the same
    jaxpr runs without being compiled again. An executable is served only while jaxlift's
    modules hold what they held when it was compiled (:func:`same_state`): its source is in the
    key, a function patched at run time is not."""

    def __init__(self, size: int):
        self.size = size
        self._kept: dict[str, tuple[Any, dict]] = {}
        self._lock = threading.Lock()  # calls from several threads share it

    def get(self, key: str):
        with self._lock:
            found = self._kept.pop(key, None)
            if found is None or not same_state(found[1]):
                return None
            self._kept[key] = found  # the most recently used last
            return found[0]

    def put(self, key: str, compiled, state: dict[str, tuple]) -> None:
        with self._lock:
            self._kept.pop(key, None)
            self._kept[key] = (compiled, state)
            while len(self._kept) > self.size:
                del self._kept[next(iter(self._kept))]

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()


KEPT = Shelf(32)


def executable(jitted, fingerprint: Callable[..., str], args: tuple, where: Path | None):
    """The compiled ``jitted`` for ``args``, under the key of ``fingerprint(*args)`` (the
    description of what the program is made from): kept in this process (:data:`KEPT`), else
    loaded from ``where`` if kept there, else compiled and kept (in ``where`` too, unless it is
    ``None``). ``None`` when it cannot be described (:class:`NotStorable`)."""
    try:
        material = fingerprint(*args)
        key = hashlib.sha256("\n".join((environment(), material,
                                        arguments_text(args))).encode()).hexdigest()
    except NotStorable:
        return None
    except Exception:  # noqa: BLE001 (a closure that holds itself, an odd leaf …): the store
        return None  # never fails a call; the program compiles as it would without it
    kept = KEPT.get(key)
    if kept is not None:
        jax.monitoring.record_event(KEPT_HIT_EVENT)
        return kept
    path = None if where is None else where / (key + SUFFIX)
    if path is not None and path.exists():
        try:
            loaded = _load(path)
        except Exception:  # noqa: BLE001 a damaged or foreign file: compile and replace it
            pass
        else:
            jax.monitoring.record_event(HIT_EVENT)
            KEPT.put(key, loaded, jaxlift_state())
            return loaded
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    KEPT.put(key, compiled, jaxlift_state())
    if (path is not None and time.perf_counter() - t0
            >= jax.config.jax_persistent_cache_min_compile_time_secs):
        try:
            _save(path, compiled)
        except Exception:  # noqa: BLE001 not serializable here, or the folder not writable
            pass
    return compiled


class StoredProgram:
    """``jitted`` (a ``jax.jit`` function) whose executables are kept by what they are made
    from — in this process (:data:`KEPT`), and on disk while the store is on
    (:func:`store_dir`): called like ``jitted``; ``fingerprint(*args)`` describes what the
    program is made from (or raises :class:`NotStorable`). With ``JAXLIFT_PROGRAM_STORE=0``,
    under ``jax.disable_jit()``, or for arguments neither can serve (a caller's tracers, another
    device), it is ``jitted`` itself. ``lower`` is ``jitted``'s."""

    def __init__(self, jitted, fingerprint: Callable[..., str]):
        self.jitted = jitted
        self.fingerprint = fingerprint
        self.lower = jitted.lower
        self._executables: dict = {}

    def __call__(self, *args):
        key = None if switched_off() or jax.config.jax_disable_jit else _call_key(args)
        if key is None:
            return self.jitted(*args)
        exe = self._executables.get(key)
        if exe is None:  # the disk store is looked for only here, not on every repeat
            exe = self._executables[key] = (
                executable(self.jitted, self.fingerprint, args, store_dir()) or False)
        return exe(*args) if exe else self.jitted(*args)
