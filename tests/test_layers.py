"""The house's layers hold: inside the core, imports point one way (data <- models <- statistics, plotting <-
influence, ecif, findings <- report <- workflows <- cli), with no import cycle, and no core module grows past
~300 lines. Read from the source (every import, also those inside functions), nothing is imported."""
from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "influencegate"
#: The floor of each part of the core: a module may import its own floor or a lower one.
FLOORS = {"data": 0, "resources": 0, "models": 1, "statistics": 2, "plotting": 2, "influence": 3, "ecif": 3,
          "findings": 3, "report": 4, "workflows": 5, "cli": 6}
#: Lines a core module may hold (the ~300 of the house rules, with a little slack for a docstring).
MAX_LINES = 310


def _modules() -> dict[str, Path]:
    found = {}
    for file in CORE.rglob("*.py"):
        parts = list(file.relative_to(CORE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(["influencegate", *parts])] = file
    return found


def _imports(file: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("influencegate"):
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("influencegate")}
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, file in modules.items():
        targets = set()
        for imported in _imports(file):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            # importing a.b.c runs the faces a and a.b too (unless they hold the importer)
            while imported:
                if imported != name and not name.startswith(imported + "."):
                    targets.add(imported)
                imported = imported.rpartition(".")[0] if imported.count(".") > 1 else ""
        graph[name] = targets
    return graph


def _floor(module: str) -> int | None:
    parts = module.split(".")
    return FLOORS.get(parts[1]) if len(parts) > 1 else None


def test_core_imports_point_down_only() -> None:
    upward = sorted((m, t) for m, targets in _graph().items() for t in targets
                    if _floor(m) is not None and _floor(t) is not None and _floor(t) > _floor(m)
                    and not t.startswith(("influencegate.integrations", "influencegate.pipelines",
                                          "influencegate.steps")))
    assert not upward, f"imports that point up the layers: {upward}"


def test_core_has_no_import_cycle() -> None:
    graph, seen, stack, cycles = _graph(), set(), [], []

    def visit(node: str) -> None:
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            visit(target)
        stack.pop()

    for module in sorted(graph):
        visit(module)
    assert not cycles, f"import cycles: {cycles[:3]}"


def test_only_the_cli_reaches_the_mlops_packages() -> None:
    outside = {m for m, targets in _graph().items()
               if any(t.startswith(("influencegate.integrations", "influencegate.pipelines", "influencegate.steps"))
                      for t in targets)}
    assert {m for m in outside if not m.startswith("influencegate.cli")} == set()


def test_no_core_module_is_much_over_300_lines() -> None:
    long = {str(f.relative_to(CORE)): n for f in CORE.rglob("*.py") if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, f"core modules over {MAX_LINES} lines: {long}"
