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
