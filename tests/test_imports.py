"""The package's imports, read from the source with ``ast``: no cycle among ``xattr_jax``'s modules,
no library module importing the app layer (``xattr_jax.app``), and an import inside a function only
where the dependency is optional or heavy."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "xattr_jax"

# Third-party (and non-library) modules that may be imported inside a function, each with its reason.
LAZY_DEPENDENCIES = {
    "jax": "JAX takes ~1 s to import: the command line, data readers, image files, viz and the harness load without it",
    "flax": "the engine, the methods and the metrics run plain functions and Equinox models without it",
    "jax._src": "JAX's private API, used inside a try where it is needed (it may move)",
    "optax": "imports JAX; only training needs it",
    "orbax": "slow to import; only reading and writing checkpoints needs it",
    "matplotlib": "slow to import; only colour maps and figures need it",
    "PIL": "only image files need it",
    "rich": "only progress bars need it",
    "scipy": "slow to import; only smoothing and connected components need it",
    "grain": "only the dataset jobs' input pipeline needs it",
    "pycocotools": "optional: pip install 'xattr-jax[coco]'",
    "converters": "needs torch: pip install 'xattr-jax[converters]'",
    "fcntl": "POSIX only",
}

# Modules whose imports are inside functions by design.
LAZY_MODULES = {
    "xattr_jax": "public names are imported on first use: `import xattr_jax` loads no JAX",
    "xattr_jax.app.cli": "`xattr --help` imports the command line only; a command imports its module when it runs",
}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's ``__init__``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The package module that ``name`` (a module, or a name in one) lives in; None outside the package."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in MODULES:
            return ".".join(parts)
        parts.pop()
    return None


def _imports(module: str) -> list[tuple[str, int, bool]]:
    """``(imported name, line, inside a function)`` for every import statement of ``module``.

    ``from P import n`` gives ``P.n`` when that is a module of the package, else ``P``; relative
    imports are resolved against the module's package.
    """
    path, is_package = MODULES[module]
    package = module if is_package else module.rpartition(".")[0]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join(up + ([child.module] if child.module else []))
                for a in child.names:
                    found.append((f"{base}.{a.name}" if _resolve(f"{base}.{a.name}") == f"{base}.{a.name}" else base,
                                  child.lineno, in_function))  # fmt: skip
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


IMPORTS = {m: _imports(m) for m in MODULES}


def _graph(module_level_only: bool = False) -> dict[str, set[str]]:
    graph = {m: set() for m in MODULES}
    for m, imports in IMPORTS.items():
        for name, _, in_function in imports:
            target = _resolve(name)
            if target and target != m and not (module_level_only and in_function):
                graph[m].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (its modules in import order, the first repeated at the end) per strongly connected component."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(v):  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for component in components:
        start = min(component)
        path, seen = [start], {start: None}
        frontier = [start]
        while frontier:  # breadth-first back to the start, inside the component
            v = frontier.pop(0)
            for w in sorted(graph[v] & component):
                if w == start:
                    node, back = v, []
                    while node is not None:
                        back.append(node)
                        node = seen[node]
                    path = back[::-1] + [start]
                    frontier = []
                    break
                if w not in seen:
                    seen[w] = v
                    frontier.append(w)
        cycles.append(path)
    return cycles


def _heavy(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Module -> the lazy dependencies that importing it loads (its module-level imports, those of
    every package module they load, and of the packages above each)."""
    direct = {m: {n.split(".")[0] for n, _, f in IMPORTS[m] if not f and n.split(".")[0] in LAZY_DEPENDENCIES}
              for m in MODULES}  # fmt: skip

    def loads(m):
        reached, todo = {m}, [m]
        while todo:
            v = todo.pop()
            parents = {".".join(v.split(".")[:i]) for i in range(1, v.count(".") + 1)}
            for w in (graph[v] | parents) - reached:
                reached.add(w)
                todo.append(w)
        return set().union(*(direct[v] for v in reached))

    return {m: loads(m) for m in MODULES}


def test_the_package_has_no_import_cycle():
    assert len(MODULES) > 50, sorted(MODULES)
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (function-level imports included):\n" + "\n".join(
        " -> ".join(c) for c in cycles
    )


def test_the_reader_sees_the_imports():
    graph = _graph()
    assert "xattr_jax.models" in graph["xattr_jax.checkpoint"]  # from xattr_jax.models import build
    assert "xattr_jax.methods.cam" in graph["xattr_jax.methods.rsp"]  # from .cam import ...
    assert "xattr_jax.viz.maps" in graph["xattr_jax.viz"]  # from . import maps
    assert ("converters.torchvision", True) in {(n, f) for n, _, f in IMPORTS["xattr_jax.app.cli"]}
    assert "xattr_jax.checkpoint" in graph["xattr_jax.app.cli"]  # inside a function
    assert "xattr_jax.checkpoint" not in _graph(module_level_only=True)["xattr_jax.app.cli"]


def test_the_library_never_imports_the_app_layer():
    graph = _graph()
    app = {m for m in MODULES if m == "xattr_jax.app" or m.startswith("xattr_jax.app.")}
    assert "xattr_jax.app.cli" in app
    uses = sorted(f"{m} imports {t}" for m in MODULES.keys() - app for t in graph[m] & app)
    assert not uses, "the library imports the app layer (xattr_jax.app):\n" + "\n".join(uses)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_function_level_imports_only_for_optional_or_heavy_dependencies():
    heavy = _heavy(_graph(module_level_only=True))
    unjustified = []
    for m, imports in sorted(IMPORTS.items()):
        if m in LAZY_MODULES:
            continue
        for name, line, in_function in imports:
            if not in_function:
                continue
            top = name.split(".")[0]
            # a named dependency, unless the module loads it anyway (a named submodule: always)
            if top in LAZY_DEPENDENCIES and (top not in heavy[m] or any(
                    name == k or name.startswith(k + ".") for k in LAZY_DEPENDENCIES if "." in k)):
                continue
            target = _resolve(name)
            # a package module may be imported late when it loads a heavy dependency the importer does not
            if target is not None and heavy[target] - heavy[m]:
                continue
            where = f"{MODULES[m][0].relative_to(PACKAGE.parent)}:{line}: "
            if not unjustified or not unjustified[-1].startswith(where):  # one line per statement
                unjustified.append(where + name)
    assert not unjustified, (
        "imports inside functions with no reason (move them to the top of the module, or name the "
        "dependency in LAZY_DEPENDENCIES with its reason):\n" + "\n".join(unjustified)
    )
