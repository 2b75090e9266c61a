"""Capture what a prediction prints, per prediction, even when several run at once.

``sys.stdout``/``sys.stderr`` are replaced once per replica by a tee that
writes through to the real stream (so Ray's log files still get it) and also
appends to the buffer of the prediction running in the current context.
Context variables follow ``asyncio`` tasks and ``asyncio.to_thread``, so each
concurrent prediction gets its own buffer. Secret values are masked on the way.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import sys
from collections.abc import Iterator

from lambdaml.inputs import REDACTED


class _Capture:
    def __init__(self, secrets: list[str]):
        self.parts: list[str] = []
        self.secrets = [s for s in secrets if s]

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def text(self) -> str:
        return "".join(self.parts)


_current: contextvars.ContextVar[_Capture | None] = contextvars.ContextVar("lambdaml_capture", default=None)


class _Tee(io.TextIOBase):
    def __init__(self, stream: io.TextIOBase):
        self._stream = stream

    def write(self, text: str) -> int:
        capture = _current.get()
        if capture is not None:
            text = capture.mask(text)
            capture.parts.append(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return False


def install() -> None:
    """Route this process's stdout and stderr through the capturing tee (idempotent)."""
    if not isinstance(sys.stdout, _Tee):
        sys.stdout = _Tee(sys.stdout)  # type: ignore[assignment]
    if not isinstance(sys.stderr, _Tee):
        sys.stderr = _Tee(sys.stderr)  # type: ignore[assignment]


@contextlib.contextmanager
def capture(secrets: list[str] | None = None) -> Iterator[_Capture]:
    """Collect everything printed in this context (and threads started with its context)."""
    buffer = _Capture(secrets or [])
    token = _current.set(buffer)
    try:
        yield buffer
    finally:
        _current.reset(token)
