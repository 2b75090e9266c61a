"""Webhook delivery: signed POSTs of prediction records to the URL a request named.

Signatures follow Standard Webhooks, the scheme Replicate uses, so receivers
written for Replicate (or any Standard Webhooks library) verify ours
unchanged. Deliveries come from the database outbox (``Records``): a row is
written in the same transaction as the change it reports, so a crash between
the change and the POST loses nothing, and the sender here only claims due
rows, sends them and records the outcome.

The target URL is untrusted input: every try first checks its host with
``_urls.check_host`` (the same rule as file inputs), and redirects are never
followed, since a redirect could lead to an internal address.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections import defaultdict
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

import httpx

from lambdaml._urls import RefusedURL, check_host, pinned

if TYPE_CHECKING:
    from lambdaml.control.records import Delivery, Records

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
TIMEOUT_S = 10.0
LEASE_S = 60.0  # how long a claim keeps other control replicas off a delivery
# Gaps in seconds after tries 1..11: 12 tries over about 5 minutes (303 s), like Replicate's retry window.
RETRY_GAPS = (1, 2, 4, 8, 16, 32, 48, 48, 48, 48, 48)


class Failure(NamedTuple):
    """Why a try did not deliver, and whether trying again could help."""

    error: str
    retryable: bool


def new_secret() -> str:
    """A fresh signing key in the ``whsec_<base64>`` form receivers' libraries expect."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signed_headers(secret: str, webhook_id: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """The Standard Webhooks headers for ``body``.

    The timestamp is signed too, so a receiver can refuse replays of old messages;
    ``webhook_id`` stays the same across retries so it can drop duplicates.
    """
    timestamp = int(time.time()) if timestamp is None else timestamp
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def retry_delay(attempt: int) -> float | None:
    """Seconds to wait after try ``attempt`` (1-based) before the next; None when it was the last."""
    return float(RETRY_GAPS[attempt - 1]) if 1 <= attempt <= len(RETRY_GAPS) else None


def check_webhook_url(url: str) -> None:
    """RefusedURL unless ``url`` is an http(s) URL whose host requests may reach.

    Checked when a prediction is created, so a bad URL is a 422 at once rather
    than a delivery that silently fails later.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise RefusedURL(f"{url[:200]!r} is not an http:// or https:// URL")
    try:
        complete = bool(parts.hostname) and (parts.port or 0) >= 0  # .port raises for a bad port
    except ValueError:
        complete = False
    if not complete:
        raise RefusedURL(f"{url[:200]!r} is not a complete URL (expected http(s)://host[:port]/path)")
    check_host(url)


async def deliver(client: httpx.AsyncClient, delivery: Delivery, secret: str) -> Failure | None:
    """POST one delivery; None when the receiver took it (2xx), else a Failure.

    Network errors, 429 and 5xx are worth retrying (the receiver may be down or
    busy); other 4xx and 3xx are its answer, and repeating the request would
    get the same one. The response body is never read: nothing in it matters.
    """
    try:
        address = await asyncio.to_thread(check_host, delivery.url)  # resolves the host: not on the event loop
    except RefusedURL as exc:
        return Failure(f"refused: {exc}", retryable=False)
    url, headers, extensions = pinned(delivery.url, address)
    headers.update(signed_headers(secret, delivery.webhook_id, delivery.body))
    try:
        async with client.stream(
            "POST", url, content=delivery.body.encode(), headers=headers, extensions=extensions,
            timeout=TIMEOUT_S, follow_redirects=False,
        ) as response:
            status = response.status_code
    except httpx.HTTPError as exc:
        return Failure(f"could not reach the receiver: {type(exc).__name__}: {exc}", retryable=True)
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return Failure(f"the receiver answered HTTP {status} (a redirect, not followed)", retryable=False)
    return Failure(f"the receiver answered HTTP {status}", retryable=status == 429 or status >= 500)


class WebhookSender:
    """Sends the outbox's due deliveries; the control app calls ``run_once`` in a loop."""

    def __init__(self, records: Records, secret: str) -> None:
        self.records = records
        self._secret = secret

    def __repr__(self) -> str:  # never show the secret
        return f"WebhookSender({self.records!r})"

    async def run_once(self) -> int:
        """Claim due deliveries, send them, record each outcome; returns how many were tried.

        One prediction's deliveries go one after another, in the order they were
        written, so a receiver sees "start" before "completed"; different
        predictions go concurrently, so one slow receiver does not hold up the rest.
        Only "completed" deliveries are retried and they come last, so a retry
        never overtakes a later event of its prediction.
        """
        due = await asyncio.to_thread(self.records.claim_webhooks, 50, LEASE_S)
        # A try must end before the claim does, or another control replica could claim and send it too;
        # what is left then is claimed again when the lease ends.
        deadline = time.monotonic() + LEASE_S - 2 * TIMEOUT_S
        by_prediction: dict[str, list[Delivery]] = defaultdict(list)
        for delivery in due:
            by_prediction[delivery.prediction_id].append(delivery)
        if not by_prediction:
            return 0
        async with httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False) as client:
            tried = await asyncio.gather(*(self._send(client, batch, deadline) for batch in by_prediction.values()))
        return sum(tried)

    async def _send(self, client: httpx.AsyncClient, deliveries: list[Delivery], deadline: float) -> int:
        """Send one prediction's deliveries in order; returns how many were tried before the deadline."""
        for tried, delivery in enumerate(deliveries):
            if time.monotonic() > deadline:
                return tried
            try:
                failure = await deliver(client, delivery, self._secret)
            except Exception as exc:  # a bug here must not stop the other predictions' deliveries
                log.exception("webhook %s: unexpected error", delivery.webhook_id)
                failure = Failure(f"internal error: {type(exc).__name__}", retryable=True)
            if failure is None:
                await asyncio.to_thread(self.records.webhook_sent, delivery.id)
                continue
            delay = retry_delay(delivery.attempt) if failure.retryable else None
            retry_at = time.time() + delay if delay is not None else None
            log.info("webhook %s (try %d) failed: %s", delivery.webhook_id, delivery.attempt, failure.error)
            await asyncio.to_thread(self.records.webhook_failed, delivery.id, failure.error, retry_at)
        return len(deliveries)
