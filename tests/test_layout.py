"""The package's layout: every import points down one list of layers, no cycles, modules of one concept.

The imports are read from the source (``ast``), in-function imports included, so an import hidden inside a
function cannot hide a cycle. ``TYPE_CHECKING`` blocks count too: a type that can only be named by looking
up the list is a sign that the code sits in the wrong layer.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hemolab"

#: The layers, lowest first. A module may import from its own layer and the layers below it, never above.
#: (The README's module table shows the same list.)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("hemolab", "hemolab.errors", "hemolab.atomic"),  # the package root only re-exports the error type
    ("hemolab.validation", "hemolab.config"),
    ("hemolab.io", "hemolab.synth", "hemolab.datasets"),
    ("hemolab.preprocess",),
    ("hemolab.metrics",),
    ("hemolab.models", "hemolab.checkpoint"),
    ("hemolab.segment",),  # inference never imports training; training validates on whole scans with it
    ("hemolab.losses",),
    ("hemolab.training",),
    ("hemolab.architectures",),
    ("hemolab.evaluation", "hemolab.agreement"),
    ("hemolab.experiments",),
    ("hemolab.viz",),
    ("hemolab.course",),
    ("hemolab.commands", "hemolab.cli", "hemolab.__main__"),
)

#: Modules may be this long at most (one concept per module).
MAX_LINES = 600


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The hemolab modules ``name`` imports anywhere in its source (top level, functions, TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in known:  # "hemolab.segment.tiling.tiled_predict" -> the module
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hemolab"):
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            target = resolve(name, path.name == "__init__.py", node)
            if target.startswith("hemolab"):
                for alias in node.names:
                    add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def layer_of(module: str) -> int:
    best, depth = None, -1
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = i, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layout.py::LAYERS: add it to one")
    return best


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (as a list of modules, first == last), or None."""
    colour: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if colour[nxt] == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if colour[nxt] == 0 and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(edges):
        if colour[node] == 0 and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle_hidden_in_a_function(tmp_path, monkeypatch):
    """The checker itself: an in-function import that closes a loop is found."""
    pkg = tmp_path / "hemolab"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from hemolab.b import g\n\ndef f():\n    return g()\n")
    (pkg / "b.py").write_text("def g():\n    from hemolab import a\n\n    return a\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    cycle = find_cycle(graph())
    assert cycle is not None and set(cycle) == {"hemolab.a", "hemolab.b"}


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_import_points_down_the_layers():
    wrong = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert not wrong, "imports that point up the layer list:\n" + "\n".join(wrong)


def test_inference_does_not_reach_into_training():
    """Segmenting a scan needs the network, its checkpoint and preprocessing, never the training code."""
    edges = graph()
    for module, targets in edges.items():
        if module.startswith("hemolab.segment"):
            assert not {t for t in targets if t.startswith("hemolab.training")}, module


def test_no_import_error_fallbacks_for_hemolab_modules():
    """hemolab's own modules are always there: no ``try: from hemolab... except ImportError``."""
    offenders = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers
            ):
                for inner in ast.walk(ast.Module(body=node.body, type_ignores=[])):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("hemolab"):
                        offenders.append(f"{name}:{inner.lineno}")
    assert not offenders, offenders


#: Where a function may import hemolab: the command-line sub-commands import the library when they run, so
#: that ``hemolab --help`` does not pay for torch; ``hemolab.preprocess`` loads its MONAI transforms on
#: first use (PEP 562), so that the rest of preprocessing does not pay for MONAI.
LAZY_IMPORTERS = ("hemolab.commands", "hemolab.preprocess")


def test_in_function_imports_of_hemolab_only_where_documented():
    offenders = []
    for name, path in modules().items():
        if name.startswith(LAZY_IMPORTERS):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom | ast.Import):
                        names = (
                            [inner.module or ""]
                            if isinstance(inner, ast.ImportFrom)
                            else [a.name for a in inner.names]
                        )
                        if any(n.startswith("hemolab") for n in names) or (
                            isinstance(inner, ast.ImportFrom) and inner.level > 0
                        ):
                            offenders.append(f"{name}:{inner.lineno}")
    assert not offenders, offenders


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_are_at_most_600_lines(name):
    lines = len(modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it by concept"


def test_the_readme_module_table_names_every_layer():
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    missing = [
        p
        for layer in LAYERS
        for p in layer
        if p not in ("hemolab", "hemolab.__main__") and f"`{p}`" not in readme
    ]
    assert not missing, f"README's module table does not name: {missing}"


def test_citations_point_inside_the_repository():
    """The code, notebooks and docs cite docs/methods.md or the papers, never a file outside the repository."""
    root = PACKAGE.parent
    outside = ("PAPERS.md", "../shared", "shared/seeds")
    files = [p for d in ("hemolab", "tests", "notebooks", "docs", "benchmarks", "data_scripts") for p in (root / d).rglob("*")
             if p.suffix in (".py", ".ipynb", ".md") and p.name != "test_layout.py"]  # fmt: skip
    files.append(root / "README.md")
    offenders = [
        f"{p.relative_to(root)}: {word}" for p in files for word in outside if word in p.read_text("utf-8")
    ]
    assert not offenders, offenders
    assert (root / "docs" / "methods.md").is_file()
