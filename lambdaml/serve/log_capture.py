"""Capture what a prediction prints, per prediction, even when several run at once.

Output reaches us three ways in a replica, and each is captured once:
``sys.stdout``/``sys.stderr`` writes go through a tee; ``print()`` is turned
into records of the ``ray.serve`` logger by Ray Serve, which a filter on that
logger picks up; ``logging`` records reach a handler on the root logger.
Everything still flows on to Ray's log files. Each prediction's buffer lives
in a context variable, which follows ``asyncio`` tasks and
the worker threads of ``threads``, so concurrent predictions do not mix. Secret values
are masked on the way, also in output that belongs to no prediction (threads a model
starts itself, ``setup()``'s helpers): the replica's own secrets are masked everywhere.
"""

from __future__ import annotations

import contextvars
from typing import Any
import io
import logging
import logging.handlers
import sys
import threading
import time

from lambdaml.inputs import REDACTED


MIN_MASKED = 4  # a shorter secret is not masked: masking "ab" would garble every "ab" in the logs


def maskable(secrets: list[str]) -> list[str]:
    return [secret for secret in secrets if len(secret) >= MIN_MASKED]


def _masked(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


class _Capture:
    """One prediction's buffer; a context manager (a class: ``contextlib``'s generators cost more per request).

    It is also where the model's own metrics for the prediction go (``record_metric``): the
    one object that is current for exactly one prediction, in its task and its thread.
    """

    __slots__ = ("parts", "metrics", "secrets", "_token")

    def __init__(self, secrets: list[str]):
        self.parts: list[str] = []
        self.metrics: dict[str, Any] | None = None
        self.secrets = maskable(secrets) if secrets else secrets
        self._token: contextvars.Token | None = None

    def __enter__(self) -> _Capture:
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _current.reset(self._token)

    def mask(self, text: str) -> str:
        return _masked(text, self.secrets)

    def add(self, text: str) -> str:
        text = self.mask(text)
        self.parts.append(text)
        return text

    def text(self) -> str:
        return "".join(self.parts)


_NO_SECRETS: list[str] = []  # shared, never changed
_current: contextvars.ContextVar[_Capture | None] = contextvars.ContextVar("lambdaml_capture", default=None)
_everywhere: list[str] = []


def record_metric(name: str, value: Any) -> bool:
    """Put ``name: value`` in the running prediction's ``metrics``; False outside a prediction."""
    capture = _current.get()
    if capture is None:
        return False
    if capture.metrics is None:
        capture.metrics = {}
    capture.metrics[name] = value
    return True


def recorded_metric(name: str) -> Any:
    """A metric the running prediction recorded already (None if none)."""
    capture = _current.get()
    return None if capture is None or capture.metrics is None else capture.metrics.get(name)  # this replica's secrets: masked in output outside any prediction too


def mask_everywhere(secrets: list[str]) -> None:
    """Mask ``secrets`` in everything this process writes through the tee and the loggers."""
    _everywhere[:] = maskable(secrets)


class _Tee(io.TextIOBase):
    def __init__(self, stream: io.TextIOBase):
        self._stream = stream

    def write(self, text: str) -> int:
        capture = _current.get()
        if capture is not None:
            text = capture.add(text)
        elif _everywhere:
            text = _masked(text, _everywhere)
        _forwarding.active = True  # Serve's stdout turns writes into log records
        try:
            return self._stream.write(text)
        finally:
            _forwarding.active = False

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return False


_forwarding = threading.local()
_SERVE_LOGGER = "ray.serve"


def _capture_record(record: logging.LogRecord) -> None:
    if getattr(_forwarding, "active", False):
        return  # a write the tee has handled already
    capture = _current.get()
    if capture is None:
        if _everywhere:
            record.msg, record.args = _masked(record.getMessage(), _everywhere), None
        return
    message = capture.add(record.getMessage())
    if not message.endswith("\n"):
        capture.parts.append("\n")
    record.msg, record.args = message, None  # what goes on to Ray's logs is masked too


class _ServePrintFilter(logging.Filter):
    """Picks up ``print()`` calls, which Ray Serve sends to its own logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "serve_access_log", False):  # one per request: no print, no secret
            return True
        _capture_record(record)
        if isinstance(record.msg, str) and record.msg.endswith("\n") and not record.args:
            record.msg = record.msg[:-1]  # Serve's print keeps end="\n": one line in the log file, not two
        return True


class _RootHandler(logging.Handler):
    """Picks up the model's ``logging`` records."""

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(_SERVE_LOGGER):
            _capture_record(record)


def install() -> None:
    """Start capturing in this process (idempotent)."""
    if not isinstance(sys.stdout, _Tee):
        sys.stdout = _Tee(sys.stdout)  # type: ignore[assignment]
    if not isinstance(sys.stderr, _Tee):
        sys.stderr = _Tee(sys.stderr)  # type: ignore[assignment]
    serve_logger = logging.getLogger(_SERVE_LOGGER)
    if not any(isinstance(f, _ServePrintFilter) for f in serve_logger.filters):
        serve_logger.addFilter(_ServePrintFilter())
    root = logging.getLogger()
    if not any(isinstance(h, _RootHandler) for h in root.handlers):
        root.addHandler(_RootHandler())


def capture(secrets: list[str] | None = None) -> _Capture:
    """``with capture() as logs:`` collects everything printed inside (and in threads started with its context)."""
    return _Capture(secrets or _NO_SECRETS)


def flush_serve_logs() -> None:
    """Write Serve's buffered records to the replica's log file now (also as the replica stops)."""
    for handler in logging.getLogger(_SERVE_LOGGER).handlers:
        if isinstance(handler, logging.handlers.MemoryHandler):
            handler.flush()


def flush_serve_logs_every(seconds: float) -> None:
    """Flush Ray Serve's buffered replica log every ``seconds`` (idempotent).

    In throughput mode (lambdaml's HAProxy default) Serve buffers up to 1,000
    log records in memory before writing the replica's log file, so
    ``lambdaml logs`` would show nothing for a long time. A flush per second
    keeps the buffering's speed and the logs current.
    """
    global _flusher
    if _flusher is not None:
        return

    def flush_forever() -> None:
        while True:
            time.sleep(seconds)
            flush_serve_logs()

    _flusher = threading.Thread(target=flush_forever, name="lambdaml-log-flush", daemon=True)
    _flusher.start()


_flusher: threading.Thread | None = None
