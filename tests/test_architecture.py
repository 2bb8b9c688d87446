"""The layout's promises (ARCHITECTURE.md), checked on the source: no import cycle among hatelens modules,
nothing imports a layer above its own, training never imports an inference backend, and no module or
function outgrows what a reader takes in at once. Imports are read with ast, at module level and inside
functions (a lazy import is still a dependency)."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Layers, lowest first: a module may import its own layer and the ones below it.
LAYERS = ("data", "backends", "evaluation", "training", "serving", "sweep", "pipeline", "cli")
# Base modules: any layer may import them; they import only each other (and the exceptions below).
BASE = ("hatelens", "config", "runs", "errors", "process_team", "report", "resources", "extras", "trackers", "files")
# The base modules' imports of a layer, each for a reason (ARCHITECTURE.md lists them too).
EXCEPTIONS = {
    ("hatelens.runs", "hatelens.data.labels"): "reading predictions.jsonl back encodes labels as data/ defines them",
    ("hatelens.runs", "hatelens.data.formats"): "predictions.jsonl is read with the one line-safe JSONL reader",
    ("hatelens.config", "hatelens.data.labels"): "the defaults name the target groups that data/labels defines once",
    ("hatelens.report.content", "hatelens.evaluation.criteria"):
        "the report states the criteria verdict and loss curves that evaluation/criteria computes",
}
INFERENCE_BACKENDS = ("hatelens.backends.hf", "hatelens.backends.openai_compat", "hatelens.backends.reference",
                      "hatelens.backends.reference_finetune")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60  # not counting the docstring


def module_names(src: Path) -> dict[str, Path]:
    """{dotted name: file} of every module under src/hatelens (a package by its __init__)."""
    names = {}
    for path in sorted((src / "hatelens").rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The hatelens modules `name` imports anywhere in its file, with the packages whose __init__ that
    runs (but not its own ancestors, which are loaded before it)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)
    resolved = set()
    for target in targets:
        parts = target.split(".")
        resolved.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))  # packages run their __init__
    ancestors = {".".join(name.split(".")[:end]) for end in range(1, name.count(".") + 1)}
    return {target for target in resolved if target in known and target != name and target not in ancestors}


def import_graph(src: Path) -> dict[str, set[str]]:
    names = module_names(src)
    return {name: imports_of(name, path, set(names)) for name, path in names.items()}


def component(module: str) -> str:
    """The layer or base module a module belongs to: hatelens.training.train -> training."""
    parts = module.split(".")
    if len(parts) == 1:
        return "hatelens"
    return "cli" if parts[1] == "__main__" else parts[1]


def excepted(importer: str, target: str) -> bool:
    """An exception covers its module and the packages above it (whose __init__ the import runs)."""
    return any(importer == allowed_importer and (allowed == target or allowed.startswith(target + "."))
               for allowed_importer, allowed in EXCEPTIONS)


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for importer, targets in sorted(graph.items()):
        for target in sorted(targets):
            low, high = component(importer), component(target)
            if high in BASE or excepted(importer, target):
                continue
            if low in BASE:
                found.append(f"{importer} imports {target}: a base module imports the {high} layer")
            elif LAYERS.index(high) > LAYERS.index(low):
                found.append(f"{importer} imports {target}: {low} may not import the {high} layer above it")
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of more than one module (Tarjan), as a sorted list."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

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
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


@pytest.fixture(scope="module")
def graph():
    return import_graph(SRC)


def test_no_import_cycle(graph):
    assert cycles(graph) == []


def test_nothing_imports_a_layer_above_its_own(graph):
    assert set(component(module) for module in graph) <= set(LAYERS) | set(BASE)  # every folder has a place
    assert layer_violations(graph) == []


def test_training_never_imports_an_inference_backend(graph):
    training = {module: sorted(targets & set(INFERENCE_BACKENDS)) for module, targets in graph.items()
                if component(module) == "training"}
    assert training and not any(training.values()), training


def test_modules_and_functions_stay_readable():
    too_long = []
    for name, path in module_names(SRC).items():
        source = path.read_text(encoding="utf-8")
        if source.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if ast.get_docstring(node) is not None:
                    lines -= node.body[0].end_lineno - node.body[0].lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {lines} lines")
    assert too_long == []


def test_the_checks_catch_a_cycle_an_upward_import_and_a_base_module_reaching_up(tmp_path):
    files = {
        "hatelens/__init__.py": "",
        "hatelens/runs.py": "from hatelens.training import helper\n",  # base -> layer
        "hatelens/data/__init__.py": "",
        "hatelens/data/a.py": "def late():\n    from hatelens.cli import main\n",  # upward, inside a function
        "hatelens/cli/__init__.py": "from hatelens.cli.main import run\n",
        "hatelens/cli/main.py": "from . import other\n",  # relative
        "hatelens/cli/other.py": "import hatelens.cli.main\n",  # cycle main <-> other
        "hatelens/training/__init__.py": "",
        "hatelens/training/helper.py": "from hatelens.runs import x\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert cycles(graph) == [["hatelens.cli.main", "hatelens.cli.other"], ["hatelens.runs", "hatelens.training.helper"]]
    assert layer_violations(graph) == [
        "hatelens.data.a imports hatelens.cli: data may not import the cli layer above it",
        "hatelens.data.a imports hatelens.cli.main: data may not import the cli layer above it",
        "hatelens.runs imports hatelens.training: a base module imports the training layer",
        "hatelens.runs imports hatelens.training.helper: a base module imports the training layer",
    ]
