"""Start a coroutine at once, and make it a task only if it has to wait: Python 3.12's eager tasks, by hand.

Every prediction runs as a task of its own, so that its caller can be told
``202`` when the hold passes while the work goes on. A plain
``loop.create_task`` costs a trivial model three turns of the event loop per
request (the task's first step, its done callbacks, the handler's wake-up):
~40 us of a ~60 us request path, measured in-process (bench/README.md). Most
predictions of a fast model finish without ever waiting: run the first step
here, and only if the coroutine suspends hand the rest of it to a task, as
``asyncio.eager_task_factory`` does on Python 3.12+.
"""

from __future__ import annotations

import asyncio
import contextvars
import types
from collections.abc import Coroutine, Generator
from typing import Any


@types.coroutine
def _rest(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Generator[Any, Any, Any]:
    """Go on with a coroutine that already yielded ``waiting_on``, as ``yield from`` would."""
    while True:
        try:
            sent = yield waiting_on
        except BaseException as exc:  # a cancel (or any throw) goes to the coroutine, as in a task
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                waiting_on = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def _continue(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Any:
    return await _rest(coro, waiting_on)


def start(coro: Coroutine[Any, Any, None]) -> asyncio.Task | None:
    """Run ``coro`` until it first waits: None if it finished (it returns nothing), else the task running the rest.

    Its exceptions are for the coroutine to handle: one raised in the first step propagates here.
    """
    context = contextvars.copy_context()  # the task's own, from the first step on, as a task would have
    try:
        waiting_on = context.run(coro.send, None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_continue(coro, waiting_on), context=context)
