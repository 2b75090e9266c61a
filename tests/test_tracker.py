"""A prediction's own task (``lambdaml.serve.tracker.start_task``): started eagerly where Python can;
and how often the tracker sends its records."""

from __future__ import annotations

import asyncio
import contextvars
import sys

import pytest

from lambdaml.serve.tracker import Tracker, start_task

EAGER = sys.version_info >= (3, 12)  # asyncio's eager tasks
where = contextvars.ContextVar("where", default="caller")


def test_a_quick_prediction_ends_within_start_task_as_its_own_task_where_python_has_eager_tasks():
    seen: dict = {}

    async def quick() -> str:
        seen["task"] = asyncio.current_task()
        where.set("prediction")
        return "done"

    async def caller() -> None:
        me = asyncio.current_task()
        task = start_task(quick())
        assert task.done() is EAGER  # 3.11: it runs at the next turn of the event loop
        assert asyncio.current_task() is me
        assert await task == "done"
        assert seen["task"] is task  # it ran inside its own task, never the caller's
        assert where.get() == "caller"  # in a context of its own

    asyncio.run(caller())


def test_a_task_not_asked_to_be_eager_starts_at_the_next_turn():
    ran = []

    async def quick() -> None:
        ran.append(True)

    async def caller() -> None:
        task = start_task(quick(), eager=False)  # an async prediction's: its caller is told `starting`
        assert not ran and not task.done()
        await task
        assert ran

    asyncio.run(caller())


def test_a_prediction_that_waits_goes_on_as_its_task_and_can_be_cancelled():
    async def caller() -> None:
        waited: asyncio.Future = asyncio.get_running_loop().create_future()

        async def waits() -> None:
            async with asyncio.timeout(30):  # inside a task: current_task() is this one from the first step
                await waited

        task = start_task(waits())
        await asyncio.sleep(0.01)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert waited.cancelled()

    asyncio.run(caller())


def test_a_timeout_inside_the_prediction_ends_only_the_prediction():
    async def too_long() -> str:
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(5)
        except TimeoutError:
            return "timed out"
        return "finished"

    async def caller() -> None:
        assert await start_task(too_long()) == "timed out"
        assert asyncio.current_task().cancelling() == 0  # the caller was never the one cancelled

    asyncio.run(caller())


def test_a_quiet_replica_sends_its_records_at_each_tick_a_busy_one_in_bigger_batches():
    """Each sync costs the control application ~2 ms of CPU: a busy replica makes fewer, bigger ones."""
    sent: list[int] = []

    async def send(updates: list, running: list) -> dict:
        sent.append(len(updates))
        return {}

    async def ticks() -> None:
        tracker = Tracker(send, grace=1.0)
        tracker._lock = asyncio.Lock()
        tracker.update({"id": "quiet", "status": "succeeded"})
        await tracker._tick(100.0)
        assert sent == [1]  # at the first tick
        for index in range(Tracker.BUSY):
            tracker.update({"id": f"busy-{index}", "status": "succeeded"})
        await tracker._tick(100.0 + Tracker.INTERVAL_S)
        assert sent == [1]  # waits for more
        tracker.update({"id": "one-more", "status": "succeeded"})
        await tracker._tick(100.0 + Tracker.BUSY_SYNC_S)
        assert sent == [1, Tracker.BUSY + 1]  # all of them, BUSY_SYNC_S after the last sync
        tracker.update({"id": "quiet-again", "status": "succeeded"})
        await tracker._tick(100.0 + Tracker.BUSY_SYNC_S + Tracker.INTERVAL_S)
        assert sent == [1, Tracker.BUSY + 1, 1]  # quiet again: at the next tick

    asyncio.run(ticks())
