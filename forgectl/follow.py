"""Following a job: its event stream across daemon restarts, and the live (or plain) display of it."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import grpc
from forge.v1 import jobs_pb2
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from forgectl.client import EXIT_UNREACHABLE, Client, ForgeError, rpc_code
from forgectl.output import (
    STATE_STYLE,
    TERMINAL_STATES,
    fmt_duration,
    fmt_loss,
    state_name,
    step_text,
    ts_to_datetime,
)

# A daemon restart shows up as UNAVAILABLE (socket gone) or CANCELLED (server stopped mid-stream).
RECONNECT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
GIVE_UP_AFTER_S = 120.0
PLAIN_STEP_EVERY_S = 2.0
POSITION_POLL_S = 5.0
DETACH_MESSAGE = "Detached; the job keeps running. Re-attach with: forgectl watch {id}"


@dataclass(frozen=True)
class Notice:
    """Something about the stream rather than the job: the daemon went away, or came back."""

    kind: Literal["lost", "back"]
    text: str


class _StreamEndedEarly(Exception):
    pass


class EventStream:
    """A job's events after a seq, each exactly once, riding out daemon restarts (when following).

    open_watch(after_seq) starts one Watch call; job_done() asks the daemon whether the job has ended,
    which also proves the daemon is back after a loss.
    """

    def __init__(
        self,
        open_watch: Callable[[int], Iterator[jobs_pb2.JobEvent]],
        *,
        after_seq: int = 0,
        follow: bool = True,
        job_done: Callable[[], bool] | None = None,
        give_up_after: float = GIVE_UP_AFTER_S,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.last_seq = after_seq
        self._open = open_watch
        self._follow = follow
        self._job_done = job_done
        self._give_up_after = give_up_after
        self._sleep = sleep
        self._clock = clock
        self._stopped = threading.Event()
        self._call: Any = None

    def cancel(self) -> None:
        self._stopped.set()
        call = self._call
        if call is not None and hasattr(call, "cancel"):
            call.cancel()

    def __iter__(self) -> Iterator[jobs_pb2.JobEvent | Notice]:
        lost_since: float | None = None
        backoff = 0.25
        while not self._stopped.is_set():
            try:
                if lost_since is not None and self._job_done is not None:
                    self._job_done()  # raises while the daemon is still away
                    yield Notice("back", "reconnected to the daemon")
                    lost_since, backoff = None, 0.25
                self._call = self._open(self.last_seq)
                for ev in self._call:
                    if lost_since is not None:
                        yield Notice("back", "reconnected to the daemon")
                        lost_since, backoff = None, 0.25
                    # The daemon replays from after_seq; this guard keeps a replay overlap from showing twice.
                    if ev.seq <= self.last_seq:
                        continue
                    self.last_seq = ev.seq
                    yield ev
                if not self._follow or self._job_done is None or self._job_done():
                    return
                # A clean end before the job ended: the daemon closed streams on its way down.
                raise _StreamEndedEarly
            except grpc.RpcError as exc:
                if self._stopped.is_set():
                    return
                if not self._follow or rpc_code(exc) not in RECONNECT_CODES:
                    raise
            except _StreamEndedEarly:
                pass
            now = self._clock()
            if lost_since is None:
                lost_since = now
                yield Notice("lost", "lost the daemon, reconnecting…")
            elif now - lost_since > self._give_up_after:
                raise ForgeError(
                    f"lost the daemon for over {fmt_duration(self._give_up_after)}; "
                    "the job keeps running on it once it is back",
                    EXIT_UNREACHABLE,
                    "UNAVAILABLE",
                )
            self._sleep(backoff)
            backoff = min(backoff * 2, 5.0)


# ---------------------------------------------------------------- event → text


def log_text(ev: jobs_pb2.LogEvent) -> Text:
    level = ev.level.lower()
    style = {"warning": "yellow", "warn": "yellow", "error": "red", "critical": "bold red", "debug": "dim"}
    prefix = f"{level}: " if level in ("warning", "warn", "error", "critical") else ""
    return Text(prefix + ev.message, style=style.get(level, ""))


def error_texts(ev: jobs_pb2.ErrorEvent) -> list[Text]:
    code = f" [{ev.code}]" if ev.code else ""
    lines = [Text(f"error{code}: {ev.message}", style="bold red")]
    if ev.hint:
        lines.append(Text(f"  hint: {ev.hint}", style="red"))
    return lines


def state_text(ev: jobs_pb2.StateEvent, position: int = 0) -> str:
    name = state_name(ev.state)
    text = name
    if ev.state == jobs_pb2.JOB_STATE_QUEUED and position:
        text += f" (position {position})"
    if ev.state == jobs_pb2.JOB_STATE_RUNNING and ev.attempt > 1:
        text += f", attempt {ev.attempt}"
    if ev.reason:
        text += f": {ev.reason}"
    return text


def event_line(ev: jobs_pb2.JobEvent) -> Text | None:
    """One compact line per event, for `forgectl logs`."""
    kind = ev.WhichOneof("payload")
    when = ts_to_datetime(ev.time)
    stamp = Text(when.astimezone().strftime("%H:%M:%S ") if when else "", style="dim")
    body: Text
    if kind == "log":
        body = log_text(ev.log)
        if ev.log.source and ev.log.source != "runner":
            body = Text(f"[{ev.log.source}] ", style="dim") + body
    elif kind == "step":
        s = ev.step
        body = Text(step_text(s.step, s.total_steps, s.loss, s.tokens_per_second, None))
        if s.learning_rate:
            body.append(f"  lr {s.learning_rate:.2e}", style="dim")
    elif kind == "eval":
        body = Text(f"validation loss {fmt_loss(ev.eval.val_loss)} at step {ev.eval.step}", style="cyan")
    elif kind == "checkpoint":
        body = Text(f"checkpoint at step {ev.checkpoint.step}: {ev.checkpoint.path}", style="dim")
    elif kind == "artifact":
        body = Text(f"artifact {ev.artifact.name}: {ev.artifact.path}", style="green")
    elif kind == "error":
        parts = error_texts(ev.error)
        body = Text("\n").join(parts)
    elif kind == "state":
        name = state_name(ev.state.state)
        body = Text(f"state → {state_text(ev.state)}", style=STATE_STYLE.get(name, ""))
    else:
        return None
    return stamp + body


class StepThrottle:
    """At most one progress line per interval, so CI logs stay readable."""

    def __init__(
        self, interval: float = PLAIN_STEP_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._last: float | None = None

    def ready(self) -> bool:
        now = self._clock()
        if self._last is None or now - self._last >= self.interval:
            self._last = now
            return True
        return False


# ---------------------------------------------------------------- displays


class Display:
    """Turns events into lines; subclasses decide how progress is drawn."""

    def __init__(self, con: Console) -> None:
        self.con = con
        self.state = jobs_pb2.JOB_STATE_UNSPECIFIED
        self.position = 0
        self.wait_reason = ""
        self.step = 0
        self.total = 0
        self.loss: float | None = None
        self.tps: float | None = None
        self.eta: float | None = None
        self.val_loss: float | None = None
        self._shown_state: tuple[int, int] | None = None

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def line(self, text: Text | str) -> None:
        self.con.print(text)

    def info(self) -> str:
        text = (
            step_text(self.step, self.total, self.loss, self.tps, self.eta) if self.total or self.step else ""
        )
        if self.val_loss is not None:
            text += f"  val {fmt_loss(self.val_loss)}"
        return text

    def state_label(self) -> str:
        name = state_name(self.state) if self.state else "waiting"
        return (
            f"{name} (#{self.position})"
            if self.position and self.state == jobs_pb2.JOB_STATE_QUEUED
            else name
        )

    def set_position(self, position: int, reason: str = "") -> None:
        if self.state != jobs_pb2.JOB_STATE_QUEUED or not position:
            return
        if (position, reason) != (self.position, self.wait_reason):
            self.position, self.wait_reason = position, reason
            self.line(Text(f"queued (position {position})" + (f": {reason}" if reason else ""), style="cyan"))
            self.refresh()

    def refresh(self) -> None:
        pass

    def notice(self, n: Notice) -> None:
        self.line(Text(n.text, style="yellow" if n.kind == "lost" else "green"))

    def event(self, ev: jobs_pb2.JobEvent) -> None:
        kind = ev.WhichOneof("payload")
        if kind == "step":
            s = ev.step
            self.step, self.total, self.loss = s.step, s.total_steps or self.total, s.loss
            self.tps, self.eta = s.tokens_per_second or None, s.eta_seconds
            self.on_step()
        elif kind == "eval":
            self.val_loss = ev.eval.val_loss
            self.line(
                Text(f"validation loss {fmt_loss(ev.eval.val_loss)} at step {ev.eval.step}", style="cyan")
            )
        elif kind == "log":
            self.line(log_text(ev.log))
        elif kind == "checkpoint":
            self.line(Text(f"checkpoint at step {ev.checkpoint.step}: {ev.checkpoint.path}", style="dim"))
        elif kind == "artifact":
            self.line(Text(f"artifact {ev.artifact.name}: {ev.artifact.path}", style="green"))
        elif kind == "error":
            for t in error_texts(ev.error):
                self.line(t)
        elif kind == "state":
            self.on_state(ev.state)
        self.refresh()

    def on_step(self) -> None:
        pass

    def on_state(self, ev: jobs_pb2.StateEvent) -> None:
        self.state = ev.state
        if ev.state != jobs_pb2.JOB_STATE_QUEUED:
            self.position = 0
        key = (ev.state, ev.attempt)
        if key == self._shown_state and not ev.reason:
            return
        self._shown_state = key
        name = state_name(ev.state)
        self.line(Text(state_text(ev, self.position), style=STATE_STYLE.get(name, "")))
        if ev.state == jobs_pb2.JOB_STATE_QUEUED and self.position and self.wait_reason:
            self.line(Text(f"  waiting: {self.wait_reason}", style="dim"))


class QuietDisplay(Display):
    """--json: nothing live; the final job object is the whole output."""

    def line(self, text: Text | str) -> None:
        pass


class PlainDisplay(Display):
    """Pipes and CI: no redraws, a progress line at most every few seconds."""

    def __init__(self, con: Console, throttle: StepThrottle | None = None) -> None:
        super().__init__(con)
        self.throttle = throttle or StepThrottle()
        self._pending = False

    def on_step(self) -> None:
        if self.throttle.ready():
            self._pending = False
            self.line(self.info())
        else:
            self._pending = True

    def flush(self) -> None:
        if self._pending:
            self._pending = False
            self.line(self.info())

    def on_state(self, ev: jobs_pb2.StateEvent) -> None:
        if ev.state in TERMINAL_STATES:
            self.flush()  # the last step before the end is the one people look for
        super().on_state(ev)

    def stop(self) -> None:
        self.flush()


class LiveDisplay(Display):
    """A terminal: a redrawn progress bar, with event lines scrolling above it."""

    def __init__(self, con: Console) -> None:
        super().__init__(con)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=con,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.task: TaskID = self.progress.add_task(self.state_label(), total=None, info="")
        self._started = False

    def start(self) -> None:
        if not self._started:
            self.progress.start()
            self._started = True

    def stop(self) -> None:
        if self._started:
            self.progress.stop()
            self._started = False

    def line(self, text: Text | str) -> None:
        self.progress.console.print(text)

    def refresh(self) -> None:
        self.progress.update(
            self.task,
            description=self.state_label(),
            completed=self.step,
            total=self.total or None,
            info=self.info(),
        )


def make_display(con: Console, mode: Literal["live", "plain", "quiet"]) -> Display:
    if mode == "quiet":
        return QuietDisplay(con)
    if mode == "live":
        return LiveDisplay(con)
    return PlainDisplay(con)


# ---------------------------------------------------------------- following


_END = object()


def _get(client: Client, job_id: str, timeout: float = 10.0) -> jobs_pb2.Job:
    return client.jobs.Get(jobs_pb2.GetJobRequest(id=job_id), timeout=timeout)


def follow_job(
    client: Client, job: jobs_pb2.Job, display: Display, *, after_seq: int = 0
) -> jobs_pb2.Job | None:
    """Show the job's events until it ends; returns the final job, or None when the user detached."""
    latest: list[jobs_pb2.Job] = [job]

    def job_done() -> bool:
        latest[0] = _get(client, job.id)
        return latest[0].state in TERMINAL_STATES

    def open_watch(seq: int) -> Iterator[jobs_pb2.JobEvent]:
        return client.jobs.Watch(jobs_pb2.WatchJobRequest(id=job.id, after_seq=seq, follow=True))

    stream = EventStream(open_watch, after_seq=after_seq, follow=True, job_done=job_done)
    # The stream is read on a thread so this one stays free for Ctrl-C, redraws and queue-position polls.
    items: queue.Queue[Any] = queue.Queue()

    def pump() -> None:
        try:
            for item in stream:
                items.put(item)
            items.put(_END)
        except BaseException as exc:
            items.put(exc)

    display.position, display.wait_reason = job.queue_position, job.wait_reason
    try:
        display.start()
        threading.Thread(target=pump, name="forgectl-watch", daemon=True).start()
        next_poll = time.monotonic() + POSITION_POLL_S
        while True:
            try:
                item = items.get(timeout=0.5)
            except queue.Empty:
                if display.state == jobs_pb2.JOB_STATE_QUEUED and time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + POSITION_POLL_S
                    display.set_position(*_position(client, job.id))
                continue
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Notice):
                display.notice(item)
            else:
                display.event(item)
    except KeyboardInterrupt:
        stream.cancel()
        display.stop()
        return None
    finally:
        display.stop()
    try:
        return _get(client, job.id)
    except grpc.RpcError:
        return latest[0]  # the stream already confirmed the end; the last Get is good enough


def _position(client: Client, job_id: str) -> tuple[int, str]:
    try:
        job = _get(client, job_id, timeout=2.0)
    except grpc.RpcError:
        return 0, ""  # a missed poll is harmless; the stream's reconnect handles a lost daemon
    return job.queue_position, job.wait_reason
