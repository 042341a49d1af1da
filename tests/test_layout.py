"""The package reads as the pipeline: each folder uses only the ones below it, nothing imports in a
circle (lazy imports inside functions count too), and every module fits on a few screens.

    foundation (config, redact, fileio)  <  vision  <  identity  <  door, measure, web  <  workflow, demo, cli
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "facepi"
LAYERS = {"foundation": 0, "vision": 1, "identity": 2, "door": 3, "measure": 3, "web": 3, "top": 4}
FOUNDATION = {"facepi.config", "facepi.redact", "facepi.fileio", "facepi.models", "facepi"}
MAX_LINES = 430  # "no module over ~400 lines"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(mod: str) -> str:
    parts = mod.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    if mod in FOUNDATION or ".".join(parts[:2]) in FOUNDATION:
        return "foundation"
    return "top"


def imports(path: Path, known: set[str], root: Path = ROOT) -> set[str]:
    """Every facepi module ``path`` imports, at the top or inside a function, relative imports and
    ``importlib.import_module("facepi....")`` included."""
    found: set[str] = set()
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(filter(None, [base, node.module or ""]))
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) ==
              "import_module" and node.args and isinstance(node.args[0], ast.Constant)):
            names = [str(node.args[0].value)]
        for n in names:
            if n.startswith("facepi.") or n == "facepi":
                while n not in known and "." in n:
                    n = n.rsplit(".", 1)[0]
                if n in known:
                    found.add(n)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    g = {m: imports(p, known) - {m} for m, p in mods.items()}
    for m in g:  # a package's __init__ is imported on the way to its modules: not an edge worth a cycle
        g[m] -= {p for p in g[m] if m.startswith(p + ".")}
    return g


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(g[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_nothing_climbs_back_up():
    g = graph()
    climbs = [f"{m} ({layer(m)}) imports {n} ({layer(n)})" for m, ns in g.items() for n in sorted(ns)
              if LAYERS[layer(n)] > LAYERS[layer(m)]]
    assert not climbs, "\n".join(climbs)


def test_the_folders_are_the_pipeline():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert {"vision", "identity", "door", "measure", "cli", "config"} <= folders, folders
    g = graph()
    assert any(layer(n) == "vision" for n in g["facepi.identity.enrol"])  # the layers are really used
    assert any(layer(n) == "identity" for n in g["facepi.door.daemon"])
    assert any(layer(n) == "identity" for n in g["facepi.web.app"])  # the page meets the loop only in the gallery
    assert not any(layer(n) == "door" for n in g["facepi.web.app"] | g["facepi.web.uploads"])


def test_every_module_fits_on_a_few_screens():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_rule_sees_relative_and_dynamic_imports(tmp_path):
    """The checks above can fail: an upward import written relatively or loaded by name is still seen."""
    vision = tmp_path / "facepi" / "vision"
    vision.mkdir(parents=True)
    (vision / "x.py").write_text("from ..door import daemon\nfrom . import align\nimport importlib\n"
                                 "importlib.import_module('facepi.cli')\n")
    known = {"facepi", "facepi.door", "facepi.door.daemon", "facepi.cli", "facepi.vision", "facepi.vision.align",
             "facepi.vision.x"}
    assert imports(vision / "x.py", known, tmp_path) == {"facepi.door", "facepi.door.daemon", "facepi.vision",
                                                         "facepi.vision.align", "facepi.cli"}


def test_the_converter_uses_only_the_vision_core():
    """convert/ checks the models it makes with the on-device vision core, and nothing of the door service."""
    known = set(modules())
    used = {n for p in sorted((ROOT / "convert").glob("*.py")) for n in imports(p, known)}
    assert used and all(layer(n) in ("vision", "foundation") for n in used), sorted(used)


def test_every_folder_of_the_package_ships_in_the_wheel():
    """pyproject.toml lists the packages by name: a new folder left out would be missing from the wheel (a
    stale build/ folder in a checkout can hide that; tests/test_packaging.py catches it on a clean clone)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {module_name(p.parent) for p in PACKAGE.rglob("__init__.py")}
    assert folders <= listed, sorted(folders - listed)


def test_the_converter_lives_in_convert():
    assert (ROOT / "convert" / "cli.py").exists() and not (ROOT / "facepi_convert").exists()
