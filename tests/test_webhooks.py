"""Webhooks: Standard Webhooks signatures, the retry schedule, delivery outcomes against a real loopback
receiver, URL checks, and the sender's bookkeeping through a real Records on a SQLite file."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from lambdaml._clock import now
from lambdaml.cluster.head import free_port
from lambdaml._urls import RefusedURL
from lambdaml.control.webhooks import (
    Failure,
    WebhookSender,
    check_webhook_url,
    deliver,
    new_secret,
    retry_delay,
    signed_headers,
)


# ------------------------------------------------------------------ a real receiver on loopback


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: str
    at: float


@dataclass
class Receiver:
    """Answers POSTs with a scripted sequence of (status, headers, delay s), then 200; records each request."""

    url: str
    script: list[tuple[int, dict[str, str], float]] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, *statuses: int, location: str | None = None, delay: float = 0.0) -> None:
        headers = {"Location": location} if location else {}
        self.script.extend((status, headers, delay) for status in statuses)


@pytest.fixture
def receiver_factory(monkeypatch):
    """Start loopback receivers; each is allow-listed (LAMBDAML_ALLOWED_HOSTS) unless allow=False."""
    servers, allowed = [], []

    def start(allow: bool = True) -> Receiver:
        receiver = Receiver(url="")

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                with receiver.lock:
                    receiver.requests.append(Received(self.path, dict(self.headers), body, time.monotonic()))
                    status, headers, delay = receiver.script.pop(0) if receiver.script else (200, {}, 0.0)
                time.sleep(delay)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        port = server.server_address[1]
        receiver.url = f"http://127.0.0.1:{port}"
        if allow:
            allowed.append(f"127.0.0.1:{port}")
            monkeypatch.setenv("LAMBDAML_ALLOWED_HOSTS", ",".join(allowed))
        return receiver

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver(receiver_factory) -> Receiver:
    return receiver_factory()


def _delivery(url: str, body: str = '{"id": "p1", "status": "succeeded"}', attempt: int = 1):
    from lambdaml.control.records import Delivery

    return Delivery(id=1, prediction_id="p1", event="completed", url=url, body=body, webhook_id="p1-completed-1",
                    attempt=attempt)


def _deliver(delivery, secret: str) -> Failure | None:
    async def go():
        async with httpx.AsyncClient() as client:
            return await deliver(client, delivery, secret)

    return asyncio.run(go())


# ------------------------------------------------------------------ signatures and schedule


def test_signed_headers_verify_with_the_standard_webhooks_library():
    secret = new_secret()
    body = json.dumps({"id": "p1", "status": "succeeded", "output": "héllo"})
    headers = signed_headers(secret, "p1-completed-1", body)
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    assert headers["webhook-id"] == "p1-completed-1" and headers["content-type"] == "application/json"
    assert headers["webhook-signature"].startswith("v1,")


def test_a_tampered_body_or_another_secret_fails_verification():
    secret = new_secret()
    headers = signed_headers(secret, "p1-completed-1", '{"status": "succeeded"}')
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify('{"status": "failed"}', headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify('{"status": "succeeded"}', headers)


def test_the_timestamp_is_signed():
    secret = new_secret()
    headers = signed_headers(secret, "id", "{}", timestamp=int(time.time()) - 10)
    Webhook(secret).verify("{}", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify("{}", {**headers, "webhook-timestamp": str(int(time.time()))})


def test_secrets_are_fresh_whsec_keys_of_32_bytes():
    import base64

    first, second = new_secret(), new_secret()
    assert first != second and first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32


def test_twelve_tries_over_about_five_minutes():
    gaps = [retry_delay(attempt) for attempt in range(1, 12)]
    assert all(gap is not None and gap > 0 for gap in gaps)
    assert gaps == sorted(gaps)
    assert 280 <= sum(gaps) <= 320
    assert retry_delay(12) is None and retry_delay(13) is None


# ------------------------------------------------------------------ one delivery


def test_a_2xx_delivers_a_signed_post(receiver):
    secret = new_secret()
    receiver.answer(204)
    body = '{"id": "p1", "status": "succeeded"}'
    assert _deliver(_delivery(receiver.url + "/hook", body), secret) is None
    [request] = receiver.requests
    assert request.path == "/hook" and request.body == body
    assert Webhook(secret).verify(request.body, request.headers) == json.loads(body)


@pytest.mark.parametrize("status, retryable", [(429, True), (500, True), (503, True), (404, False), (400, False)])
def test_error_statuses(receiver, status, retryable):
    receiver.answer(status)
    secret = new_secret()
    failure = _deliver(_delivery(receiver.url + "/hook"), secret)
    assert failure == Failure(f"the receiver answered HTTP {status}", retryable=retryable)
    assert secret.removeprefix("whsec_") not in failure.error


def test_a_redirect_is_not_followed(receiver_factory):
    receiver, target = receiver_factory(), receiver_factory()
    receiver.answer(302, location=target.url + "/elsewhere")
    failure = _deliver(_delivery(receiver.url + "/hook"), new_secret())
    assert failure is not None and not failure.retryable and "302" in failure.error
    assert [r.path for r in receiver.requests] == ["/hook"]
    assert target.requests == []


def test_connection_refused_is_retryable(monkeypatch):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("LAMBDAML_ALLOWED_HOSTS", f"127.0.0.1:{port}")
    failure = _deliver(_delivery(f"http://127.0.0.1:{port}/hook"), new_secret())
    assert failure is not None and failure.retryable and "could not reach" in failure.error


def test_an_internal_host_is_refused_unless_allow_listed(receiver_factory, monkeypatch):
    receiver = receiver_factory(allow=False)
    monkeypatch.delenv("LAMBDAML_ALLOWED_HOSTS", raising=False)
    failure = _deliver(_delivery(receiver.url + "/hook"), new_secret())
    assert failure is not None and not failure.retryable and "internal address" in failure.error
    assert receiver.requests == []
    monkeypatch.setenv("LAMBDAML_ALLOWED_HOSTS", receiver.url.removeprefix("http://"))
    assert _deliver(_delivery(receiver.url + "/hook"), new_secret()) is None
    assert len(receiver.requests) == 1


# ------------------------------------------------------------------ URL checks at submission


@pytest.mark.parametrize("url", ["https://1.1.1.1/hook", "http://1.1.1.1:8080/a?b=c"])
def test_public_http_urls_pass(url, monkeypatch):
    monkeypatch.delenv("LAMBDAML_ALLOWED_HOSTS", raising=False)
    check_webhook_url(url)


@pytest.mark.parametrize(
    "url, reason",
    [
        ("ftp://1.1.1.1/hook", "not an http:// or https:// URL"),
        ("file:///etc/passwd", "not an http:// or https:// URL"),
        ("s3://bucket/key", "not an http:// or https:// URL"),
        ("example.com/hook", "not an http:// or https:// URL"),
        ("https:///nohost", "not a complete URL"),
        ("http://1.1.1.1:99999/hook", "not a complete URL"),
        ("http://127.0.0.1:8000/hook", "internal address"),
        ("http://169.254.169.254/latest/meta-data/", "internal address"),
        ("http://10.0.0.7/hook", "internal address"),
        ("http://no-such-host.invalid/hook", "cannot resolve"),
    ],
)
def test_bad_webhook_urls_are_refused(url, reason, monkeypatch):
    monkeypatch.delenv("LAMBDAML_ALLOWED_HOSTS", raising=False)
    with pytest.raises(RefusedURL, match=reason):
        check_webhook_url(url)


def test_the_allow_list_admits_an_internal_webhook_host(monkeypatch):
    monkeypatch.setenv("LAMBDAML_ALLOWED_HOSTS", "127.0.0.1:8123")
    check_webhook_url("http://127.0.0.1:8123/hook")
    with pytest.raises(RefusedURL):
        check_webhook_url("http://127.0.0.1:8124/hook")


# ------------------------------------------------------------------ the sender, with a real Records


@pytest.fixture
def records(tmp_path):
    from lambdaml.control.records import Records

    store = Records(f"sqlite:///{tmp_path / 'records.db'}")
    yield store
    store.close()


def _create(records, prediction_id: str, webhook: str, events_filter=None) -> None:
    records.upsert([{
        "id": prediction_id, "model": "hello", "version": "v1", "status": "starting", "input": {"name": "ada"},
        "created_at": now(), "webhook": webhook, "webhook_events_filter": events_filter, "_events": ["start"],
    }])


def _complete(records, prediction_id: str) -> None:
    records.upsert([{
        "id": prediction_id, "status": "succeeded", "output": "hello ada", "completed_at": now(),
        "_events": ["completed"],
    }])


def _send(records, secret: str) -> int:
    return asyncio.run(WebhookSender(records, secret).run_once())


def test_the_sender_delivers_start_then_completed(records, receiver):
    secret = new_secret()
    _create(records, "p1", receiver.url + "/hook")
    _complete(records, "p1")
    assert _send(records, secret) == 2
    assert _send(records, secret) == 0  # both done: nothing due any more
    bodies = [Webhook(secret).verify(r.body, r.headers) for r in receiver.requests]
    assert [b["status"] for b in bodies] == ["starting", "succeeded"]
    assert bodies[1]["output"] == "hello ada"
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert len(set(ids)) == 2


def test_the_events_filter_limits_what_is_sent(records, receiver):
    _create(records, "p1", receiver.url + "/hook", events_filter=["completed"])
    _complete(records, "p1")
    assert _send(records, new_secret()) == 1
    assert [json.loads(r.body)["status"] for r in receiver.requests] == ["succeeded"]


def test_a_completed_delivery_is_retried_with_backoff_and_the_same_id(records, receiver):
    secret = new_secret()
    _create(records, "p1", receiver.url + "/hook", events_filter=["completed"])
    _complete(records, "p1")
    receiver.answer(500, 500)  # then 200
    for attempt in (1, 2):
        assert _send(records, secret) == 1
        failed_at = time.monotonic()  # after the failure was recorded: its retry is due from then on
        assert _send(records, secret) == 0  # not due before retry_delay(attempt) has passed
        time.sleep(max(0.0, retry_delay(attempt) - (time.monotonic() - failed_at)) + 0.2)
    assert _send(records, secret) == 1
    assert _send(records, secret) == 0  # delivered: never sent again
    assert len(receiver.requests) == 3
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1  # receivers can deduplicate
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:])]
    assert gaps[0] >= retry_delay(1) and gaps[1] >= retry_delay(2)
    for request in receiver.requests:
        Webhook(secret).verify(request.body, request.headers)


@pytest.mark.parametrize("status", [404, 302])
def test_a_completed_delivery_refused_by_the_receiver_is_not_retried(records, receiver, status):
    _create(records, "p1", receiver.url + "/hook", events_filter=["completed"])
    _complete(records, "p1")
    receiver.answer(status, location=receiver.url + "/elsewhere")
    assert _send(records, new_secret()) == 1
    time.sleep(retry_delay(1) + 0.2)
    assert _send(records, new_secret()) == 0
    assert [r.path for r in receiver.requests] == ["/hook"]


def test_other_events_are_tried_once(records, receiver):
    _create(records, "p1", receiver.url + "/hook", events_filter=["start"])
    receiver.answer(500)
    assert _send(records, new_secret()) == 1
    time.sleep(retry_delay(1) + 0.2)
    assert _send(records, new_secret()) == 0
    assert len(receiver.requests) == 1


def test_predictions_are_sent_concurrently_each_in_order(records, receiver):
    secret = new_secret()
    for index in range(4):
        _create(records, f"p{index}", f"{receiver.url}/hook/{index}")
        _complete(records, f"p{index}")
    receiver.answer(*[200] * 8, delay=0.3)
    started = time.monotonic()
    assert _send(records, secret) == 8
    assert time.monotonic() - started < 8 * 0.3 / 2  # one after another would take 2.4 s
    for index in range(4):
        statuses = [json.loads(r.body)["status"] for r in receiver.requests if r.path == f"/hook/{index}"]
        assert statuses == ["starting", "succeeded"]


def test_the_secret_stays_out_of_logs(records, receiver, caplog):
    secret = new_secret()
    _create(records, "p1", receiver.url + "/hook", events_filter=["completed"])
    _complete(records, "p1")
    receiver.answer(500)
    sender = WebhookSender(records, secret)
    with caplog.at_level("DEBUG"):
        assert asyncio.run(sender.run_once()) == 1
    assert "500" in caplog.text
    assert secret not in caplog.text and secret.removeprefix("whsec_") not in caplog.text
    assert secret not in repr(sender)


def test_deliveries_left_when_the_claim_would_end_mid_send_are_claimed_again(records, receiver, monkeypatch):
    import lambdaml.control.webhooks as webhooks

    monkeypatch.setattr(webhooks, "TIMEOUT_S", 1.0)
    monkeypatch.setattr(webhooks, "LEASE_S", 2.5)  # so no try may start later than 0.5 s after the claim
    _create(records, "p1", receiver.url + "/hook")
    _complete(records, "p1")
    receiver.answer(200, delay=1.5)  # "start" times out after 1 s: too late to begin "completed"
    claimed_at = time.monotonic()
    assert _send(records, new_secret()) == 1
    assert _send(records, new_secret()) == 0  # "completed" is still claimed
    time.sleep(max(0.0, 2.5 - (time.monotonic() - claimed_at)) + 0.2)
    assert _send(records, new_secret()) == 1
    assert [json.loads(r.body)["status"] for r in receiver.requests] == ["starting", "succeeded"]
