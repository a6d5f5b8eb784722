"""A fake master for agent tests: sends RUN_TASKS / KILL_TASKS / TO_EXECUTOR / SHUTDOWN_EXECUTORS straight
to a real agent process and reads what it reports (STATUS on `status`, REGISTER / HEARTBEAT and its
executors' FROM_EXECUTOR on `agent.register`), over a blocking pika
connection of the test's own, with no master process in between. Only for clusters in development mode
(agents that are no principal accept task messages from anyone)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pika

from broker_mesos.bus import topology
from broker_mesos.bus.connection import CONTENT_TYPE
from broker_mesos.core import codec
from broker_mesos.core.protocol import (
    Heartbeat,
    KillTasks,
    RunTasks,
    ShutdownExecutors,
    TaskInfo,
    TaskState,
    TaskStatus,
    ToExecutor,
)
from broker_mesos.testing.wait import wait_for

PERSISTENT_MSGPACK = pika.BasicProperties(content_type=CONTENT_TYPE, delivery_mode=2)


class FakeMaster:
    """``run`` / ``kill`` tasks of framework ``framework_id`` on an agent; ``wait_state`` for their updates."""

    def __init__(self, url: str, framework_id: str = "fw1") -> None:
        self.framework_id = framework_id
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()
        for ex in topology.EXCHANGES:
            self.ch.exchange_declare(ex.name, ex.type, durable=True)
        self.agents_q = self.ch.queue_declare("", exclusive=True).method.queue
        for key in (topology.KEY_REGISTER, topology.KEY_HEARTBEAT, topology.KEY_MESSAGE):
            self.ch.queue_bind(self.agents_q, topology.AGENT_REGISTER, routing_key=key)
        self.status_q = self.ch.queue_declare("", exclusive=True).method.queue
        self.ch.queue_bind(self.status_q, topology.STATUS, routing_key="#")
        self.agent_msgs: list[tuple[str, Any]] = []  # (routing key, body) of REGISTER / HEARTBEAT / FROM_EXECUTOR
        self.statuses: list[TaskStatus] = []
        self.status_keys: list[str] = []  # the routing key of each STATUS message, in arrival order
        self._key_of: dict[str, str] = {}  # update uuid -> the routing key it came with

    def close(self) -> None:
        self.conn.close()

    def _drain(self, queue: str) -> list[tuple[str, Any]]:
        got = []
        while True:
            method, _props, body = self.ch.basic_get(queue, auto_ack=True)
            if method is None:
                return got
            got.append((method.routing_key, codec.decode(body).body))

    def poll(self) -> None:
        self.agent_msgs.extend(self._drain(self.agents_q))
        for key, status in self._drain(self.status_q):
            self.status_keys.append(key)
            self.statuses.extend(status.updates)
            self._key_of.update((u.uuid, key) for u in status.updates)

    def routing_key(self, status: TaskStatus) -> str:
        """The routing key ``status`` arrived with."""
        return self._key_of[status.uuid]

    def latest_heartbeat(self) -> Heartbeat | None:
        """The newest HEARTBEAT that arrived since the last call, if any."""
        new = self._drain(self.agents_q)
        self.agent_msgs.extend(new)
        return next((b for _key, b in reversed(new) if isinstance(b, Heartbeat)), None)

    def wait_agent_message(self, cls: type, pred: Callable[[Any], bool] = lambda _b: True,
                           timeout: float = 15.0) -> Any:
        def found() -> Any:
            self.poll()
            return next((b for _k, b in self.agent_msgs if isinstance(b, cls) and pred(b)), None)

        return wait_for(found, timeout, f"a {cls.__name__} message")

    def states(self, task_id: str) -> list[TaskState]:
        self.poll()
        return [u.state for u in self.statuses if u.task_id == task_id]

    def wait_state(self, task_id: str, state: TaskState, timeout: float = 20.0) -> TaskStatus:
        def found() -> TaskStatus | None:
            self.poll()
            return next((u for u in self.statuses if u.task_id == task_id and u.state is state), None)

        return wait_for(found, timeout, f"{task_id} to reach {state.value} (seen: {self.states(task_id)})")

    def run(self, agent_id: str, *tasks: TaskInfo) -> None:
        self.send(agent_id, RunTasks(self.framework_id, list(tasks)))

    def kill(self, agent_id: str, *task_ids: str) -> None:
        self.send(agent_id, KillTasks(self.framework_id, list(task_ids)))

    def to_executor(self, agent_id: str, executor_id: str, data: bytes) -> None:
        self.send(agent_id, ToExecutor(self.framework_id, executor_id, data))

    def shutdown_executors(self, agent_id: str, *executor_ids: str) -> None:
        """SHUTDOWN_EXECUTORS of these executors of the framework (all of them when none is named)."""
        self.send(agent_id, ShutdownExecutors(self.framework_id, list(executor_ids)))

    def send(self, agent_id: str, body: Any) -> None:
        """Publish ``body`` to ``agent_id``; a RUN_TASKS' tasks are placed on it (agents refuse others')."""
        if isinstance(body, RunTasks):
            body = RunTasks(body.framework_id, [dataclasses.replace(t, agent_id=agent_id) for t in body.tasks])
        self.send_raw(agent_id, codec.encode(body, 0.0))

    def send_raw(self, agent_id: str, raw: bytes) -> None:
        self.ch.basic_publish(topology.TASKS, agent_id, raw, PERSISTENT_MSGPACK)
