"""The layout shows the architecture: the library (``score_sde`` outside ``jobs``) never imports
the jobs, no module imports itself back through a cycle, and modules and functions stay small."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "score_sde"
ENTRY_POINTS = {"score_sde.__main__"}  # run by ``python -m score_sde``, never imported
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The score_sde modules ``name`` imports anywhere in its body (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in known:
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            found.update(subs or {node.module})
    return found - {name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_the_library_never_imports_the_jobs(graph):
    climbs = {
        f"{name} imports {target}"
        for name, targets in graph.items()
        if not name.startswith("score_sde.jobs") and name not in ENTRY_POINTS
        for target in targets
        if target.startswith("score_sde.jobs")
    }
    assert not climbs, sorted(climbs)
    assert graph["score_sde.jobs.main"], "the graph sees the jobs' imports"


def test_no_import_cycle(graph):
    """Packages importing their own submodules (``__init__``) are the one allowed loop."""
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if target.startswith(node + "."):  # a package's __init__ and its own submodules
                continue
            if state.get(target) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def _too_long() -> dict[str, int]:
    """{module or qualified function name: lines} over the limits."""
    out = {}
    for name, path in _modules().items():
        source = path.read_text()
        if (lines := len(source.splitlines())) > MAX_MODULE_LINES:
            out[name] = lines

        def visit(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                qualified = f"{prefix}.{getattr(child, 'name', '')}"
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    if (length := child.end_lineno - child.lineno + 1) > MAX_FUNCTION_LINES:
                        out[qualified] = length
                visit(child, qualified if isinstance(child, ast.ClassDef) else prefix)

        visit(ast.parse(source), name)
    return out


def test_modules_and_functions_are_small():
    too_long = _too_long()
    assert not too_long, (
        f"over {MAX_MODULE_LINES} lines a module, {MAX_FUNCTION_LINES} a function: {too_long}"
    )
