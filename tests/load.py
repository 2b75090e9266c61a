"""A bounded load on one loopback URL, with something done to the cluster part-way through.

Used by the reliability tests (redeploy and replica loss under load) and by
``bench/bench_reliability.py``, which prints the same figures as a table.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


@dataclass
class Answer:
    at: float  # seconds since the load started, when the answer came
    status: int  # HTTP status; 0 when no answer came (connection refused, empty reply)
    json: bool
    succeeded: bool  # a 200 whose prediction succeeded


@dataclass
class LoadResult:
    answers: list[Answer] = field(default_factory=list)
    event_at: float | None = None  # when ``during`` ran

    @property
    def statuses(self) -> dict[str, int]:
        return dict(collections.Counter(str(a.status or "no answer") for a in self.answers))

    @property
    def failed(self) -> list[Answer]:
        return [a for a in self.answers if not a.succeeded]

    def recovery_s(self) -> float | None:
        """From the event to the first success after the last failure; None if nothing failed."""
        if not self.failed or self.event_at is None:
            return None
        last_failure = max(a.at for a in self.failed)
        after = [a.at for a in self.answers if a.succeeded and a.at > last_failure]
        return (min(after) if after else last_failure) - self.event_at


def steady_load(
    url: str, body: dict, clients: int = 8, seconds: float = 20.0,
    during: Callable[[], None] | None = None, at: float = 5.0,
) -> LoadResult:
    """``clients`` threads POST ``body`` to ``url`` back to back for ``seconds``; ``during`` runs at ``at`` s."""
    result, lock = LoadResult(), threading.Lock()
    start = time.monotonic()

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while time.monotonic() - start < seconds:
                try:
                    response = http.post(url, json=body)
                    is_json = response.headers.get("content-type") == "application/json"
                    answer = Answer(time.monotonic() - start, response.status_code, is_json,
                                    response.status_code == 200 and is_json and response.json().get("status") == "succeeded")
                except httpx.TransportError:
                    answer = Answer(time.monotonic() - start, 0, False, False)
                    time.sleep(0.05)  # no busy loop against a port that refuses
                with lock:
                    result.answers.append(answer)

    def event() -> None:
        time.sleep(at)
        result.event_at = time.monotonic() - start
        during()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    if during is not None:
        threads.append(threading.Thread(target=event))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result
