"""``bmesos job``: scheduled jobs on the built-in job scheduler (like Chronos or a Kubernetes CronJob).

``add SPEC.yaml | list | history NAME | run NAME | remove NAME``, answered by the active
``bmesos job scheduler``; the spec format is in docs/services-and-jobs.md.
"""

from __future__ import annotations

import click

from broker_mesos.bus.tls import TlsOptions
from broker_mesos.cli.builtins import client, client_options, load_spec, scheduler_command, show
from broker_mesos.framework.jobs.scheduler import FRAMEWORK_ID, KIND, MAX_HISTORY_SHOWN
from broker_mesos.framework.jobs.spec import parse_job

WHAT = "job scheduler"
LIST_COLUMNS = (("name", "NAME"), ("schedule", "SCHEDULE"), ("timezone", "ZONE"), ("next_run", "NEXT RUN"),
                ("last_run_state", "LAST"), ("active_runs", "ACTIVE"), ("succeeded", "OK"), ("failed", "FAILED"),
                ("skipped", "SKIPPED"), ("missed", "MISSED"))
HISTORY_COLUMNS = (("run_id", "RUN"), ("trigger", "TRIGGER"), ("state", "STATE"), ("attempt", "TRY"),
                   ("scheduled_for", "SCHEDULED"), ("started_at", "STARTED"),
                   ("ended_at", "ENDED"), ("exit_code", "EXIT"), ("agent_id", "AGENT"),
                   ("task_id", "TASK (bmesos logs TASK)"), ("message", "MESSAGE"))


@click.group()
def job() -> None:
    """Scheduled jobs: cron schedules in a time zone, concurrency policy, deadlines, retries, history.

    Every subcommand takes the broker options (--broker URL or $BMESOS_BROKER, --broker-file FILE, TLS);
    the client commands also take --timeout, -o table|json and --framework-id.
    """


job.add_command(scheduler_command(KIND, FRAMEWORK_ID, WHAT))


@job.command()
@click.argument("spec_file", metavar="SPEC.yaml")
@client_options(FRAMEWORK_ID)
def add(spec_file: str, framework_id: str, timeout: float, output: str, broker: str, connect_timeout: float,
        tls: TlsOptions | None) -> None:
    """Add a job, or replace the spec of the job of that name."""
    spec = load_spec(spec_file, parse_job)
    show(client(broker, framework_id, connect_timeout, timeout, tls, WHAT).call("add", spec=spec), output)


@job.command("list")
@client_options(FRAMEWORK_ID)
def list_(framework_id: str, timeout: float, output: str, broker: str, connect_timeout: float,
          tls: TlsOptions | None) -> None:
    """Every job: its schedule, next run, last result and counters."""
    show(client(broker, framework_id, connect_timeout, timeout, tls, WHAT).call("list")["items"], output, LIST_COLUMNS)


@job.command()
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, MAX_HISTORY_SHOWN), default=20, show_default=True,
              help="Show at most this many runs, newest first.")
@client_options(FRAMEWORK_ID)
def history(name: str, limit: int, framework_id: str, timeout: float, output: str, broker: str,
            connect_timeout: float, tls: TlsOptions | None) -> None:
    """The runs of job NAME, newest first (each task's output: bmesos logs TASK)."""
    answer = client(broker, framework_id, connect_timeout, timeout, tls, WHAT).call("history", name=name, limit=limit)
    show(answer["items"], output, HISTORY_COLUMNS)


@job.command()
@click.argument("name")
@client_options(FRAMEWORK_ID)
def run(name: str, framework_id: str, timeout: float, output: str, broker: str, connect_timeout: float,
        tls: TlsOptions | None) -> None:
    """Start a run of job NAME now (its concurrency policy applies)."""
    show(client(broker, framework_id, connect_timeout, timeout, tls, WHAT).call("run", name=name), output)


@job.command()
@click.argument("name")
@client_options(FRAMEWORK_ID)
def remove(name: str, framework_id: str, timeout: float, output: str, broker: str, connect_timeout: float,
           tls: TlsOptions | None) -> None:
    """Remove job NAME (its running runs are killed)."""
    show(client(broker, framework_id, connect_timeout, timeout, tls, WHAT).call("remove", name=name), output)
