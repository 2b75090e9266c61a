"""Hostile and careless callers against a real deployment: each answer is a JSON error with the
status expected, never a traceback, an empty reply or a 5xx. Loopback only, bounded in size."""

import asyncio
import concurrent.futures
import socket
from typing import Optional
from urllib.parse import urlsplit

import httpx
import pytest

from lambdaml import Input, Path, model

MiB = 1024 * 1024


@model(name="rel-hostile", cpu=0.1, min=1, max=1)
def hostile_target(
    text: str = Input(description="Any text"), image: Optional[Path] = Input(default=None, description="A file")
) -> int:
    return len(text)


@pytest.fixture(scope="module")
def url(cluster):
    yield hostile_target.deploy().url
    hostile_target.delete()


def _chunks(total: int):
    yield b'{"input": {"text": "'
    for _ in range(total // MiB):
        yield b"a" * MiB
    yield b'"}}'


CASES = {
    # name: (method, path, body or body factory, headers, status, field the error names)
    "nested 1,000 deep": ("POST", "/predictions", b'{"input": {"text": ' + b"[" * 1000 + b"]" * 1000 + b"}}",
                          {}, 422, "body"),
    "not JSON": ("POST", "/predictions", b"\xff\xfe<xml/>", {"Content-Type": "application/xml"}, 422, "body"),
    "a JSON list": ("POST", "/predictions", b"[1, 2]", {}, 422, "body"),
    "no input at all": ("POST", "/predictions", b"{}", {}, 422, "input"),
    "a 9 MiB body": ("POST", "/predictions", b'{"input": {"text": "' + b"a" * (9 * MiB) + b'"}}', {}, 413, None),
    "a 9 MiB body sent without a length": ("POST", "/predictions", lambda: _chunks(9 * MiB), {}, 413, None),
    "an id with a path in it": ("POST", "/predictions", {"input": {"text": "a"}, "id": "../../etc"}, {}, 422, "id"),
    "an id of 129 characters": ("POST", "/predictions", {"input": {"text": "a"}, "id": "x" * 129}, {}, 422, "id"),
    "a PUT id with a space": ("PUT", "/predictions/a%20b", {"input": {"text": "a"}}, {}, 422, "id"),
    "a foreign bucket": ("POST", "/predictions", {"input": {"text": "a", "image": "s3://some-other-bucket/secret.bin"}},
                         {}, 422, "image"),
    "another model's artifact": ("POST", "/predictions",
                                 {"input": {"text": "a", "image": "gs://lambdaml-artifacts/hello/3f2a/model.pkl"}},
                                 {}, 422, "image"),
    "a private address": ("POST", "/predictions", {"input": {"text": "a", "image": "http://10.0.0.1/x.png"}},
                          {}, 422, "image"),
    "a metadata service": ("POST", "/predictions",
                           {"input": {"text": "a", "image": "http://100.100.100.200/latest/meta-data/"}}, {}, 422, "image"),
    "a local path": ("POST", "/predictions", {"input": {"text": "a", "image": "/etc/passwd"}}, {}, 422, "image"),
    "a webhook to loopback": ("POST", "/predictions", {"input": {"text": "a"}, "webhook": "http://127.0.0.1:9/hook"},
                              {}, 422, "webhook"),
    "a bad Prefer": ("POST", "/predictions", {"input": {"text": "a"}}, {"Prefer": "wait=9999"}, 422, "Prefer"),
    "a bad Cancel-After": ("POST", "/predictions", {"input": {"text": "a"}}, {"Cancel-After": "soon"}, 422,
                           "Cancel-After"),
    "GET on predictions": ("GET", "/predictions", None, {}, 405, None),
    "DELETE on the health check": ("DELETE", "/health-check", None, {}, 405, None),
    "an unknown route": ("GET", "/admin", None, {}, 404, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_requests_get_the_expected_json_error(url, case):
    method, path, body, headers, status, field = CASES[case]
    kwargs = {"json": body} if isinstance(body, dict) else {"content": body() if callable(body) else body}
    response = httpx.request(method, f"{url}{path}", headers=headers, timeout=60, **kwargs)
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert error["status"] == status and error["detail"] and "Traceback" not in error["detail"]
    if status == 405:
        assert response.headers["allow"] in ("GET", "POST", "PUT")
    if field is not None:
        assert error["invalid_fields"][0]["field"] == field, error


def test_a_body_that_claims_60_mb_is_refused_before_it_is_sent(url):
    """The refusal comes after the headers alone: the replica does not wait for 60 MB."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as connection:
        connection.sendall(
            f"POST {parts.path}/predictions HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {60 * 1000 * 1000}\r\n\r\n{{".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += connection.recv(65536) or b"\r\n\r\n"
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_the_replica_still_answers_after_the_hostile_table(url):
    response = httpx.post(f"{url}/predictions", json={"input": {"text": "fine"}}, timeout=60)
    assert response.status_code == 200 and response.json()["output"] == 4


@model(name="rel-queue", cpu=0.1, min=1, max=1, concurrency=1, queue=2)
async def queued_target(pause: float = Input(default=1.0, description="Seconds")) -> str:
    await asyncio.sleep(pause)
    return "done"


def test_past_its_queue_a_replica_answers_503_with_retry_after_and_every_accepted_request_ends(cluster):
    url = queued_target.deploy().url
    try:
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(
                lambda _: httpx.post(f"{url}/predictions", json={"input": {"pause": 3}}, timeout=60), range(12)
            ))
        accepted = [a for a in answers if a.status_code == 200]
        refused = [a for a in answers if a.status_code == 503]
        assert len(accepted) + len(refused) == 12, [a.status_code for a in answers]
        assert len(accepted) == 3  # one running and two queued (queue=2) on the one replica (max=1)
        assert all(a.json()["status"] == "succeeded" for a in accepted)
        assert all(a.headers["retry-after"] == "1" and "queue=" in a.json()["detail"] for a in refused)
    finally:
        queued_target.delete()
