"""Fixtures shared by the fault tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from books import Auditor


@pytest.fixture
def auditor(broker_url: str) -> Iterator[Auditor]:
    """A framework that only reads: reconciles, and reads heartbeats, for checking the books."""
    made = Auditor(broker_url)
    yield made
    made.close()
