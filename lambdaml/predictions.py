"""Replicate-style prediction objects: create, get, list, cancel and wait for predictions.

Works from any Python process that can reach the predictions API
(``LAMBDAML_URL``, or the local cluster's); no Ray needed. The cluster keeps
each prediction's record (``GET /v1/predictions/{id}``); a ``Prediction`` here
is a copy that ``reload`` and ``wait`` bring up to date by polling that URL.
See docs/predictions.md for the statuses and the HTTP API underneath.
"""

from __future__ import annotations

import builtins
import math
import re
import threading
import time
import typing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from lambdaml import client
from lambdaml._ids import new_id
from lambdaml._durations import parse_duration
from lambdaml.errors import ClusterError, LambdamlError, PredictionNotFoundError, WaitTimeoutError
from lambdaml.schema import ID_RULE, PREDICTION_ID, Prediction, WebhookEvent

__all__ = ["FINAL", "Prediction", "cancel", "create", "get", "list", "watch", "webhook_secret"]

FINAL = frozenset({"succeeded", "failed", "canceled"})
EVENTS = typing.get_args(WebhookEvent)
NOT_STORED_GRACE_S = 10.0  # a 404 this soon after we saw the record means it is on its way to the records
OUTAGE_GRACE_S = 30.0  # polling rides out a records service that restarts, for this long


# ------------------------------------------------------------------ request headers and body


def prefer_header(wait: bool | float) -> dict[str, str]:
    """The ``Prefer`` header for ``wait``: none for True (the server's hold), respond-async for False, else wait=N."""
    if wait is True:
        return {}
    if wait is False:
        return {"Prefer": "respond-async"}
    if not isinstance(wait, (int, float)) or not 0 < wait <= 600:
        raise ValueError(f"wait is True, False or a number of seconds from 1 to 600, got {wait!r}")
    return {"Prefer": f"wait={max(1, math.ceil(wait))}"}


def cancel_after_header(cancel_after: float | str | None) -> dict[str, str]:
    """The ``Cancel-After`` header: seconds (``90``, ``0.25``) or a duration (``"5m"``, ``"250ms"``)."""
    if cancel_after is None:
        return {}
    if isinstance(cancel_after, str):
        seconds, text = parse_duration(cancel_after), cancel_after.strip()
    else:
        seconds = float(cancel_after)
        text = f"{seconds:g}s" if seconds == int(seconds) else f"{math.ceil(seconds * 1000)}ms"
    if not seconds > 0:
        raise ValueError(f"cancel_after must be a positive duration, got {cancel_after!r}")
    return {"Cancel-After": text}


def request_body(
    input: dict[str, Any] | None, webhook: str | None = None, webhook_events_filter: Iterable[str] | None = None
) -> dict[str, Any]:
    """The JSON body of a create request, with the webhook fields checked here rather than in a 422."""
    body: dict[str, Any] = {"input": dict(input or {})}
    if webhook is not None:
        body["webhook"] = webhook
    if webhook_events_filter is not None:
        events = builtins.list(webhook_events_filter)
        unknown = [event for event in events if event not in EVENTS]
        if unknown:
            raise ValueError(f"unknown webhook event {unknown[0]!r}; the events are {', '.join(EVENTS)}")
        body["webhook_events_filter"] = events
    return body


def check_id(prediction_id: str) -> str:
    """A caller-chosen prediction id: 1-128 letters, digits, ``_`` and ``-`` (it becomes part of URLs)."""
    if not isinstance(prediction_id, str) or re.fullmatch(PREDICTION_ID, prediction_id) is None:
        raise ValueError(f"{ID_RULE}; got {prediction_id!r}")
    return prediction_id


def poll_intervals() -> Iterator[float]:
    """Seconds between polls: from 0.1 s, growing by half each time, to 1 s."""
    delay = 0.1
    while True:
        yield delay
        delay = min(1.0, delay * 1.5)


# ------------------------------------------------------------------ the API


def create(
    name: str,
    input: dict[str, Any] | None = None,
    wait: bool | float = True,
    *,
    id: str | None = None,
    webhook: str | None = None,
    webhook_events_filter: Iterable[str] | None = None,
    cancel_after: float | str | None = None,
) -> Prediction:
    """Start a prediction of the model ``name`` and return it.

    ``wait=True`` returns it finished (succeeded, failed or canceled): the server holds the
    request up to its sync wait (60 s by default), then the prediction is polled until it ends.
    ``wait=False`` returns at once (status ``starting``); ``wait=N`` (1-600) returns after at
    most N seconds, whatever the status then. Call ``.wait()`` on it to see it end.
    ``id`` makes the create idempotent (``PUT``: the same id and input give back the same
    prediction; another input, an ``InputError``). ``webhook`` gets the prediction POSTed as it
    changes (``webhook_events_filter``: some of start, output, logs, completed). ``cancel_after``
    (seconds or ``"5m"``) is a deadline after which the cluster cancels it.

    Invalid input raises ``InputError``; a model that is not deployed ``NotDeployedError``; an
    unreachable cluster ``ClusterError``. A failed prediction does not raise: see ``.status``.
    """
    headers = {**prefer_header(wait), **cancel_after_header(cancel_after)}
    hold = None if wait is True else 0.0 if wait is False else float(wait)
    body = request_body(input, webhook, webhook_events_filter)
    record = client.submit(name, body, headers, hold, check_id(id) if id is not None else None)
    prediction = Prediction.model_validate(record)
    return prediction.wait() if wait is True else prediction


def get(id: str) -> Prediction:
    """The prediction with this id, as the cluster has it now (``PredictionNotFoundError`` if none)."""
    return Prediction.model_validate(client.api_call("GET", client.v1_url(f"/predictions/{quote(id, safe='')}"),
                                                     f"reading prediction {id}"))


def list(name: str | None = None, token: str | None = None) -> Iterator[Prediction]:
    """Every prediction, newest first, or those of the model ``name``; ``token``: those created with that token id.

    An iterator that asks for the next page (100 records) only when it gets there:
    ``itertools.islice(lambdaml.predictions.list("hello"), 10)`` makes one request.
    With a ``predict`` token as ``LAMBDAML_API_TOKEN``, only that token's predictions are listed.
    """
    url: str | None = client.v1_url("/predictions")
    params = {key: value for key, value in (("model", name), ("token", token)) if value} or None
    while url:
        page = client.api_call("GET", url, "listing predictions", params=params)
        for record in page["results"]:
            yield Prediction.model_validate(record)
        url, params = page.get("next"), None  # ``next`` is a whole URL, query included


def cancel(id: str, url: str | None = None) -> Prediction:
    """Ask the cluster to cancel the prediction ``id``; returns its record (a finished one unchanged).

    It turns ``canceled`` shortly after: ``.wait()`` to see it. A queued prediction never runs.
    """
    target = client.v1_url(url or f"/predictions/{quote(id, safe='')}/cancel")
    return Prediction.model_validate(client.api_call("POST", target, f"canceling prediction {id}"))


def reload(prediction: Prediction) -> Prediction:
    """Fetch ``prediction``'s record again and update the object in place."""
    url = client.v1_url(prediction.urls.get("get") or f"/predictions/{quote(prediction.id, safe='')}")
    record = client.api_call("GET", url, f"reading prediction {prediction.id}")
    return prediction._take(Prediction.model_validate(record))


def watch(prediction: Prediction, timeout: float | None = None) -> Iterator[Prediction]:
    """Yield ``prediction`` now, then each time its status, logs or output change, until it ends.

    Polls its record (every 0.1 s at first, then up to every 1 s), updating the object in
    place. Past ``timeout`` seconds, ``WaitTimeoutError`` (the prediction goes on). Short
    outages of the records service are ridden out; a long one is a ``ClusterError``.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    since = time.monotonic()
    failing_since: float | None = None
    yield prediction
    for delay in poll_intervals():
        if prediction.status in FINAL:
            return
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeoutError(
                    f"The prediction {prediction.id} is still {prediction.status} after {timeout:g} s. "
                    "Call .wait() again to keep waiting, or .cancel() it.",
                    prediction,
                )
            delay = min(delay, left)
        time.sleep(delay)
        seen = (prediction.status, prediction.logs, prediction.output)
        try:
            reload(prediction)
            failing_since = None
        except PredictionNotFoundError:
            if time.monotonic() - since > NOT_STORED_GRACE_S:
                raise
            continue
        except ClusterError as exc:
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > OUTAGE_GRACE_S:
                raise ClusterError(
                    f"{exc} The prediction {prediction.id} may still be running: "
                    f"`lambdaml predictions show {prediction.id}` shows it."
                ) from None
            continue
        if (prediction.status, prediction.logs, prediction.output) != seen:
            yield prediction


def webhook_secret() -> str:
    """The key webhooks are signed with (``whsec_...``): verify deliveries with it (docs/predictions.md)."""
    return client.api_call("GET", client.v1_url("/webhooks/default/secret"), "reading the webhook secret")["key"]


# ------------------------------------------------------------------ many at once (Model.map)


def outputs_in_order(name: str, inputs: Iterable[dict[str, Any]], in_flight: int) -> Iterator[Any]:
    """Run one prediction per input, at most ``in_flight`` at once, and yield the outputs in input order.

    Each runs as a sync request in a worker thread (``lambdaml.run``), with an id chosen
    here so that when the caller stops early, or one fails (``ModelError`` at its turn),
    the ones still running can be canceled rather than left to finish for nobody.
    """
    in_flight = max(1, in_flight)
    closing = threading.Event()

    def one(prediction_id: str, input: dict[str, Any]) -> Any:
        if closing.is_set():  # the caller stopped before this one was sent
            return None
        return client._output_of(create(name, input, id=prediction_id))

    pool = ThreadPoolExecutor(in_flight, thread_name_prefix=f"lambdaml-map-{name}")
    pending: deque[tuple[str, Future]] = deque()
    try:
        for input in inputs:
            prediction_id = new_id()
            pending.append((prediction_id, pool.submit(one, prediction_id, input)))
            if len(pending) >= in_flight:
                yield pending.popleft()[1].result()
        while pending:
            yield pending.popleft()[1].result()
    finally:
        closing.set()
        pool.shutdown(wait=False, cancel_futures=True)
        for prediction_id, future in pending:
            if not future.done():
                try:
                    cancel(prediction_id)
                except LambdamlError:  # not created yet, or the cluster is gone: nothing to stop
                    pass
