"""The layer contracts in pyproject.toml name every module of the project, and no import cycle exists — not even
one hidden by an import inside a function (grimp reads those too)."""

import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sandboxctl", "providers", "executor")


def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES)


def named_in_contracts() -> set[str]:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    return {name.strip() for contract in contracts for layer in contract.get("layers", [])
            for name in layer.split("|")}


def test_every_module_is_named_in_a_layer_contract():
    named = named_in_contracts()
    # The project-wide contract names whole packages; inside each, every module must be named on its own (or by a
    # sub-package named as a whole, such as `management` or `migrations`).
    packages = {name for name in named if any(name == package or name.startswith(package + ".")
                                              for package in PACKAGES) and name.count(".") <= 1
                and any(other.startswith(name + ".") for other in named)}
    unnamed = []
    for module in graph().modules - set(PACKAGES):  # a root package's own __init__ only wires it up
        parts = module.split(".")
        covering = {".".join(parts[:depth]) for depth in range(1, len(parts) + 1)} & named
        if module not in named and not covering - packages:
            unnamed.append(module)
    assert unnamed == [], f"name these in a layer contract in pyproject.toml: {sorted(unnamed)}"


def strongly_connected(imports: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively: the groups of modules that import each other in a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for start in imports:
        if start in index:
            continue
        work = [(start, iter(sorted(imports[start])))]
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
                    work.append((child, iter(sorted(imports.get(child, ())))))
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
                    groups.append(sorted(group))
    return groups


def test_no_import_cycle():
    imports = {module: set(graph_.find_modules_directly_imported_by(module)) for graph_ in [graph()]
               for module in graph_.modules}
    assert strongly_connected(imports) == []


def test_the_cycle_finder_finds_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
