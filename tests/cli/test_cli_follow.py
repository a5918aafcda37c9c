"""The watch stream's bookkeeping (no event twice, none missed, across a lost daemon) and the displays."""

from __future__ import annotations

import io
from collections.abc import Iterator

import grpc
import pytest
from forge.v1 import jobs_pb2
from rich.console import Console

from forgectl.client import EXIT_UNREACHABLE, ForgeError
from forgectl.follow import EventStream, Notice, PlainDisplay, StepThrottle, event_line, state_text


class _Broken(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._code.name


def _log(seq: int) -> jobs_pb2.JobEvent:
    return jobs_pb2.JobEvent(job_id="j", seq=seq, log=jobs_pb2.LogEvent(level="info", message=f"m{seq}"))


class _History:
    """A job's event log that a Watch call reads from after_seq, and that can break mid-stream."""

    def __init__(self, events: int, break_after: list[int]) -> None:
        self.events = [_log(i) for i in range(1, events + 1)]
        self.break_after = list(break_after)  # per call: how many events before UNAVAILABLE; -1 = never
        self.calls: list[int] = []

    def watch(self, after_seq: int) -> Iterator[jobs_pb2.JobEvent]:
        self.calls.append(after_seq)
        limit = self.break_after.pop(0) if self.break_after else -1

        def gen() -> Iterator[jobs_pb2.JobEvent]:
            # Replays one event before after_seq too, the overlap a resumed stream must tolerate.
            sent = 0
            for ev in self.events:
                if ev.seq < after_seq:
                    continue
                if sent == limit:
                    raise _Broken(grpc.StatusCode.UNAVAILABLE)
                sent += 1
                yield ev

        return gen()


def test_reconnect_resumes_after_last_seen_without_repeats() -> None:
    history = _History(10, break_after=[4, 0, 3])
    slept: list[float] = []
    stream = EventStream(history.watch, follow=True, job_done=lambda: True, sleep=slept.append)
    items = list(stream)
    seqs = [i.seq for i in items if isinstance(i, jobs_pb2.JobEvent)]
    assert seqs == list(range(1, 11))
    notices = [i.kind for i in items if isinstance(i, Notice)]
    assert notices[0] == "lost" and notices[-1] == "back"
    assert history.calls[0] == 0 and history.calls[1] == 4
    assert stream.last_seq == 10
    assert slept  # backed off between tries


def test_early_clean_end_is_treated_as_a_lost_daemon() -> None:
    ends = iter([False, True, True])
    history = _History(3, break_after=[])
    stream = EventStream(history.watch, follow=True, job_done=lambda: next(ends), sleep=lambda _s: None)
    items = list(stream)
    assert [i.seq for i in items if isinstance(i, jobs_pb2.JobEvent)] == [1, 2, 3]
    assert len(history.calls) == 2


def test_gives_up_after_the_limit() -> None:
    clock = iter(range(0, 1000, 30))

    def down(_after: int) -> Iterator[jobs_pb2.JobEvent]:
        raise _Broken(grpc.StatusCode.UNAVAILABLE)

    def still_down() -> bool:
        raise _Broken(grpc.StatusCode.UNAVAILABLE)

    stream = EventStream(
        down,
        follow=True,
        job_done=still_down,
        give_up_after=120,
        sleep=lambda _s: None,
        clock=lambda: next(clock),
    )
    with pytest.raises(ForgeError) as info:
        list(stream)
    assert info.value.exit_code == EXIT_UNREACHABLE


def test_other_errors_and_non_follow_streams_do_not_retry() -> None:
    def refused(_after: int) -> Iterator[jobs_pb2.JobEvent]:
        raise _Broken(grpc.StatusCode.NOT_FOUND)

    with pytest.raises(grpc.RpcError):
        list(EventStream(refused, follow=True, job_done=lambda: True, sleep=lambda _s: None))
    history = _History(5, break_after=[2])
    with pytest.raises(grpc.RpcError):
        list(EventStream(history.watch, follow=False))


def test_throttle() -> None:
    now = [0.0]
    t = StepThrottle(2.0, clock=lambda: now[0])
    assert t.ready()
    now[0] = 1.0
    assert not t.ready()
    now[0] = 2.5
    assert t.ready()


def test_state_text() -> None:
    queued = jobs_pb2.StateEvent(state=jobs_pb2.JOB_STATE_QUEUED)
    assert state_text(queued, position=2) == "queued (position 2)"
    running = jobs_pb2.StateEvent(state=jobs_pb2.JOB_STATE_RUNNING, attempt=2)
    assert state_text(running) == "running, attempt 2"
    failed = jobs_pb2.StateEvent(state=jobs_pb2.JOB_STATE_FAILED, reason="runner crashed")
    assert state_text(failed) == "failed: runner crashed"


def test_plain_display_throttles_steps_and_flushes_the_last() -> None:
    buf = io.StringIO()
    now = [0.0]
    display = PlainDisplay(Console(file=buf, width=200), StepThrottle(2.0, clock=lambda: now[0]))
    for step in range(1, 11):
        now[0] = step * 0.5
        display.event(
            jobs_pb2.JobEvent(seq=step, step=jobs_pb2.StepEvent(step=step, total_steps=10, loss=1.0))
        )
    display.event(jobs_pb2.JobEvent(seq=11, state=jobs_pb2.StateEvent(state=jobs_pb2.JOB_STATE_SUCCEEDED)))
    lines = buf.getvalue().splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    assert 2 <= len(steps) <= 4
    assert steps[-1].startswith("step 10/10")
    assert lines[-1] == "succeeded"
    assert "\x1b[" not in buf.getvalue()  # no escape codes into pipes


def test_event_lines_for_logs() -> None:
    err = jobs_pb2.JobEvent(seq=1, error=jobs_pb2.ErrorEvent(code="nan_loss", message="NaN", hint="lower lr"))
    line = event_line(err)
    assert line is not None and "nan_loss" in line.plain and "hint: lower lr" in line.plain
    warn = event_line(jobs_pb2.JobEvent(seq=2, log=jobs_pb2.LogEvent(level="warning", message="slow")))
    assert warn is not None and warn.plain.endswith("warning: slow")
    assert event_line(jobs_pb2.JobEvent(seq=3)) is None
