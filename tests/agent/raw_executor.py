"""A minimal framework executor that speaks the agent's executor socket directly (no SDK), for agent tests.

Run by the agent as an executor command (``python raw_executor.py``). It connects to
``$BMESOS_AGENT_ENDPOINT``, subscribes with ``$BMESOS_EXECUTOR_TOKEN`` and then, per ``executor.LAUNCH``,
acts on the task's ``data``:

- ``finish`` (or empty): TASK_RUNNING, then TASK_FINISHED;
- ``run``: TASK_RUNNING, then waits: ``executor.KILL`` -> TASK_KILLED; a framework message
  ``finish <task_id>`` -> TASK_FINISHED;
- ``stubborn``: like ``run`` but ignores ``executor.KILL``.

Every update carries this process' pid as ``data``. Other framework messages are echoed back.
``executor.SHUTDOWN`` kills every running task (TASK_KILLED) and exits 0. When the agent goes away it
reconnects for ``$BMESOS_RECOVERY_TIMEOUT`` seconds and subscribes again with its running tasks and
its unacknowledged updates (with ``RAW_NO_RECONNECT`` set it stays alive and silent instead). Each event
is logged to stdout (its sandbox's ``stdout``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
import uuid

from broker_mesos.core import codec
from broker_mesos.core.framing import FrameReader, frame
from broker_mesos.core.protocol import (
    ExecutorAcknowledged,
    ExecutorData,
    ExecutorError,
    ExecutorKill,
    ExecutorLaunch,
    ExecutorShutdown,
    ExecutorSubscribe,
    ExecutorSubscribed,
    ExecutorUpdate,
    TaskState,
    TaskStatus,
)

PID = str(os.getpid()).encode()


class RawExecutor:
    def __init__(self) -> None:
        self.endpoint = os.environ["BMESOS_AGENT_ENDPOINT"]
        self.token = os.environ["BMESOS_EXECUTOR_TOKEN"]
        self.executor_id = os.environ["BMESOS_EXECUTOR_ID"]
        self.framework_id = os.environ["BMESOS_FRAMEWORK_ID"]
        self.agent_id = os.environ["BMESOS_AGENT_ID"]
        self.recovery_timeout = float(os.environ.get("BMESOS_RECOVERY_TIMEOUT", "60"))
        self.running: dict[str, bytes] = {}  # task id -> its mode
        self.unacked: dict[str, TaskStatus] = {}  # uuid -> update
        self.sock: socket.socket | None = None

    def log(self, line: str) -> None:
        print(f"[{time.time():.3f}] {line}", flush=True)

    def send(self, body: object) -> None:
        assert self.sock is not None
        self.sock.sendall(frame(codec.encode(body, time.time())))

    def update(self, task_id: str, state: TaskState) -> None:
        status = TaskStatus(task_id=task_id, framework_id=self.framework_id, agent_id=self.agent_id, state=state,
                            uuid=uuid.uuid4().hex, timestamp=time.time(), data=PID)
        self.unacked[status.uuid] = status
        if state.terminal:
            self.running.pop(task_id, None)
        with contextlib.suppress(OSError):  # else re-sent with the next SUBSCRIBE
            self.send(ExecutorUpdate(status))

    def connect(self) -> bool:
        deadline = time.monotonic() + self.recovery_timeout
        while time.monotonic() < deadline:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.endpoint)
            except OSError:
                sock.close()
                time.sleep(0.1)
                continue
            self.sock = sock
            self.send(ExecutorSubscribe(self.framework_id, self.executor_id, self.token,
                                        list(self.unacked.values()), list(self.running)))
            self.log(f"subscribing: tasks {sorted(self.running)}, {len(self.unacked)} unacknowledged")
            return True
        return False

    def run(self) -> int:
        while self.connect():
            assert self.sock is not None
            reader = FrameReader()
            while True:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.log("agent connection lost")
                    self.sock.close()
                    break
                for payload in reader.feed(data):
                    if self.handle(codec.decode(payload).body):
                        return 0
            if os.environ.get("RAW_NO_RECONNECT"):
                self.log("not reconnecting (RAW_NO_RECONNECT)")
                while True:
                    time.sleep(3600)
        self.log("gave up reconnecting")
        return 1

    def handle(self, body: object) -> bool:
        """True: exit."""
        self.log(f"got {type(body).__name__}")
        if isinstance(body, ExecutorSubscribed):
            self.log(f"subscribed on {body.agent_id}")
        elif isinstance(body, ExecutorLaunch):
            mode = body.task.data or b"finish"
            self.running[body.task.task_id] = mode
            self.update(body.task.task_id, TaskState.RUNNING)
            if mode == b"finish":
                self.update(body.task.task_id, TaskState.FINISHED)
        elif isinstance(body, ExecutorKill):
            if self.running.get(body.task_id) == b"stubborn":
                self.log(f"ignoring the kill of {body.task_id}")
            elif body.task_id in self.running:
                self.update(body.task_id, TaskState.KILLED)
        elif isinstance(body, ExecutorAcknowledged):
            self.unacked.pop(body.uuid, None)
        elif isinstance(body, ExecutorData):
            words = body.data.split()
            if len(words) == 2 and words[0] == b"finish" and words[1].decode() in self.running:
                self.update(words[1].decode(), TaskState.FINISHED)
            else:
                self.send(ExecutorData(b"echo:" + body.data))
        elif isinstance(body, ExecutorShutdown):
            for task_id in list(self.running):
                self.update(task_id, TaskState.KILLED)
            return True  # the agent reads the updates before it sees the connection close
        elif isinstance(body, ExecutorError):
            self.log(f"error from the agent: {body.message}")
        return False


if __name__ == "__main__":
    sys.exit(RawExecutor().run())
