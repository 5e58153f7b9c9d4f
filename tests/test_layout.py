"""The package's floors (tagestimate/__init__.py): an import never points up a floor, wings do not
import each other, no two modules import each other (directly or round a longer cycle), and modules
stay small. Imports inside functions count: a lazy import is still a dependency."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "tagestimate")
MAX_LINES = 450  # "modules stay under ~400 lines": a little slack, a hard stop

GROUND = {"tagestimate", "errors", "files", "tfenv", "images", "labels", "modelconfig", "model", "weights",
          "storage", "httpclient", "ndl", "iiif", "manifest", "records", "annotations", "embeddings", "extratags",
          "sources", "catalogue", "corrections", "viewer"}
# floor of each top-level name (a module, or a wing sub-package); the ground floor is 0
FLOORS = {"formats": 1, "crawl": 2, "train": 2, "tag": 2, "review": 3, "discover": 3, "cli": 4, "commands": 4, "__main__": 5}


def module_names():
    """Every module of the package as a dotted name ('tagestimate.tag.inference')."""
    names = {}
    for folder, _, files in os.walk(PACKAGE):
        for file in files:
            if file.endswith(".py"):
                relative = os.path.relpath(os.path.join(folder, file), ROOT)[:-3].replace(os.sep, ".")
                names[relative.removesuffix(".__init__")] = os.path.join(folder, file)
    return names


def imports_of(name, path, known):
    """The package modules that `name` imports anywhere in its file, as dotted names."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                # `from tagestimate.tag import inference` imports a module; `from x import name` its module
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {other for other in found if other in known and other != name}


def floor(name):
    parts = name.split(".")
    if len(parts) == 1:
        return 0
    if parts[1] in FLOORS:
        return FLOORS[parts[1]]
    assert parts[1] in GROUND, f"{name}: not on any floor; add it to tests/test_layout.py's GROUND or FLOORS"
    return 0


def wing(name):
    parts = name.split(".")
    return parts[1] if len(parts) > 2 else None


@pytest.fixture(scope="module")
def graph():
    known = module_names()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def test_the_checker_sees_the_imports_it_must_judge(graph):
    # guards the checker itself: if it parsed nothing, every other test here would pass vacuously
    assert "tagestimate.tag.inference" in graph
    assert "tagestimate.images" in graph["tagestimate.tag.inference"]
    assert "tagestimate.formats" in graph["tagestimate.tag.inference"]


def test_no_import_points_up_a_floor_or_across_wings(graph):
    wrong = []
    for name, targets in graph.items():
        for target in targets:
            if target == "tagestimate":
                continue
            if floor(target) > floor(name):
                wrong.append(f"{name} (floor {floor(name)}) imports {target} (floor {floor(target)})")
            elif floor(target) == floor(name) == 2 and wing(target) != wing(name):
                wrong.append(f"{name} imports {target}: wings do not import each other")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycle(graph):
    state, cycles = {}, []

    def visit(name, path):
        state[name] = "open"
        for target in sorted(graph[name]):
            if target == "tagestimate" or target.startswith(name + "."):
                continue  # a package's __init__ and its own modules
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_modules_stay_small():
    too_long = []
    for name, path in module_names().items():
        with open(path, encoding="utf-8") as handle:
            lines = sum(1 for _ in handle)
        if lines > MAX_LINES:
            too_long.append(f"{name}: {lines} lines")
    assert not too_long, f"split these (limit {MAX_LINES}): " + ", ".join(sorted(too_long))
