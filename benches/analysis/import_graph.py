"""The structure of a deepnet checkout: module sizes, imports between modules, and cycles.

    python benches/analysis/import_graph.py                  # this checkout
    python benches/analysis/import_graph.py --root OTHER/TREE  # another one (e.g. an old commit's worktree)
    python benches/analysis/import_graph.py --markdown        # tables for a note or a doc

Reads the sources only (Python's ast, nothing is imported), so it works on any commit.
Every ``import``/``from ... import`` of a deepnet module counts, lazy ones inside functions
too: a cycle through a lazy import is still a cycle of the design.  Packages are drawn by
their first level (deepnet.nn.conv -> deepnet.nn) for the package graph.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

MAX_LINES = 500  # the limit for one module


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_tree(root: Path) -> tuple[dict[str, int], dict[str, set[str]]]:
    """(module -> line count, module -> deepnet modules it imports)."""
    sizes: dict[str, int] = {}
    sources: dict[str, tuple[Path, ast.Module]] = {}
    for path in sorted((root / "deepnet").rglob("*.py")):
        if "_data" in path.parts:
            continue
        name = module_name(root, path)
        text = path.read_text(encoding="utf-8")
        sizes[name] = len(text.splitlines())
        sources[name] = (path, ast.parse(text))
    graph = {name: set() for name in sources}
    for name, (path, tree) in sources.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # "from pkg import mod" imports the module pkg.mod when there is one
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in sources else base for alias in node.names
                ]
            for target in targets:
                while target and target not in sources:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return sizes, graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    parser.add_argument("--markdown", action="store_true", help="markdown tables")
    args = parser.parse_args()
    sizes, graph = read_tree(args.root)
    module_cycles = cycles(graph)
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(package_of(module), set()).update(
            package_of(t) for t in targets if package_of(t) != package_of(module)
        )
    package_cycles = cycles(packages)
    over = {m: n for m, n in sizes.items() if n > MAX_LINES}
    bar = "|" if args.markdown else ""
    print(
        f"{len(sizes)} modules, {sum(sizes.values())} lines; largest {max(sizes.values())}; over {MAX_LINES}: {len(over)}"
    )
    for module, n in sorted(over.items(), key=lambda item: -item[1]):
        print(f"  {module}: {n} lines")
    print(f"module cycles: {len(module_cycles)}")
    for component in module_cycles:
        print("  " + " <-> ".join(component))
    print(f"package cycles: {len(package_cycles)}")
    for component in package_cycles:
        print("  " + " <-> ".join(component))
    if args.markdown:
        print("\n| package | imports |\n|---|---|")
    else:
        print("package imports:")
    for package in sorted(packages):
        targets = ", ".join(sorted(packages[package])) or "-"
        print(f"{bar} {package} {bar} {targets} {bar}" if args.markdown else f"  {package} -> {targets}")


if __name__ == "__main__":
    main()
