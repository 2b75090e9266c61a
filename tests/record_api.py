"""A stand-in for the predictions HTTP API (docs/predictions.md), on loopback, for client and CLI tests.

It answers the routes the client uses with the documented status codes and
headers, and records every request, so the client's side of the contract
(headers sent, 202s followed, pages followed lazily, cancels) is tested without
a Ray cluster. A prediction here "runs" for ``input["seconds"]`` (default 0):
``starting`` for 50 ms, then ``processing`` with a log line every 100 ms, then
``succeeded`` with ``n * 2`` (``failed`` for a negative ``n``).
"""

from __future__ import annotations

import http.server
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

FINAL = ("succeeded", "failed", "canceled")
PAGE = 2


@dataclass
class Run:
    id: str
    model: str
    input: dict[str, Any]
    created: float = field(default_factory=time.monotonic)
    canceled: str | None = None
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None

    def status(self) -> str:
        if self.canceled:
            return "canceled"
        elapsed = time.monotonic() - self.created
        if elapsed < 0.05:
            return "starting"
        if elapsed < 0.05 + float(self.input.get("seconds", 0)):
            return "processing"
        return "failed" if self.input.get("n", 0) < 0 else "succeeded"

    def record(self, base: str) -> dict[str, Any]:
        status = self.status()
        steps = int(max(0.0, time.monotonic() - self.created - 0.05) / 0.1) if status != "starting" else 0
        steps = min(steps, int(float(self.input.get("seconds", 0)) / 0.1))
        return {
            "id": self.id, "model": self.model, "version": "v1", "status": status, "input": self.input,
            "output": self.input.get("n", 0) * 2 if status == "succeeded" else None,
            "logs": "".join(f"step {i}\n" for i in range(steps)),
            "error": self.canceled or ("n is negative" if status == "failed" else None),
            "created_at": "2026-12-01T22:24:48.123456Z", "started_at": None, "completed_at": None,
            "metrics": {"predict_time": 0.5, "total_time": 0.6} if status in FINAL else {},
            "urls": {"get": f"{base}/v1/predictions/{self.id}", "cancel": f"{base}/v1/predictions/{self.id}/cancel"},
            "deadline": None, "data_removed": False,
            "webhook": self.webhook, "webhook_events_filter": self.webhook_events_filter,
        }


class RecordAPI:
    """The server: ``url``, ``runs`` by id (oldest first), ``requests`` as (method, path, headers, body)."""

    def __init__(self, sync_wait: float = 0.3, records: bool = True):
        self.sync_wait = sync_wait  # the hold without Prefer (the real default is 60 s)
        self.records = records  # False: no /v1 routes, like a cluster without its control application
        self.runs: dict[str, Run] = {}
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.most_running = 0
        self.lock = threading.Lock()
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api.handle(self, "GET")

            def do_POST(self) -> None:
                api.handle(self, "POST")

            def do_PUT(self) -> None:
                api.handle(self, "PUT")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def seen(self, method: str, pattern: str) -> list[tuple[str, str, dict[str, str], Any]]:
        return [r for r in self.requests if r[0] == method and re.fullmatch(pattern, r[1])]

    # ------------------------------------------------------------------ routes

    def handle(self, request: http.server.BaseHTTPRequestHandler, method: str) -> None:
        length = int(request.headers.get("content-length") or 0)
        body = json.loads(request.rfile.read(length)) if length else None
        parts = urlsplit(request.path)
        with self.lock:
            self.requests.append((method, parts.path, {k.lower(): v for k, v in request.headers.items()}, body))
        status, answer, headers = self.route(method, parts.path, parse_qs(parts.query), request.headers, body)
        payload = json.dumps(answer).encode() if not isinstance(answer, bytes) else answer
        request.send_response(status)
        request.send_header("Content-Type", "application/json" if not isinstance(answer, bytes) else "text/plain")
        request.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(payload)

    def route(self, method: str, path: str, query: dict, headers: Any, body: Any) -> tuple[int, Any, dict]:
        if path.startswith("/v1/") and not self.records:
            return 404, b"Not Found", {}
        if m := re.fullmatch(r"/v1/predictions/([^/]+)", path):
            run = self.runs.get(m[1])
            return (200, run.record(self.url), {}) if run else _not_found(m[1])
        if m := re.fullmatch(r"/v1/predictions/([^/]+)/cancel", path):
            run = self.runs.get(m[1])
            if run is None:
                return _not_found(m[1])
            before = run.record(self.url)
            if before["status"] not in FINAL:
                run.canceled = "Canceled by the caller."
            return 200, before, {}
        if path == "/v1/predictions":
            model = query.get("model", [None])[0]
            newest = [r for r in reversed(list(self.runs.values())) if model in (None, r.model)]
            start = int(query.get("cursor", ["0"])[0])
            more = start + PAGE < len(newest)
            suffix = f"&model={model}" if model else ""
            return 200, {"results": [r.record(self.url) for r in newest[start:start + PAGE]],
                         "next": f"{self.url}/v1/predictions?cursor={start + PAGE}{suffix}" if more else None,
                         "previous": None}, {}
        if path == "/v1/webhooks/default/secret":
            return 200, {"key": "whsec_c2VjcmV0LWZvci10ZXN0cw=="}, {}
        if m := re.fullmatch(r"/([a-z-]+)/openapi.json", path):
            if m[1] == "ghost":
                return 404, b"Not Found", {}
            schema = {"properties": {"n": {"type": "integer"}, "seconds": {"type": "number"}}}
            return 200, {"components": {"schemas": {"Input": schema, "Output": {"type": "integer"}}}}, {}
        if m := re.fullmatch(r"/([a-z-]+)/predictions(?:/([^/]+))?", path):
            if m[1] == "ghost":
                return 404, b"Not Found", {}
            return self.create(m[1], m[2], headers, body)
        return 404, b"Not Found", {}

    def create(self, model: str, path_id: str | None, headers: Any, body: dict) -> tuple[int, Any, dict]:
        if not isinstance(body.get("input", {}).get("n", 0), int):
            return 422, {"title": "Input validation failed", "status": 422, "detail": "Invalid input. n: not an integer",
                         "invalid_fields": [{"field": "n", "message": "Input should be a valid integer"}]}, {}
        prediction_id = path_id or secrets.token_hex(8)
        if prediction_id in self.runs:
            if self.runs[prediction_id].input != body["input"]:
                return 409, {"title": "Conflict", "status": 409, "detail": f"{prediction_id} exists with another input"}, {}
            run = self.runs[prediction_id]
        else:
            run = Run(prediction_id, model, body["input"], webhook=body.get("webhook"),
                      webhook_events_filter=body.get("webhook_events_filter"))
            with self.lock:
                self.runs[prediction_id] = run
                running = sum(1 for r in self.runs.values() if r.status() not in FINAL)
                self.most_running = max(self.most_running, running)
        prefer = headers.get("prefer") or ""
        hold = 0.0 if prefer == "respond-async" else float(prefer[5:]) if prefer.startswith("wait=") else self.sync_wait
        until = time.monotonic() + hold
        while run.status() not in FINAL and time.monotonic() < until:
            time.sleep(0.01)
        record = run.record(self.url)
        if record["status"] in FINAL:
            return 200, record, {}
        return 202, record, {"Location": record["urls"]["get"]}


def _not_found(prediction_id: str) -> tuple[int, Any, dict]:
    return 404, {"title": "Not found", "status": 404, "detail": f"No prediction with id {prediction_id!r}."}, {}
