"""The one dependency rule, read from the source: nothing under runtime/ imports torch, pdd.training or pdd.export — at
the top of a module or lazily inside a function, by `import`, `from … import` or importlib/__import__ with a literal name.

(tests/runtime/test_no_torch.py checks the same at run time with torch blocked, but only along the code paths it runs;
this reads every line, so a lazy import on a rarely taken path cannot hide.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[1] / "runtime"
FORBIDDEN = ("torch", "pdd.training", "pdd.export")


def imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import in the tree, however nested, including importlib.import_module("…") and
    __import__("…") with a literal name; `from pdd import training` counts as pdd.training."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append((node.lineno, first.value))
    return found


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def test_the_checker_sees_lazy_and_dynamic_imports() -> None:
    code = """
import numpy
def f():
    import torch.nn
    from pdd import training
    from pdd.export.graphs import x
    importlib.import_module("pdd.export")
    __import__("torch")
"""
    bad = sorted({module for _, module in imported_names(ast.parse(code)) if forbidden(module)})
    assert bad == ["pdd.export", "pdd.export.graphs", "pdd.export.graphs.x", "pdd.training", "torch", "torch.nn"]
    assert not forbidden("torchaudio_like_name") and not forbidden("pdd.runtime.trainingless")


@pytest.mark.parametrize("path", sorted(RUNTIME.rglob("*.py")), ids=lambda p: str(p.relative_to(RUNTIME)))
def test_runtime_never_imports_torch_training_or_export(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = [f"line {line}: {module}" for line, module in imported_names(tree) if forbidden(module)]
    assert not bad, f"runtime/{path.relative_to(RUNTIME)} imports what the runtime must not: {bad}"


def test_every_runtime_module_was_checked() -> None:
    assert len(list(RUNTIME.rglob("*.py"))) > 20  # the glob found the package, not an empty folder
