"""agent.logs: which sandbox files an agent agrees to read, ``--tail``'s line search, and the chunked
answers (through a real broker: LOG_DATA on exchange ``logs``)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from broker_mesos.agent.logs import LogServer, LogUnavailable, open_log, tail_offset
from broker_mesos.agent.sandbox import open_sandbox, sandbox_dir
from broker_mesos.bus import topology
from broker_mesos.bus.connection import Bus, Delivery, decode_delivery
from broker_mesos.core.protocol import LOG_CHUNK_BYTES, Error, LogData, LogFile, SendLog

FW, TASK = "fw1", "t1"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    open_sandbox(tmp_path, FW, TASK).close()
    return tmp_path


def stdout_of(work: Path) -> Path:
    return sandbox_dir(work, FW, TASK) / "stdout"


def read_all(fd: int) -> bytes:
    try:
        return os.pread(fd, 1 << 20, 0)
    finally:
        os.close(fd)


def test_open_log_reads_the_sandbox_files(work: Path) -> None:
    stdout_of(work).write_bytes(b"out")
    (stdout_of(work).parent / "stderr").write_bytes(b"err")
    assert read_all(open_log(work, FW, TASK, LogFile.STDOUT)) == b"out"  # type: ignore[arg-type]
    assert read_all(open_log(work, FW, TASK, LogFile.STDERR)) == b"err"  # type: ignore[arg-type]


def test_a_missing_sandbox_or_file_is_none(work: Path) -> None:
    assert open_log(work, FW, "other", LogFile.STDOUT) is None
    assert open_log(work, "fw2", TASK, LogFile.STDOUT) is None
    stdout_of(work).unlink()
    assert open_log(work, FW, TASK, LogFile.STDOUT) is None


def test_a_link_left_as_the_file_is_refused(work: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"agent's secret")
    stdout_of(work).unlink()
    stdout_of(work).symlink_to(secret)
    with pytest.raises(LogUnavailable, match="is a link"):
        open_log(work, FW, TASK, LogFile.STDOUT)


def test_a_sandbox_that_is_a_link_is_refused(work: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "stdout").write_bytes(b"not the task's")
    (sandbox_dir(work, FW, "t2")).symlink_to(elsewhere)
    with pytest.raises(LogUnavailable, match="is a link"):
        open_log(work, FW, "t2", LogFile.STDOUT)


def test_a_hard_link_fifo_or_directory_is_refused(work: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"agent's secret")
    stdout_of(work).unlink()
    os.link(secret, stdout_of(work))
    with pytest.raises(LogUnavailable, match="not a plain file"):
        open_log(work, FW, TASK, LogFile.STDOUT)
    stdout_of(work).unlink()
    os.mkfifo(stdout_of(work))
    started = time.monotonic()
    with pytest.raises(LogUnavailable, match="not a plain file"):  # and the open did not block on the FIFO
        open_log(work, FW, TASK, LogFile.STDOUT)
    assert time.monotonic() - started < 1.0
    stdout_of(work).unlink()
    stdout_of(work).mkdir()
    with pytest.raises(LogUnavailable):
        open_log(work, FW, TASK, LogFile.STDOUT)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file away")
def test_a_file_of_another_user_than_the_sandboxs_is_refused(work: Path) -> None:
    os.chown(stdout_of(work), 65534, 65534)
    with pytest.raises(LogUnavailable, match="not a plain file of the task's user"):
        open_log(work, FW, TASK, LogFile.STDOUT)


@pytest.mark.parametrize(("content", "lines", "expected"), [
    (b"a\nb\nc\n", 1, b"c\n"),
    (b"a\nb\nc\n", 2, b"b\nc\n"),
    (b"a\nb\nc", 1, b"c"),  # a last line without its newline counts
    (b"a\nb\nc", 2, b"b\nc"),
    (b"a\nb\nc\n", 3, b"a\nb\nc\n"),
    (b"a\nb\nc\n", 10, b"a\nb\nc\n"),
    (b"a\nb\nc\n", 0, b""),
    (b"", 3, b""),
    (b"\n\n\n", 2, b"\n\n"),
    (b"x" * 200_000 + b"\n" + b"y" * 100_000 + b"\n", 1, b"y" * 100_000 + b"\n"),  # across scan blocks
])
def test_tail_offset(tmp_path: Path, content: bytes, lines: int, expected: bytes) -> None:
    path = tmp_path / "f"
    path.write_bytes(content)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert content[tail_offset(fd, len(content), lines):] == expected
    finally:
        os.close(fd)


def test_tail_offset_scans_back_only_so_far(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a\n" + b"z" * 1000)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert tail_offset(fd, 1002, 2, max_scan=100) == 902  # the last 100 bytes, not the whole line
    finally:
        os.close(fd)


# -- answers through a real broker ---------------------------------------------------------------


class Requester:
    """A bus with a queue bound to ``logs`` (key ``guest.tok``) and a LogServer on the same loop."""

    def __init__(self, url: str, work: Path, running: bool = False, max_streams: int = 16) -> None:
        self.bus = Bus(url, "test-logs")
        self.running = running
        self.server = LogServer(self.bus, work, "a1", lambda fw, task: self.running, max_streams)
        self.queue = topology.Queue("", ((topology.LOGS, "guest.tok"),), durable=False, exclusive=True,
                                    auto_delete=True)
        self.got: list[tuple[str | None, LogData | Error]] = []
        self.bus.consume(self.queue, self._on_message)

    def _on_message(self, delivery: Delivery) -> None:
        self.got.append((delivery.properties.correlation_id, decode_delivery(delivery).body))
        self.bus.ack(delivery)
        if sum(1 for _, b in self.got if isinstance(b, Error) or b.last) == self.expected:
            self.bus.stop()

    def ask(self, *requests: tuple[SendLog, str], timeout: float = 30.0) -> list[tuple[str | None, LogData | Error]]:
        self.expected = len(requests)
        self.bus.on_ready(lambda: [self.server.serve(r, c) for r, c in requests])
        timer = threading.Timer(timeout, self.bus.stop_threadsafe)
        timer.start()
        try:
            self.bus.run()
        finally:
            timer.cancel()
        assert len(self.server) == 0  # every answer finished, every file closed
        return self.got


def request(**kwargs: object) -> SendLog:
    return SendLog(FW, TASK, "guest.tok", **kwargs)  # type: ignore[arg-type]


def test_answers_come_in_bounded_contiguous_chunks_and_interleave(broker_url: str, work: Path) -> None:
    content = os.urandom(3 * LOG_CHUNK_BYTES + 123)
    stdout_of(work).write_bytes(content)
    got = Requester(broker_url, work).ask((request(), "one"), (request(offset=100, max_bytes=LOG_CHUNK_BYTES + 1),
                                                               "two"))
    one = [b for c, b in got if c == "one"]
    two = [b for c, b in got if c == "two"]
    assert all(isinstance(b, LogData) and len(b.data) <= LOG_CHUNK_BYTES for b in one + two)
    assert b"".join(b.data for b in one) == content  # type: ignore[union-attr]
    assert [b.offset for b in one] == [0, LOG_CHUNK_BYTES, 2 * LOG_CHUNK_BYTES, 3 * LOG_CHUNK_BYTES]  # type: ignore[union-attr]
    assert [(b.last, b.done, b.size) for b in one] == [(False, False, len(content))] * 3 + [(True, True, len(content))]  # type: ignore[union-attr]
    assert b"".join(b.data for b in two) == content[100:100 + LOG_CHUNK_BYTES + 1]  # type: ignore[union-attr]
    assert two[-1].last and not two[-1].done  # type: ignore[union-attr]  # a window short of the end
    order = [c for c, _ in got]
    assert order.index("two") < order.index("one") + len(one) - 1  # one chunk per loop turn each: interleaved


def test_a_running_task_is_never_done_and_tail_starts_at_its_lines(broker_url: str, work: Path) -> None:
    stdout_of(work).write_bytes(b"1\n2\n3\n")
    got = Requester(broker_url, work, running=True).ask((request(tail_lines=2), "c"))
    assert [(b.offset, b.data, b.last, b.done) for _, b in got] == [(2, b"2\n3\n", True, False)]  # type: ignore[union-attr]


def test_an_offset_past_the_end_answers_empty(broker_url: str, work: Path) -> None:
    stdout_of(work).write_bytes(b"abc")
    got = Requester(broker_url, work).ask((request(offset=10), "c"))
    assert [(b.offset, b.data, b.size, b.last, b.done) for _, b in got] == [(3, b"", 3, True, True)]  # type: ignore[union-attr]


def test_a_removed_sandbox_and_a_link_are_errors(broker_url: str, work: Path, tmp_path: Path) -> None:
    stdout_of(work).write_bytes(os.urandom(2 * LOG_CHUNK_BYTES))
    (tmp_path / "secret").write_bytes(b"s")
    (sandbox_dir(work, FW, TASK) / "stderr").unlink()
    (sandbox_dir(work, FW, TASK) / "stderr").symlink_to(tmp_path / "secret")
    gone = SendLog(FW, "t9", "guest.tok")
    got = dict(Requester(broker_url, work).ask((gone, "gone"), (request(file=LogFile.STDERR), "link")))
    assert got["gone"] == Error("the sandbox of task t9 was removed from agent a1 (garbage-collected), or never made",
                                "READ_LOG", "gone")
    assert isinstance(got["link"], Error) and "is a link" in got["link"].message


def test_more_readers_than_allowed_are_told_to_come_back(broker_url: str, work: Path) -> None:
    stdout_of(work).write_bytes(os.urandom(2 * LOG_CHUNK_BYTES))
    got = dict(Requester(broker_url, work, max_streams=1).ask((request(), "first"), (request(), "busy")))
    assert isinstance(got["first"], LogData)
    assert got["busy"] == Error("busy: agent a1 has 1 log reads in progress; try again", "READ_LOG", "busy")
