"""``/ui``: the pages, their assets, and the JSON they read (``/ui/api/...``).

The HTML and assets carry no data, so they are served to anyone; a token-holding page sends
its token with every ``/ui/api`` and ``/v1`` call (the page keeps it in the browser's storage,
never in a URL). Without a token a caller sees the public models only, as on ``/v1/models``.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lambdaml._file_basics import inline_limit_bytes
from lambdaml._http import error_response, json_response, method_not_allowed
from lambdaml.control import stats
from lambdaml.control.auth import ANONYMOUS, OPEN, Caller, unauthorized
from lambdaml.control.catalog import Catalog
from lambdaml.control.files import max_upload_bytes
from lambdaml.control.records import Records

ROUTE = "/ui"
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # a model name as spec.py allows it: nothing else reaches the page
SCRIPTS = ("app.js", "api.js", "dom.js", "form.js", "output.js", "charts.js", "model.js", "playground.js", "history.js",
           "monitor.js", "snippets.js")
ASSETS = {**{name: "text/javascript" for name in SCRIPTS}, "app.css": "text/css", "favicon.svg": "image/svg+xml"}
SERVE_STATUS_TTL_S = 1.0  # the overview polls; Serve's controller is asked at most once a second
# The page builds its DOM from text nodes only; this keeps whatever a model outputs from running as script.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src * data: blob:; media-src * data: blob:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _asset(name: str) -> bytes:
    return (importlib.resources.files("lambdaml.ui") / "static" / name).read_bytes()


class UiRoutes:
    """The ``/ui`` routes of one control replica."""

    def __init__(self, records: Records, catalog: Catalog, links: dict[str, str]):
        self._records = records
        self._catalog = catalog
        self._links = links  # {"dashboard": URL, "grafana": URL}, as far as the cluster knows them
        self._page = _asset("index.html")
        self._assets = {name: _asset(name) for name in ASSETS}
        self._serve_status: tuple[float, dict[str, dict[str, Any]]] = (0.0, {})

    async def handle(self, request: Request, caller: Caller | Response, path: str) -> Response:
        """``path``: what follows ``/ui``. ``caller``: the auth check's answer (a 401 is answered only on the API)."""
        parts = [part for part in path.split("/") if part]
        if request.method != "GET":
            return method_not_allowed(request.method, ROUTE + path, "GET")
        if not parts or (len(parts) == 1 and NAME.fullmatch(parts[0])):
            return Response(self._page, media_type="text/html; charset=utf-8", headers=HEADERS)
        if len(parts) == 2 and parts[0] == "static" and parts[1] in ASSETS:
            return Response(self._assets[parts[1]], media_type=ASSETS[parts[1]],
                            headers={**HEADERS, "Cache-Control": "no-cache"})
        if parts[0] == "api":
            if isinstance(caller, Response):
                return caller
            return await self._api(request, caller, parts[1:])
        return error_response(404, "Not found", f"No page {ROUTE}{path}. The overview is {ROUTE}/, a model's page {ROUTE}/NAME.")

    async def _api(self, request: Request, caller: Caller, parts: list[str]) -> Response:
        if parts == ["models"]:
            return json_response(await self._overview(caller))
        if len(parts) in (2, 3) and parts[0] == "models" and NAME.fullmatch(parts[1]):
            found = await asyncio.to_thread(self._catalog.models, parts[1], False)
            if not found or (caller is ANONYMOUS and found[0]["visibility"] != "public"):
                return unauthorized() if caller is ANONYMOUS else error_response(
                    404, "Not found", f"No model named {parts[1]!r} is deployed. `lambdaml ls` lists the models.")
            if len(parts) == 2:
                return json_response(await self._model(found[0], caller))
            if parts[2] == "stats":
                window = request.query_params.get("window", "1h")
                if window not in stats.WINDOWS:
                    return json_response({"title": "Invalid window", "status": 422, "detail": "window is 1h or 24h",
                                          "invalid_fields": [{"field": "window", "message": "1h or 24h"}]}, 422)
                return json_response(await asyncio.to_thread(stats.model_series, self._records, parts[1], window))
        return error_response(404, "Not found", "The page's API serves GET /ui/api/models, /ui/api/models/NAME "
                                                "and /ui/api/models/NAME/stats?window=1h|24h.")

    async def _overview(self, caller: Caller) -> dict[str, Any]:
        """Every model the caller may see: name, version, status, replicas, a sparkline of the last hour."""
        found = await asyncio.to_thread(self._catalog.models, None, False)  # no counts: a scan of every record, each poll
        shown = [model for model in found if caller is not ANONYMOUS or model["visibility"] == "public"]
        names = [model["name"] for model in shown]
        lines = await asyncio.to_thread(stats.sparkline, self._records, names) if names else {}
        running = await self._running()
        return {
            "auth": caller is not OPEN, "role": _role(caller), "links": self._links,
            "models": [{**_public(model), **running.get(model["name"], _NOT_RUNNING), "sparkline": lines[model["name"]]}
                       for model in shown],
        }

    async def _model(self, model: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """One model: what the overview says of it, its OpenAPI document, and what the form needs to know."""
        versions = await asyncio.to_thread(self._catalog.versions, model["name"], model["version"])
        running = (await self._running()).get(model["name"], _NOT_RUNNING)
        return {
            **_public(model), **running, "auth": caller is not OPEN, "role": _role(caller), "links": self._links,
            "openapi": versions[0]["openapi"] if versions else None,
            "limits": {"inline_bytes": inline_limit_bytes(), "upload_bytes": max_upload_bytes()},
        }

    async def _running(self) -> dict[str, dict[str, Any]]:
        """Serve's view of each application: its status and replicas (asked at most once a second)."""
        read_at, running = self._serve_status
        if time.monotonic() - read_at > SERVE_STATUS_TTL_S:
            running = await asyncio.to_thread(_serve_status)
            self._serve_status = (time.monotonic(), running)
        return running


_NOT_RUNNING = {"status": "NOT_RUNNING", "replicas": 0, "target": 0}


def _public(model: dict[str, Any]) -> dict[str, Any]:
    return {key: model.get(key) for key in ("name", "version", "visibility", "deployed_at")}


def _role(caller: Caller) -> str:
    return "anonymous" if caller is ANONYMOUS else caller.role


def _serve_status() -> dict[str, dict[str, Any]]:
    from ray import serve

    running = {}
    for name, app in serve.status().applications.items():
        states: dict[str, int] = {}
        for deployment in app.deployments.values():
            for state, count in deployment.replica_states.items():
                key = str(getattr(state, "value", state))
                states[key] = states.get(key, 0) + count
        running[name] = {"status": str(getattr(app.status, "value", app.status)), "replicas": states.get("RUNNING", 0),
                         "target": sum(states.values())}
    return running
