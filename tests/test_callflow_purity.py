"""``callflow/`` stays a pure core: no I/O libraries, no clock.

The engine must be testable in microseconds and replayable from the log, so
no module in ``callflow/`` may import the event loop, network or database
libraries, or read the time itself (the time always comes in on events).
Checked on the source with ``ast``, so a lazy import inside a function counts
too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CALLFLOW = Path(__file__).resolve().parent.parent / "callflow"
MODULES = sorted(CALLFLOW.glob("*.py"))
FORBIDDEN_MODULES = {"asyncio", "aiohttp", "sqlalchemy", "panoramisk", "time", "socket"}
CLOCK_CALLS = {
    ("time", "time"), ("time", "monotonic"), ("time", "perf_counter"),
    ("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today"),
}


def imported_modules(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def clock_calls(tree: ast.AST) -> list[str]:
    """Calls like ``time.time()``, ``datetime.now()`` or ``dt.datetime.now()``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            owner_name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if (owner_name, node.func.attr) in CLOCK_CALLS:
                found.append(f"line {node.lineno}: {owner_name}.{node.func.attr}()")
    return found


def test_callflow_has_modules_to_check() -> None:
    """The check sees the engine's modules (so it cannot pass by looking at nothing)."""
    assert {"engine.py", "config.py", "roster.py", "events.py", "commands.py"} <= {m.name for m in MODULES}


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_no_io_or_clock_imports(module: Path) -> None:
    """No callflow module imports asyncio, aiohttp, sqlalchemy, panoramisk, time or socket."""
    tree = ast.parse(module.read_text(encoding="utf-8"), filename=str(module))
    assert imported_modules(tree) & FORBIDDEN_MODULES == set()


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_no_clock_reads(module: Path) -> None:
    """No callflow module calls time.time, datetime.now or the like: time comes in on events."""
    tree = ast.parse(module.read_text(encoding="utf-8"), filename=str(module))
    assert clock_calls(tree) == []


def test_the_checks_catch_what_they_look_for() -> None:
    """The checkers flag a forbidden import and a clock read in sample code."""
    sample = ast.parse(
        "import asyncio\nfrom sqlalchemy.orm import Session\nimport datetime as dt\n"
        "def f():\n    import time\n    return time.time(), dt.datetime.now(), datetime.now()\n")
    assert imported_modules(sample) >= {"asyncio", "sqlalchemy", "time"}
    assert len(clock_calls(sample)) == 3
