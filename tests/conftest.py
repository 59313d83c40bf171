"""Shared test setup."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """A command that configures logging (e.g. `liyi calls`) must not silence the next test's logs."""
    yield
    structlog.reset_defaults()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line, once, when the real-Asterisk tier could not run, saying how to enable it."""
    skipped = terminalreporter.stats.get("skipped", [])
    if any("real-Asterisk tier skipped" in str(getattr(report, "longrepr", "")) for report in skipped):
        from tests.asterisk_rig import HOW_TO_ENABLE, find_prefix, tools_missing

        reason = HOW_TO_ENABLE if find_prefix() is None else (
            f"real-Asterisk tier skipped: {', '.join(tools_missing())} missing (bash .ci/asterisk installs them)")
        terminalreporter.write_line(reason)
