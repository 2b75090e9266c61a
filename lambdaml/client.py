"""Calling deployed models: over HTTP by name (``run``) or through Ray (``Model.remote``).

``run`` needs only the predictions URL, so it works from any process; a
``.remote`` call goes through a Serve ``DeploymentHandle`` in a Ray driver.
Both give back the output, or raise ``InputError`` / ``ModelError``. This
module also holds the HTTP plumbing the prediction objects use
(``lambdaml.predictions``): one connection pool per process, and network
failures turned into a ``ClusterError`` of one line that says what to do.
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import PurePath
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from lambdaml import cluster
from lambdaml._settings import NO_ROUTE_HEADER, http_base_url
from lambdaml.errors import (
    AuthError,
    ClusterError,
    InputError,
    ModelError,
    NotDeployedError,
    PredictionNotFoundError,
    WaitTimeoutError,
)
from lambdaml._staging import send_local_files
from lambdaml.files import file_fields
from lambdaml.schema import Prediction

HOLD_SLACK_S = 60.0  # read timeout beyond the longest hold the server may use, so we never hang up first
MAX_HOLD_S = 600.0  # the most ``Prefer: wait=N`` allows; LAMBDAML_SYNC_WAIT (default 60) is below it

_pool: tuple[int, httpx.Client] | None = None
_pool_lock = threading.Lock()


def _http() -> httpx.Client:
    """The process's connection pool, shared by threads (``Model.map``); a forked child makes its own."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            # No pool limit: each in-flight sync prediction holds a connection for its whole hold.
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
            _pool = (os.getpid(), httpx.Client(limits=limits))
        return _pool[1]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _with_token(headers: dict[str, str] | None) -> dict[str, str] | None:
    """The request's headers with ``LAMBDAML_API_TOKEN`` as its bearer token, when one is set."""
    token = os.environ.get("LAMBDAML_API_TOKEN")
    return {**(headers or {}), "Authorization": f"Bearer {token}"} if token else headers


def _refused(response: httpx.Response, doing: str) -> AuthError:
    if response.status_code == 403:
        return AuthError(f"{_detail(response)} ({doing}). Set LAMBDAML_API_TOKEN to an admin token.")
    if os.environ.get("LAMBDAML_API_TOKEN"):
        return AuthError(
            f"The API refused the token in LAMBDAML_API_TOKEN ({doing}): it is not one of this cluster's, or it "
            "was revoked. `lambdaml tokens ls` lists the cluster's tokens; `lambdaml tokens create` makes one."
        )
    return AuthError(
        f"The API needs a token ({doing}). Make one with `lambdaml tokens create` and set it as "
        "LAMBDAML_API_TOKEN."
    )


def request(method: str, url: str, doing: str, timeout: float = 30.0, **kwargs: Any) -> httpx.Response:
    """One HTTP request to lambdaml's API, with the caller's token; a network failure is a ClusterError
    naming what we were ``doing``, a refused token an AuthError."""
    kwargs["headers"] = _with_token(kwargs.get("headers"))
    try:
        response = _http().request(method, url, timeout=httpx.Timeout(timeout, connect=10.0, pool=None), **kwargs)
    except httpx.ConnectError:
        raise ClusterError(
            f"Nothing answers at {_origin(url)} ({doing}). Is the cluster running? Start it with `lambdaml up`, "
            "or point LAMBDAML_URL at the predictions API of the cluster that has the model."
        ) from None
    except httpx.TimeoutException:
        raise ClusterError(
            f"{_origin(url)} did not answer within {timeout:g} s ({doing}). The cluster may be overloaded or "
            "unreachable from here; check it with `lambdaml ls`."
        ) from None
    except httpx.TransportError as exc:
        raise ClusterError(
            f"The connection to {_origin(url)} broke ({doing}): {exc or type(exc).__name__}. Try again; "
            "if it keeps happening, check the cluster with `lambdaml ls`."
        ) from None
    if response.status_code in (401, 403) and _is_json(response):
        raise _refused(response, doing)
    return response


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return str(body.get("detail") or body) if isinstance(body, dict) else str(body)[:300]


def _is_json(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").startswith("application/json")


def _no_route(response: httpx.Response) -> bool:
    """A 404 for the path itself (no model there), not a model's or the records' own 404: the
    ingress's plain-text one, or the control application's for a path nothing else takes."""
    return response.status_code == 404 and (not _is_json(response) or NO_ROUTE_HEADER in response.headers)


def api_call(method: str, url: str, doing: str, **kwargs: Any) -> dict[str, Any]:
    """A call to the routes under ``{base}/v1``: the JSON answer, or a clear error."""
    response = request(method, url, doing, **kwargs)
    if response.status_code == 200:
        return response.json()
    if _no_route(response) and _is_json(response):  # the control application runs, but not at this path
        raise ClusterError(
            f"Nothing at {_origin(url)} serves {urlsplit(url).path}: LAMBDAML_URL must be the cluster's HTTP "
            "address alone (like http://127.0.0.1:8000), without a path."
        )
    if response.status_code == 404 and _is_json(response) and "detail" in response.json():
        raise PredictionNotFoundError(_detail(response))
    if response.status_code == 404:
        raise ClusterError(
            f"Nothing serves {urlsplit(url).path} at {_origin(url)}: the cluster's prediction records "
            "(the lambdaml-control application) are not running. Restart a local cluster with "
            "`lambdaml down` then `lambdaml up`."
        )
    raise ClusterError(f"HTTP {response.status_code} from {url} ({doing}): {_detail(response)}")


def v1_url(path: str) -> str:
    """An absolute URL of the record routes: ``{base}/v1{path}``; a record's relative URL made absolute."""
    if path.startswith(("http://", "https://")):
        return path
    return f"{http_base_url()}{path if path.startswith('/v1/') else '/v1' + path}"


# ------------------------------------------------------------------ creating predictions


def _not_deployed(name: str, where: str) -> NotDeployedError:
    return NotDeployedError(
        f"No model named {name!r} is deployed at {where}. Deploy it first (Model.deploy()), "
        "or point LAMBDAML_URL / LAMBDAML_ADDRESS at the cluster that has it."
    )


def _output_of(prediction: dict[str, Any] | Prediction) -> Any:
    if not isinstance(prediction, Prediction):
        prediction = Prediction.model_validate(prediction)
    if prediction.status != "succeeded":
        raise ModelError(prediction)
    return prediction.output


_file_inputs: dict[str, set[str]] = {}


def openapi_document(name: str, base: str | None = None) -> dict[str, Any]:
    """The OpenAPI document of ``name``. A replica serves it, so at zero replicas this waits for
    one to start (installing packages, running setup()), as long as a prediction would."""
    base = base or http_base_url()
    url = f"{base}/{name}/openapi.json"
    response = request("GET", url, f"reading {name}'s inputs", MAX_HOLD_S + HOLD_SLACK_S)
    if response.status_code == 200:
        return response.json()
    if _no_route(response):
        raise _not_deployed(name, base)
    raise ClusterError(f"HTTP {response.status_code} from {url}: {_detail(response)}")


def _file_inputs_of(base: str, name: str) -> set[str]:
    """Which inputs of ``name`` take files, from its OpenAPI document (asked once per process)."""
    if name not in _file_inputs:
        try:
            document = openapi_document(name, base)
        except NotDeployedError:
            return set()  # not deployed (yet): the prediction request itself will say so
        _file_inputs[name] = file_fields(document["components"]["schemas"]["Input"])
    return _file_inputs[name]


def _with_local_files(base: str, name: str, input: dict[str, Any]) -> dict[str, Any]:
    """Send local files (``pathlib.Path`` or an existing file's path) given for file inputs."""
    if not any(isinstance(v, (str, PurePath, list)) for v in input.values()):
        return input
    return send_local_files(input, _file_inputs_of(base, name))


ROUTE_PATIENCE_S = 5.0  # how long a just-deployed model's route may take to reach the ingress


def submit(
    name: str,
    body: dict[str, Any],
    headers: dict[str, str],
    hold: float | None,
    prediction_id: str | None = None,
    collection: str = "predictions",
) -> dict[str, Any]:
    """``POST {base}/{name}/predictions`` (``PUT .../{id}`` with an id): the record the server answers.
    ``collection``: ``trainings``, for a trainer (``lambdaml.trainings``).

    ``hold`` is how long the server may hold the request (None: its default), so the
    read timeout never ends a hold early: hanging up would cancel a sync prediction.
    For a file input, give a URL (s3://, gs://, https://, data:) or a local file
    (``pathlib.Path("photo.png")`` or ``"photo.png"``), which is sent along.
    """
    base = http_base_url()
    body = {**body, "input": _with_local_files(base, name, body.get("input") or {})}
    url = f"{base}/{name}/{collection}" + (f"/{prediction_id}" if prediction_id else "")
    timeout = (MAX_HOLD_S if hold is None else hold) + HOLD_SLACK_S
    patience = time.monotonic() + ROUTE_PATIENCE_S
    while True:
        response = request("PUT" if prediction_id else "POST", url, f"sending a prediction to {name}", timeout,
                           json=body, headers=headers)
        # A 404 for the path (not a model's own): no such model, or one deployed a moment ago whose
        # route HAProxy has not taken up yet. Ask again for a little while.
        if not _no_route(response) or time.monotonic() > patience:
            break
        time.sleep(0.25)
    if response.status_code in (200, 202):
        return response.json()
    if response.status_code == 404:
        raise _not_deployed(name, base)
    if response.status_code == 422:
        detail = response.json()
        fields = detail.get("invalid_fields") or []
        message = detail["detail"]  # a Cog model lists the fields in it: say them as for any model
        if not isinstance(message, str):
            message = "Invalid input. " + "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        raise InputError(message, fields)
    if response.status_code == 409:
        raise InputError(_detail(response))
    error = f"HTTP {response.status_code} from {url}: {_detail(response)}"
    raise ModelError(Prediction(id="", status="failed", error=error))


def _finished(name: str, input: dict[str, Any], timeout: float | None) -> Prediction:
    """Run one prediction to its end; past ``timeout`` seconds it is canceled and WaitTimeoutError raised."""
    from lambdaml import predictions

    if timeout is None:
        return predictions.create(name, input, wait=True)
    deadline = time.monotonic() + timeout
    prediction = predictions.create(name, input, wait=max(1, min(int(MAX_HOLD_S), math.ceil(timeout))))
    try:
        return prediction.wait(max(0.0, deadline - time.monotonic()))
    except WaitTimeoutError:
        prediction.cancel()
        raise WaitTimeoutError(
            f"The prediction {prediction.id} of {name} did not finish within {timeout:g} s, so it was canceled. "
            "Give a longer timeout, or use lambdaml.predictions.create(..., wait=False) and .wait() for long runs.",
            prediction,
        ) from None


def create_prediction(name: str, input: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run one prediction over HTTP until it ends and return the prediction as a dict (any final status).

    ``timeout``: seconds to wait (None: as long as it takes); past it the prediction is
    canceled and ``WaitTimeoutError`` raised. ``lambdaml.predictions.create`` gives more control.
    """
    return _finished(name, input, timeout).model_dump()


def run(name: str, input: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
    """Run the model called ``name`` and return its output, like ``replicate.run``.

    Waits as long as the prediction takes (a 202 from the server is followed), or
    ``timeout`` seconds, after which the prediction is canceled and ``WaitTimeoutError``
    raised. A failed or canceled prediction raises ``ModelError`` carrying it.
    """
    return _output_of(_finished(name, input or {}, timeout))


# ------------------------------------------------------------------ through Ray (Model.remote)


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
