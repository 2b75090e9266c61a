"""The predictions one replica holds, and their records on the way to the control application.

Each prediction a replica takes is a ``Flight``: its record as it stands, the
task that runs it and, once asked, why it is being canceled. Records never go
to the database from the request path: the ``Tracker`` collects changes and
sends them in one call every 100 ms, or every 0.5 s while the replica is busy
(``send``: the control application's ``sync``), which also reports which
predictions still run here (the reaper's heartbeat) and brings back the cancel
requests for them. Each sync takes a
snapshot of what changed in the flights still running; a prediction that ends
before the next one is sent once, finished. A caller that is told ``202`` must
be able to read the record at once, so that answer waits for an immediate
``flush``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from lambdaml import _clock

FINAL = frozenset({"succeeded", "failed", "canceled"})
CANCELED_BY_CALLER = "Canceled by the caller."
CALLER_WENT_AWAY = "Canceled: the caller went away before the prediction finished."
DEADLINE_PASSED = "Canceled: the prediction's deadline (Cancel-After) passed."
STUCK = "Its predict did not stop within the grace period (LAMBDAML_CANCEL_GRACE), so its replica was replaced."
REPLACED = "Canceled: its replica is being replaced (a canceled predict there would not stop); try again."
SHUT_DOWN = "Canceled: the replica running it shut down before it finished."

Send = Callable[[list[dict[str, Any]], list[str]], Awaitable[dict[str, str]]]  # (updates, running ids) -> cancels
logger = logging.getLogger("ray.serve")


# Python 3.12+: an eager task runs its first step at once, inside the new task (current_task(),
# asyncio.timeout and context variables all see the prediction's own task). A quick async predict
# has then ended before its caller would wait for it: no task switch in between. Python 3.11 has
# no eager tasks; written by hand for it, they were faster in process but not through HAProxy
# (bench/README.md), so 3.11 starts the task as it always did.
_eager_task = getattr(asyncio, "eager_task_factory", None)


def start_task(work: Coroutine[Any, Any, Any], eager: bool = True) -> asyncio.Task:
    """A prediction's own task, started eagerly where Python can (3.12+): it may have ended already."""
    loop = asyncio.get_running_loop()
    return _eager_task(loop, work) if eager and _eager_task is not None else loop.create_task(work)


def _resolve(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _merge(older: dict[str, Any], newer: dict[str, Any]) -> dict[str, Any]:
    """One pending update from two: the newer fields win, the events of both fire in order."""
    events = older.get("_events", []) + newer.get("_events", [])
    merged = {**older, **newer}
    if events:
        merged["_events"] = events
    return merged


class Flight:
    """One prediction held by this replica."""

    __slots__ = ("record", "task", "background", "cancel_reason", "canceled_at", "logs", "items", "input_hash",
                 "token_id", "queue", "invalid", "sent", "_waiters", "_timer", "_shown")

    def __init__(self, record: dict[str, Any], input_hash: str, token_id: str | None = None):
        self.record = record
        self.input_hash = input_hash
        self.token_id = token_id  # the API token that created it (lambdaml.control.tokens), None without one
        self.task: asyncio.Task | None = None
        self.background = False  # no caller waits for it: the autoscaler must still count it
        self.cancel_reason: str | None = None
        self.canceled_at: float | None = None
        self.logs: Any = None  # the running predict's log capture (lambdaml.serve.log_capture)
        self.items: list[Any] | None = None  # a generator's outputs so far
        self.queue: asyncio.Queue | None = None  # a streaming caller's events
        self.invalid: Exception | None = None  # an InputError found only once it ran (a file input)
        self._timer: asyncio.TimerHandle | None = None
        self._waiters: dict[asyncio.Future, float] = {}  # callers holding for it, until when (monotonic)
        self.sent: str | None = None  # the status the control application has, None: not told yet
        self._shown = (0, 0)  # (log parts, items) already sent

    def cancel(self, reason: str) -> None:
        """Stop the prediction (the first reason given is the one recorded); nothing if it has ended."""
        if self.task is None or self.task.done() or self.cancel_reason is not None:
            return
        self.cancel_reason, self.canceled_at = reason, time.monotonic()
        self.task.cancel()

    def reason(self) -> str:
        return self.cancel_reason or CANCELED_BY_CALLER

    def started(self, started_at: str, logs: Any) -> None:
        """Its predict has its slot and runs now; ``logs``: its log capture (``lambdaml.serve.log_capture``)."""
        self.logs = logs
        self.record.update(status="processing", started_at=started_at)

    def events(self, *names: str) -> dict[str, list[str]]:
        """The webhook events an update fires: none without a webhook (they cost the database queries)."""
        return {"_events": list(names)} if self.record.get("webhook") else {}

    async def wait(self, seconds: float) -> None:
        """Until it ends (``wake``) or about ``seconds`` pass: the tracker's tick ends a wait whose time
        is up (``expire``, up to ``Tracker.INTERVAL_S`` late). No timer per wait: making and cancelling
        one cost ~4-5 us per request in process (bench/README.md), a tenth of what a replica adds."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[waiter] = time.monotonic() + seconds
        try:
            await waiter
        finally:
            del self._waiters[waiter]

    def wake(self) -> None:
        for waiter in self._waiters:
            _resolve(waiter)

    def expire(self, now: float) -> None:
        """End the waits whose time is up (``now``: ``time.monotonic()``)."""
        for waiter, until in self._waiters.items():
            if until <= now:
                _resolve(waiter)

    def cancel_after(self, seconds: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(seconds, self.cancel, DEADLINE_PASSED)

    def snapshot(self) -> dict[str, Any] | None:
        """The record's change since the last sync (all of it the first time), or None."""
        status = self.record["status"]
        if status == self.sent:
            return None
        if self.sent is None:
            update = {**self.record, **self.private()}
        else:
            update = {"id": self.record["id"], "status": status, "started_at": self.record["started_at"]}
        if status == "processing":
            update.update(self.events("start"))
        self.sent = status
        return update

    def private(self) -> dict[str, Any]:
        """What its first record carries beside the public fields (``Records`` keeps them in private columns)."""
        private: dict[str, Any] = {}
        if self.input_hash:
            private["_input_hash"] = self.input_hash
        if self.token_id:
            private["_token"] = self.token_id
        return private

    def progress(self) -> dict[str, Any] | None:
        """What changed while it runs (logs, output so far), or None."""
        shown = (len(self.logs.parts) if self.logs is not None else 0, len(self.items) if self.items else 0)
        if shown == self._shown:
            return None
        events = [event for event, (now, before) in zip(("logs", "output"), zip(shown, self._shown)) if now != before]
        self._shown = shown
        update: dict[str, Any] = {"id": self.record["id"], **self.events(*events)}
        if "logs" in events:
            update["logs"] = self.logs.text()
        if "output" in events:
            update["output"] = list(self.items)
        return update


class Tracker:
    """This replica's flights, and the loop that keeps their records up to date."""

    INTERVAL_S = 0.1  # the tick: holds whose time is up end, and a quiet replica's records go out, this late
    POLL_S = 0.2  # while predictions run here, ask for cancel requests this often (and report them alive)
    # A sync is a handle call that costs the control application ~2 ms of CPU whatever it carries
    # (bench/README.md): every 0.1 s under load, that was a tenth of lambdaml's CPU per request. A
    # busy replica (this many records changed within a tick) sends bigger batches, every BUSY_SYNC_S.
    # A 202 answer and a background prediction's end never wait for a sync (``flush``).
    BUSY = 20
    BUSY_SYNC_S = 0.5
    PROGRESS_S = 0.5  # logs and output events at most this often (webhooks, readers)

    def __init__(self, send: Send, grace: float):
        self.flights: dict[str, Flight] = {}
        self._send = send
        self._grace = grace
        self._pending: dict[str, dict[str, Any]] = {}
        self._sending: dict[str, dict[str, Any]] = {}  # the batch on its way to the control application
        self._last_sync = self._last_progress = 0.0
        self._loop_task: asyncio.Task | None = None
        self._lock: asyncio.Lock | None = None
        self._warned = 0.0
        self._doomed: str | None = None
        self._flushes: set[asyncio.Task] = set()

    def add(self, record: dict[str, Any], input_hash: str, token_id: str | None = None) -> Flight:
        """Hold a new prediction; its record goes out with the next sync (``snapshot``), if it still runs then."""
        flight = Flight(record, input_hash, token_id)
        self.flights[record["id"]] = flight
        if self._loop_task is None:
            self._lock = asyncio.Lock()
            self._loop_task = asyncio.get_running_loop().create_task(self._run_forever())
        return flight

    def update(self, fields: dict[str, Any]) -> None:
        """Queue a change of one record (``id`` plus the fields that changed, ``_events`` to fire).

        ``fields`` may be kept and changed by a later update of the same record: pass a dict that
        nothing else changes (a dict of its own, or a final record, which changes no more).
        """
        pending = self._pending.get(fields["id"])
        if pending is None:
            self._pending[fields["id"]] = fields
        else:  # in place: three updates per prediction, on the request path
            events = pending.get("_events")
            pending.update(fields)
            if events is not None and "_events" in fields:
                pending["_events"] = events + fields["_events"]

    def finished(self, flight: Flight, record: dict[str, Any]) -> None:
        """Its final record: the callers holding for it are answered, the records get it."""
        flight.record = record
        flight.wake()
        if flight._timer is not None:
            flight._timer.cancel()
        self.flights.pop(record["id"], None)
        events = ("start", "completed") if flight.sent != "processing" and record.get("started_at") else ("completed",)
        extra = {**flight.events(*events), **flight.private()}
        # The final record itself when there is nothing to add (no webhook, id or token): it changes no more.
        self.update(dict(record, **extra) if extra else record)
        if flight.background:  # someone polls for it: record it now, not at the next tick
            flush = asyncio.get_running_loop().create_task(self.flush())
            self._flushes.add(flush)  # asyncio keeps only a weak reference to a task
            flush.add_done_callback(self._flushes.discard)

    def lookup(self, prediction_id: str) -> tuple[dict[str, Any], str, str | None] | None:
        """``(record, input hash, token id)`` of a prediction this replica holds or has not recorded yet, else None.

        A sync prediction leaves ``flights`` when it ends, up to 0.5 s before its record is written:
        an idempotent ``PUT`` right after it must still find it.
        """
        if (flight := self.flights.get(prediction_id)) is not None:
            return flight.record, flight.input_hash, flight.token_id
        for batch in (self._pending, self._sending):
            if (update := batch.get(prediction_id)) is not None and "_input_hash" in update:
                record = {key: value for key, value in update.items() if not key.startswith("_")}
                return record, update["_input_hash"], update.get("_token")
        return None

    def background(self) -> int:
        """Predictions no request waits for: load that Serve's autoscaler cannot see."""
        return sum(1 for flight in self.flights.values() if flight.background)

    def stuck(self) -> str | None:
        """Why this replica must be replaced: a canceled prediction still ran past the grace period.

        Once found, that stays the answer (the replica is doomed), and the prediction's record
        ends now as canceled, since the replica and its thread are about to be stopped.
        """
        if self._doomed is None:
            now = time.monotonic()
            for flight in list(self.flights.values()):
                if flight.canceled_at is not None and now - flight.canceled_at > self._grace:
                    self._doomed = (
                        f"prediction {flight.record['id']} was canceled and did not stop within {self._grace:g} s "
                        "(LAMBDAML_CANCEL_GRACE), so this replica is replaced"
                    )
                    ended = {"status": "canceled", "error": f"{flight.reason()} {STUCK}", "completed_at": _clock.now()}
                    self.finished(flight, {**flight.record, **ended})
                    for waiting in list(self.flights.values()):  # their slot will never come free here
                        waiting.cancel(REPLACED)
                    break
        return self._doomed

    @property
    def doomed(self) -> bool:
        return self._doomed is not None

    async def flush(self) -> None:
        """Send what is pending now (a 202 answer promises the record can be read)."""
        if self._lock is None:
            return
        async with self._lock:
            self._snapshots()
            await self._sync(time.monotonic())

    def _snapshots(self) -> None:
        for flight in list(self.flights.values()):
            if (update := flight.snapshot()) is not None:
                self.update(update)

    async def _run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.INTERVAL_S)
            try:
                await self._tick(time.monotonic())
            except Exception:  # a bug of ours: the next tick must still come (the holds end here)
                logger.exception("lambdaml: the prediction tracker's tick failed")

    async def _tick(self, now: float) -> None:
        """Progress (logs, output so far), the holds whose time is up, then what changed, to the records."""
        if now - self._last_progress >= self.PROGRESS_S:
            self._last_progress = now
            for flight in list(self.flights.values()):
                if (update := flight.progress()) is not None:
                    self.update(update)
        for flight in self.flights.values():
            if flight._waiters:
                flight.expire(now)
        self._snapshots()
        since = now - self._last_sync
        if len(self._pending) >= self.BUSY:
            due = since >= self.BUSY_SYNC_S
        else:
            due = bool(self._pending) or (bool(self.flights) and since >= self.POLL_S)
        if due:
            async with self._lock:
                await self._sync(now)

    async def _sync(self, now: float) -> None:
        self._sending, self._pending = self._pending, {}
        updates = list(self._sending.values())
        try:
            cancels = await self._send(updates, list(self.flights))
        except Exception as exc:  # the control application is starting or restarting: try again
            for update in updates:  # kept, under anything newer
                newer = self._pending.get(update["id"])
                self._pending[update["id"]] = update if newer is None else _merge(update, newer)
            self._sending = {}
            if now - self._warned > 60:
                self._warned = now
                logger.warning(f"lambdaml: cannot reach the control application to record predictions yet: {exc}")
            return
        self._last_sync, self._sending = now, {}
        for prediction_id, reason in cancels.items():
            if (flight := self.flights.get(prediction_id)) is not None:
                flight.cancel(reason)
