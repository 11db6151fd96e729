"""The modules directly under overlay/ do no I/O (STYLE.md, habit 1): they import no I/O
library and none of overlay's own I/O sub-packages (store/, gpus/)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = sorted((Path(__file__).resolve().parents[2] / "overlay").glob("*.py"))
IO = {"sqlalchemy", "redis", "celery", "kombu", "flask", "marshmallow", "pynvml", "requests",
      "subprocess", "socket", "psycopg2", "os"}
IO_SUBPACKAGES = {"overlay.store", "overlay.gpus"}


def imported_modules(source: str) -> set[str]:
    """Every module ``source`` imports, dotted and absolute (relative imports resolved
    against the ``overlay`` package; ``from overlay import store`` names ``overlay.store``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(["overlay", *filter(None, [base])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_imported_modules_sees_absolute_relative_and_from_package_imports():
    # Given each way a core module could reach the store
    source = "import overlay.store.jobs\nfrom .gpus import fake\nfrom overlay import store\n"
    # Then each is seen
    assert {"overlay.store.jobs", "overlay.gpus.fake", "overlay.store"} <= imported_modules(source)


@pytest.mark.parametrize("module", CORE, ids=lambda p: p.name)
def test_core_module_imports_no_io_library(module):
    imported = {name.split(".")[0] for name in imported_modules(module.read_text())}
    assert not imported & IO, f"{module.name} imports {imported & IO}"


@pytest.mark.parametrize("module", CORE, ids=lambda p: p.name)
def test_core_module_imports_neither_the_store_nor_the_gpu_probes(module):
    reached = {name for name in imported_modules(module.read_text())
               if any(name == pkg or name.startswith(f"{pkg}.") for pkg in IO_SUBPACKAGES)}
    assert not reached, f"{module.name} imports {sorted(reached)}"


def test_the_import_linter_contract_lists_every_core_module():
    # Given the pure-core contract that `make lint` checks with import-linter
    from configparser import ConfigParser

    config = ConfigParser()
    config.read(Path(__file__).resolve().parents[2] / ".importlinter")
    listed = set(config["importlinter:contract:pure-core"]["source_modules"].split())
    # Then every module directly under overlay/ is in it (a new one must be added there)
    assert listed == {f"overlay.{p.stem}" for p in CORE if p.stem != "__init__"}
