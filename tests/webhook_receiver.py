"""A real webhook receiver on loopback for tests: records every POST, answers scripted statuses per path."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Call:
    path: str
    status: int  # what the receiver answered
    headers: dict[str, str]
    raw: str
    at: float

    @property
    def body(self) -> Any:
        return json.loads(self.raw)


class Receiver:
    """``with Receiver() as hook:``; ``hook.url("/a")`` to send to, ``hook.fail("/a", [500])`` to refuse first."""

    def __init__(self) -> None:
        self._calls: list[Call] = []
        self._script: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                with receiver._lock:
                    script = receiver._script.get(self.path, [])
                    status = script.pop(0) if script else 200
                    receiver._calls.append(Call(self.path, status, {k.lower(): v for k, v in self.headers.items()},
                                                raw, time.monotonic()))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # quiet test output
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Receiver:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"

    def fail(self, path: str, statuses: list[int]) -> None:
        """Answer the next POSTs to ``path`` with ``statuses``, then 200."""
        with self._lock:
            self._script[path] = list(statuses)

    def calls(self, path: str) -> list[Call]:
        with self._lock:
            return [call for call in self._calls if call.path == path]

    def wait_for(self, path: str, done: Callable[[list[Call]], bool], timeout: float = 15) -> list[Call]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done(calls := self.calls(path)):
                return calls
            time.sleep(0.05)
        raise AssertionError(f"the receiver did not get what was expected at {path} in {timeout} s: {self.calls(path)}")


@contextlib.contextmanager
def allowed_receiver() -> Iterator[Receiver]:
    """A receiver whose loopback address is allowed as a webhook host (``LAMBDAML_ALLOWED_HOSTS``) while it runs.

    Models deployed, and a control application started, meanwhile see it: they take the
    variable when they start.
    """
    with Receiver() as receiver:
        before = os.environ.get("LAMBDAML_ALLOWED_HOSTS")
        os.environ["LAMBDAML_ALLOWED_HOSTS"] = ",".join(filter(None, [before, receiver.host]))
        try:
            yield receiver
        finally:
            if before is None:
                os.environ.pop("LAMBDAML_ALLOWED_HOSTS", None)
            else:
                os.environ["LAMBDAML_ALLOWED_HOSTS"] = before
