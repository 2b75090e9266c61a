"""Replicate's API at ``/v1``: models, versions and creating predictions, in the shapes the official clients parse.

Models appear as ``lambdaml/{name}``; their versions are lambdaml's version ids. What the
``replicate`` Python client 1.0.7 requires (read in its source): a model has ``url``,
``owner``, ``name``, ``visibility`` and an integer ``run_count``; a version has ``id``, a
full-datetime ``created_at``, ``cog_version`` and a non-null ``openapi_schema``, whose
``Output`` says ``x-cog-array-type: iterator`` for a generator (how ``replicate.run``
knows to return an iterator). A prediction has ``model`` as ``owner/name`` and a create
that is not finished when its hold ends says ``starting`` (the clients take any other
unfinished status as final).
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from starlette.responses import Response

from lambdaml._http import error_response, hold_seconds, json_response
from lambdaml._settings import TRAINER_SUFFIX
from lambdaml.control.auth import UrlKeys
from lambdaml.errors import InputError
from lambdaml.serve.tracker import FINAL

OWNER = "lambdaml"
# The Cog schema conventions the documents follow (iterator outputs are marked from Cog 0.3.9 on);
# lambdaml does not run Cog. Clients compare it as a version number.
COG_SCHEMA_VERSION = "0.16.0"
MAX_WAIT_S = 60  # Replicate's longest Prefer: wait
_VERSION_ID = re.compile(r"[0-9a-f]{8,64}")


def version_json(row: dict[str, Any]) -> dict[str, Any]:
    """One version, as ``GET /v1/models/{owner}/{name}/versions/{id}`` answers it."""
    return {
        "id": row["version"],
        "created_at": row["created_at"],
        "cog_version": COG_SCHEMA_VERSION,
        "openapi_schema": cog_schema(row["openapi"]),
    }


def model_json(base: str, model: dict[str, Any], latest: dict[str, Any] | None) -> dict[str, Any]:
    """One model, as ``GET /v1/models/{owner}/{name}`` answers it."""
    return {
        "url": f"{base}/v1/models/{OWNER}/{model['name']}",
        "owner": OWNER,
        "name": model["name"],
        "description": None,
        "visibility": model["visibility"],
        "github_url": None,
        "paper_url": None,
        "license_url": None,
        "run_count": model["run_count"],
        "cover_image_url": None,
        "default_example": None,
        "latest_version": None if latest is None else version_json(latest),
    }


def cog_schema(openapi: dict[str, Any] | None) -> dict[str, Any]:
    """The model's OpenAPI document with its output marked as Cog marks streamed outputs.

    A version deployed before lambdaml kept documents has none: an empty document, since
    the clients need an object.
    """
    if openapi is None:
        return {"openapi": "3.1.0", "info": {"title": "unknown", "version": "1.0.0"}, "paths": {},
                "components": {"schemas": {}}}
    document = copy.deepcopy(openapi)
    output = document.get("components", {}).get("schemas", {}).get("Output")
    if output is not None and output.pop("x-lambdaml-stream", False):
        if output.get("type") == "array":  # a generator: the items, one by one
            output["x-cog-array-type"] = "iterator"
        else:  # a text generator, whose plain answer is the joined text: Cog's ConcatenateIterator
            item = {key: value for key, value in output.items() if key != "title"}
            output.clear()
            output.update({"title": "Output", "type": "array", "items": item,
                           "x-cog-array-type": "iterator", "x-cog-array-display": "concatenate"})
    return document


def not_found(reference: str) -> Response:
    """No model ``owner/name`` (lambdaml's models are all ``lambdaml/{name}``)."""
    return error_response(
        404, "Not found", f"No model {reference!r} is deployed here: models are {OWNER}/NAME; `lambdaml ls` lists them."
    )


def model_name(owner: str, name: str) -> str | None:
    """lambdaml's name for ``owner/name``; None if the owner is not ``lambdaml``."""
    return name if owner == OWNER else None


def page(results: list[dict[str, Any]]) -> Response:
    """A whole list in one page (models and versions are few), in Replicate's list shape."""
    return json_response({"next": None, "previous": None, "results": results})


# ------------------------------------------------------------------ creating predictions


def wait_preference(prefer: bytes | None) -> bytes:
    """Replicate's ``Prefer`` as lambdaml's: none is async, ``wait`` holds 60 s, ``wait=N`` N s (at most 60)."""
    if not prefer:
        return b"respond-async"
    hold = min(hold_seconds(prefer, MAX_WAIT_S), MAX_WAIT_S)  # InputError naming Prefer if malformed
    return b"respond-async" if hold == 0 else f"wait={hold:g}".encode()


def request_body(raw: bytes, takes_version: bool) -> tuple[dict[str, Any], str | None]:
    """The body for the model's replica and the ``version`` asked for; InputError naming the bad field."""
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        raise InputError("The request body is not JSON.", [{"field": "body", "message": "not JSON"}]) from None
    if not isinstance(body, dict):
        raise InputError("The request body is a JSON object: {\"input\": {...}}.", [{"field": "body", "message": "not an object"}])
    version = body.pop("version", None) if takes_version else None
    if takes_version and not isinstance(version, str):
        raise InputError("`version` is needed: lambdaml/NAME, lambdaml/NAME:VERSION or a version id.",
                         [{"field": "version", "message": "missing or not a string"}])
    body.pop("stream", None)  # every prediction of a generator model can be streamed: urls.stream
    completed = body.pop("webhook_completed", None)
    if completed is not None and "webhook" not in body:  # Replicate's older form of a completed-only webhook
        body["webhook"], body["webhook_events_filter"] = completed, ["completed"]
    body.setdefault("input", {})
    return body, version


def parse_version(version: str) -> tuple[str | None, str | None]:
    """``owner/name`` -> (name, None), ``owner/name:id`` -> (name, id), a bare id -> (None, id); InputError otherwise."""
    reference, _, version_id = version.partition(":")
    if "/" in reference:
        owner, _, name = reference.partition("/")
        if owner == OWNER and name and (not version_id or _VERSION_ID.fullmatch(version_id)):
            return name, version_id or None
    elif not version_id and _VERSION_ID.fullmatch(reference):
        return None, reference
    raise InputError(
        f"`version` {version!r} is not lambdaml/NAME, lambdaml/NAME:VERSION or a version id.",
        [{"field": "version", "message": "not a model or version reference"}],
    )


def prediction_json(record: dict[str, Any], keys: UrlKeys, created: bool = False) -> dict[str, Any]:
    """A record as Replicate shows it: ``model`` as ``lambdaml/{name}``, ``urls`` without nulls.

    ``keys``: ``urls.stream`` carries its key (readable without a token, as the JavaScript
    client reads it). ``created``: the answer to a create, where an unfinished prediction is ``starting``.
    """
    shown = {**record, "model": f"{OWNER}/{record['model']}"} if record.get("model") else dict(record)
    shown["urls"] = {key: url for key, url in (record.get("urls") or {}).items() if url}
    if "stream" in shown["urls"]:
        shown["urls"]["stream"] += f"?key={keys.sign(record['id'])}"
    if created and shown.get("status") not in FINAL:
        shown["status"] = "starting"
    return shown


def training_json(record: dict[str, Any], keys: UrlKeys, created: bool = False) -> dict[str, Any]:
    """A training (a record of a model's ``{name}-train`` application) as Replicate shows one: ``model``
    and ``destination`` are the trained model, ``lambdaml/{name}``; ``output`` is ``{version, weights}``."""
    shown = prediction_json(record, keys, created)
    model = f"{OWNER}/{(record.get('model') or '').removesuffix(TRAINER_SUFFIX)}"
    return {**shown, "model": model, "destination": model}


def is_training(record: dict[str, Any]) -> bool:
    """Whether a record is a training's: its own URL says so (``lambdaml.serve.server`` gives trainings theirs)."""
    return "/v1/trainings/" in ((record.get("urls") or {}).get("get") or "")


def destination(body: dict[str, Any], name: str) -> None:
    """A training's ``destination``: the model itself (lambdaml trains a model into a new version of its own)."""
    given = body.pop("destination", None)
    if given not in (None, f"{OWNER}/{name}"):
        raise InputError(
            f"`destination` {given!r}: a training here makes a new version of the model it trains, so the "
            f"destination is {OWNER}/{name} (training into another model is not supported).",
            [{"field": "destination", "message": f"must be {OWNER}/{name}"}],
        )
