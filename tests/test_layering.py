"""Imports run one way (docs/architecture.md#layering): every module's imports, function-local
ones included, are checked against the rule table below, and nothing imports ember's folders
as top-level packages (`import passes` would load a second copy of every class)."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent  # the `ember` package
FOLDERS = (
    "runtime",
    "core",
    "dialects",
    "frontend",
    "passes",
    "codegen",
    "engine",
    "tools",
    "integrations",
)
# What each folder may import of ember besides itself (docs/architecture.md, "Layering").
MAY_IMPORT: dict[str, frozenset[str]] = {
    "runtime": frozenset(),
    "core": frozenset({"runtime"}),
    "dialects": frozenset({"core", "runtime"}),
    "frontend": frozenset({"dialects", "core", "runtime"}),
    "passes": frozenset({"dialects", "core", "runtime"}),
    "codegen": frozenset({"dialects", "core", "runtime"}),
    # The library proper: the compile driver, the model wrappers, the cache, Config/Predictor.
    "engine": frozenset({"frontend", "dialects", "passes", "codegen", "core", "runtime"}),
    # The command line and the debugging tools, on top of the library; nothing imports them
    # but themselves, the tests and the benchmarks.
    "tools": frozenset(FOLDERS) - {"integrations"},
    # Optional integrations with serving frameworks run artifacts with the thin runtime.
    "integrations": frozenset({"runtime"}),
    "benchmarks": frozenset(FOLDERS),
    "tests": frozenset({*FOLDERS, "tests"}),
    "": frozenset(FOLDERS) - {"tools"},  # ember/__init__.py: the public API
}
# Modules allowed more than their folder: the compile context (weights + target) is core's one
# module above the dialects, since it loads them; no dialect imports it (FORBIDDEN below).
MODULE_MAY_IMPORT: dict[str, frozenset[str]] = {"ember.core.context": frozenset({"dialects"})}
# Finer rules inside a folder: (importing module prefix, imported module prefix).
FORBIDDEN: tuple[tuple[str, str], ...] = (
    # The dialects know nothing of the compile context that loads them.
    ("ember.dialects", "ember.core.context"),
    # Bufferization comes before the kernel lowerings; the layouts both use are in dialects/.
    ("ember.passes.conversion.graph_to_kernel", "ember.passes.conversion.kernel_to_loops"),
    # Only the frontend reads ONNX: below it nothing knows the format.
    *(
        (f"ember.{folder}", "onnx")
        for folder in ("runtime", "core", "dialects", "passes", "codegen")
    ),
    # Converters share the frontend's public context, never each other's internals.
    ("ember.frontend.ops.", "ember.frontend.onnx_importer"),
)
# A top-level `import <name>` of one of these means the repository root is on sys.path.
BARE = frozenset({*FOLDERS, "tests", "benchmarks"})


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["ember", *parts])


@functools.lru_cache(maxsize=1)  # imports() and private_imports() read each file in turn
def _parse(source: str) -> ast.Module:
    return ast.parse(source)


def _statements(tree: ast.Module) -> Iterator[ast.AST]:
    """Every statement of `tree` at any depth (in functions, classes, branches, handlers):
    an import is a statement, so the expressions (most of the nodes) are not walked."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            children = getattr(node, field, None)
            if isinstance(children, list):
                stack.extend(children)


def imports(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, at any depth."""
    found = []
    for node in _statements(_parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            # `from ember.frontend import ops` imports a module too: check `ember.frontend.ops`.
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return found


def private_imports(source: str, module: str) -> list[str]:
    """Private names (`_x`) that a frontend module imports from another ember module: the
    frontend's modules share public names only (the converters' context, shared builders)."""
    if not module.startswith("ember.frontend"):
        return []
    return [
        f"{module}:{node.lineno} imports the private name {node.module}.{alias.name}"
        for node in _statements(_parse(source))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ember.")
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]


def folder_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every import of `source` (the text of `module`) that runs against the rules."""
    found = []
    own = folder_of(module)
    for line, name in imports(source, module, is_package):
        top = name.split(".")[0]
        if top in BARE:
            found.append(f"{module}:{line} imports '{name}' as a top-level package")
            continue
        if top == "ember" and name.count(".") >= 1:
            target = folder_of(name)
            is_folder = target in BARE
            allowed = MAY_IMPORT.get(own, frozenset()) | MODULE_MAY_IMPORT.get(module, frozenset())
            if is_folder and target != own and target not in allowed:
                found.append(f"{module}:{line} ({own or 'ember'}/) imports {name} ({target}/)")
        for importer, imported in FORBIDDEN:
            if (module + ".").startswith(importer) and (name + ".").startswith(imported + "."):
                found.append(f"{module}:{line} imports {name} (rule: {importer} -/-> {imported})")
    return found


def source_files() -> list[Path]:
    skip = {"build", ".git"}
    return sorted(
        p
        for p in ROOT.rglob("*.py")
        if not skip & set(p.relative_to(ROOT).parts)
        and not p.relative_to(ROOT).parts[0].startswith(("ember-repro", "."))
    )


def test_every_import_follows_the_layering() -> None:
    files = source_files()
    assert len(files) > 100, files  # the walk found the package
    problems = [
        problem
        for path in files
        for problem in [
            *violations(path.read_text(), module_name(path), path.name == "__init__.py"),
            *private_imports(path.read_text(), module_name(path)),
        ]
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "module, source, expected",
    [
        ("ember.runtime.x", "from ember.dialects import graph", "runtime/) imports"),
        ("ember.dialects.x", "def f():\n    from ember.passes import pipeline", "dialects/"),
        ("ember.frontend.x", "import ember.engine.compile", "frontend/) imports"),
        ("ember.tools.x", "from tests.oracle import assert_close", "top-level package"),
        ("ember.benchmarks.x", "from ember.tests import oracle", "benchmarks/) imports"),
        ("ember.dialects.x", "import onnx", "-/-> onnx"),
        (
            "ember.passes.conversion.graph_to_kernel",
            "from ..conversion.kernel_to_loops import conv",
            "-/->",
        ),
        ("ember.frontend.ops.conv", "from ember.frontend.onnx_importer import x", "-/->"),
        ("ember.core.target", "from ember.dialects import graph", "core/) imports"),
        ("ember.dialects.weights", "from ember.core.context import make_context", "-/->"),
    ],
)
def test_the_checker_finds_each_kind_of_back_edge(module: str, source: str, expected: str) -> None:
    found = violations(source, module)
    assert found and expected in found[0], found


def test_a_private_frontend_import_is_found() -> None:
    source = "from ember.frontend.ops.shape import _reshape_target"
    assert private_imports(source, "ember.frontend.ops.conv")
    assert not private_imports(
        "from ember.frontend.ops.shape import pad_constant", "ember.frontend.ops.conv"
    )


def test_the_checker_accepts_the_documented_direction() -> None:
    assert violations("from ember.core.target import Target", "ember.dialects.weights") == []
    assert violations("from ember.dialects.graph import Graph", "ember.core.context") == []
    assert violations("from ember.dialects import graph", "ember.frontend.context") == []
    assert violations("import ember.frontend", "ember.engine.check") == []
    assert violations("from ember.engine.compile import compile", "ember.tools.cli") == []
