"""Calling deployed models: over HTTP by name (``run``) or through Ray (``Model.remote``).

``run`` needs only the predictions URL, so it works from any process; a
``.remote`` call goes through a Serve ``DeploymentHandle`` in a Ray driver.
Both give back the output, or raise ``InputError`` / ``ModelError``.
"""

from __future__ import annotations

from pathlib import PurePath
from collections.abc import Iterator
from typing import Any

import httpx

from lambdaml import cluster
from lambdaml._settings import http_base_url
from lambdaml.errors import InputError, ModelError, NotDeployedError
from lambdaml.files import file_fields, send_local_files
from lambdaml.schema import Prediction


def _not_deployed(name: str, where: str) -> NotDeployedError:
    return NotDeployedError(
        f"No model named {name!r} is deployed at {where}. Deploy it first (Model.deploy()), "
        "or point LAMBDAML_URL / LAMBDAML_ADDRESS at the cluster that has it."
    )


def _output_of(prediction: dict[str, Any]) -> Any:
    if prediction["status"] != "succeeded":
        raise ModelError(Prediction.model_validate(prediction))
    return prediction["output"]


_file_inputs: dict[str, set[str]] = {}


def _file_inputs_of(base: str, name: str) -> set[str]:
    """Which inputs of ``name`` take files, from its OpenAPI document (asked once per process)."""
    if name not in _file_inputs:
        response = httpx.get(f"{base}/{name}/openapi.json", timeout=30)
        if response.status_code != 200:
            return set()  # not deployed (yet): the prediction request itself will say so
        _file_inputs[name] = file_fields(response.json()["components"]["schemas"]["Input"])
    return _file_inputs[name]


def _with_local_files(base: str, name: str, input: dict[str, Any]) -> dict[str, Any]:
    """Send local files (``pathlib.Path`` or an existing file's path) given for file inputs."""
    if not any(isinstance(v, (str, PurePath, list)) for v in input.values()):
        return input
    return send_local_files(input, _file_inputs_of(base, name))


def create_prediction(name: str, input: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
    """POST one prediction over HTTP and return the prediction object (any status).

    For a file input, give a URL (s3://, gs://, https://, data:) or a local file
    (``pathlib.Path("photo.png")`` or ``"photo.png"``), which is sent along.
    """
    base = http_base_url()
    url = f"{base}/{name}/predictions"
    try:
        response = httpx.post(url, json={"input": _with_local_files(base, name, input)}, timeout=timeout)
    except httpx.ConnectError:
        raise _not_deployed(name, base) from None
    if response.status_code == 404:
        raise _not_deployed(name, base)
    if response.status_code == 422:
        body = response.json()
        raise InputError(body["detail"], body.get("invalid_fields"))
    if response.status_code != 200:
        error = f"HTTP {response.status_code} from {url}: {response.text[:500]}"
        raise ModelError(Prediction(id="", status="failed", error=error))
    return response.json()


def run(name: str, input: dict[str, Any] | None = None, timeout: float = 600.0) -> Any:
    """Run the model called ``name`` and return its output, like ``replicate.run``."""
    return _output_of(create_prediction(name, input or {}, timeout))


def stream_remote(name: str, inputs: dict[str, Any], file_inputs: set[str] = frozenset()) -> Iterator[Any]:
    """Run a generator model through a streaming Serve handle, yielding its outputs as they come."""
    from ray.serve.exceptions import RayServeException

    info = cluster.connect()
    try:
        handle = cluster.app_handle(name)
    except (RayServeException, KeyError, ValueError):
        raise _not_deployed(name, info.address) from None
    for message in handle.options(stream=True).predict_stream.remote(send_local_files(inputs, set(file_inputs))):
        if "item" in message:
            yield message["item"]
        elif "invalid" in message:
            raise InputError(message["invalid"]["detail"], message["invalid"]["invalid_fields"])
        else:
            _output_of(message["prediction"])  # raises ModelError if it failed


def predict_remote(name: str, inputs: dict[str, Any], file_inputs: set[str] = frozenset()) -> Any:
    """Run one prediction through a Serve handle and return its output (local files are sent along)."""
    from ray.serve.exceptions import RayServeException

    info = cluster.connect()
    try:
        cluster.app_handle(name)
    except (RayServeException, KeyError, ValueError):
        raise _not_deployed(name, info.address) from None
    result = cluster.call_app(name, "predict", send_local_files(inputs, set(file_inputs)))
    if "invalid" in result:
        raise InputError(result["invalid"]["detail"], result["invalid"]["invalid_fields"])
    return _output_of(result["prediction"])
