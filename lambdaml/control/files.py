"""Replicate's files API at ``/v1/files``: how the official clients send a local file given as an input.

``replicate.run(..., input={"image": open("cat.png", "rb")})`` uploads the file with
``POST /v1/files`` (multipart, field ``content``) and sends the answer's ``urls.get`` as
the input's value. The file is kept in the records database, up to ``LAMBDAML_MAX_UPLOAD_BYTES``
(100 MiB, Replicate's limit). When a ``/v1`` prediction names such a URL, the forwarder
puts in its place what the replica can read (``resolve``): a small file's ``data:`` URI,
as lambdaml's own Python client would have sent it; for a file over
``LAMBDAML_INLINE_MAX_BYTES`` (1 MiB), a ``lambdaml-file:{id}/{key}/{name}`` reference,
which the replica reads from the control application through a Serve handle call
(``read_reference``). The key signs the file id, so only a reference the forwarder made
(for the file's owner) reads a file; the control application needs no storage credentials.
Files expire a day after upload (``LAMBDAML_FILE_RETENTION``), as Replicate's do.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import secrets
import sys
import time
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from lambdaml import _clock
from lambdaml._durations import parse_duration
from lambdaml._file_basics import MiB, bytes_setting, inline_limit_bytes, replace_in
from lambdaml._http import base_url, error_response, json_response, method_not_allowed
from lambdaml._urls import FILE_REFERENCE
from lambdaml.control.auth import Caller, UrlKeys
from lambdaml.control.records import Records
from lambdaml.control.tables import uploads
from lambdaml.errors import InputError

ROUTE = "/v1/files"
_FORM_OVERHEAD = 64 * 1024  # multipart boundaries, the part's headers and a metadata field
_FILE_ID = re.compile(r"(?:/.*)?/v1/files/([A-Za-z0-9]+)")  # after the base URL: behind a path prefix too


def max_upload_bytes() -> int:
    """``LAMBDAML_MAX_UPLOAD_BYTES``: the largest file ``POST /v1/files`` keeps (100 MiB, as Replicate)."""
    return bytes_setting("LAMBDAML_MAX_UPLOAD_BYTES", 100 * MiB)


def file_retention() -> float:
    """How long an uploaded file is kept: ``LAMBDAML_FILE_RETENTION`` (``1d``; ``12h``, ``3600``...)."""
    try:
        return parse_duration(os.environ.get("LAMBDAML_FILE_RETENTION") or "1d")
    except ValueError as exc:
        raise ValueError(f"LAMBDAML_FILE_RETENTION: {exc}") from None


class Uploads:
    """The ``files`` table of a records database."""

    def __init__(self, records: Records, retention_s: float) -> None:
        self._records = records
        self._retention = retention_s

    def add(self, name: str, content_type: str, content: bytes, metadata: Any, token_id: str | None) -> dict[str, Any]:
        row = {
            "id": secrets.token_hex(12), "name": name, "content_type": content_type, "size": len(content),
            "sha256": hashlib.sha256(content).hexdigest(), "md5": hashlib.md5(content, usedforsecurity=False).hexdigest(),
            "file_metadata": metadata, "created_at": _clock.now(), "expires_ts": time.time() + self._retention,
            "token_id": token_id,
        }
        with self._records.write() as connection:
            connection.execute(sa.insert(uploads).values(**row, content=content))
        return row

    def find(self, file_id: str, content_up_to: int | None = None) -> dict[str, Any] | None:
        """The file's row, unless it expired; with ``content_up_to``, its ``content`` too when the
        file is at most that many bytes (else None: a big file is not read where it is not sent)."""
        columns = [column for column in uploads.c if column.name != "content"]
        if content_up_to is not None:
            columns.append(sa.case((uploads.c.size <= content_up_to, uploads.c.content), else_=None).label("content"))
        query = sa.select(*columns).where(uploads.c.id == file_id, uploads.c.expires_ts > time.time())
        with self._records.reader.connect() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else dict(row)

    def list(self, token_id: str | None) -> list[dict[str, Any]]:
        """The files uploaded with ``token_id`` (all of them for None), newest first."""
        columns = [column for column in uploads.c if column.name != "content"]
        query = sa.select(*columns).where(uploads.c.expires_ts > time.time()).order_by(uploads.c.created_at.desc())
        if token_id is not None:
            query = query.where(uploads.c.token_id == token_id)
        with self._records.reader.connect() as connection:
            return [dict(row) for row in connection.execute(query.limit(100)).mappings()]

    def delete(self, file_id: str) -> None:
        with self._records.write() as connection:
            connection.execute(sa.delete(uploads).where(uploads.c.id == file_id))

    def expire(self) -> int:
        with self._records.write() as connection:
            return connection.execute(sa.delete(uploads).where(uploads.c.expires_ts <= time.time())).rowcount


def file_json(base: str, row: dict[str, Any]) -> dict[str, Any]:
    """A file as Replicate's API shows it."""
    return {
        "id": row["id"], "name": row["name"], "content_type": row["content_type"], "size": row["size"],
        "etag": row["md5"], "checksums": {"sha256": row["sha256"], "md5": row["md5"]},
        "metadata": row["file_metadata"] or {}, "created_at": row["created_at"],
        "expires_at": _clock.at(row["expires_ts"]), "urls": {"get": f"{base}{ROUTE}/{row['id']}"},
    }


class FileRoutes:
    """``POST /v1/files``, ``GET /v1/files``, ``GET /v1/files/{id}`` and ``DELETE /v1/files/{id}``."""

    def __init__(self, files: Uploads, keys: UrlKeys) -> None:
        self._files = files
        self._keys = keys

    async def handle(self, request: Request, caller: Caller, parts: list[str]) -> Response:
        base, method = base_url(dict(request.scope["headers"])), request.method
        if len(parts) == 1:
            if method == "POST":
                return await self._upload(request, caller, base)
            if method == "GET":
                rows = await asyncio.to_thread(self._files.list, None if caller.admin else caller.token_id)
                return json_response({"next": None, "previous": None, "results": [file_json(base, row) for row in rows]})
            return method_not_allowed(method, ROUTE, "GET, POST")
        if len(parts) != 2:
            return _no_file("/".join(parts[1:]))
        if method not in ("GET", "DELETE"):
            return method_not_allowed(method, f"{ROUTE}/{parts[1]}", "GET, DELETE")
        row = await asyncio.to_thread(self._files.find, parts[1])
        if row is None or not caller.owns(row["token_id"]):  # another caller's file is as good as absent
            return _no_file(parts[1])
        if method == "GET":
            return json_response(file_json(base, row))
        await asyncio.to_thread(self._files.delete, parts[1])
        return Response(status_code=204)

    async def _upload(self, request: Request, caller: Caller, base: str) -> Response:
        limit = max_upload_bytes()
        declared = request.headers.get("content-length", "")
        if not declared.isdigit():
            return error_response(411, "Length required", "Send the file with a Content-Length header.")
        if int(declared) > limit + _FORM_OVERHEAD:
            return _too_big(int(declared), limit)
        try:
            form = await request.form(max_files=2, max_fields=4)  # the JavaScript client sends metadata as a file part
        except Exception as exc:  # starlette's parser: not multipart, or a malformed body
            return _invalid("content", f"Send the file as multipart/form-data with a field named content ({exc}).")
        upload = form.get("content")
        if upload is None or isinstance(upload, str):
            return _invalid("content", "The form has no file in a field named content.")
        content = await upload.read()
        if len(content) > limit:
            return _too_big(len(content), limit)
        metadata = form.get("metadata") or "{}"
        try:
            metadata = json.loads(metadata if isinstance(metadata, str) else await metadata.read())
        except (TypeError, ValueError):
            return _invalid("metadata", "metadata must be JSON.")
        name = form.get("filename") or upload.filename or "file"
        content_type = form.get("type") or upload.content_type or "application/octet-stream"
        row = await asyncio.to_thread(self._files.add, str(name), str(content_type), content, metadata, caller.token_id)
        return json_response(file_json(base, row), 201)

    async def resolve(self, inputs: dict[str, Any], base: str, caller: Caller) -> dict[str, Any]:
        """``inputs`` with each URL of a file uploaded here (by this caller) replaced by what a replica reads:
        the file's ``data:`` URI, or a signed ``lambdaml-file:`` reference when it is over the inline limit.

        InputError names the field whose file is unknown, expired or another caller's.
        """
        named = {field: [match.group(1) for text in _strings(value) if (match := _own_file(text, base))]
                 for field, value in inputs.items()}
        rows: dict[str, dict[str, Any]] = {}
        limit = inline_limit_bytes()
        for file_id in {file_id for ids in named.values() for file_id in ids}:
            row = await asyncio.to_thread(self._files.find, file_id, limit)  # a big one's content: by the replica
            if row is not None and caller.owns(row["token_id"]):
                rows[file_id] = row
        problems = [
            {"field": field, "message": f"no uploaded file {file_id} (it expired, was deleted or was never uploaded here)"}
            for field, ids in named.items() for file_id in ids if file_id not in rows
        ]
        if problems:
            raise InputError("Invalid input. " + "; ".join(f"{p['field']}: {p['message']}" for p in problems), problems)
        if not rows:
            return inputs

        def inline(text: str) -> str:
            match = _own_file(text, base)
            if match is None:
                return text
            row = rows[match.group(1)]
            if row["size"] > limit:
                return f"{FILE_REFERENCE}:{row['id']}/{self._keys.sign('file:' + row['id'])}/{quote(row['name'], safe='')}"
            return f"data:{row['content_type']};base64,{base64.b64encode(row['content']).decode()}"

        return {field: replace_in(value, str, inline) for field, value in inputs.items()}

    async def read_reference(self, reference: str) -> bytes | None:
        """The content of the file a ``lambdaml-file:`` reference names, if its key is right and it has not expired."""
        file_id, _, rest = reference.partition(":")[2].partition("/")
        if not self._keys.valid("file:" + file_id, rest.partition("/")[0]):
            return None
        row = await asyncio.to_thread(self._files.find, file_id, sys.maxsize)
        return None if row is None else row["content"]


def _own_file(text: str, base: str) -> re.Match[str] | None:
    """A match (group 1: the file id) if ``text`` is the URL of a file of this API, as reached at ``base``."""
    return _FILE_ID.fullmatch(text[len(base):]) if base and text.startswith(base + "/") else None


def _strings(value: Any) -> list[str]:
    found: list[str] = []
    replace_in(value, str, lambda text: found.append(text) or text)
    return found


def _no_file(file_id: str) -> Response:
    return error_response(404, "Not found", f"No file with id {file_id!r}.")


def _invalid(field: str, detail: str) -> Response:
    body = {"title": "Invalid file", "status": 422, "detail": detail, "invalid_fields": [{"field": field, "message": detail}]}
    return json_response(body, 422)


def _too_big(size: int, limit: int) -> Response:
    return error_response(
        413, "File too large",
        f"The upload is {size / MiB:.1f} MiB; /v1/files keeps files up to {limit / MiB:.1f} MiB "
        "(LAMBDAML_MAX_UPLOAD_BYTES on the cluster). Give a larger file as a URL the cluster can read "
        "(https://, s3://, gs://), or send it with lambdaml's Python client, which stages it in the output location.",
    )
