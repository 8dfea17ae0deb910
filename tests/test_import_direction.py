"""Imports inside lib/ go one way: no module reaches back (at the top or inside a function) into
a module that imports it, directly or through others; the profiler never imports the engine,
which is built on it; lib/ never imports `models` or `datasets` (docs/ARCHITECTURE.md)."""
import ast

from tests.conftest import ROOT


def module_name(path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(path) -> set:
    """Every module `path` imports, at any depth of its code ("from a.b import c" counts a.b and,
    when a.b.c is a module of ours, a.b.c)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def lib_graph() -> dict:
    modules = {module_name(p): p for p in (ROOT / "lib").rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def test_lib_modules_import_each_other_one_way_only():
    graph = lib_graph()
    # A package imports its own submodules to re-export them; a submodule importing its package's
    # name is the normal way to reach a sibling, so package -> own submodule edges are not cycles.
    edges = {a: {b for b in bs if not b.startswith(a + ".")} for a, bs in graph.items()}
    cycles = []

    def visit(node, path, on_path, done):
        on_path.add(node)
        for nxt in sorted(edges[node]):
            if nxt in on_path:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, path + [nxt], on_path, done)
        on_path.discard(node)
        done.add(node)

    done = set()
    for start in sorted(edges):
        if start not in done:
            visit(start, [start], set(), done)
    assert not cycles, "import cycles in lib/: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_profiler_does_not_import_the_engine():
    graph = lib_graph()
    back = {a: sorted(b for b in bs if b.startswith("lib.engine")) for a, bs in graph.items()
            if a.startswith("lib.profiler")}
    assert not any(back.values()), back


def test_lib_imports_no_models_or_datasets():
    wrong = {module_name(p): sorted(m for m in imports_of(p) if m.split(".")[0] in ("models", "datasets"))
             for p in (ROOT / "lib").rglob("*.py")}
    assert not any(wrong.values()), {k: v for k, v in wrong.items() if v}
