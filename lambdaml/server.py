"""The serve stage, HTTP side: the Ray Serve deployment class every model runs in.

Ray Serve's ingress (HAProxy or its Python proxy) hands us a Starlette
request; we answer the three routes of the predictions API. There is no web
framework in between: the routes are fixed and pydantic already does the
validation, so every microsecond goes to the model. The same replica also
answers ``DeploymentHandle`` calls (``Model.remote``) through ``predict``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import fsspec.config
from pydantic_core import to_json
from starlette.requests import Request
from ray import serve
from starlette.responses import Response, StreamingResponse

from lambdaml._logs import flush_serve_logs_every
from lambdaml._streams import sse
from lambdaml.artifacts import load_code, load_manifest
from lambdaml.environment import sensitive_values
from lambdaml.errors import InputError
from lambdaml.metrics import ModelMetrics
from lambdaml.package import unpack
from lambdaml.runtime import Inputs, ModelRuntime
from lambdaml.schema import openapi


def _json(body: Any, status: int = 200) -> Response:
    return Response(to_json(body), status_code=status, media_type="application/json")


def _invalid(error: InputError) -> Response:
    return _json(
        {"title": "Input validation failed", "status": 422, "detail": str(error), "invalid_fields": error.invalid_fields},
        status=422,
    )


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
    ):
        _use_environment(environment or {})  # first: the artifact store may need these credentials
        flush_serve_logs_every(1.0)
        manifest = load_manifest(artifact)
        spec = manifest.model_spec()
        self.version = manifest.version
        secret_values = _secret_values(spec.secrets, secrets)
        _use_environment({**spec.env, **secret_values})
        masked = list(secret_values.values()) + sensitive_values(environment or {})
        batcher = None
        if spec.batch is not None:  # Ray Serve's batching queue, sized from @model(batch=...)
            self._batched.set_max_batch_size(spec.batch.max_size)
            self._batched.set_batch_wait_timeout_s(spec.batch.wait_ms / 1000)
            batcher = self._batched
        self.runtime = ModelRuntime(
            unpack(load_code(artifact)), debug=debug, masked=masked, metrics=ModelMetrics(spec.name), batcher=batcher
        )
        self._openapi = to_json(openapi(self.runtime.spec.name, self.runtime.schema))

    async def __call__(self, request: Request) -> Response:
        scope = request.scope  # not request.url: parsing a URL costs more than the rest of routing
        path = scope["path"].removeprefix(scope.get("root_path", "")).rstrip("/") or "/"
        method = request.method
        if path == "/predictions" and method == "POST":
            if self.runtime.schema.streaming and "text/event-stream" in request.headers.get("accept", ""):
                return await self._http_stream(await request.body())
            return await self._http_predict(await request.body())
        if path == "/health-check" and method == "GET":
            return _json(self.health_status())
        if path == "/openapi.json" and method == "GET":
            return Response(self._openapi, media_type="application/json")
        if path in ("/predictions", "/health-check", "/openapi.json"):
            return _json({"detail": f"{method} is not allowed on {path}"}, status=405)
        return _json(
            {"detail": f"No route {path}. This model serves POST /predictions, GET /health-check and GET /openapi.json"},
            status=404,
        )

    async def _http_predict(self, body: bytes) -> Response:
        try:
            inputs, prediction_id = self.runtime.parse(body)
            prediction = await self.runtime.predict(inputs, prediction_id)
        except InputError as exc:
            return _invalid(exc)
        return Response(to_json(prediction), media_type="application/json")

    async def _http_stream(self, body: bytes) -> Response:
        """Server-Sent Events: ``output`` per item, then ``done`` with the prediction (``error`` first if it failed)."""
        try:
            inputs, prediction_id = self.runtime.parse(body)  # a 422 before the stream starts
        except InputError as exc:
            return _invalid(exc)
        return StreamingResponse(self._events(inputs, prediction_id), media_type="text/event-stream")

    async def _events(self, inputs: Inputs, prediction_id: str | None) -> AsyncIterator[bytes]:
        async for kind, data in self._stream(inputs, prediction_id):
            if kind == "prediction" and data["status"] == "failed":
                yield sse("error", {"detail": data["error"]})
            yield sse({"item": "output", "prediction": "done", "invalid": "error"}[kind], data)

    async def _stream(self, inputs: Inputs, prediction_id: str | None = None) -> AsyncIterator[tuple[str, Any]]:
        """``("item", output)`` as produced, then ``("prediction", ...)`` or ``("invalid", ...)``."""
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        async def produce() -> None:
            try:
                prediction = await self.runtime.predict(inputs, prediction_id, on_item=lambda i: queue.put(("item", i)))
                await queue.put(("prediction", prediction))
            except InputError as exc:
                await queue.put(("invalid", {"detail": str(exc), "invalid_fields": exc.invalid_fields}))

        task = asyncio.create_task(produce())
        try:
            while True:
                kind, data = await queue.get()
                yield kind, data
                if kind != "item":
                    return
        finally:
            task.cancel()  # the caller went away: stop the prediction

    async def predict_stream(self, inputs: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Handle path of a generator model (``handle.options(stream=True)``): ``{"item": ...}`` then the end."""
        async for kind, data in self._stream(inputs):
            yield {kind: data}

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0)
    async def _batched(self, batch: list[dict[str, Any]]) -> list[Any]:
        return await self.runtime.run_batch(batch)

    async def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Handle path: returns ``{"prediction": ...}`` or ``{"invalid": ...}``, never raises for bad input."""
        try:
            prediction = await self.runtime.predict(inputs)
        except InputError as exc:
            return {"invalid": {"detail": str(exc), "invalid_fields": exc.invalid_fields}}
        return {"prediction": prediction}

    def health_status(self) -> dict[str, Any]:
        return {**self.runtime.health(), "version": self.version}

    async def health(self) -> dict[str, Any]:
        return self.health_status()

    def __del__(self) -> None:
        # Ray Serve calls __del__ when it stops a replica: the model's teardown().
        runtime = getattr(self, "runtime", None)
        if runtime is not None:
            runtime.teardown()
