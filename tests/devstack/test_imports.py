"""The ML modules and the API never import the stacks built around them: only the CLI does."""

from __future__ import annotations

import ast
from pathlib import Path

import heart_mlops

PACKAGE = Path(heart_mlops.__file__).parent


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return found


def test_no_module_outside_devstack_but_the_cli_imports_it():
    modules = [
        path
        for path in PACKAGE.rglob("*.py")
        if "devstack" not in path.relative_to(PACKAGE).parts and path.name != "cli.py"
    ]
    assert len(modules) > 10
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(names)
        for path in modules
        if (names := {n for n in imported_modules(path) if n.startswith("heart_mlops.devstack")})
    }
    assert offenders == {}
