"""Running broker-mesos processes (``bmesos master``, agents, frameworks) as real children in tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from broker_mesos.testing.wait import wait_for

# Test clusters run in the master's explicit, logged development mode (guest on a private node, no
# principals): tests of security itself start their processes with BMESOS_INSECURE=0.
DEVELOPMENT_ENV = {"PYTHONUNBUFFERED": "1", "BMESOS_INSECURE": "1"}


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_output(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Wait until the process' combined stdout/stderr matches ``pattern``; fail early if it exits."""
        regex = re.compile(pattern, re.MULTILINE)
        return wait_for(lambda: regex.search(self.output()), timeout, f"{self.name} to print /{pattern}/",
                        abort=self._exited)

    def _exited(self) -> str | None:
        code = self.popen.poll()
        if code is None:
            return None
        return f"{self.name} exited with {code}; output:\n{self.output()[-3000:]}"

    def wait(self, timeout: float = 60.0) -> int:
        return self.popen.wait(timeout)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.popen.wait()


@dataclass
class ProcessGroup:
    """Children started for one test; all are stopped (SIGTERM, then SIGKILL) when the test ends."""

    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as out:
            popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **DEVELOPMENT_ENV, **(env or {})},
                                     start_new_session=True)
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def bmesos(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        """Start ``bmesos ARGS`` (as ``python -m broker_mesos.cli.main`` so the tested code is what runs)."""
        return self.start(name, [sys.executable, "-m", "broker_mesos.cli.main", *args], env)

    def python(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        return self.start(name, [sys.executable, *args], env)

    def stop_all(self, grace: float = 5.0) -> None:
        for proc in self.procs:
            proc.signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.popen.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.kill_agent_tasks()

    def kill_agent_tasks(self) -> int:
        """SIGKILL the tasks of every agent this group started: a stopped agent leaves its tasks running
        (for the next agent process to re-attach), so a test must end them itself."""
        from broker_mesos.agent.checkpoint import kill_checkpointed_tasks

        return sum(kill_checkpointed_tasks(work_dir) for work_dir in self.agent_work_dirs())

    def agent_work_dirs(self) -> set[Path]:
        from broker_mesos.agent.detect import default_agent_id

        dirs = set()
        for proc in self.procs:
            args = list(proc.popen.args)  # type: ignore[arg-type]
            if "agent" not in args:
                continue
            option = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--work-dir", "--id")}
            dirs.add(Path(option["--work-dir"]) if "--work-dir" in option
                     else Path.cwd() / ".bmesos" / f"agent-{option.get('--id') or default_agent_id()}")
        return dirs

    def dump(self) -> str:
        """Every child's output, for a failing test's report."""
        return "\n".join(f"----- {p.name} (exit {p.popen.poll()}) -----\n{p.output()[-4000:]}" for p in self.procs)
