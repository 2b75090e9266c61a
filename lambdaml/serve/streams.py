"""Streaming outputs: iterate a generator ``predict`` without blocking the replica, and format SSE.

A sync generator's ``next()`` runs in a worker thread (it may compute for a
while between items); an async generator is iterated on the loop. Events use
Replicate's names: ``output`` for each item, then ``done`` with the whole
prediction, or ``error``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from lambdaml.serve.threads import SyncRunner

_END = object()


def _next_item(iterator: Any) -> Any:
    return next(iterator, _END)


async def iterate(produced: Any, threads: SyncRunner) -> AsyncIterator[Any]:
    """The items of a sync or async generator, in order."""
    if hasattr(produced, "__anext__"):
        async for item in produced:
            yield item
        return
    iterator = iter(produced)
    while (item := await threads.run(_next_item, {"iterator": iterator})) is not _END:
        yield item


def combine(items: list[Any], text: bool) -> Any:
    """A non-streaming request's output: a ``str`` stream's items joined (tokens of one text), others as a list."""
    return "".join(items) if text else items


def sse(event: str, data: Any) -> bytes:
    """One Server-Sent Event; text items are sent as they are, everything else as JSON."""
    text = data if isinstance(data, str) and event in ("output", "logs") else json.dumps(data)
    lines = "".join(f"data: {line}\n" for line in text.split("\n"))
    return f"event: {event}\n{lines}\n".encode()
