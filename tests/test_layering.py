"""Imports flow one way: flows orchestrate, agents decide, metrics compute, tasks do units of
work; and the code imports itself only through the ``ecocompress`` namespace."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("tasks", "metrics", "agents", "flows", "deployments")
# what each package may import from the project (besides itself)
ALLOWED = {
    "tasks": set(),
    "metrics": {"tasks"},
    "agents": {"metrics", "tasks"},
    "flows": {"agents", "metrics", "tasks"},
    "deployments": {"flows", "agents", "metrics", "tasks"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_flow_one_way(package):
    bad = []
    for f in sorted((REPO / package).rglob("*.py")):
        for line, module in _imports(f):
            top, *rest = module.split(".")
            if top in PACKAGES:
                bad.append(f"{f.relative_to(REPO)}:{line} imports {module} (not namespaced)")
            elif top == "ecocompress" and rest:
                target = rest[0]
                if target != package and target not in ALLOWED[package]:
                    bad.append(f"{f.relative_to(REPO)}:{line} imports {module}")
    assert not bad, "\n".join(bad)


def test_tests_import_the_namespace_only():
    bad = [
        f"{f.relative_to(REPO)}:{line} imports {module}"
        for f in sorted((REPO / "tests").rglob("*.py"))
        for line, module in _imports(f)
        if module.split(".")[0] in PACKAGES
    ]
    assert not bad, "\n".join(bad)
