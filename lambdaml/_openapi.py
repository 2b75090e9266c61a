"""The OpenAPI 3.1 document a model serves at ``/{name}/openapi.json``.

Built from the same pydantic models that validate requests (``schema.ModelSchema``),
and listing every route and status ``server.ModelServer`` answers, so that a client
generator or an OpenAPI fuzzer finds the document and the server in agreement.
"""

from __future__ import annotations

from typing import Any

from lambdaml._durations import POSITIVE_DURATION
from lambdaml.schema import PREDICTION_ID, ModelSchema, Prediction

_REF = "#/components/schemas/{model}"

_ERROR = {
    "title": "Error",
    "type": "object",
    "properties": {"title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"}},
    "required": ["title", "status", "detail"],
}
_INVALID = {
    **_ERROR,
    "title": "InvalidInput",
    "properties": {**_ERROR["properties"], "invalid_fields": {"type": "array", "items": {"type": "object"}}},
}
# A Cog model's 422 (``_http.invalid_response``): ``detail`` lists the fields as Cog's server does.
_COG_INVALID = {
    **_INVALID,
    "properties": {**_INVALID["properties"], "detail": {"type": "array", "items": {
        "type": "object", "required": ["loc", "msg", "type"],
        "properties": {"loc": {"type": "array", "items": {"type": "string"}}, "msg": {"type": "string"}, "type": {"type": "string"}},
    }}},
}

# Replicate's request headers (server._http_create reads them; _http.py checks them).
_HEADERS = [
    {
        "name": "Prefer", "in": "header", "required": False,
        # No pattern: as RFC 7240 asks, preferences the server does not know are ignored.
        "description": "respond-async to get 202 at once; wait=N to be held up to N seconds (1-600)",
        "schema": {"type": "string"},
    },
    {
        "name": "Cancel-After", "in": "header", "required": False,
        "description": "Cancel the prediction if it has not ended after this long: 90s, 5m, 1h, 250ms",
        "schema": {"type": "string", "pattern": POSITIVE_DURATION},
    },
]


def _lift_defs(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    components.update(schema.pop("$defs", {}))
    return schema


def _respond(ref: str, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}
    if headers:
        answer["headers"] = headers
    return answer


def _components(schema: ModelSchema) -> dict[str, Any]:
    components: dict[str, Any] = {}
    components["Input"] = _lift_defs(schema.input_model.model_json_schema(ref_template=_REF), components)
    output = _lift_defs(schema.output_json_schema(ref_template=_REF), components)
    components["Output"] = {"title": "Output", **output}
    prediction = _lift_defs(Prediction.model_json_schema(ref_template=_REF), components)
    # null until the prediction succeeds (output), or once the retention period removed it (input)
    prediction["properties"]["input"] = {"anyOf": [{"$ref": "#/components/schemas/Input"}, {"type": "null"}]}
    prediction["properties"]["output"] = {"anyOf": [{"$ref": "#/components/schemas/Output"}, {"type": "null"}]}
    components["PredictionResponse"] = prediction
    request = schema.request_model.model_json_schema(ref_template=_REF)
    request.pop("$defs", None)  # the input model and what it uses: lifted above, under Input
    request["properties"]["input"] = {"$ref": "#/components/schemas/Input"}
    components["PredictionRequest"] = request
    # PUT takes the id from its URL (the server accepts the same one in the body, and refuses another)
    components["PredictionRequestWithId"] = {
        **request, "title": "PredictionRequestWithId",
        "properties": {name: field for name, field in request["properties"].items() if name != "id"},
    }
    components["Error"] = _ERROR
    components["InvalidInput"] = _COG_INVALID if schema.cog_output is not None else _INVALID
    return components


def _create_responses() -> dict[str, Any]:
    """What ``POST /predictions`` and ``PUT /predictions/{id}`` answer."""
    retry = {"Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}}
    return {
        "200": _respond("PredictionResponse", "The prediction ended (succeeded, failed or canceled) while you were held"),
        "202": _respond("PredictionResponse", "Accepted and still running: poll urls.get, or wait for the webhook",
                        {"Location": {"description": "Where to poll the prediction", "schema": {"type": "string"}}}),
        "409": _respond("Error", "A prediction with this id exists with a different input"),
        "413": _respond("Error", "The request body is larger than LAMBDAML_MAX_REQUEST_BYTES"),
        "422": _respond("InvalidInput", "An input is missing, of the wrong type or out of range; invalid_fields names it"),
        "503": _respond("Error", "Every running and queued slot is taken (@model(queue=...)): try again", retry),
    }


def openapi(name: str, schema: ModelSchema, collection: str = "predictions") -> dict[str, Any]:
    """One OpenAPI 3.1 document for the model's HTTP API, served at ``/{name}/openapi.json``.

    ``collection``: ``trainings`` for a trainer (``lambdaml.serve.training``), whose routes are Cog's
    training routes; what they take and answer is a prediction's."""
    def request_body(ref: str) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}

    prediction_id = {
        "name": "prediction_id", "in": "path", "required": True,
        "description": "Your id for the prediction", "schema": {"type": "string", "pattern": PREDICTION_ID},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": name, "version": "1.0.0", "description": f"{collection.capitalize()} API of the {name} model"},
        "servers": [{"url": f"/{name}"}],
        "paths": {
            f"/{collection}": {
                "post": {
                    "summary": "Run a prediction", "operationId": "predict",
                    "parameters": _HEADERS, "requestBody": request_body("PredictionRequest"), "responses": _create_responses(),
                }
            },
            f"/{collection}/{{prediction_id}}": {
                "put": {
                    "summary": "Run a prediction with your own id; the same id and input again answers the same prediction",
                    "operationId": "predictWithId",
                    "parameters": [prediction_id, *_HEADERS], "requestBody": request_body("PredictionRequestWithId"),
                    "responses": _create_responses(),
                }
            },
            f"/{collection}/{{prediction_id}}/cancel": {
                "post": {
                    "summary": "Cancel a prediction; one that has ended is answered as it is", "operationId": "cancel",
                    "parameters": [prediction_id],
                    "responses": {
                        "200": _respond("PredictionResponse", "The prediction, canceled unless it had ended"),
                        "404": _respond("Error", "No prediction of this model has this id"),
                        "503": _respond("Error", "The prediction records cannot be reached: try again"),
                    },
                }
            },
            "/health-check": {
                "get": {
                    "summary": "Whether the model is ready", "operationId": "healthCheck",
                    "responses": {
                        "200": {"description": '{"status": "READY"}'},
                        "503": {"description": '{"status": "SETUP_FAILED"}: lambdaml status NAME says why'},
                    },
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "operationId": "openapi", "responses": {"200": {"description": "OpenAPI"}}}
            },
        },
        "components": {"schemas": _components(schema)},
    }
