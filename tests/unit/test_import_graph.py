"""The import graph: the core reaches CRMs only through the registry, and adapters never reach the web.

Every import statement counts, wherever it stands: at the top, inside a function, under
``if TYPE_CHECKING:``; ``from adapters import hubspot`` is an import of ``adapters.hubspot``,
and so is ``importlib.import_module("adapters.hubspot")``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What connector/ may import from adapters/: the registry (the package) and the port.
CORE_MAY_IMPORT = {"adapters", "adapters.base"}
WEB_FRAMEWORKS = ("flask", "werkzeug")


def imported(source: str, module: str) -> Iterator[tuple[int, str]]:
    """(line, module) for every module ``source`` imports; ``module`` is its own dotted name."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module)
            yield node.lineno, base
            for alias in node.names:  # ``from adapters import hubspot`` imports a subpackage
                if _is_module(f"{base}.{alias.name}"):
                    yield node.lineno, f"{base}.{alias.name}"
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and _literal(node.args):
            yield node.lineno, _literal(node.args)


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def _literal(args: list[ast.expr]) -> str:
    first = args[0] if args else None
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else ""


def _absolute(node: ast.ImportFrom, module: str) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".")[: -node.level]
    return ".".join([*package, *([node.module] if node.module else [])])


def _is_dynamic_import(func: ast.expr) -> bool:
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in ("import_module", "__import__")


def modules(folder: str) -> Iterator[tuple[Path, str]]:
    for path in sorted((ROOT / folder).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def concrete_adapter_imports(source: str, module: str) -> list[str]:
    """The imports of ``source`` that reach into a CRM's package (anything but the registry and port)."""
    found = []
    for line, name in imported(source, module):
        if name.startswith("adapters.") and _top(name) not in CORE_MAY_IMPORT:
            found.append(f"{module}:{line} imports {name}")
    return found


def _top(name: str) -> str:
    """``adapters.base.Connection`` → ``adapters.base``; ``adapters.hubspot.api`` → ``adapters.hubspot``."""
    return ".".join(name.split(".")[:2])


def web_imports(source: str, module: str) -> list[str]:
    return [
        f"{module}:{line} imports {name}"
        for line, name in imported(source, module)
        if name.split(".")[0] in WEB_FRAMEWORKS
    ]


def test_the_core_never_imports_a_crm_package():
    found = [
        problem
        for path, module in modules("connector")
        for problem in concrete_adapter_imports(path.read_text(), module)
    ]
    assert found == []


def test_adapters_never_import_the_web_framework():
    found = [
        problem for path, module in modules("adapters") for problem in web_imports(path.read_text(), module)
    ]
    assert found == []


def test_the_core_does_use_the_registry():
    """The rule above is not empty: the core does reach the CRMs, through the registry."""
    reached = {
        name for path, module in modules("connector") for _, name in imported(path.read_text(), module)
    }
    assert {"adapters", "adapters.base"} <= reached


@pytest.mark.parametrize(
    "source",
    [
        "import adapters.hubspot",
        "from adapters.salesforce import outbound",
        "from adapters import sandbox",
        "def f():\n    from adapters.sandbox.tables import SandboxDeal",
        "if TYPE_CHECKING:\n    from adapters.hubspot.adapter import HubSpotAdapter",
        "import importlib\nimportlib.import_module('adapters.hubspot.setup')",
    ],
)
def test_each_way_of_importing_a_crm_package_is_seen(source):
    assert concrete_adapter_imports(source, "connector.web.example"), source


def test_the_registry_and_the_port_are_allowed():
    source = "import adapters\nfrom adapters import AdapterSet\nfrom adapters.base import CrmAdapter, Plugin"
    assert concrete_adapter_imports(source, "connector.services") == []


def test_a_web_import_in_an_adapter_is_seen():
    assert web_imports("def f():\n    from flask import request", "adapters.hubspot.inbound")
    assert web_imports("from werkzeug.exceptions import HTTPException", "adapters.base")
