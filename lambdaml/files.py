"""The files stage: ``Path`` inputs and outputs move between URLs and the replica's disk.

In a request, a ``Path`` input is a URL (``s3://``, ``gs://``, ``http(s)://`` or
``data:``). Before ``predict`` runs, the replica streams every one of them into
a private temporary folder, concurrently, and ``predict`` sees local
``pathlib.Path`` objects; the folder is removed afterwards. A ``Path`` that
``predict`` returns (also inside lists, dicts and pydantic models) is uploaded
to the output location, keyed by prediction id, and replaced by its URL; with
no output location, a small file comes back as a ``data:`` URI. fsspec does the
S3/GCS work with the standard credential chains; HTTP goes through httpx so
that every redirect hop passes the host check of ``lambdaml._urls``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import mimetypes
import os
import pathlib
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import fsspec
import httpx
from pydantic import BaseModel, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from lambdaml._urls import RefusedURL, check_host, check_location, check_syntax, pinned, safe_file_name
from lambdaml._weights import cached
from lambdaml.errors import InputError

__all__ = ["Path", "cached"]

MiB = 1024 * 1024


def _bytes_setting(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


def max_input_bytes() -> int:
    """``LAMBDAML_MAX_INPUT_BYTES``: the largest file one input may be (default 2 GiB)."""
    return _bytes_setting("LAMBDAML_MAX_INPUT_BYTES", 2048 * MiB)


def inline_limit_bytes() -> int:
    """``LAMBDAML_INLINE_MAX_BYTES``: the largest file sent or returned as a ``data:`` URI (default 1 MiB)."""
    return _bytes_setting("LAMBDAML_INLINE_MAX_BYTES", MiB)


class FileRef(str):
    """A validated file URL, not fetched yet (what a ``Path`` input holds between validation and predict)."""


class Path(pathlib.PosixPath):
    """A file: a URL in requests and responses, a local ``pathlib.Path`` inside ``predict``."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _validate_ref,
            json_schema_input_schema=core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "uri", "x-lambdaml-file": True}


def _validate_ref(value: Any) -> FileRef | Path:
    if isinstance(value, pathlib.PurePath):  # a file object in Python code (an output, a driver on the cluster)
        return Path(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a file URL (s3://, gs://, https://, data:), got {type(value).__name__}")
    url = value
    try:
        check_syntax(url)
    except RefusedURL as exc:
        raise ValueError(str(exc)) from None
    return FileRef(url)


def _replace(value: Any, kind: type | tuple[type, ...], change: Callable[[Any], Any]) -> Any:
    """``value`` with every ``kind`` inside lists, tuples, dicts and pydantic models changed."""
    if isinstance(value, kind):
        return change(value)
    if isinstance(value, list):
        return [_replace(v, kind, change) for v in value]
    if isinstance(value, tuple):
        return tuple(_replace(v, kind, change) for v in value)
    if isinstance(value, dict):
        return {k: _replace(v, kind, change) for k, v in value.items()}
    if isinstance(value, BaseModel):
        updates = {name: _replace(getattr(value, name), kind, change) for name in type(value).model_fields}
        return value.model_copy(update=updates)
    return value


def _found(value: Any, kind: type | tuple[type, ...]) -> list[Any]:
    found: list[Any] = []
    _replace(value, kind, lambda item: found.append(item) or item)
    return found


# ------------------------------------------------------------------ inputs


class FetchError(Exception):
    """An input file that could not be fetched; the message is shown to the caller."""


def _local_name(url: str, scheme: str) -> str:
    return "input" if scheme == "data" else safe_file_name(unquote(urlsplit(url).path), "input")


def _too_big(url: str, size: int, limit: int) -> FetchError:
    return FetchError(
        f"{url[:100]} is {size / MiB:.1f} MiB, over the limit of {limit / MiB:.1f} MiB per input (LAMBDAML_MAX_INPUT_BYTES)"
    )


def _fetch_http(url: str, target: pathlib.Path, limit: int) -> None:
    with httpx.Client(timeout=httpx.Timeout(30.0, read=300.0), follow_redirects=False) as client:
        for _ in range(6):  # the first request and up to 5 redirects, each host checked
            target_url, headers, extensions = pinned(url, check_host(url))
            with client.stream("GET", target_url, headers=headers, extensions=extensions) as response:
                if response.is_redirect:
                    url = urljoin(url, response.headers.get("location", ""))
                    if check_syntax(url) not in ("http", "https"):
                        raise RefusedURL(f"a redirect leads to {url[:100]!r}, which is not an http(s) URL")
                    continue
                if response.status_code >= 400:
                    raise FetchError(f"GET {url[:200]} answered HTTP {response.status_code}")
                declared = int(response.headers.get("content-length") or 0)
                if declared > limit:
                    raise _too_big(url, declared, limit)
                written = 0
                with open(target, "wb") as file:
                    for chunk in response.iter_bytes(MiB):
                        written += len(chunk)
                        if written > limit:
                            raise _too_big(url, written, limit)
                        file.write(chunk)
                return
    raise FetchError(f"{url[:200]} redirects more than 5 times")


def fetch(url: str, folder: pathlib.Path) -> Path:
    """Stream one input URL into ``folder``; FetchError/RefusedURL say why not."""
    scheme = check_syntax(url)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / _local_name(url, scheme)
    limit = max_input_bytes()
    try:
        if scheme in ("http", "https"):
            _fetch_http(url, target, limit)
        elif scheme == "data":  # already in memory as part of the request: decode it
            fs, path = fsspec.core.url_to_fs(url)
            content = fs.cat_file(path)
            if len(content) > limit:
                raise _too_big("the data: URI", len(content), limit)
            target.write_bytes(content)
        else:
            fs, path = fsspec.core.url_to_fs(url)
            size = fs.info(path).get("size") or 0
            if size > limit:
                raise _too_big(url, size, limit)
            fs.get_file(path, str(target))
    except FileNotFoundError:
        raise FetchError(f"there is no file at {url[:200]}") from None
    except PermissionError:
        raise FetchError(f"access to {url[:200]} was denied") from None
    except RefusedURL:
        raise
    except (httpx.HTTPError, OSError, ValueError) as exc:
        raise FetchError(f"could not fetch {url[:200]}: {exc}") from None
    except Exception as exc:  # the storage library's own errors (botocore, google-auth...)
        if "credential" in type(exc).__name__.lower():
            raise FetchError(
                f"the cluster has no credentials to read {url[:200]}. The operator can set them where lambdaml "
                "deploys from (AWS_* variables, GOOGLE_APPLICATION_CREDENTIALS: they are forwarded to the replicas) "
                "or give the cluster's nodes a role that can read the bucket"
            ) from None
        raise FetchError(f"could not fetch {url[:200]}: {type(exc).__name__}: {exc}") from None
    return Path(target)


def _fetch_readable(url: str, folder: pathlib.Path, locations: list[str]) -> Path:
    if check_syntax(url) in ("s3", "gs"):
        check_location(url, locations)
    return fetch(url, folder)


async def fetch_inputs(inputs: dict[str, Any], folder: pathlib.Path, locations: list[str]) -> dict[str, Any]:
    """``inputs`` with every file URL fetched (concurrently) and replaced by its local Path.

    ``locations``: where ``s3://`` and ``gs://`` inputs may be read (``_urls.input_locations``).
    """
    jobs = [(name, ref) for name, value in inputs.items() for ref in _found(value, FileRef)]
    if not jobs:
        return inputs
    results = await asyncio.gather(
        *(asyncio.to_thread(_fetch_readable, ref, folder / str(index), locations) for index, (_, ref) in enumerate(jobs)),
        return_exceptions=True,
    )
    problems = [
        {"field": name, "type": "file_unavailable", "message": str(result)}
        for (name, _), result in zip(jobs, results)
        if isinstance(result, (FetchError, RefusedURL))
    ]
    if problems:
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise InputError(f"Invalid input. {summary}", problems)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    local = {id(ref): path for (_, ref), path in zip(jobs, results)}
    return {name: _replace(value, FileRef, lambda ref: local[id(ref)]) for name, value in inputs.items()}


# ------------------------------------------------------------------ outputs


class OutputError(Exception):
    """An output file that could not be delivered; the prediction fails with this message."""


def output_location(configured: str | None) -> str | None:
    """Where output files go: ``@model(output_url=...)``, else ``LAMBDAML_OUTPUT_URL``."""
    return (configured or os.environ.get("LAMBDAML_OUTPUT_URL") or "").rstrip("/") or None


def data_uri(path: pathlib.Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _deliver(path: pathlib.Path, key: str, location: str | None) -> str:
    if not path.is_file():
        raise OutputError(f"predict returned the path {path}, which is not a file")
    if location is None:
        size, limit = path.stat().st_size, inline_limit_bytes()
        if size > limit:
            raise OutputError(
                f"the output file {path.name} is {size / MiB:.1f} MiB, too big to return inline "
                f"(limit {limit / MiB:.1f} MiB). Set an output location: LAMBDAML_OUTPUT_URL=s3://bucket/prefix "
                "(or gs://...) when deploying, or @model(output_url=...)"
            )
        return data_uri(path)
    url = f"{location}/{key}/{path.name}"
    fs, remote = fsspec.core.url_to_fs(url)
    try:
        fs.put_file(str(path), remote)
    except OSError as exc:
        raise OutputError(f"could not upload {path.name} to {url}: {exc}") from None
    expires = _bytes_setting("LAMBDAML_PRESIGN_SECONDS", 0)
    if expires:
        try:
            return fs.sign(remote, expiration=expires)
        except (NotImplementedError, ValueError, OSError):
            return url  # this store cannot presign with these credentials: give the plain URL
    return url


def upload_outputs(output: Any, key: str, location: str | None) -> Any:
    """``output`` with every returned file delivered (uploaded, or inlined) and replaced by its URL."""
    return _replace(output, pathlib.PurePath, lambda path: _deliver(pathlib.Path(path), key, location))


def has_files(output: Any) -> bool:
    return bool(_found(output, pathlib.PurePath))


def total_size(output: Any) -> int:
    """Bytes of the files in ``output`` (missing ones count 0; delivering them fails later)."""
    return sum(pathlib.Path(p).stat().st_size for p in _found(output, pathlib.PurePath) if pathlib.Path(p).is_file())


# ------------------------------------------------------------------ client side


def file_fields(input_schema: dict[str, Any]) -> set[str]:
    """Names of the inputs that take files, from a model's input JSON schema."""

    def takes_files(schema: dict[str, Any]) -> bool:
        if schema.get("x-lambdaml-file"):
            return True
        nested = [schema["items"]] if "items" in schema else []
        nested += schema.get("anyOf", []) + schema.get("allOf", [])
        return any(isinstance(s, dict) and takes_files(s) for s in nested)

    return {name for name, schema in input_schema.get("properties", {}).items() if takes_files(schema)}


def _send_local(path: pathlib.Path) -> str:
    """A URL for a local file: inline when small, else uploaded to the staging prefix of the output store."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file")
    if path.stat().st_size <= inline_limit_bytes():
        return data_uri(path)
    location = output_location(None)
    if location is None:
        raise ValueError(
            f"{path} is larger than {inline_limit_bytes() / MiB:.1f} MiB, so it must be uploaded first: "
            "set LAMBDAML_OUTPUT_URL=s3://bucket/prefix (or gs://...) and lambdaml stages it there"
        )
    with open(path, "rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()[:16]
    url = f"{location}/staging/{digest}/{path.name}"
    fs, remote = fsspec.core.url_to_fs(url)
    fs.put_file(str(path), remote)
    return url


def send_local_files(inputs: dict[str, Any], fields: set[str]) -> dict[str, Any]:
    """Client side: local files given for file inputs become URLs the replica can fetch."""

    def convert(value: Any) -> Any:
        if isinstance(value, pathlib.PurePath):
            return _send_local(pathlib.Path(value))
        if isinstance(value, str) and ":" not in value.split("/", 1)[0] and pathlib.Path(value).is_file():
            return _send_local(pathlib.Path(value))
        return value

    return {
        name: _replace(value, (str, pathlib.PurePath), convert) if name in fields else value
        for name, value in inputs.items()
    }
