"""The serve stage, HTTP side: the Ray Serve deployment class every model runs in.

Ray Serve's ingress (HAProxy or its Python proxy) hands us a Starlette
request; we answer the three routes of the predictions API. There is no web
framework in between: the routes are fixed and pydantic already does the
validation, so every microsecond goes to the model. The same replica also
answers ``DeploymentHandle`` calls (``Model.remote``) through ``predict``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import fsspec.config
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json
from starlette.requests import Request
from ray import serve
from starlette.responses import Response, StreamingResponse

from lambdaml import _clock
from lambdaml._ids import new_id
from lambdaml._http import (
    BodyTooLarge, JSONAnswer, base_url, cancel_after, error_response, hold_seconds, invalid_response, json_response, location,
    method_not_allowed, read_body, too_large_response,
)
from lambdaml.serve.canary import CanaryRouter
from lambdaml.serve.presence import Presence
from lambdaml.serve.log_capture import flush_serve_logs, flush_serve_logs_every
from lambdaml._settings import CONTROL_APP, SHUTDOWN_WAIT_S, TRAINER_SUFFIX, cancel_grace, max_request_bytes, sync_wait
from lambdaml.serve.streams import sse
from lambdaml.artifacts import load_code, load_manifest
from lambdaml._forwarding import sensitive_values
from lambdaml.errors import InputError
from lambdaml.serve.metrics import ModelMetrics
from lambdaml.package import unpack
from lambdaml.serve.runtime import ModelRuntime
from lambdaml.serve.tracker import CALLER_WENT_AWAY, CANCELED_BY_CALLER, FINAL, SHUT_DOWN, Flight, Tracker, start_task
from lambdaml.control.auth import ANONYMOUS, OPEN, Caller, forbidden, published_watcher, unauthorized
from lambdaml.serve import training
from lambdaml.serve.training import Trainer, weights_location
from lambdaml._openapi import openapi
from lambdaml.schema import ID_RULE, PREDICTION_ID


def _input_hash(inputs: BaseModel) -> str:
    """What an idempotent ``PUT`` compares: the validated inputs, canonically."""
    return hashlib.sha256(inputs.model_dump_json().encode()).hexdigest()


def _use_environment(variables: dict[str, str]) -> None:
    os.environ.update(variables)
    fsspec.config.set_conf_env(fsspec.config.conf)  # FSSPEC_* settings that just arrived


def _secret_values(names: tuple[str, ...], given: dict[str, str] | None) -> dict[str, str]:
    """The model's secrets: as given by ``deploy``, else from the replica's environment (declarative deploys)."""
    values = given if given is not None else {name: os.environ[name] for name in names if name in os.environ}
    absent = [name for name in names if name not in values]
    if absent:
        raise RuntimeError(f"secret {', '.join(absent)} is not set in the replica's environment")
    return values


class ModelServer:
    """One replica. Ray Serve constructs it with the URL of the model's artifact."""

    def __init__(
        self,
        artifact: str,
        secrets: dict[str, str] | None = None,
        environment: dict[str, str] | None = None,
        debug: bool = False,
        settings: dict[str, Any] | None = None,
        price_per_hour: float | None = None,
        fingerprint: str = "",
    ):
        _use_environment(environment or {})  # first: the artifact store may need these credentials
        flush_serve_logs_every(1.0)
        manifest = load_manifest(artifact)
        spec = manifest.model_spec().with_settings(settings or {})  # the deploy's hardware and scaling
        self.version = manifest.version
        secret_values = _secret_values(spec.secrets, secrets)
        _use_environment({**spec.env, **secret_values})
        masked = list(secret_values.values()) + sensitive_values(environment or {})
        batcher = None
        if spec.batch is not None:  # Ray Serve's batching queue, sized from @model(batch=...)
            self._batched.set_max_batch_size(spec.batch.max_size)
            self._batched.set_batch_wait_timeout_s(spec.batch.wait_ms / 1000)
            batcher = self._batched
        model = unpack(load_code(artifact, manifest))
        model.spec = spec
        self.runtime = ModelRuntime(
            model, debug=debug, masked=masked, metrics=ModelMetrics(spec.name, manifest.version, price_per_hour), batcher=batcher,
            weights=manifest.weights, outputs=weights_location(artifact, manifest.trains) if manifest.trains else None,
        )
        self.name = spec.name
        # A trainer (lambdaml.serve.training) serves Cog's /trainings routes; its successes become versions.
        self.trainer = None if manifest.trains is None else Trainer(
            artifact, manifest.trains, environment or {}, debug, price_per_hour, self._control_call)
        self._collection, self._kind = ("/trainings", "trainings") if self.trainer else ("/predictions", "predictions")
        self._handles: dict[str, Any] = {}  # the trainer's, for POST /{name}/trainings
        self._openapi = to_json(openapi(self.runtime.spec.name, self.runtime.schema, self._kind))
        self._cog = self.runtime.schema.cog_output is not None  # a Cog model answers a 422 as Cog does
        self._sync_wait = sync_wait()
        self._max_body = max_request_bytes()
        self._capacity = spec.running_limit + spec.queue  # predictions held at once; past it a 503
        self._shutdown_wait = spec.timeout or SHUTDOWN_WAIT_S
        self._replica = replica_name()
        self._control: Any = None
        self._public = spec.visibility == "public"
        self.auth = published_watcher()  # the callers' tokens, as the control application publishes them
        self.tracker = Tracker(self._send_records, cancel_grace())
        self.presence = Presence(self._report_presence)
        self.canary = CanaryRouter(self.name, live=_app_name(self.name) == self.name)
        self._fingerprint = fingerprint

    async def fingerprint(self) -> str:
        """What this replica was made of (``app.build_with_fingerprint``): an unchanged redeploy keeps it."""
        return self._fingerprint

    async def __call__(self, request: Request) -> Response:
        scope = request.scope  # not request.url: parsing a URL costs more than the rest of routing
        path = scope["path"].removeprefix(scope.get("root_path", "")).rstrip("/") or "/"
        method = request.method
        if path == "/health-check":  # open to load balancers, token or not
            return self._health_answer() if method == "GET" else method_not_allowed(method, path, "GET")
        headers = dict(scope["headers"])  # one pass over the raw headers: Starlette's lookups cost more
        caller = await self.auth.check(headers.get(b"authorization"), self._public)
        if isinstance(caller, Response):
            return caller
        collection = self._collection
        if path == collection:
            if method == "POST":
                return await self._http_create(request, headers, caller)
            return method_not_allowed(method, path, "POST")
        if path.startswith(collection + "/"):
            prediction_id, _, action = path.removeprefix(collection + "/").partition("/")
            if action == "cancel":
                if method != "POST":
                    return method_not_allowed(method, path, "POST")
                return await self._http_cancel(prediction_id, caller)
            if not action:
                if method != "PUT":
                    return method_not_allowed(method, path, "PUT")
                return await self._http_create(request, headers, caller, prediction_id)
        if path == "/openapi.json":
            return JSONAnswer(self._openapi) if method == "GET" else method_not_allowed(method, path, "GET")
        if path == "/trainings" and method == "POST":  # a model's trainings run in its trainer application
            return await self._http_create(request, headers, caller, forward=TRAINER_SUFFIX)
        return error_response(
            404, "Not found",
            f"No route {path}. This model serves POST {collection}, PUT {collection}/{{id}}, "
            f"POST {collection}/{{id}}/cancel, GET /health-check and GET /openapi.json",
        )

    # ------------------------------------------------------------------ creating predictions

    async def _http_create(
        self, request: Request, headers: dict[bytes, bytes], caller: Caller, path_id: str | None = None,
        forward: str | None = None,
    ) -> Response:
        """``POST /predictions`` and ``PUT /predictions/{id}``: hold the caller up to the hold, else 202.
        ``forward``: hand it to the application ``{name}{forward}`` instead (a model's trainer)."""
        try:
            raw = await read_body(request, headers.get(b"content-length"), self._max_body)
        except BodyTooLarge as exc:
            return too_large_response(exc, self._max_body)
        if forward is not None:
            return await training.forward(self.name + forward, raw, headers, caller, self._handles)
        if self.canary.share and path_id is None and self.canary.chosen(headers):  # lambdaml.serve.canary
            answer = await self.canary.forward(raw, headers, caller)
            if answer is not None:
                return answer
        return await self._create(raw, headers, caller, path_id)

    async def create_forwarded(self, raw: bytes, headers: dict[bytes, bytes], caller: Caller) -> tuple[int, bytes]:
        """Handle path of ``POST /v1/.../predictions`` (``lambdaml.control.forward``, which checked the token):
        the answer's status and JSON body."""
        if caller == ANONYMOUS and not self._public:  # compared by value: it crossed a handle call
            answer = unauthorized()
        else:
            answer = await self._create(raw, headers, caller)
        return answer.status_code, answer.body

    async def _create(self, raw: bytes, headers: dict[bytes, bytes], caller: Caller, path_id: str | None = None) -> Response:
        try:
            body = self.runtime.parse(raw)
            hold = hold_seconds(headers.get(b"prefer"), self._sync_wait)
            deadline = cancel_after(headers.get(b"cancel-after"))
            prediction_id = self._chosen_id(body, path_id)
            if body.webhook is not None:
                _check_webhook(body.webhook)
        except InputError as exc:
            return invalid_response(exc, self._cog)
        if self.trainer and not caller.admin:
            return forbidden("Training a model (it changes the version the model runs)")
        if self.tracker.doomed:  # a predict that will not stop holds the slot: another replica must take it
            return error_response(503, "Replica being replaced", "This replica is being replaced; try again.", {"Retry-After": "1"})
        input_hash = _input_hash(body.input) if prediction_id is not None else ""
        if prediction_id is not None and (existing := await self._existing(prediction_id)) is not None:
            record, known_hash, owner = existing
            if record.get("model") != self.name or not caller.owns(owner):  # say nothing of the other one
                return error_response(409, "Conflict", f"The id {prediction_id!r} is taken by another prediction; choose another.")
            if known_hash != input_hash:
                return error_response(409, "Conflict", f"A prediction with id {prediction_id!r} exists with a different input.")
            flight = self.tracker.flights.get(prediction_id)
            if flight is None:  # held by another replica, or finished: answer from the record
                return json_response(record, 200 if record["status"] in FINAL else 202, location(record))
        elif len(self.tracker.flights) >= self._capacity:  # running, queued and async ones alike
            return error_response(
                503, "Too many predictions queued",
                f"{self.name} has {len(self.tracker.flights)} predictions running or waiting on this replica, its "
                "limit (@model(concurrency=..., queue=...)); try again shortly.", {"Retry-After": "1"},
            )
        else:
            streaming = self.runtime.schema.streaming and b"text/event-stream" in headers.get(b"accept", b"")
            flight = self._start(
                body, prediction_id, input_hash, base_url(headers), deadline, streaming, caller.token_id, waited=hold > 0,
            )
            if streaming:
                return StreamingResponse(self._events(flight), media_type="text/event-stream")
        return await self._hold(flight, hold)

    def _chosen_id(self, body: BaseModel, path_id: str | None) -> str | None:
        if path_id is None:
            return body.id
        if re.fullmatch(PREDICTION_ID, path_id) is None:
            raise InputError(
                f"Invalid request. id: {ID_RULE}", [{"field": "id", "type": "string_pattern_mismatch", "message": ID_RULE}],
            )
        if body.id is not None and body.id != path_id:
            raise InputError(
                f"Invalid request. id: the body says {body.id!r} and the URL {path_id!r}",
                [{"field": "id", "type": "mismatch", "message": "the body's id differs from the URL's"}],
            )
        return path_id

    async def _existing(self, prediction_id: str) -> tuple[dict[str, Any], str | None, str | None] | None:
        """A prediction with this id, here or in the records, with its input hash and the token that created it."""
        if (known := self.tracker.lookup(prediction_id)) is not None:
            return known
        try:
            found = await self._control_call("lookup", prediction_id)
        except Exception:  # no records to ask: nothing to be idempotent with
            return None
        return None if found is None else (found["record"], found["input_hash"], found["token_id"])

    def _start(
        self, body: BaseModel, prediction_id: str | None, input_hash: str, base: str, deadline: float | None,
        streaming: bool = False, token_id: str | None = None, waited: bool = True,
    ) -> Flight:
        """Hold a new prediction and start it as a task of its own (the caller may be told 202 while it runs).
        ``waited``: a caller waits for it, so it starts at once (``start_task``); else a ``respond-async``
        caller is told ``starting``, as the prediction is, and it starts at the next turn of the loop."""
        prediction_id = prediction_id or new_id()
        kind = self._kind
        urls = {"get": f"{base}/v1/{kind}/{prediction_id}", "cancel": f"{base}/v1/{kind}/{prediction_id}/cancel"}
        if self.runtime.schema.streaming:
            urls["stream"] = f"{base}/v1/predictions/{prediction_id}/stream"
        record = {
            "id": prediction_id, "model": self.name, "version": self.version, "status": "starting",
            "input": self.runtime.schema.echo(body.input), "output": None, "logs": "", "error": None,
            "created_at": _clock.now(), "started_at": None, "completed_at": None, "metrics": {}, "urls": urls,
            "deadline": _clock.after(deadline) if deadline else None, "data_removed": False,
            "webhook": body.webhook, "webhook_events_filter": body.webhook_events_filter,
        }
        flight = self.tracker.add(record, input_hash, token_id)
        if streaming:
            flight.queue = asyncio.Queue()
        flight.task = start_task(self._run(flight, body.input), eager=waited)  # a quick one may have ended already
        flight.task.add_done_callback(lambda task: self._settle(flight, task))
        if deadline and flight.record["status"] not in FINAL:
            flight.cancel_after(deadline)
        return flight

    async def _run(self, flight: Flight, inputs: BaseModel) -> None:
        """The prediction's whole life in this replica; its final record goes to the tracker."""
        on_item = None
        if self.runtime.schema.streaming:
            flight.items = []

            async def on_item(item: Any) -> None:
                flight.items.append(item)
                if flight.queue is not None:
                    await flight.queue.put(("item", item))

        # Filled in place (runtime.predict). A trainer's stays ``processing`` in the flight until its
        # version is published (trainer.finish), so it works on a copy.
        record = dict(flight.record) if self.trainer else flight.record
        try:
            await self.runtime.predict(inputs, record, on_item=on_item, on_start=flight.started, cancel_reason=flight.reason)
        except InputError as exc:  # a file input that could not be had: nothing ran
            flight.invalid = exc
            record.update(status="failed", error=str(exc), completed_at=_clock.now())
        except Exception as exc:  # a bug of ours: the prediction still ends in a record
            record.update(status="failed", error=f"lambdaml could not run the prediction: {exc!r}", completed_at=_clock.now())
        if self.trainer:
            record = await self.trainer.finish(record)
        self._end(flight, record)

    def _end(self, flight: Flight, record: dict[str, Any]) -> None:
        self.tracker.finished(flight, record)
        if flight.queue is not None:
            flight.queue.put_nowait(("invalid", flight.invalid) if flight.invalid is not None else ("prediction", record))

    def _settle(self, flight: Flight, task: asyncio.Task) -> None:
        """Every accepted prediction ends in a final record, even if its task was cancelled from outside."""
        if flight.record["status"] not in FINAL:
            ending = {"status": "canceled", "error": flight.reason(), "completed_at": _clock.now()}
            self._end(flight, {**flight.record, **ending})
        elif not task.cancelled():
            task.exception()  # retrieved: asyncio would warn about an exception nobody awaited

    async def _hold(self, flight: Flight, hold: float) -> Response:
        if hold > 0 and flight.record["status"] not in FINAL:
            try:
                await flight.wait(hold)
            except asyncio.CancelledError:  # the caller went away: a sync prediction goes with it
                if not flight.background:
                    flight.cancel(CALLER_WENT_AWAY)
                raise
        if flight.record["status"] in FINAL:
            if flight.invalid is not None:
                return invalid_response(flight.invalid, self._cog)
            return JSONAnswer(to_json(flight.record))

        flight.background = True  # from now on no request holds it
        record = dict(flight.record)  # as it stands now, as what the records have after the flush
        await self.tracker.flush()  # the caller may read urls.get at once
        return json_response(record, 202, location(record))

    async def _events(self, flight: Flight) -> AsyncIterator[bytes]:
        """Server-Sent Events: ``output`` per item, then ``done`` with the prediction (``error`` first if it failed)."""
        async for kind, data in self._stream(flight):
            if kind == "prediction" and data["status"] != "succeeded":
                yield sse("error", {"detail": data["error"]})
            yield sse({"item": "output", "prediction": "done", "invalid": "error"}[kind], data)

    async def _stream(self, flight: Flight) -> AsyncIterator[tuple[str, Any]]:
        """``("item", output)`` as produced, then ``("prediction", ...)`` or ``("invalid", ...)``."""
        try:
            while True:
                kind, data = await flight.queue.get()
                if kind == "invalid":
                    data = {"detail": str(data), "invalid_fields": data.invalid_fields}
                yield kind, data
                if kind != "item":
                    return
        finally:
            flight.cancel(CALLER_WENT_AWAY)  # nothing if it ended; else the caller went away: stop it

    # ------------------------------------------------------------------ handle calls (Model.remote)

    def _start_validated(self, inputs: dict[str, Any], streaming: bool = False) -> Flight:
        body = self.runtime.schema.request_model.model_validate({"input": inputs})
        return self._start(body, None, "", "", None, streaming)

    async def predict_stream(self, inputs: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Handle path of a generator model (``handle.options(stream=True)``): ``{"item": ...}`` then the end."""
        try:
            flight = self._start_validated(inputs, streaming=True)
        except ValidationError as exc:
            yield {"invalid": _handle_invalid(self.runtime, inputs, exc)}
            return
        async for kind, data in self._stream(flight):
            yield {kind: data}

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0)
    async def _batched(self, batch: list[dict[str, Any]]) -> list[Any]:
        return await self.runtime.run_batch(batch)

    async def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Handle path: returns ``{"prediction": ...}`` or ``{"invalid": ...}``, never raises for bad input."""
        try:
            flight = self._start_validated(inputs)
        except ValidationError as exc:
            return {"invalid": _handle_invalid(self.runtime, inputs, exc)}
        try:
            if flight.record["status"] not in FINAL:
                await asyncio.wait([flight.task])  # waiting is cancelled, not the task
        except asyncio.CancelledError:
            flight.cancel(CALLER_WENT_AWAY)
            raise
        if flight.invalid is not None:
            return {"invalid": {"detail": str(flight.invalid), "invalid_fields": flight.invalid.invalid_fields}}
        return {"prediction": flight.record}

    # ------------------------------------------------------------------ cancel, records, health, shutdown

    async def _http_cancel(self, prediction_id: str, caller: Caller = OPEN) -> Response:
        not_found = error_response(404, "Not found", f"{self.name} has no prediction with id {prediction_id!r}.")
        flight = self.tracker.flights.get(prediction_id)
        if flight is not None:
            if not caller.owns(flight.token_id):  # another caller's prediction is as good as absent
                return not_found
            flight.cancel(CANCELED_BY_CALLER)
            return json_response(flight.record)
        try:
            if not caller.admin and ((found := await self._control_call("lookup", prediction_id)) is None
                                     or not caller.owns(found["token_id"])):
                return not_found
            record = await self._control_call("cancel", prediction_id, CANCELED_BY_CALLER, self.name)
        except Exception as exc:
            return error_response(503, "Records unavailable", f"The prediction records cannot be reached: {exc}", {"Retry-After": "1"})
        return not_found if record is None else json_response(record)

    async def _control_call(self, method: str, *args: Any) -> Any:
        if self._control is None:
            from ray import serve as ray_serve

            self._control = await asyncio.to_thread(ray_serve.get_app_handle, CONTROL_APP)
        return await asyncio.wait_for(_awaited(getattr(self._control, method).remote(*args)), 10)

    async def _report_presence(self, started_ts: float, resources: dict[str, float]) -> None:
        await self._control_call("replica_seen", self._replica, self.name, self.version, resources, started_ts)

    async def _send_records(self, updates: list[dict[str, Any]], running: list[str]) -> dict[str, str]:
        return await self._control_call("sync", self._replica, updates, running)

    def _health_answer(self) -> Response:
        """For load balancers and anyone on the network: the state alone, 503 unless ready. The
        setup error and recent failures are for ``lambdaml status`` (the ``health`` handle call)."""
        status = "SETUP_FAILED" if self.runtime.setup_failed else "READY"
        return json_response({"status": status}, 200 if status == "READY" else 503)

    def health_status(self) -> dict[str, Any]:
        return {**self.runtime.health(), "version": self.version}

    async def health(self) -> dict[str, Any]:
        return self.health_status()

    async def check_health(self) -> None:
        """Serve's health probe: a replica with a predict that will not stop must be replaced."""
        self.presence.start()  # the first probe comes within a second of the replica's start
        self.canary.start()
        reason = self.tracker.stuck() or self.runtime.stuck  # the tracker's first: it also ends the record
        if reason is not None:
            raise RuntimeError(reason)

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Load Serve cannot see (lambdaml.serve.autoscaling): predictions no request waits for."""
        return {"background": float(self.tracker.background())}

    async def __del__(self) -> None:
        """Ray Serve calls this once requests have drained: let background predictions end, then teardown()."""
        tracker = getattr(self, "tracker", None)
        if tracker is not None and tracker.flights:
            await _drain(tracker, self._shutdown_wait)
        runtime = getattr(self, "runtime", None)
        if runtime is not None:
            runtime.teardown()
        presence = getattr(self, "presence", None)
        if presence is not None:
            await presence.stop()  # its span ends now, not at its last periodic report
        flush_serve_logs()  # the last second's lines, which the flusher would write too late


async def _drain(tracker: Tracker, wait: float) -> None:
    """Wait up to ``wait`` s for the predictions still here; cancel what is left; record it all."""
    loop = asyncio.get_running_loop()
    until = loop.time() + wait
    while tracker.flights and loop.time() < until:
        await asyncio.sleep(0.1)
    for flight in list(tracker.flights.values()):
        flight.cancel(SHUT_DOWN)
    tasks = [flight.task for flight in tracker.flights.values() if flight.task is not None]
    if tasks:
        await asyncio.wait(tasks, timeout=tracker._grace)
    await tracker.flush()


async def _awaited(response: Any) -> Any:
    return await response


def _check_webhook(url: str) -> None:
    from lambdaml._urls import RefusedURL
    from lambdaml.control.webhooks import check_webhook_url

    try:
        check_webhook_url(url)
    except RefusedURL as exc:
        raise InputError(f"Invalid request. webhook: {exc}", [{"field": "webhook", "type": "url", "message": str(exc)}]) from None


def _handle_invalid(runtime: ModelRuntime, inputs: dict[str, Any], exc: ValidationError) -> dict[str, Any]:
    try:
        runtime.schema.validate(inputs)
    except InputError as error:
        return {"detail": str(error), "invalid_fields": error.invalid_fields}
    return {"detail": str(exc), "invalid_fields": []}


def _app_name(default: str) -> str:
    """The Serve application this replica belongs to: the model's name, or its canary's (``lambdaml.canary``)."""
    try:
        return serve.get_replica_context().app_name
    except Exception:  # not in a replica
        return default


def replica_name() -> str:
    """This replica's id, as the records name it (a random one outside Ray Serve)."""
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # not in a replica (a test building the server by hand)
        return secrets.token_hex(4)
