"""Agent restart: pick up where the previous agent process (same id, same work dir) left off.

Runs once in ``Agent.start``, before the tasks queue is consumed and before REGISTER, so that

1. status updates the previous process journaled but never saw confirmed are published again, first
   and in their original order (receivers deduplicate them by ``TaskStatus.uuid``);
2. every checkpointed task is re-attached if its supervisor still runs, reported with its recorded
   exit status if it ended meanwhile, or remembered as finished if its final update was already
   journaled — so a redelivered RUN_TASKS never starts it twice;
3. framework executors still running are re-attached and wait for their executor's SUBSCRIBE
   (``agent.executors``), with the checkpointed tasks they run;
4. REGISTER then lists the re-attached tasks, and the master keeps them as they are.

What to do with each task is decided by ``core.agent_state.recover_task``; this module only gathers
its inputs from disk and /proc.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from broker_mesos.agent import checkpoint
from broker_mesos.core.agent_state import Recovery, TaskKey, recover_task
from broker_mesos.core.protocol import TaskState

if TYPE_CHECKING:
    from broker_mesos.agent.process import Agent

log = logging.getLogger(__name__)


def recover(agent: Agent) -> None:
    assert agent.journal is not None
    batches = agent.journal.load()
    reported: set[TaskKey] = set()
    republished = 0
    for seq, messages in batches:
        for update in checkpoint.batch_updates(messages):
            republished += 1
            if update.state.terminal:
                reported.add((update.framework_id, update.task_id))
            if update.executor_id and agent.executors is not None:
                agent.executors.remember(update.uuid)  # a re-SUBSCRIBE may carry it again: not twice
        agent.publish_status(messages, batch=seq)
    if republished:
        log.info("agent %s: re-publishing %d unconfirmed status update(s) from %d batch(es)", agent.agent_id,
                 republished, len(batches))

    counts = {Recovery.FORGET: 0, Recovery.REATTACH: 0, Recovery.REPORT: 0}
    executor_tasks: list[checkpoint.CheckpointedTask] = []
    for found in checkpoint.scan(agent.config.work_dir):
        key = (found.framework_id, found.task.task_id)
        if found.task.executor is not None and agent.executors is not None and not (found.done or key in reported):
            executor_tasks.append(found)  # it runs inside its executor: the executors' recovery takes it
            continue
        started = found.pid is not None
        alive = found.pid is not None and checkpoint.process_alive(found.pid, found.start_time)
        exit_status = checkpoint.read_exit_status(found.meta) if started and not alive else None
        decision, outcome = recover_task(reported_terminal=found.done or key in reported, started=started,
                                         alive=alive, exit_status=exit_status, kill_requested=found.kill_requested)
        counts[decision] += 1
        if decision is Recovery.FORGET:
            agent.tasks.remember_finished(key)
            if not found.done:
                checkpoint.record_done(found.meta)
            continue
        entry = agent.tasks.launch(found.framework_id, found.task, TaskState.RUNNING)
        if entry is None:  # the same task twice in the checkpoint cannot happen; be safe anyway
            continue
        entry.kill_requested = found.kill_requested
        if decision is Recovery.REATTACH:
            assert found.pid is not None
            agent.executor.adopt(key, found.pid, found.start_time)
            log.info("agent %s: re-attached task=%s framework=%s pid=%d", agent.agent_id, key[1], key[0],
                     found.pid)
            if found.kill_requested:
                agent.terminate(entry)  # the previous process asked; its grace timer died with it
            else:
                agent.start_health_checks(entry)  # from scratch: health state is not checkpointed
        else:
            assert outcome is not None
            agent.report(entry, outcome)
    if agent.executors is not None:
        executors = checkpoint.scan_executors(agent.config.work_dir)
        for found_executor in executors:  # the executors' task logs
            live, finished = checkpoint.read_executor_tasks(found_executor.meta)
            for task_id in finished:
                agent.tasks.remember_finished((found_executor.framework_id, task_id))
            task_log = checkpoint.ExecutorTaskLog(found_executor.meta)
            try:
                for found in live:
                    key = (found.framework_id, found.task.task_id)
                    if key in reported:  # its last update is in the journal (re-published above): done
                        agent.tasks.remember_finished(key)
                        task_log.done(found.task.task_id)
                        counts[Recovery.FORGET] += 1
                    else:
                        executor_tasks.append(found)
            finally:
                task_log.close()
        agent.executors.recover(executors, executor_tasks)
    if any(counts.values()):
        log.info("agent %s recovered its checkpoint: %d task(s) re-attached, %d ended while it was down, "
                 "%d already reported", agent.agent_id, counts[Recovery.REATTACH], counts[Recovery.REPORT],
                 counts[Recovery.FORGET])
