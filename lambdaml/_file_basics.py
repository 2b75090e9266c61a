"""What both sides of a file transfer share: size limits, ``data:`` URIs, the output location, files in values.

The replica (``lambdaml.serve.transfer``) and the client (``lambdaml._staging``) both use these.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import pathlib
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

MiB = 1024 * 1024


def bytes_setting(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


def max_input_bytes() -> int:
    """``LAMBDAML_MAX_INPUT_BYTES``: the largest file one input may be (default 2 GiB)."""
    return bytes_setting("LAMBDAML_MAX_INPUT_BYTES", 2048 * MiB)


def inline_limit_bytes() -> int:
    """``LAMBDAML_INLINE_MAX_BYTES``: the largest file sent or returned as a ``data:`` URI (default 1 MiB)."""
    return bytes_setting("LAMBDAML_INLINE_MAX_BYTES", MiB)


def output_location(configured: str | None) -> str | None:
    """Where output files go: ``@model(output_url=...)``, else ``LAMBDAML_OUTPUT_URL``."""
    return (configured or os.environ.get("LAMBDAML_OUTPUT_URL") or "").rstrip("/") or None


def data_uri(path: pathlib.Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def replace_in(value: Any, kind: type | tuple[type, ...], change: Callable[[Any], Any]) -> Any:
    """``value`` with every ``kind`` inside lists, tuples, dicts and pydantic models changed."""
    if isinstance(value, kind):
        return change(value)
    if isinstance(value, list):
        return [replace_in(v, kind, change) for v in value]
    if isinstance(value, tuple):
        return tuple(replace_in(v, kind, change) for v in value)
    if isinstance(value, dict):
        return {k: replace_in(v, kind, change) for k, v in value.items()}
    if isinstance(value, BaseModel):
        updates = {name: replace_in(getattr(value, name), kind, change) for name in type(value).model_fields}
        return value.model_copy(update=updates)
    return value


def found_in(value: Any, kind: type | tuple[type, ...]) -> list[Any]:
    found: list[Any] = []
    replace_in(value, kind, lambda item: found.append(item) or item)
    return found
