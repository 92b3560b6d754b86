"""The shape of rigwatch's two programs, measured from their source with the standard library's
`ast`: how many modules and packages, how their imports layer, which edges run against the
layering, which circles there are, how many imports hide inside functions, the largest modules
and classes, and (through the `duplicates` command, where it is on PATH) the duplicate pairs.

Run it before and after a restructure and compare the two tables:

    python3 bench/architecture.py            # alert_bot/ and exporter/
    python3 bench/architecture.py --top 8    # more rows of largest modules and classes

How it counts (so two runs mean the same):
- a *module* is a .py file; a *package* a folder with an __init__.py (the top folder included).
- an *import edge* is an ordered pair (importer, imported) of modules in the same program, from
  any `import`/`from … import` anywhere in the file, except under `if TYPE_CHECKING:` (those
  never run); `from pkg import name` points at pkg's module `name` when there is one, else at
  pkg/__init__.py. A module importing its own package's __init__ is not counted.
- *layers* come from the imports at module level only (what runs when the module loads): the
  modules of one circle share a layer; a module with no such import is layer 1, every other one
  layer above the highest it imports. An edge *runs up* when it points at a module of the same
  or a higher layer (inside a circle, or an import placed in a function that the module-level
  graph would not allow).
- a *circle* is a set of two or more modules that reach each other through any edges
  (Tarjan's strongly connected components); "held open by function imports" counts those that
  would vanish with the imports inside functions.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROGRAMS = ("alert_bot", "exporter")


@dataclass
class Module:
    name: str
    path: Path
    lines: int
    top_imports: set[str] = field(default_factory=set)
    all_imports: set[str] = field(default_factory=set)
    function_imports: int = 0
    classes: list[tuple[str, int]] = field(default_factory=list)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, here: str, is_package: bool) -> list[str]:
    """The dotted names an import statement may point at (resolved later against the modules)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = here.split(".")
        if not is_package:
            anchor = anchor[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def read_module(path: Path) -> tuple[Module, list[tuple[list[str], bool]]]:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    name = module_name(path)
    module = Module(name, path, len(source.splitlines()))
    found: list[tuple[list[str], bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other, in_function)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                targets = _targets(child, name, path.name == "__init__.py")
                # `from pkg import a, b` is one statement: resolve it to its modules below.
                found.append((targets, in_function))
                if in_function:
                    module.function_imports += 1
                continue
            if isinstance(child, ast.ClassDef):
                module.classes.append((child.name, child.end_lineno - child.lineno + 1))
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            visit(child, inner)

    visit(tree, False)
    return module, found


def resolve(targets: list[str], known: set[str]) -> set[str]:
    """`from a.b import c, d` → a.b.c and a.b.d where they are modules, else a.b; `import a.b.c`
    → the longest known prefix."""
    *names, base = targets if len(targets) > 1 else (targets + targets)
    out = {n for n in names if n in known}
    if len(out) < len(names):
        prefix = base
        while prefix and prefix not in known:
            prefix = prefix.rpartition(".")[0]
        if prefix:
            out.add(prefix)
    return out


def strongly_connected(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit for deep graphs)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def layers(nodes: list[str], edges: dict[str, set[str]]) -> dict[str, int]:
    components = strongly_connected(nodes, edges)  # Tarjan yields sinks first
    component_of = {member: i for i, comp in enumerate(components) for member in comp}
    level: dict[int, int] = {}
    for i, comp in enumerate(components):
        below = [
            level[component_of[t]] for m in comp for t in edges.get(m, ()) if component_of[t] != i
        ]
        level[i] = 1 + max(below, default=0)
    return {m: level[component_of[m]] for m in nodes}


def measure(program: str) -> dict[str, object]:
    root = REPO / program
    paths = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    read = [read_module(p) for p in paths]
    modules = {m.name: m for m, _ in read}
    known = set(modules)
    for module, found in read:
        own_packages = {module.name.rpartition(".")[0]}
        for targets, in_function in found:
            for target in resolve(targets, known) - {module.name} - own_packages:
                module.all_imports.add(target)
                if not in_function:
                    module.top_imports.add(target)
    names = sorted(modules)
    top = {n: modules[n].top_imports for n in names}
    every = {n: modules[n].all_imports for n in names}
    level = layers(names, top)
    circles = [c for c in strongly_connected(names, every) if len(c) > 1]
    top_circles = {tuple(c) for c in strongly_connected(names, top) if len(c) > 1}
    up = sorted((a, b) for a in names for b in every[a] if level[b] >= level[a])
    units = _collapse(program, names, top, every)
    classes = sorted(
        ((f"{m.name}.{c}", n) for m in modules.values() for c, n in m.classes),
        key=lambda item: -item[1],
    )
    return {
        "modules": len(paths),
        "packages": sum(p.name == "__init__.py" for p in paths),
        "lines": sum(m.lines for m in modules.values()),
        "layers": max(level.values(), default=0),
        "edges": sum(len(v) for v in every.values()),
        "up": up,
        "circles": circles,
        "circles_by_function_imports": sum(tuple(c) not in top_circles for c in circles),
        "function_imports": sum(m.function_imports for m in modules.values()),
        "largest_modules": sorted(
            ((m.name, m.lines) for m in modules.values()), key=lambda item: -item[1]
        ),
        "largest_classes": classes,
        "units": units,
    }


def _collapse(
    program: str, names: list[str], top: dict[str, set[str]], every: dict[str, set[str]]
) -> dict[str, int]:
    """The same graph one level up: each top-level module and each sub-package one node (the
    granularity of a folder listing), edges between different nodes only."""

    def unit(name: str) -> str:
        return ".".join(name.split(".")[:2])

    nodes = sorted({unit(n) for n in names} - {program})
    graphs = []
    for edges in (top, every):
        graph: dict[str, set[str]] = {n: set() for n in nodes}
        for a in names:
            for b in edges[a]:
                if unit(a) != unit(b) and unit(a) in graph and unit(b) != program:
                    graph[unit(a)].add(unit(b))
        graphs.append(graph)
    unit_top, unit_every = graphs
    level = layers(nodes, unit_top)
    return {
        "units": len(nodes),
        "layers": max(level.values(), default=0),
        "edges": sum(len(v) for v in unit_every.values()),
        "up": sum(level[b] >= level[a] for a in nodes for b in unit_every[a]),
        "circles": sum(len(c) > 1 for c in strongly_connected(nodes, unit_every)),
    }


def duplicate_pairs() -> str:
    """The pair count from the `duplicates` command over the whole repository, or why not."""
    if shutil.which("duplicates") is None:
        return "n/a (no `duplicates` on PATH)"
    done = subprocess.run(
        ["duplicates", "--repo", str(REPO), "--most", "1", "--seconds", "120"],
        capture_output=True,
        text=True,
        check=False,
    )
    first = done.stdout.strip().splitlines()[0] if done.stdout.strip() else done.stderr.strip()
    return first


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=5, help="rows of largest modules/classes")
    parser.add_argument("--no-duplicates", action="store_true", help="skip the duplicates run")
    args = parser.parse_args()
    results = {p: measure(p) for p in PROGRAMS}

    def row(label: str, value) -> None:
        print(f"| {label} | " + " | ".join(str(value(results[p])) for p in PROGRAMS) + " |")

    print("| measure | " + " | ".join(f"{p}/" for p in PROGRAMS) + " |")
    print("|---|" + "---|" * len(PROGRAMS))
    row("lines of Python", lambda r: r["lines"])
    row("modules (.py files)", lambda r: r["modules"])
    row("packages", lambda r: r["packages"])
    row("import layers (module level)", lambda r: r["layers"])
    row("import edges", lambda r: r["edges"])
    row("edges running up", lambda r: len(r["up"]))
    row("import circles", lambda r: len(r["circles"]))
    row("circles held open only by function imports", lambda r: r["circles_by_function_imports"])
    row("imports inside functions", lambda r: r["function_imports"])
    row("top-level modules and sub-packages", lambda r: r["units"]["units"])
    row("… their import layers", lambda r: r["units"]["layers"])
    row("… import edges between them", lambda r: r["units"]["edges"])
    row("… edges running up", lambda r: r["units"]["up"])
    row("… circles", lambda r: r["units"]["circles"])
    for i in range(args.top):
        row(f"largest module #{i + 1} (lines)", lambda r, i=i: _pair(r["largest_modules"], i))
    for i in range(args.top):
        row(f"largest class #{i + 1} (lines)", lambda r, i=i: _pair(r["largest_classes"], i))
    print()
    for program in PROGRAMS:
        for label in ("circles", "up"):
            items = results[program][label]
            if items:
                text = "; ".join(
                    " ↔ ".join(c) if label == "circles" else " → ".join(c) for c in items
                )
                print(f"{program} {label}: {text}")
    if not args.no_duplicates:
        print(f"duplicates (whole repository): {duplicate_pairs()}")
    return 0


def _pair(items: list[tuple[str, int]], i: int) -> str:
    return f"{items[i][0]} {items[i][1]}" if i < len(items) else ""


if __name__ == "__main__":
    sys.exit(main())
