"""The modules directly under overlay/ do no I/O (STYLE.md, habit 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = sorted((Path(__file__).resolve().parents[2] / "overlay").glob("*.py"))
IO = {"sqlalchemy", "redis", "celery", "kombu", "flask", "marshmallow", "pynvml", "requests",
      "subprocess", "socket", "psycopg2", "os"}


@pytest.mark.parametrize("module", CORE, ids=lambda p: p.name)
def test_core_module_imports_no_io_library(module):
    tree = ast.parse(module.read_text())
    imported = {
        (alias.name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [node])
    }
    assert not imported & IO, f"{module.name} imports {imported & IO}"
