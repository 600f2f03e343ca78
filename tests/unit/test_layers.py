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


# The in-sandbox runner and the SaaS drivers run with only their own folder on the path, so they import each other
# by bare name (`from relay import Stream`), which grimp and import-linter cannot see. Their graph is read here from
# the files themselves (imports inside functions included) and held to the same rules: every module named in a
# layer, each importing only layers below its own, no cycle. The drivers run beside copies of runner modules.
STANDALONE_LAYERS = {
    "executor/runner": [
        ["supervisor"],
        ["processes", "artifacts", "channel", "egress_relay"],
        ["relay", "workfiles", "confine"],  # what a SaaS session host runs too
        ["rules", "wire"],
        ["child"],
    ],
    "providers/drivers": [
        ["session_host", "driver", "session_call", "session_open"],
    ],
}


def bare_imports(folder: Path) -> dict[str, set[str]]:
    """Module name → the names it imports (absolute, first component), for every .py file of `folder`."""
    import ast

    found = {}
    for path in sorted(folder.glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[path.stem] = names
    return found


def standalone_graph(folder: Path) -> dict[str, set[str]]:
    """The bare-name imports among the runner's and the drivers' own modules (standard library left out)."""
    runner = bare_imports(ROOT / "executor" / "runner")
    local = bare_imports(folder)
    own = set(runner) | set(local)
    return {module: {name for name in names if name in own and name != module} for module, names in local.items()}


def test_the_runner_and_drivers_are_named_in_their_layers_and_import_only_downwards():
    for relative, layers in STANDALONE_LAYERS.items():
        graph_ = standalone_graph(ROOT / relative)
        level = {module: depth for depth, layer in enumerate(layers) for module in layer}
        assert sorted(graph_) == sorted(level), f"name every module of {relative} in STANDALONE_LAYERS"
        runner_level = {module: depth for depth, layer in enumerate(STANDALONE_LAYERS["executor/runner"])
                        for module in layer}
        for module, imported in graph_.items():
            for name in imported:
                if name in level:
                    assert level[name] > level[module], f"{relative}/{module} imports {name}, not below it"
                else:  # a driver using a runner module shipped beside it: never the supervisor's own parts
                    assert runner_level[name] >= 2, f"{relative}/{module} imports the runner's {name}"


def test_no_import_cycle_in_the_runner_or_drivers():
    for relative in STANDALONE_LAYERS:
        assert strongly_connected(standalone_graph(ROOT / relative)) == []


def test_a_cycle_planted_in_the_runner_is_found(tmp_path):
    planted = tmp_path / "runner"
    planted.mkdir()
    for path in (ROOT / "executor" / "runner").glob("*.py"):
        (planted / path.name).write_text(path.read_text())
    wire = planted / "wire.py"
    wire.write_text(wire.read_text() + "\n\ndef later():\n    import relay  # a cycle hidden in a function\n")
    cycles = strongly_connected(standalone_graph(planted))
    assert any({"relay", "wire"} <= set(group) for group in cycles), cycles
