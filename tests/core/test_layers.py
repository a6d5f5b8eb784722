"""The pure core stays pure: no broker client, no OS access, no threads, no wall clock."""

from __future__ import annotations

import ast
from pathlib import Path

import broker_mesos

PACKAGE = Path(broker_mesos.__file__).parent
FORBIDDEN_IN_CORE = {"pika", "psutil", "click", "rich", "threading", "time", "socket", "subprocess", "os",
                     "random", "broker_mesos.bus", "broker_mesos.master", "broker_mesos.agent",
                     "broker_mesos.framework", "broker_mesos.cli"}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_imports_nothing_impure() -> None:
    offenders = {}
    for path in sorted((PACKAGE / "core").glob("*.py")):
        bad = {name for name in imports_of(path)
               if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IN_CORE)}
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}


def test_only_bus_and_testing_import_pika() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).parts
        if relative[0] in ("bus", "testing"):
            continue
        if any(name == "pika" or name.startswith("pika.") for name in imports_of(path)):
            offenders.append("/".join(relative))
    assert offenders == []
