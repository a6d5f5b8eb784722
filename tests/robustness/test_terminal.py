"""Nothing that came off the wire reaches the operator's terminal raw.

A status message, an event or a master's answer can carry terminal escapes (retitle the window, clear
the screen), carriage returns and backspaces (overwrite what was printed), bidi overrides (reverse the
text around them) and rich markup. ``bmesos`` prints all of it escaped: ``\\x1b``, ``\\r``, ``\\u202e``,
and markup as the literal text it is. Fast unit tests first, then real processes on a real broker.
"""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import time
import unicodedata
import uuid

import click
import pika
import pytest

from broker_mesos.bus import topology
from broker_mesos.cli.admin import allocator_line, role_line
from broker_mesos.cli.common import TerminalSafeFormatter, json_line, one_line_errors, printable
from broker_mesos.cli.run import BarReporter, LineReporter, failure_report
from broker_mesos.cli.watch import event_json, event_line, status_json, status_line
from broker_mesos.core import codec, protocol
from broker_mesos.core.errors import BrokerMesosError
from broker_mesos.core.protocol import TaskState, TaskStatus
from broker_mesos.core.resources import Resources
from broker_mesos.framework.oneshot import RunPlan, command_for
from broker_mesos.testing.processes import Proc, ProcessGroup

# Window title, clear screen, bidi override, carriage return, rich markup, newline, tab, DEL, a C1 CSI,
# a bidi isolate and a zero-width joiner...
PAYLOAD = ("A\x1b]0;pwned\x07B\x1b[2JC\u202eD\rE[bold red]markup[/]F\nG\tH\x7fI\x9bJ\u2066K\u200dL"
           "[link=http://evil.example]click[/link]")
# ... and how each must be shown (written out, not computed with the code under test).
ESCAPED = (r"A\x1b]0;pwned\x07B\x1b[2JC\u202eD\rE[bold red]markup[/]F\nG\tH\x7fI\x9bJ\u2066K\u200dL"
           "[link=http://evil.example]click[/link]")
RAW_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def raw_controls(text: str) -> list[str]:
    """Every control/format character in ``text`` but the newlines that separate its lines."""
    return sorted({f"U+{ord(c):04X}" for c in text if c != "\n" and unicodedata.category(c) in RAW_CATEGORIES})


def failed_status(message: str = PAYLOAD, **fields: object) -> TaskStatus:
    values: dict[str, object] = {"task_id": "t1", "framework_id": "fw1", "agent_id": "a1",
                                 "state": TaskState.FAILED, "uuid": uuid.uuid4().hex, "timestamp": time.time(),
                                 "message": message}
    values.update(fields)
    return TaskStatus(**values)  # type: ignore[arg-type]


# -- printable ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "shown"), [
    ("\x1b]0;pwned\x07", r"\x1b]0;pwned\x07"),
    ("\x1b[2J", r"\x1b[2J"),
    ("a\rb\bc\x00d\x0be\x0cf", r"a\rb\x08c\x00d\x0be\x0cf"),
    ("line1\nline2\tcol", r"line1\nline2\tcol"),
    ("\x7f\x80\x85\x9b\x9f", r"\x7f\x80\x85\x9b\x9f"),
    ("\u202e\u202a\u202d\u2066\u2067\u2068\u2069\u200e\u200f\u061c", r"\u202e\u202a\u202d\u2066\u2067\u2068\u2069"
                                                                     r"\u200e\u200f\u061c"),
    ("zero\u200bwidth\u200c\u200d\ufeff\u00ad", r"zero\u200bwidth\u200c\u200d\ufeff\xad"),
    ("\u2028\u2029", r"\u2028\u2029"),
    ("\U000e0001tag", r"\U000e0001tag"),
    ("\ud800lone", r"\ud800lone"),
    (PAYLOAD, ESCAPED),
])
def test_printable_escapes_what_a_terminal_would_act_on(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert not raw_controls(printable(raw))


def test_printable_leaves_ordinary_text_as_it_is() -> None:
    for text in ("", "plain words", "héllo wörld, 日本語, Ελληνικά, עברית, 🙂👍🏽", "[bold red]markup[/]",
                 r"C:\path\x1b not an escape", "non\u00a0breaking and\u3000wide spaces"):
        assert printable(text) == text


def test_printable_takes_any_object_and_is_idempotent() -> None:
    assert printable(ValueError("bad\x1b[2J")) == r"bad\x1b[2J"
    assert printable(42) == "42"
    assert printable("a\nb\tc\rd", keep="\n\t") == "a\nb\tc\\rd"
    assert printable(printable(PAYLOAD)) == ESCAPED


def test_printable_over_every_code_point() -> None:
    everything = "".join(map(chr, range(sys.maxunicode + 1)))
    shown = printable(everything)
    assert not raw_controls(shown)
    assert printable(shown) == shown
    assert "\\x1b" in shown and "\\u202e" in shown and "A" in shown and "日" in shown


def test_json_line_escapes_controls_and_del_and_round_trips() -> None:
    line = json_line({"message": PAYLOAD}, sort_keys=True)
    assert not raw_controls(line) and "\x7f" not in line
    assert r"\u001b]0;pwned\u0007" in line and r"\u202e" in line and r"\u007f" in line
    assert json.loads(line) == {"message": PAYLOAD}


# -- logs ----------------------------------------------------------------------------------------


def test_log_formatter_escapes_records_but_keeps_traceback_lines() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TerminalSafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("test_terminal.formatter")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("bad message: %s", PAYLOAD)
        try:
            raise ValueError(f"from the wire: {PAYLOAD}")
        except ValueError:
            logger.exception("decoding %s failed", "\x1b[2J")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert not raw_controls(out.replace("\t", ""))
    lines = out.splitlines()
    assert lines[0] == f"WARNING test_terminal.formatter: bad message: {ESCAPED}"  # one record, one line
    assert lines[1] == r"ERROR test_terminal.formatter: decoding \x1b[2J failed"
    assert lines[2] == "Traceback (most recent call last):"  # the traceback keeps its own lines
    # the exception's text is escaped too, but for its newlines and tabs (those of a traceback stay)
    assert "ValueError: from the wire: A\\x1b]0;pwned\\x07B\\x1b[2JC\\u202eD\\rE[bold red]markup[/]F" in lines


def test_setup_logging_installs_the_safe_formatter() -> None:
    script = ("import logging; from broker_mesos.cli.common import setup_logging; setup_logging('info'); "
              f"logging.getLogger('wire').warning('got %s', {PAYLOAD!r})")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not raw_controls(result.stderr)
    assert result.stderr.rstrip("\n").endswith(f"WARNING wire: got {ESCAPED}")
    assert result.stderr.count("\n") == 1


# -- what each command prints ------------------------------------------------------------------


def test_watch_lines_escape_every_field() -> None:
    status = failed_status()
    line = status_line(status, 0.0)
    assert line.endswith(f" fw1 a1 t1 TASK_FAILED {ESCAPED}") and not raw_controls(line)
    record = status_json(status, 0.0)
    assert not raw_controls(record) and "\x7f" not in record
    assert json.loads(record)["message"] == PAYLOAD

    event = protocol.ClusterEvent(f"kind{PAYLOAD}", {f"key{PAYLOAD}": PAYLOAD, "nested": {"k": [PAYLOAD, b"\x1b"]},
                                                     "n": 3})
    line = event_line(event, 0.0)
    assert not raw_controls(line) and "\x7f" not in line
    assert f" event kind{ESCAPED} key{ESCAPED}={ESCAPED} n=3 nested=" in line
    assert r'"k": ["A\u001b]0;pwned\u0007B' in line
    record = event_json(event, 0.0)
    assert not raw_controls(record) and "\x7f" not in record
    assert json.loads(record)["detail"]["nested"]["k"] == [PAYLOAD, str(b"\x1b")]


def test_admin_lines_escape_every_field() -> None:
    info = protocol.AllocatorInfo(f"pol{PAYLOAD}", {f"k{PAYLOAD}": f"v{PAYLOAD}"}, ["drf", f"p{PAYLOAD}"])
    assert allocator_line(info) == f"policy pol{ESCAPED} k{ESCAPED}=v{ESCAPED} (available: drf, p{ESCAPED})"
    role = protocol.RoleInfo(f"r{PAYLOAD}", 2.0, Resources.of(cpus=1), Resources(), Resources(), [f"f{PAYLOAD}"])
    line = role_line(role)
    assert line.startswith(f"r{ESCAPED} weight=2 guarantee=cpus:1 ") and line.endswith(f"frameworks=f{ESCAPED}")
    assert not raw_controls(line)


def test_run_output_escapes_task_messages(capsys: pytest.CaptureFixture[str]) -> None:
    plan = RunPlan("x", 1, Resources.of(cpus=0.1, mem=32), command_for(["true"]))
    status = failed_status(task_id="x-0", exit_code=3)
    assert plan.record(status)
    lines = failure_report(plan, "x-fw")
    assert lines[0] == f"failed: task x-0 TASK_FAILED on a1 exit 3: {ESCAPED}"
    assert not raw_controls("\n".join(lines))

    reporter = LineReporter()
    reporter.updated(plan, failed_status(task_id=f"x{PAYLOAD}"), final=True)
    reporter.problem(f"ACCEPT refused by the master: {PAYLOAD}")
    out, err = capsys.readouterr()
    assert out == f"task x{ESCAPED} TASK_FAILED on a1\n"
    assert err == f"warning: ACCEPT refused by the master: {ESCAPED}\n"


def test_run_progress_bar_prints_markup_as_text() -> None:
    reporter = BarReporter(1)
    try:
        plan = RunPlan("x", 1, Resources.of(cpus=0.1, mem=32), command_for(["true"]))
        with reporter.progress.console.capture() as captured:
            reporter.updated(plan, failed_status(task_id="[bold red]x[/]:smile:"), final=True)
    finally:
        reporter.close()
    assert "task [bold red]x[/]:smile: TASK_FAILED on a1" in captured.get()


def test_errors_are_escaped() -> None:
    @one_line_errors
    def fails() -> None:
        raise BrokerMesosError(f"the master said {PAYLOAD}")

    with pytest.raises(click.ClickException) as info:
        fails()
    assert info.value.format_message() == f"the master said {ESCAPED}"

    option, shown = PAYLOAD.split("[link")[0], ESCAPED.split("[link")[0]  # no '=': all of it is the name
    result = subprocess.run([sys.executable, "-m", "broker_mesos.cli.main", "watch", f"--x{option}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert not raw_controls(result.stderr)
    assert f"--x{shown}" in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


def test_top_level_help_keeps_its_example_lines() -> None:
    result = subprocess.run([sys.executable, "-m", "broker_mesos.cli.main", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    lines = [line.strip() for line in result.stdout.splitlines()]
    for example in ("bmesos master &", "bmesos agent --resources 'cpus:4;mem:4096' &",
                    "bmesos run --count 3 -- echo hello", "bmesos watch '#'"):
        assert example in lines, result.stdout


# -- real processes on a real broker --------------------------------------------------------------


def start_watch(procs: ProcessGroup, url: str, *args: str, name: str) -> Proc:
    watch = procs.bmesos(name, "watch", "--broker", url, *args)
    watch.wait_output(r"^watching status")
    return watch


def test_watch_prints_a_hostile_status_and_event_escaped(broker_url: str, procs: ProcessGroup) -> None:
    plain = start_watch(procs, broker_url, "#", "--events", name="watch")
    as_json = start_watch(procs, broker_url, "--json", "--events", name="watch-json")
    status = failed_status()
    event = protocol.ClusterEvent(f"agent.odd{PAYLOAD}", {"why": PAYLOAD})
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = connection.channel()
        channel.basic_publish(topology.STATUS, topology.status_key("fw1", "a1", TaskState.FAILED),
                              codec.encode(protocol.Status([status]), time.time()))
        channel.basic_publish(topology.EVENTS, "agent.odd", codec.encode(event, time.time()))
    finally:
        connection.close()

    plain.wait_output(re.escape(f" fw1 a1 t1 TASK_FAILED {ESCAPED}") + "$", timeout=15)
    plain.wait_output(re.escape(f" event agent.odd{ESCAPED} why={ESCAPED}") + "$", timeout=15)
    as_json.wait_output(r'"kind": "event"', timeout=15)
    as_json.wait_output(r'"task_id": "t1"', timeout=15)

    records = [json.loads(line) for line in as_json.output().splitlines() if line.startswith("{")]
    assert [r["message"] for r in records if r["kind"] == "status"] == [PAYLOAD]
    assert [r["detail"] for r in records if r["kind"] == "event"] == [{"why": PAYLOAD}]
    for watch in (plain, as_json):
        out = watch.output()
        assert not raw_controls(out), out
        assert "\x7f" not in out
    assert "[bold red]markup[/]" in plain.output()


def admin(procs: ProcessGroup, url: str, name: str, *args: str) -> tuple[int, str]:
    proc = procs.bmesos(name, "admin", *args, "--broker", url, "--timeout", "20")
    return proc.wait(60), proc.output()


def test_admin_prints_the_masters_free_text_escaped(broker_url: str, procs: ProcessGroup) -> None:
    """Priority names in ``priorities=NAME:N`` are free text the master keeps and hands back."""
    master = procs.bmesos("master", "master", "--broker", broker_url, "--allocation-interval", "0.1")
    master.wait_output(r"master \S+ serving")
    events = start_watch(procs, broker_url, "--events", name="events")
    name = PAYLOAD.replace("\n", "").replace("\t", "")  # one argv word without commas
    shown_name = ESCAPED.replace(r"\n", "").replace(r"\t", "")

    code, out = admin(procs, broker_url, "set", "allocator", "set", "priority", "--param", f"priorities={name}:5")
    assert code == 0, out
    assert f"policy priority priorities={shown_name}:5 (available: " in out
    code, shown = admin(procs, broker_url, "show", "allocator", "show")
    assert code == 0 and f"priorities={shown_name}:5 " in shown, shown
    code, as_json = admin(procs, broker_url, "json", "allocator", "show", "--json")
    assert code == 0, as_json
    assert json.loads(as_json.strip().splitlines()[-1])["params"] == {"priorities": f"{name}:5"}
    events.wait_output(r" event allocator\.changed ", timeout=15)
    events.wait_output(re.escape(json.dumps({"priorities": f"{name}:5"}).replace("\x7f", "\\u007f")), timeout=15)

    # a role name is refused (by the CLI or the master); whatever the refusal says is escaped too
    code, refused = admin(procs, broker_url, "role", "role", "set", name, "--weight", "2")
    assert code != 0, refused

    for text in (out, shown, as_json, refused, events.output(), master.output()):
        assert not raw_controls(text), text
        assert "\x7f" not in text
