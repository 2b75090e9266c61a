"""The control application: one always-on Ray Serve application at ``/v1`` over the records.

Model replicas send it their predictions' records (``sync``, batched by
``lambdaml.serve.tracker``); readers get them from ``GET /v1/predictions...``
without waking any model. Three loops run beside the routes: the webhook
sender (an outbox in the database, so a ``completed`` webhook survives a
restart), the reaper (a running prediction whose replica stopped reporting
becomes ``failed``) and retention. It keeps no state of its own beyond the
database, so it can run more than one replica.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lambdaml._http import base_url, error_response, json_response, method_not_allowed
from lambdaml._settings import CONTROL_APP, NO_ROUTE_HEADER, auth_required, retention
from lambdaml.serve.streams import sse
from lambdaml.serve.tracker import CANCELED_BY_CALLER, FINAL
from lambdaml.control import v1
from lambdaml.control.auth import ANONYMOUS, OPEN, AuthWatcher, Caller, UrlKeys, forbidden, publish, unauthorized
from lambdaml.control.catalog import Catalog
from lambdaml.control.files import FileRoutes, Uploads, file_retention
from lambdaml.control.forward import Forwarder
from lambdaml.control.records import Records, database_url
from lambdaml.control.stats import model_series, version_stats
from lambdaml.control.tokens import AuthState, Tokens
from lambdaml.control.usage import Usage
from lambdaml.control.webhooks import WebhookSender, new_secret
from lambdaml.ui import UiRoutes

ROUTE = "/v1"  # the records and Replicate's API; the application itself takes "/" (every path no model takes)
UI_ROUTE = "/ui"
STALE_AFTER_S = 15.0  # replicas report running predictions every 0.2-0.5 s; this long without a report: lost
REAP_EVERY_S = 3.0
WEBHOOKS_EVERY_S = 0.2
EXPIRE_EVERY_S = 60.0
STREAM_POLL_S = 0.2
KEEPALIVE_S = 10.0  # an SSE comment this often: clients time out after 30 s of silence
logger = logging.getLogger("ray.serve")


def _not_found(prediction_id: str) -> Response:
    return error_response(404, "Not found", f"No prediction with id {prediction_id!r}.")


class ControlServer:
    """One replica of the control application."""

    def __init__(self, database: str, retention_s: float, allowed_hosts: str | None = None, auth_required: bool = False,
                 file_retention_s: float = 86400.0, links: dict[str, str] | None = None):
        if allowed_hosts:  # webhook receivers the operator allows on internal addresses (lambdaml._urls)
            os.environ["LAMBDAML_ALLOWED_HOSTS"] = allowed_hosts
        self.records = Records(database)
        self.tokens = Tokens(self.records)
        self.catalog = Catalog(self.records)
        self.uploads = Uploads(self.records, file_retention_s)
        self.usage = Usage(self.records)
        self.url_keys = UrlKeys(self.records.setting("stream_secret", new_secret))
        self.files = FileRoutes(self.uploads, self.url_keys)
        self.forwarder = Forwarder(self.catalog, self.files, self.url_keys)
        self.ui = UiRoutes(self.records, self.catalog, links or {})
        self._auth_required = auth_required  # LAMBDAML_AUTH=required: a token is needed even before one exists
        self.auth = AuthWatcher(self._read_auth_state)
        self._published: AuthState | None = None
        self._secret = self.records.setting("webhook_secret", new_secret)
        self._retention = retention_s
        self._sender = WebhookSender(self.records, self._secret)
        self._loops: list[asyncio.Task] = []

    def _start_loops(self) -> None:
        """On the replica's event loop, at the first call (Serve may build us off that loop)."""
        if self._loops:
            return
        self.auth.start()
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(_every(WEBHOOKS_EVERY_S, self._sender.run_once)),
            loop.create_task(_every(REAP_EVERY_S, self._reap, first_delay=STALE_AFTER_S)),
            loop.create_task(_every(min(EXPIRE_EVERY_S, max(self._retention / 4, 0.5)), self._expire)),
        ]

    async def _reap(self) -> None:
        lost = await asyncio.to_thread(self.records.reap, STALE_AFTER_S)
        if lost:
            logger.warning(f"lambdaml: {len(lost)} predictions lost with their replica: {', '.join(lost[:10])}")

    async def _expire(self) -> None:
        await asyncio.to_thread(self.records.expire, self._retention)
        await asyncio.to_thread(self.uploads.expire)
        await asyncio.to_thread(self.usage.expire, self._retention)

    async def check_health(self) -> None:
        self._start_loops()  # Serve probes every few seconds: the loops start even before any call

    # ------------------------------------------------------------------ calls from model replicas

    async def sync(self, replica: str, updates: list[dict[str, Any]], running: list[str]) -> dict[str, str]:
        """Record ``updates``; note that ``running`` are alive on ``replica``; return cancel requests for them."""
        self._start_loops()
        used = {update["_token"] for update in updates if update.get("_token")}

        def write() -> dict[str, str]:  # one trip to a worker thread
            cancels = self.records.sync(replica, updates, running)
            self.tokens.touch(used)
            return cancels

        return await asyncio.to_thread(write)

    async def replica_seen(self, replica: str, model: str, version: str, resources: dict[str, float],
                           started_ts: float) -> None:
        """A model replica is up (``lambdaml.serve.presence``): what ``lambdaml cost`` counts."""
        self._start_loops()
        await asyncio.to_thread(self.usage.seen, replica, model, version, resources, started_ts)

    async def replica_time(self, since_ts: float, model: str | None = None) -> list[dict[str, Any]]:
        """The replica spans since ``since_ts`` (``lambdaml.cost.actual``)."""
        return await asyncio.to_thread(self.usage.spans, since_ts, model)

    async def version_stats(self, model: str, since_ts: float) -> dict[str, dict[str, Any]]:
        """Figures per version of ``model`` since ``since_ts`` (``lambdaml.canary.compare``)."""
        return await asyncio.to_thread(version_stats, self.records, model, since_ts)

    async def model_series(self, model: str, window: str = "1h") -> dict[str, Any]:
        """The monitoring figures of ``model`` over ``window`` (``lambdaml status NAME``; the page reads /ui/api)."""
        return await asyncio.to_thread(model_series, self.records, model, window)

    async def lookup(self, prediction_id: str) -> dict[str, Any] | None:
        """A record, the token id that created it and its input's hash (an idempotent PUT compares them)."""
        found = await asyncio.to_thread(self.records.find, prediction_id)
        return None if found is None else dict(zip(("record", "token_id", "input_hash"), found))

    async def cancel(self, prediction_id: str, reason: str = CANCELED_BY_CALLER, model: str | None = None) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.records.request_cancel, prediction_id, reason, model)

    async def read_upload(self, reference: str) -> bytes | None:
        """A replica reading a file uploaded to ``/v1/files`` (``lambdaml.serve.transfer``); None for a bad key."""
        return await self.files.read_reference(reference)

    # ------------------------------------------------------------------ tokens (the CLI and Python API, through Ray)

    async def _read_auth_state(self) -> AuthState:
        """The tokens in the database, published for model replicas whenever they change."""
        state = await asyncio.to_thread(self.tokens.state, self._auth_required)
        if state != self._published:
            await asyncio.to_thread(publish, state)
            self._published = state
        return state

    async def create_token(self, name: str, role: str) -> tuple[dict[str, Any], str]:
        made = await asyncio.to_thread(self.tokens.create, name, role)
        await self.auth.refresh()
        return made

    async def auth_required(self) -> bool:
        """Whether this control application runs with ``LAMBDAML_AUTH=required``."""
        return self._auth_required

    async def list_tokens(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.tokens.list)

    async def revoke_token(self, token_id: str) -> dict[str, Any] | None:
        revoked = await asyncio.to_thread(self.tokens.revoke, token_id)
        await self.auth.refresh()  # this replica at once; the others and the model replicas within REFRESH_S
        return revoked

    # ------------------------------------------------------------------ the catalog (deploy and delete, through Ray)

    async def register_model(self, name: str, version: str, created_at: str, visibility: str,
                             openapi: dict[str, Any] | None) -> None:
        await asyncio.to_thread(self.catalog.register, name, version, created_at, visibility, openapi)
        self.forwarder.forget_catalog()

    async def forget_model(self, name: str) -> None:
        await asyncio.to_thread(self.catalog.forget, name)
        self.forwarder.forget_catalog()

    # ------------------------------------------------------------------ HTTP

    async def __call__(self, request: Request) -> Response:
        """Every path no model's prefix takes: ``/v1`` (records, Replicate's API), ``/ui`` (the pages), else a 404."""
        self._start_loops()
        scope = request.scope
        # Tokenless callers get as far as the models routes and the pages, which show them the public models.
        caller = await self.auth.check(dict(scope["headers"]).get(b"authorization"), public=True)
        path = scope["path"]  # the whole path: the application's prefix is "/"
        if path == UI_ROUTE or path.startswith(UI_ROUTE + "/"):
            return await self.ui.handle(request, caller, path.removeprefix(UI_ROUTE))
        if isinstance(caller, Response):
            return caller
        if path == ROUTE or path.startswith(ROUTE + "/"):
            return await self._v1(request, caller, path.removeprefix(ROUTE).rstrip("/") or "/")
        if path == "/" and request.method == "GET":
            return Response(status_code=307, headers={"Location": UI_ROUTE + "/"})
        name = path.strip("/").split("/")[0]
        return error_response(404, "Not found", f"No model named {name!r} is deployed here (`lambdaml ls` lists the "
                              f"models; the page at {UI_ROUTE}/ shows them), and {path} is no route of lambdaml's.",
                              {NO_ROUTE_HEADER: "1"})

    async def _v1(self, request: Request, caller: Caller, path: str) -> Response:
        """``/v1...``: ``path`` is what follows ``/v1``."""
        parts = path.strip("/").split("/")
        method = request.method
        if method == "POST" and (parts == ["predictions"] or (len(parts) == 4 and parts[0] in ("models", "deployments")
                                                             and parts[3] == "predictions")):
            return await self.forwarder.create(request, caller, *parts[1:3])
        if method == "POST" and len(parts) == 6 and parts[0] == "models" and parts[3:6:2] == ["versions", "trainings"]:
            return await self.forwarder.create(request, caller, parts[1], parts[2], training_of=parts[4])
        if parts[0] == "models" and method == "GET":
            return await self._models(request, parts[1:], caller)
        if caller is ANONYMOUS:
            if (len(parts) == 3 and parts[0] == "predictions" and parts[2] == "stream" and method == "GET"
                    and self.url_keys.valid(parts[1], request.query_params.get("key"))):
                return await self._stream(parts[1], OPEN)  # the URL is the capability, as Replicate's stream URLs are
            return unauthorized()
        if caller.token_id is not None and self.tokens.due({caller.token_id}):  # "last used", every TOUCH_EVERY_S
            asyncio.get_running_loop().run_in_executor(None, self.tokens.touch, {caller.token_id})
        if parts[0] == "predictions":
            if len(parts) == 1:
                return await self._list(request, caller) if method == "GET" else method_not_allowed(method, ROUTE + path, "GET")
            if len(parts) == 2:
                return await self._get(parts[1], caller) if method == "GET" else method_not_allowed(method, ROUTE + path, "GET")
            if len(parts) == 3 and parts[2] == "cancel":
                return await self._cancel(parts[1], caller) if method == "POST" else method_not_allowed(method, ROUTE + path, "POST")
            if len(parts) == 3 and parts[2] == "stream":
                return await self._stream(parts[1], caller) if method == "GET" else method_not_allowed(method, ROUTE + path, "GET")
        if parts[0] == "trainings" and len(parts) in (2, 3):  # a training is a record of its model's trainer
            if len(parts) == 2:
                return await self._get(parts[1], caller, True) if method == "GET" else method_not_allowed(method, ROUTE + path, "GET")
            if parts[2] == "cancel":
                return await self._cancel(parts[1], caller, True) if method == "POST" else method_not_allowed(method, ROUTE + path, "POST")
        if parts[0] == "files":
            return await self.files.handle(request, caller, parts)
        if parts == ["webhooks", "default", "secret"]:
            if method != "GET":
                return method_not_allowed(method, ROUTE + path, "GET")
            return json_response({"key": self._secret}) if caller.admin else forbidden("Reading the webhook secret")
        if parts[0] == "models":
            return method_not_allowed(method, ROUTE + path, "GET")
        return error_response(
            404, "Not found",
            f"No route {ROUTE}{path}. /v1 serves GET /v1/predictions, GET /v1/predictions/{{id}}, "
            "POST /v1/predictions/{id}/cancel, GET /v1/predictions/{id}/stream, GET /v1/trainings/{id}, "
            "POST /v1/trainings/{id}/cancel, GET /v1/webhooks/default/secret, "
            "GET /v1/models, GET /v1/models/lambdaml/{name}, GET /v1/models/lambdaml/{name}/versions[/{id}], "
            "POST /v1/files and GET or DELETE /v1/files/{id}",
        )

    async def _models(self, request: Request, parts: list[str], caller: Caller) -> Response:
        """``GET /v1/models[/{owner}/{name}[/versions[/{id}]]]``, Replicate's shapes (``lambdaml.control.v1``)."""
        base = base_url(dict(request.scope["headers"]))
        if not parts:
            found = await asyncio.to_thread(self.catalog.models)
            shown = [model for model in found if caller is not ANONYMOUS or model["visibility"] == "public"]
            latest = [await self._latest(model["name"], model["version"]) for model in shown]
            return v1.page([v1.model_json(base, model, version) for model, version in zip(shown, latest)])
        name = v1.model_name(parts[0], parts[1]) if len(parts) >= 2 else None
        found = await asyncio.to_thread(self.catalog.models, name) if name else []
        if not found or len(parts) > 4 or (len(parts) >= 3 and parts[2] != "versions"):
            return unauthorized() if caller is ANONYMOUS else v1.not_found("/".join(parts[:2]))
        model = found[0]
        if caller is ANONYMOUS and model["visibility"] != "public":
            return unauthorized()
        if len(parts) == 2:
            return json_response(v1.model_json(base, model, await self._latest(name, model["version"])))
        rows = await asyncio.to_thread(self.catalog.versions, name, parts[3] if len(parts) == 4 else None)
        if len(parts) == 3:
            return v1.page([v1.version_json(row) for row in rows])
        if not rows:
            return error_response(404, "Not found", f"{v1.OWNER}/{name} has no version {parts[3]!r}.")
        return json_response(v1.version_json(rows[0]))

    async def _latest(self, name: str, version: str) -> dict[str, Any] | None:
        """The version a model runs now (Replicate's ``latest_version``)."""
        rows = await asyncio.to_thread(self.catalog.versions, name, version)
        return rows[0] if rows else None

    async def _owned(self, prediction_id: str, caller: Caller, training: bool = False) -> dict[str, Any] | None:
        """The record if this caller may see it (its own, or any for an admin): another's is as good as absent,
        as is a training's at a prediction's URL and the other way round."""
        found = await asyncio.to_thread(self.records.find, prediction_id)
        if found is None or not caller.owns(found[1]) or v1.is_training(found[0]) != training:
            return None
        return found[0]

    def _shown(self, record: dict[str, Any] | None, prediction_id: str, training: bool) -> Response:
        if record is None:
            what = "training" if training else "prediction"
            return error_response(404, "Not found", f"No {what} with id {prediction_id!r}.")
        return json_response((v1.training_json if training else v1.prediction_json)(record, self.url_keys))

    async def _get(self, prediction_id: str, caller: Caller, training: bool = False) -> Response:
        return self._shown(await self._owned(prediction_id, caller, training), prediction_id, training)

    async def _cancel(self, prediction_id: str, caller: Caller, training: bool = False) -> Response:
        record = await self._owned(prediction_id, caller, training) and await self.cancel(prediction_id)
        return self._shown(record, prediction_id, training)

    async def _list(self, request: Request, caller: Caller) -> Response:
        query = request.query_params
        model, cursor, token = query.get("model") or None, query.get("cursor") or None, query.get("token") or None
        model = model and model.removeprefix(f"{v1.OWNER}/")  # lambdaml/hello, as /v1 shows it, or hello
        if not caller.admin:  # a predict token lists what it created, and nothing else
            token = caller.token_id
        try:
            results, after, before = await asyncio.to_thread(self.records.page, model, cursor, token=token)
        except ValueError as exc:  # a cursor that is not one of ours
            return json_response({"title": "Invalid cursor", "status": 422, "detail": str(exc),
                          "invalid_fields": [{"field": "cursor", "message": str(exc)}]}, 422)
        here = f"{base_url(dict(request.scope['headers']))}{ROUTE}/predictions"
        filters = {name: value for name, value in (("model", model), ("token", query.get("token"))) if value}

        def link(page_cursor: str | None) -> str | None:
            if page_cursor is None:
                return None
            return f"{here}?{urllib.parse.urlencode({**filters, 'cursor': page_cursor})}"

        shown = [v1.prediction_json(record, self.url_keys) for record in results]
        return json_response({"next": link(after), "previous": link(before), "results": shown})

    async def _stream(self, prediction_id: str, caller: Caller) -> Response:
        record = await self._owned(prediction_id, caller)
        if record is None:
            return _not_found(prediction_id)
        return StreamingResponse(self._events(prediction_id, record), media_type="text/event-stream")

    async def _events(self, prediction_id: str, record: dict[str, Any]) -> AsyncIterator[bytes]:
        """The record's new output items and logs as it changes (read from the database), then ``done``."""
        sent_items, sent_logs, event_id, quiet_since = 0, 0, 0, time.monotonic()
        while True:
            output, logs = record.get("output"), record.get("logs") or ""
            items = output if isinstance(output, list) else ([] if output is None else [output])
            fresh: list[tuple[str, Any]] = [("output", item) for item in items[sent_items:]]
            if len(logs) > sent_logs:
                fresh.append(("logs", logs[sent_logs:]))
            sent_items, sent_logs = len(items), len(logs)
            if record["status"] in FINAL:
                if record["status"] != "succeeded":
                    fresh.append(("error", {"detail": record.get("error")}))
                fresh.append(("done", v1.prediction_json(record, self.url_keys)))
            for event, data in fresh:
                event_id += 1
                yield f"id: {event_id}\n".encode() + sse(event, data)
            if record["status"] in FINAL:
                return
            if fresh:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > KEEPALIVE_S:
                quiet_since = time.monotonic()
                yield b": keepalive\n\n"
            await asyncio.sleep(STREAM_POLL_S)
            record = await asyncio.to_thread(self.records.get, prediction_id) or record


async def _every(seconds: float, job: Callable[[], Awaitable[Any]], first_delay: float = 0.0) -> None:
    await asyncio.sleep(first_delay)
    while True:
        try:
            await job()
        except Exception as exc:  # a database hiccup: try again next round, say so once per round
            logger.warning(f"lambdaml control loop {getattr(job, '__name__', job)}: {exc}")
        await asyncio.sleep(seconds)


def application(database: str | None = None, links: dict[str, str] | None = None) -> Any:
    """The control application, bound to a database (``LAMBDAML_DATABASE_URL`` or the default SQLite file)."""
    links = {**({"grafana": os.environ["LAMBDAML_GRAFANA_URL"]} if os.environ.get("LAMBDAML_GRAFANA_URL") else {}),
             **(links or {})}
    from ray import serve

    return serve.deployment(ControlServer).options(
        name=CONTROL_APP,
        num_replicas=1,
        max_ongoing_requests=1000,  # every replica's record sync and every reader lands here; each call is short
        # On the head node: the default SQLite file is on the head's disk. No CPU reserved, so it never
        # competes with models for room.
        ray_actor_options={"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}},
        health_check_period_s=2,
    ).bind(database or database_url(), retention(), os.environ.get("LAMBDAML_ALLOWED_HOSTS"), auth_required(),
           file_retention(), links)


def ensure_running(database: str | None = None, replace: bool = False, links: dict[str, str] | None = None) -> None:
    """Start the control application on the connected cluster unless it already runs (``replace``: restart it).

    ``links``: where the pages point for more (``dashboard``: the Ray dashboard; ``grafana``, else
    ``LAMBDAML_GRAFANA_URL``)."""
    from ray import serve

    app = serve.status().applications.get(CONTROL_APP)
    if app is not None and str(getattr(app.status, "value", app.status)) == "RUNNING" and not replace:
        return
    if links is None:  # a driver's restart: the cluster it is connected to knows its dashboard
        from lambdaml import cluster

        info = cluster.current()
        links = {"dashboard": info.dashboard_url} if info is not None and info.dashboard_url else {}
    target = serve.RunTarget(target=application(database, links), name=CONTROL_APP, route_prefix="/")
    serve.run_many([target], wait_for_applications_running=True)
