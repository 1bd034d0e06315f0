"""The shape of the code: no import cycles (imports inside functions included), and dagster only in the glue.

Every import of every module of ``ci_pipeline`` is read with :mod:`ast`, at any depth (a function-level import
is still a dependency: it only moves the failure to run time), with ``from . import x`` resolved to the module
``x`` when ``x`` is one. Imports under ``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ci_pipeline

ROOT = Path(ci_pipeline.__file__).resolve().parent
#: Where dagster may be imported: the glue, the definitions, the command line (its entry point silences dagster's
#: beta warnings) and the benchmarks that drive it.
DAGSTER_ALLOWED = (
    "ci_pipeline.defs",
    "ci_pipeline.definitions",
    "ci_pipeline.cli",
    "ci_pipeline.commands",
    "ci_pipeline.benchmarks",
)


def modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``) for every module under ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def imported_names(name: str, path: Path, is_package: bool) -> set[tuple[str, str | None]]:
    """Every import of a module, anywhere in the file, as (module, name imported from it or None).

    Relative imports are made absolute: ``from . import x`` in ``a.b.c`` is ``("a.b", "x")``.
    """
    package = name.split(".") if is_package else name.split(".")[:-1]
    names: set[tuple[str, str | None]] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            names.update((base, alias.name) for alias in node.names)
    return names


def _runtime_nodes(tree: ast.AST):
    """Every node of a module except the bodies of ``if TYPE_CHECKING:`` (type-only imports)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def all_imports(root: Path) -> dict[str, set[tuple[str, str | None]]]:
    """Module -> its :func:`imported_names`, for every module under ``root``."""
    return {name: imported_names(name, path, is_package) for name, (path, is_package) in modules(root).items()}


def import_graph(root: Path, imports: dict[str, set[tuple[str, str | None]]] | None = None) -> dict[str, set[str]]:
    """Module -> the modules of the same tree it imports (``from pkg import sub`` counts as ``pkg.sub``).

    ``imports`` are the tree's :func:`all_imports` when already read."""
    known = modules(root)
    imports = all_imports(root) if imports is None else imports
    graph: dict[str, set[str]] = {}
    for name in known:
        targets = set()
        for module, member in imports[name]:
            imported = f"{module}.{member}" if f"{module}.{member}" in known else module
            while imported and imported not in known:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one node (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def package_of(module: str) -> str:
    """The first two dotted parts: ``ci_pipeline.config.measures`` -> ``ci_pipeline.config``."""
    return ".".join(module.split(".")[:2])


def mutual_packages(graph: dict[str, set[str]]) -> list[str]:
    """Pairs of packages that import each other, each with one import of either direction as evidence."""
    between: dict[tuple[str, str], tuple[str, str]] = {}
    for module, targets in graph.items():
        for target in targets:
            if package_of(module) != package_of(target):
                between.setdefault((package_of(module), package_of(target)), (module, target))
    return [
        f"{a} <-> {b}: {' imports '.join(between[a, b])}; {' imports '.join(between[b, a])}"
        for a, b in sorted(between)
        if a < b and (b, a) in between
    ]


@pytest.fixture(scope="module")
def project_imports() -> dict[str, set[tuple[str, str | None]]]:
    """Every import of every module of ci_pipeline, read once for this module's tests (they only read it)."""
    return all_imports(ROOT)


def test_no_import_cycle_between_modules(project_imports):
    found = cycles(import_graph(ROOT, project_imports))
    assert not found, "modules importing each other (directly or around a loop): " + "; ".join(map(str, found))


def test_no_two_packages_import_each_other(project_imports):
    found = mutual_packages(import_graph(ROOT, project_imports))
    assert not found, "packages importing each other:\n" + "\n".join(found)


def test_domain_code_never_imports_dagster(project_imports):
    offenders = [
        name
        for name, imports in project_imports.items()
        if not name.startswith(DAGSTER_ALLOWED) and any(m == "dagster" or m.startswith("dagster.") for m, _ in imports)
    ]
    assert not offenders, f"only {', '.join(DAGSTER_ALLOWED)} may import dagster; found it in {offenders}"


def test_the_walk_finds_imports_inside_functions_and_relative_ones(tmp_path):
    package = tmp_path / "shop"
    (package / "config").mkdir(parents=True)
    (package / "stage").mkdir()
    for folder in (package, package / "config", package / "stage"):
        (folder / "__init__.py").write_text("")
    (package / "config" / "model.py").write_text("def parsed():\n    from ..stage import rules\n")
    (package / "stage" / "rules.py").write_text("from shop.config.model import parsed\n")
    (package / "stage" / "run.py").write_text(
        "from typing import TYPE_CHECKING\nfrom . import rules\nif TYPE_CHECKING:\n    from shop.config import model\n"
    )

    graph = import_graph(package)

    assert graph["shop.config.model"] == {"shop.stage.rules"}
    assert graph["shop.stage.run"] == {"shop.stage.rules"}
    assert cycles(graph) == [["shop.config.model", "shop.stage.rules"]]
    assert mutual_packages(graph) == [
        "shop.config <-> shop.stage: shop.config.model imports shop.stage.rules; "
        "shop.stage.rules imports shop.config.model"
    ]
