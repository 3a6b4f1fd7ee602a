"""The package layout: geodiff's sub-packages and top-level modules import one another in one direction only."""

import ast
from pathlib import Path

import geodiff

ROOT = Path(geodiff.__file__).parent


def room_of(module: str) -> str | None:
    """``geodiff.<room>...`` -> ``room`` (a sub-package or a top-level module); None outside geodiff."""
    parts = module.split(".")
    return parts[1] if parts[0] == "geodiff" and len(parts) > 1 else None


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``{room: rooms it imports}`` from every import statement (module level or inside a function) of the source."""
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) == 2:
            continue  # the package's own lazy re-exports
        room = parts[1]
        package = list(parts[:-1])  # a module's package; an __init__ is its own
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
                module = ".".join(p for p in (base, node.module or "") if p)
                targets = [f"{module}.{alias.name}" for alias in node.names] if module == "geodiff" else [module]
            else:
                continue
            for target in targets:
                other = room_of(target)
                if other is not None and other != room and not other.startswith("__"):
                    graph.setdefault(room, set()).add(other)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every edge ``(a, b)`` of ``graph`` from which ``a`` can be reached again."""

    def reachable(start: str) -> set[str]:
        seen, stack = set(), [start]
        while stack:
            for nxt in graph.get(stack.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    return sorted((a, b) for a, targets in graph.items() for b in targets if a in reachable(b))


def test_the_cycle_finder_finds_a_loop():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [("a", "b"), ("b", "c"), ("c", "a")]
    assert cycles({"a": {"b"}, "b": {"c"}}) == []


def test_the_graph_reads_relative_and_function_level_imports(tmp_path):
    package = tmp_path / "geodiff"
    (package / "inner").mkdir(parents=True)
    (package / "inner" / "__init__.py").write_text("")
    source = "from ..grid import wrap_longitude\ndef f():\n    import geodiff.io.codec\n"
    (package / "inner" / "a.py").write_text(source)
    (package / "grid.py").write_text("from geodiff import provenance\n")
    assert import_graph(package) == {"inner": {"grid", "io"}, "grid": {"provenance"}}


def test_no_import_loop_between_rooms():
    graph = import_graph()
    assert {"grid", "provenance", "observations", "operators", "pipelines", "baselines"} <= set(graph) | {
        room for targets in graph.values() for room in targets}
    assert cycles(graph) == []


def test_ground_floor_modules_import_no_other_room_but_errors():
    graph = import_graph()
    assert graph.get("grid", set()) <= {"errors"} and graph.get("provenance", set()) == set()
