"""Starting a prediction through ``/v1``: find the model, hand the request to one of its replicas, answer as Replicate.

The control application has checked the token; the replica does everything else a
``POST /{name}/predictions`` does (validation, the hold, the record, webhooks), reached
through a Serve handle call between applications (``ModelServer.create_forwarded``), so
the request is not sent through the HTTP ingress a second time.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lambdaml._http import (
    BodyTooLarge, JSONAnswer, base_url, error_response, invalid_response, json_response, read_body, too_large_response,
)
from lambdaml._settings import TRAINER_SUFFIX, max_request_bytes
from lambdaml.control import v1
from lambdaml.control.auth import ANONYMOUS, Caller, UrlKeys, unauthorized
from lambdaml.control.catalog import Catalog
from lambdaml.control.files import FileRoutes
from lambdaml.errors import InputError


CATALOG_TTL_S = 1.0


class Forwarder:
    """``POST /v1/models/{owner}/{name}/predictions``, ``/v1/deployments/...`` and ``/v1/predictions``."""

    def __init__(self, catalog: Catalog, files: FileRoutes, keys: UrlKeys) -> None:
        self._catalog = catalog
        self._keys = keys
        self._files = files  # inputs naming files uploaded to /v1/files get their contents in place
        self._handles: dict[str, Any] = {}
        self._max_body = max_request_bytes()
        self._running: tuple[float, dict[str, dict[str, Any]]] = (0.0, {})  # (read at, the catalog's models by name)

    def forget_catalog(self) -> None:
        """A model was deployed or deleted here: the next create reads the catalog again."""
        self._running = (0.0, {})

    async def create(self, request: Request, caller: Caller, owner: str | None = None, name: str | None = None,
                     training_of: str | None = None) -> Response:
        """A new prediction of ``owner/name``, or (both None) of the model ``version`` in the body names.

        ``training_of``: a version id; a training of that version of ``owner/name`` instead, run by
        the model's trainer application (``POST /v1/models/{owner}/{name}/versions/{id}/trainings``).
        """
        headers = dict(request.scope["headers"])
        try:
            raw = await read_body(request, headers.get(b"content-length"), self._max_body)
            body, version = v1.request_body(raw, takes_version=name is None)
            prefer = v1.wait_preference(headers.get(b"prefer"))
            version_id = training_of
            if training_of is not None:
                v1.destination(body, name or "")
            if version is not None:
                name, version_id = v1.parse_version(version)
            elif owner is not None and v1.model_name(owner, name or "") is None:
                name = None  # another owner's model: not here
        except InputError as exc:
            return invalid_response(exc)
        except BodyTooLarge as exc:
            return too_large_response(exc, self._max_body)
        model = await self._model(name, version_id)
        if model is None:
            return unauthorized() if caller is ANONYMOUS else _no_model(owner, name, version)
        if version_id is not None and version_id != model["version"]:
            return invalid_response(InputError(
                f"{v1.OWNER}/{model['name']} runs version {model['version']}, not {version_id}: lambdaml runs one "
                f"version of a model at a time (`lambdaml rollback {model['name']} {version_id}` brings it back).",
                [{"field": "version", "message": "not the version running"}],
            ))
        if isinstance(body["input"], dict):  # else the replica says what is wrong with it
            try:
                body["input"] = await self._files.resolve(body["input"], base_url(headers), caller)
            except InputError as exc:
                return invalid_response(exc)
        forwarded = {**headers, b"prefer": prefer}
        forwarded.pop(b"accept", None)  # streams are read from urls.stream
        app = model["name"] + (TRAINER_SUFFIX if training_of is not None else "")
        try:
            status, answer = await self._handle(app).create_forwarded.remote(json.dumps(body).encode(), forwarded, caller)
        except Exception as exc:  # the model's application is being replaced or deleted (or has no trainer)
            what = "trainings (is it deployed with a training function?)" if training_of is not None else "predictions"
            return error_response(503, "Model unavailable", f"{v1.OWNER}/{model['name']} cannot take {what} now: {exc}",
                                  {"Retry-After": "1"})
        if status not in (200, 202):
            return JSONAnswer(answer, status)  # lambdaml's error, in Replicate's shape
        shape = v1.training_json if training_of is not None else v1.prediction_json
        return json_response(shape(json.loads(answer), self._keys, created=True), 201)

    async def _model(self, name: str | None, version_id: str | None) -> dict[str, Any] | None:
        """The running model of that name, or the one running that version.

        The catalog is read at most once a second (``CATALOG_TTL_S``): on 2 cores, a database
        read per create was a measurable part of the facade's cost (bench/bench_v1.py). A deploy
        or delete through this replica clears it at once; one through another replica of the
        control app is seen within the second.
        """
        read_at, running = self._running
        if time.monotonic() - read_at > CATALOG_TTL_S:
            rows = await asyncio.to_thread(self._catalog.models, None, False)
            running = {row["name"]: row for row in rows}
            self._running = (time.monotonic(), running)
        if name is not None:
            return running.get(name)
        if version_id is not None:
            return next((row for row in running.values() if row["version"] == version_id), None)
        return None

    def _handle(self, name: str) -> Any:
        if name not in self._handles:
            from ray import serve

            self._handles[name] = serve.get_app_handle(name)
        return self._handles[name]


def _no_model(owner: str | None, name: str | None, version: str | None) -> Response:
    if version is not None:
        return error_response(404, "Not found", f"No deployed model runs version {version!r}. `lambdaml ls` lists the models.")
    return v1.not_found(f"{owner}/{name}")
