"""Fixtures of the agent tests that drive real agent processes with a fake master (tests/isolation,
tests/security): a test module may define its own of the same name instead."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker_mesos.agent.checkpoint import kill_checkpointed_tasks
from broker_mesos.testing.fake_master import FakeMaster


@pytest.fixture
def master(broker_url: str) -> Iterator[FakeMaster]:
    fake = FakeMaster(broker_url)
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def work_root() -> Iterator[Path]:
    """Work dirs below /tmp, which tasks (user nobody, on an agent running as root) may pass through,
    unlike pytest's 0700 tmp_path; after the module, their tasks are killed and they are removed."""
    root = Path(tempfile.mkdtemp(prefix="bmesos-agents-"))
    os.chmod(root, 0o711)
    yield root
    for work in root.iterdir():
        kill_checkpointed_tasks(work)
    shutil.rmtree(root, ignore_errors=True)
