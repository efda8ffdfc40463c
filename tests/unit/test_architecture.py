"""The shape of ``bridge/``: no import cycles, no module over 400 lines without a stated reason.

The import graph counts every import, wherever it is (module level, inside a function, under
``TYPE_CHECKING``): an import inside a function still ties the two modules together, it only
hides the knot until run time. Relative imports are resolved, and ``from x import y`` is an
edge to ``x`` and, when ``y`` is a submodule, to ``x.y`` as well.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "bridge"
MAX_LINES = 400
REASON_PREFIX = "Over 400 lines:"

LOOP = PACKAGE / "pipeline" / "loop.py"
LOOP_MAX_LINES = 250
"""The loop only wires the pure parts of bridge/pipeline/ (issue #12): new logic goes beside it."""


def module_name(path: Path, root: Path) -> str:
    """``bridge/sink/base.py`` -> ``bridge.sink.base``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_under(package: Path) -> dict[str, Path]:
    """Every module of ``package`` (a directory) by its dotted name."""
    root = package.parent
    return {module_name(p, root): p for p in sorted(package.rglob("*.py"))}


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterable[str]:
    """Every dotted name an import in ``tree`` may load, relative imports resolved.

    ``from x import y`` gives ``x`` and ``x.y`` (the caller keeps ``x.y`` only when it is a
    module).
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            yield source
            yield from (f"{source}.{alias.name}" for alias in node.names)


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules among ``modules`` it imports."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names = imported_names(tree, name, path.name == "__init__.py")
        graph[name] = {n for n in names if n in modules}
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle of ``graph`` as ``[a, b, ..., a]``, or None when there is none.

    Depth-first, in sorted order so the same graph always names the same cycle. Edges to nodes
    that are not keys of ``graph`` are ignored.
    """
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        stack = [iter(sorted(graph[start]))]
        while stack:
            following = next(stack[-1], None)
            if following is None:
                stack.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
                continue
            if following in on_path:
                return [*path[path.index(following) :], following]
            if following in done or following not in graph:
                continue
            path.append(following)
            on_path.add(following)
            stack.append(iter(sorted(graph[following])))
    return None


def checked_modules() -> dict[str, Path]:
    return modules_under(PACKAGE)


# -- the checker checked, on made-up graphs and packages ---------------------------------------


def test_find_cycle_finds_a_cycle_and_names_it() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]


def test_find_cycle_finds_a_cycle_not_reached_from_the_first_node() -> None:
    graph = {"a": {"b"}, "b": set(), "x": {"y"}, "y": {"z"}, "z": {"y"}}
    assert find_cycle(graph) == ["y", "z", "y"]


def test_find_cycle_finds_a_module_importing_itself() -> None:
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_find_cycle_passes_a_graph_without_cycles() -> None:
    # a diamond: two paths to the same node are not a cycle
    graph = {"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set(), "e": {"a", "outside"}}
    assert find_cycle(graph) is None


def test_the_graph_counts_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from pkg.sub import c\n",  # a submodule through from-import
        "b.py": "def f():\n    from . import a\n",  # relative, inside a function
        "sub/__init__.py": "",
        "sub/c.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..b import f\n"
        ),
        "sub/d.py": "import pkg.a\nfrom .c import x\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text, encoding="utf-8")
    graph = import_graph(modules_under(pkg))
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.sub", "pkg.sub.c"},
        "pkg.b": {"pkg", "pkg.a"},
        "pkg.sub": set(),
        "pkg.sub.c": {"pkg.b"},
        "pkg.sub.d": {"pkg.a", "pkg.sub.c"},
    }
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.c", "pkg.b", "pkg.a"]


# -- the bridge ----------------------------------------------------------------------------------


def test_the_loop_stays_short() -> None:
    lines = len(LOOP.read_text(encoding="utf-8").splitlines())
    assert lines <= LOOP_MAX_LINES, (
        f"{LOOP.relative_to(ROOT)} has {lines} lines (> {LOOP_MAX_LINES})"
    )


def test_nothing_of_the_test_tools_is_in_the_package() -> None:
    """The local broker, endpoints and demo live in testbed/, outside the wheel."""
    assert not (PACKAGE / "local").exists()
    assert not (PACKAGE / "pipeline.py").exists()


def test_bridge_has_no_import_cycle() -> None:
    modules = checked_modules()
    assert "bridge.app" in modules and "bridge.mapping.mapper" in modules  # the walk found them
    cycle = find_cycle(import_graph(modules))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def long_modules(modules: Mapping[str, Path]) -> list[str]:
    """Modules over :data:`MAX_LINES` lines whose docstring gives no reason."""
    found = []
    for name, path in modules.items():
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if not any(line.strip().startswith(REASON_PREFIX) for line in doc.splitlines()):
            found.append(f"{name} ({lines} lines)")
    return found


def test_long_modules_are_found_unless_they_say_why(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "x = 1\n" * MAX_LINES
    (pkg / "short.py").write_text('"""Short."""\n' + "x = 1\n" * (MAX_LINES - 1))
    (pkg / "long.py").write_text('"""Long."""\n' + body)
    (pkg / "said.py").write_text(f'"""Long.\n\n{REASON_PREFIX} one job, told whole.\n"""\n' + body)
    assert long_modules(modules_under(pkg)) == [f"pkg.long ({MAX_LINES + 1} lines)"]


def test_no_module_is_over_400_lines_without_a_reason() -> None:
    found = long_modules(checked_modules())
    assert not found, (
        f"over {MAX_LINES} lines, with no line starting {REASON_PREFIX!r} in the module"
        f" docstring: {', '.join(found)}"
    )


@pytest.mark.parametrize("leaf", ["bridge.codes", "bridge.limits", "bridge.errors"])
def test_shared_leaves_import_nothing_from_the_bridge(leaf: str) -> None:
    assert import_graph(modules_under(PACKAGE))[leaf] == set()
