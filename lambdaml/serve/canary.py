"""In a live replica: the share of new predictions a canary version takes, and handing them to it.

``lambdaml deploy FILE --canary 10`` runs the new version as a second Serve application with
no HTTP route (``lambdaml.canary``) and publishes ``{app, percent, version}`` in Ray's
key-value store under ``canary:{name}``. Every replica of the live version rereads that key
each ``REFRESH_S``; a ``POST /predictions`` then goes to the canary application with that
probability, through a Serve handle call (``ModelServer.create_forwarded``, as ``/v1`` creates
do). Streams (``Accept: text/event-stream``), ``PUT`` with an id, and handle calls stay on the
live version. A canary that cannot take a request (being deleted, at its queue limit) hands it
back: the live replica runs it, so promotion and rollback fail no request.

With no canary, a request pays one attribute test (``share``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Any

from starlette.responses import Response

from lambdaml._http import JSONAnswer
from lambdaml.control.auth import Caller

logger = logging.getLogger("ray.serve")

REFRESH_S = 1.0


def kv_key(name: str) -> str:
    return f"canary:{name}"


def published(name: str) -> dict[str, Any] | None:
    """The canary of ``name`` as ``lambdaml.canary`` published it (``app``, ``percent``, ``version``), if one runs."""
    from lambdaml.cluster.ray_internals import kv_get

    raw = kv_get(kv_key(name))
    return json.loads(raw) if raw else None


class CanaryRouter:
    """Which requests of a live replica go to the canary, from what is published for ``name``."""

    def __init__(self, name: str, live: bool = True) -> None:
        self._name = name
        self._live = live  # a canary's own replicas route nothing: their share stays 0
        self.share = 0.0  # 0..1; 0 when no canary runs
        self._app: str | None = None
        self._handle: Any = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """On the replica's event loop (its first health probe)."""
        if self._live and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    def chosen(self, headers: dict[bytes, bytes]) -> bool:
        """Whether this request goes to the canary (call only when ``share`` is set)."""
        return random.random() < self.share and b"text/event-stream" not in headers.get(b"accept", b"")

    async def forward(self, raw: bytes, headers: dict[bytes, bytes], caller: Caller) -> Response | None:
        """The canary's answer to this request, or None: run it here."""
        handle = self._handle
        if handle is None:
            return None
        try:
            status, body = await handle.create_forwarded.remote(raw, headers, caller)
        except Exception:  # the canary is being promoted or dropped: this version answers
            return None
        if status == 503:  # its queue is full or it is stopping
            return None
        extra = {}
        if status == 202:
            extra["Location"] = json.loads(body)["urls"]["get"]
        return JSONAnswer(body, status, extra)

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self._use(await asyncio.to_thread(published, self._name))
            except Exception as exc:  # the GCS is restarting: the last state holds
                logger.debug(f"lambdaml: cannot read the canary of {self._name}: {exc}")
            await asyncio.sleep(REFRESH_S)

    async def _use(self, canary: dict[str, Any] | None) -> None:
        app = canary["app"] if canary else None
        if app != self._app:
            from ray import serve

            self._handle = await asyncio.to_thread(serve.get_app_handle, app) if app else None
            self._app = app
        self.share = canary["percent"] / 100 if canary else 0.0
