"""The import graph follows the layout of DESIGN §9 (STYLE §11: the folder tree is the architecture).

The graph is read with ``ast`` from the source, so it holds every import a module can run: at
the top and inside functions (a lazy import still ties the two modules together). Imports under
``if TYPE_CHECKING:`` never run and are left out; an import by name through a registry's
``"module:attr"`` string is not an edge either (that is what a registry is for).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "longrl"

# Cycles tolerated for now, each inside one package: the sandbox executor starts an RpcSession
# lazily and the RPC session reuses the executor's records.
KNOWN_CYCLES = [{"longrl.rewards.sandbox.executor", "longrl.rewards.sandbox.rpc"}]


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node, top-level or nested, skipping ``if TYPE_CHECKING:`` bodies."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(node)


def import_graph() -> dict[str, set[str]]:
    """module -> the longrl modules it imports (``from pkg import name`` counts ``pkg.name`` if a module)."""
    mods = _modules()

    def owner(name: str) -> str | None:  # the longest longrl module that ``name`` lies in
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            deps.update(o for o in map(owner, targets) if o is not None)
        deps.discard(mod)
        graph[mod] = deps
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_reader_sees_lazy_and_relative_imports():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [{"a", "b", "c"}] and reachable(g, "d") == {"a", "b", "c"}
    tree = ast.parse("import x\nif TYPE_CHECKING:\n    import y\nelse:\n    import z\n"
                     "def f():\n    from w import v\n")
    names = [a.name for n in _imports(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in _imports(tree) if isinstance(n, ast.ImportFrom)]
    assert sorted(names) == ["w", "x", "z"]


def test_no_import_cycles(graph):
    unexpected = [sorted(c) for c in cycles(graph) if not any(c <= k for k in KNOWN_CYCLES)]
    assert not unexpected, f"import cycles: {unexpected}"


def test_config_imports_no_trainer_and_no_cluster(graph):
    """The run config is a leaf of the design: loading it must not pull in the trainer or Ray."""
    heavy = {m for m in reachable(graph, "longrl.config")
             if m.startswith(("longrl.train.", "longrl.distributed"))}
    assert heavy <= {"longrl.train.backends"}, f"longrl.config reaches {sorted(heavy)}"


def test_the_loop_does_not_know_ray(graph):
    assert "longrl.distributed.ray_cluster" not in reachable(graph, "longrl.train.loop")


def test_rewards_do_not_import_rollout(graph):
    bad = {m: sorted(d for d in deps if d.startswith("longrl.rollout"))
           for m, deps in graph.items() if m.startswith("longrl.rewards")}
    assert not {m: d for m, d in bad.items() if d}


def test_verbs_do_not_import_the_top_level_cli(graph):
    """``longrl.cli`` dispatches to the verbs; a verb importing it back would go up the tree."""
    bad = sorted(m for m, deps in graph.items() if m.count(".") >= 2 and "longrl.cli" in deps)
    assert not bad, f"{bad} import longrl.cli"


# ---- the backend registry: its "module:factory" strings are edges the graph above cannot see


def test_every_backend_resolves_and_unknown_names_are_refused():
    from longrl.train import backends

    assert backends.backend_names() == ["local", "ray"]
    for name in backends.backend_names():
        assert callable(backends.get_backend(name))  # imports the module, not Ray itself
    with pytest.raises(ValueError, match=r"unknown backend 'slurm'; choose from \['local', 'ray'\]"):
        backends.get_backend("slurm")


def test_workers_close_everything_even_if_one_part_fails():
    from longrl.train.backends import Workers

    closed = []

    class Part:
        def __init__(self, name: str, fail: bool = False):
            self.name, self.fail = name, fail

        def close(self):
            closed.append(self.name)
            if self.fail:
                raise RuntimeError(self.name)

    w = Workers(Part("engine"), Part("router", fail=True), release=lambda: closed.append("cluster"))
    with pytest.raises(RuntimeError, match="router"):
        w.close()
    assert closed == ["router", "engine", "cluster"]
    Workers(object(), Part("router")).close()  # an engine without close, no backend to release
