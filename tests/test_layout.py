"""The package's boundaries, read from its imports with ``ast`` (DESIGN: Boundaries)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gpnas"

# The one table of rules. Parts in import order, top first: a part may import
# the parts after it in its own list, never one before it.
ALLOWED = {
    "cli": {"jobs", "report", "search", "runs", "integrations", "train", "predict", "base"},
    "jobs": {"report", "search", "runs", "integrations", "train", "predict", "base"},  # Optuna anchors
    "report": {"search", "runs", "predict", "base"},
    "search": {"runs", "predict", "base"},
    "runs": {"train", "predict", "base"},
    "integrations": {"predict", "base"},   # Optuna and other tuners
    "train": {"base"},
    "predict": {"base"},
    "base": {"base"},   # config.py, errors.py, __init__.py, __main__.py
}
# third-party modules a part must not import, and the only parts that may import others
FORBIDDEN = {"predict": {"torch"}, "train": {"deap"}, "integrations": {"torch"}}
ONLY_IN = {"multiprocessing": {"runs"}, "ray": {"runs"}, "click": {"cli"}, "optuna": {"integrations"}}
TOP_LEVEL = {"config": "base", "errors": "base", "__init__": "base", "__main__": "cli"}


def part_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    if len(rel.parts) == 1:
        return TOP_LEVEL[rel.stem]
    return rel.parts[0]


def imports(path: Path):
    """(line, top-level module, gpnas part or None) of every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "gpnas":  # from gpnas import x
                names = [f"gpnas.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != "gpnas":
                yield node.lineno, parts[0], None
            elif len(parts) == 1 or parts[1] == "__version__":
                yield node.lineno, "gpnas", "base"
            else:
                yield node.lineno, "gpnas", TOP_LEVEL.get(parts[1], parts[1])


SOURCES = sorted(PACKAGE.rglob("*.py"))


def violations(path: Path) -> list[str]:
    part = part_of(path)
    found = []
    for line, module, target in imports(path):
        where = f"{path.relative_to(PACKAGE.parent)}:{line}"
        if target is not None and target != part and target not in ALLOWED[part]:
            found.append(f"{where}: {part} imports {target}, which is above it")
        if module in FORBIDDEN.get(part, ()):
            found.append(f"{where}: {part} imports {module}")
        if module in ONLY_IN and part not in ONLY_IN[module]:
            found.append(f"{where}: {module} is imported outside {', '.join(sorted(ONLY_IN[module]))}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    assert violations(path) == []


def test_every_part_is_a_package_with_a_docstring():
    for part in ALLOWED:
        if part == "base":
            continue
        init = PACKAGE / part / "__init__.py"
        assert init.exists(), part
        assert ast.get_docstring(ast.parse(init.read_text())), f"{part}/__init__.py has no docstring"


def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / "gpnas"
    (fake / "predict").mkdir(parents=True)
    (fake / "predict" / "bad.py").write_text("import torch\nfrom gpnas.search import engine\nimport click\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    problems = violations(fake / "predict" / "bad.py")
    assert len(problems) == 3
    assert "predict imports search" in problems[1]


def test_the_search_never_imports_torch_or_the_trainer():
    """The engine, the ledger, the standard methods and the evaluation tasks get their
    costs and curves from below (DESIGN: Evaluation tasks and the ledger)."""
    import subprocess
    import sys

    code = ("import sys; import gpnas.search.engine, gpnas.search.ledger, gpnas.search.methods, "
            "gpnas.search.modes, gpnas.runs.tasks, gpnas.runs.table; "
            "print([m for m in sys.modules if m == 'torch' or m.startswith('gpnas.train')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
