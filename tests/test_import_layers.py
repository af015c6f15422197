"""The package imports downwards only and has no import cycle.

Layers, lowest first; a module may import its own layer and any lower one:

    base     amalgam (__init__), amalgam.errors, amalgam.ui, amalgam.writable: infrastructure
             everyone may import
    tasks    amalgam.tasks.*      task specs, datasets, the teacher architecture names a task may use
    models   amalgam.models.*     architectures (registry), checkpoints, model input, metrics
    distill  amalgam.distill.*    in sub-layers, lowest first: losses (pure tensor functions),
                                  methods (loss terms), engine (the training loop), teachers
                                  (ensemble, loading, cache), runs (a run's lifecycle)
    harness  amalgam.harness.*    evaluation, reports, assets
    workflows amalgam.workflows.*  comparisons and the pipeline, over whole runs
    api      amalgam.api.*        the library: amalgam.distil / evaluate / Teacher over modules and Datasets
    cli      amalgam.cli.*        the front ends

One exception: `amalgam/__init__.py` names the library's public names (amalgam.distil, …) and
imports `amalgam.api` inside its PEP 562 `__getattr__`, only when one is first used; that edge
(LAZY_EDGES) climbs from base to api and would close a cycle if it ran at import, so it is
checked on its own (test_the_lazy_api_names_load_only_on_use) and left out of the graph.

Every import counts, at module level or inside a function, `import x` and `from x import y`,
so an import hidden in a function can neither climb a layer nor close a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import amalgam

PACKAGE = Path(amalgam.__file__).resolve().parent
BASE = {"amalgam": -1, "amalgam.errors": -1, "amalgam.ui": -1, "amalgam.writable": -1}
LAYERS = {"amalgam.tasks": 0, "amalgam.models": 10,
          "amalgam.distill": 20, "amalgam.distill.losses": 21, "amalgam.distill.methods": 22,
          "amalgam.distill.engine": 23, "amalgam.distill.teachers": 24, "amalgam.distill.runs": 25,
          "amalgam.harness": 30, "amalgam.workflows": 40, "amalgam.api": 45, "amalgam.cli": 50}
LAYER_NAMES = {-1: "base", 0: "tasks", 10: "models", 20: "distill", 21: "distill.losses",
               22: "distill.methods", 23: "distill.engine", 24: "distill.teachers",
               25: "distill.runs", 30: "harness", 40: "workflows", 45: "api", 50: "cli"}
LAZY_EDGES = {("amalgam", "amalgam.api")}  # amalgam.__getattr__: see the module docstring


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    if module in BASE:
        return BASE[module]
    """The layer of the longest prefix of `module` that LAYERS names (a sub-layer before its layer)."""
    parts = module.split(".")
    for end in range(len(parts), 1, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} has no layer; add it to LAYERS in {Path(__file__).name}")


def imported_modules(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `module` imports anywhere in its body."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{anchor}.{source}" if source else anchor
            # `from package import submodule` depends on the submodule, not just the package
            found.update(f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                         for alias in node.names)
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    graph = {name: imported_modules(name, path, modules) - {name} for name, path in modules.items()}
    for source, target in LAZY_EDGES:
        graph[source].discard(target)
    return graph


def upward_edges(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{source} ({LAYER_NAMES[layer_of(source)]}) imports {target} ({LAYER_NAMES[layer_of(target)]})"
        for source, targets in graph.items() for target in targets
        if layer_of(target) > layer_of(source)
    )


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """One path per cycle found by depth-first search, as `a -> b -> … -> a`."""
    found, done, stack = [], set(), []

    def visit(module: str) -> None:
        stack.append(module)
        for target in sorted(graph[module]):
            if target in stack:
                found.append(" -> ".join([*stack[stack.index(target):], target]))
            elif target not in done:
                visit(target)
        stack.pop()
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module)
    return found


def test_the_walk_sees_imports_inside_functions():
    graph = import_graph()
    assert "amalgam.tasks.toml_task" in graph["amalgam.tasks.builtin"]  # imported inside a function
    assert "amalgam.distill.methods" in graph["amalgam.distill.runs.run"]  # `from package import name`


def test_no_module_imports_a_higher_layer():
    edges = upward_edges(import_graph())
    assert not edges, "imports that climb a layer:\n" + "\n".join(edges)


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(found)


def test_the_checks_catch_an_upward_edge_and_a_cycle():
    graph = {"amalgam.tasks.a": {"amalgam.models.b"}, "amalgam.models.b": {"amalgam.models.c"},
             "amalgam.models.c": {"amalgam.models.b"}}
    assert upward_edges(graph) == ["amalgam.tasks.a (tasks) imports amalgam.models.b (models)"]
    assert cycles(graph) == ["amalgam.models.b -> amalgam.models.c -> amalgam.models.b"]


def test_the_distill_sub_layers_are_checked():
    graph = {"amalgam.distill.engine.trainer": {"amalgam.distill.teachers.cache"},
             "amalgam.distill.teachers.cache": set()}
    assert upward_edges(graph) == ["amalgam.distill.engine.trainer (distill.engine) imports "
                                   "amalgam.distill.teachers.cache (distill.teachers)"]


def test_every_declared_teacher_architecture_is_registered():
    """Task files name architectures from `tasks.architectures`; each must have a builder."""
    from amalgam.models.registry import registered_teachers
    from amalgam.tasks.architectures import TEACHER_ARCHS

    assert registered_teachers() == tuple(sorted(TEACHER_ARCHS))


def test_the_lazy_api_names_load_only_on_use():
    """`import amalgam` does not load the library layer; `amalgam.distil` does, and `dir` lists it."""
    import subprocess
    import sys

    code = ("import sys, amalgam; assert 'amalgam.api' not in sys.modules; "
            "assert {'distil', 'evaluate', 'Teacher', 'UserError'} <= set(dir(amalgam)); "
            "amalgam.distil; assert 'amalgam.api' in sys.modules; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr
    graph = {name: imported_modules(name, path, all_modules()) for name, path in all_modules().items()}
    assert graph["amalgam"] == {"amalgam.api"}  # the only import amalgam/__init__.py makes in the package
