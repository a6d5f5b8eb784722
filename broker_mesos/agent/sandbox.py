"""Task sandboxes: ``<work_dir>/frameworks/<framework_id>/tasks/<task_id>/`` with ``stdout`` and ``stderr``.

The layout follows Mesos' so operators find a task's output where they expect it. Ids are protocol
identifiers (``[A-Za-z0-9_-]``), so they are safe as path components.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

STDOUT = "stdout"
STDERR = "stderr"


def sandbox_dir(work_dir: Path, framework_id: str, task_id: str) -> Path:
    return work_dir / "frameworks" / framework_id / "tasks" / task_id


@dataclass
class Sandbox:
    """A task's directory and its open output files (the agent closes its copies after the spawn)."""

    path: Path
    stdout: BinaryIO
    stderr: BinaryIO

    def close(self) -> None:
        self.stdout.close()
        self.stderr.close()


def open_sandbox(work_dir: Path, framework_id: str, task_id: str) -> Sandbox:
    """Create the sandbox (kept if it exists: a relaunch after an agent restart appends) and open its files."""
    path = sandbox_dir(work_dir, framework_id, task_id)
    path.mkdir(parents=True, exist_ok=True)
    stdout = open(path / STDOUT, "ab")  # noqa: SIM115 - handed to the child, closed by Sandbox.close
    try:
        stderr = open(path / STDERR, "ab")  # noqa: SIM115
    except OSError:
        stdout.close()
        raise
    return Sandbox(path, stdout, stderr)
