"""File inputs and outputs inside a replica: input URLs fetched to local files, returned files delivered.

Before ``predict`` runs, every file URL among its inputs (``s3://``, ``gs://``,
``http(s)://``, ``data:``, and ``lambdaml-file:`` for a big file uploaded to ``/v1/files``)
is streamed into a private temporary folder, concurrently,
and ``predict`` sees local ``pathlib.Path`` objects. A ``Path`` that ``predict`` returns
(also inside lists, dicts and pydantic models) is uploaded to the output location, keyed
by prediction id, and replaced by its URL; with no output location, a small file comes
back as a ``data:`` URI. fsspec does the S3/GCS work with the standard credential chains;
HTTP goes through httpx so that every redirect hop passes the host check of ``lambdaml._urls``.
"""

from __future__ import annotations

import asyncio
import pathlib
import posixpath
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem
import httpx

from lambdaml._file_basics import (
    MiB,
    bytes_setting,
    data_uri,
    found_in,
    inline_limit_bytes,
    max_input_bytes,
    replace_in,
)
from lambdaml._settings import CONTROL_APP
from lambdaml._urls import FILE_REFERENCE, RefusedURL, check_host, check_location, check_syntax, pinned, safe_file_name
from lambdaml.errors import InputError
from lambdaml.files import FileRef, Path

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


async def _fetch_upload(reference: str, folder: pathlib.Path) -> Path:
    """A file uploaded to ``/v1/files``, from the control application that keeps it: a handle call,
    made on the replica's event loop (Serve's handles inside a replica work only there)."""
    from ray import serve as ray_serve

    try:
        content = await ray_serve.get_app_handle(CONTROL_APP).read_upload.remote(reference)
    except Exception as exc:  # the control application is being replaced
        raise FetchError(f"the uploaded file cannot be read now ({type(exc).__name__}: {exc}); try again") from None
    if content is None:
        raise FetchError("the uploaded file has expired or was deleted, or the reference to it is not valid")
    if len(content) > max_input_bytes():
        raise _too_big("the uploaded file", len(content), max_input_bytes())
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / _local_name(reference, FILE_REFERENCE)
    await asyncio.to_thread(target.write_bytes, content)
    return Path(target)


async def _fetch_readable(url: str, folder: pathlib.Path, locations: list[str]) -> Path:
    scheme = check_syntax(url)
    if scheme == FILE_REFERENCE:
        return await _fetch_upload(url, folder)
    if scheme in ("s3", "gs"):
        check_location(url, locations)
    return await asyncio.to_thread(fetch, url, folder)


async def fetch_inputs(inputs: dict[str, Any], folder: pathlib.Path, locations: list[str]) -> dict[str, Any]:
    """``inputs`` with every file URL fetched (concurrently) and replaced by its local Path.

    ``locations``: where ``s3://`` and ``gs://`` inputs may be read (``_urls.input_locations``).
    """
    jobs = [(name, ref) for name, value in inputs.items() for ref in found_in(value, FileRef)]
    if not jobs:
        return inputs
    results = await asyncio.gather(
        *(_fetch_readable(ref, folder / str(index), locations) for index, (_, ref) in enumerate(jobs)),
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
    return {name: replace_in(value, FileRef, lambda ref: local[id(ref)]) for name, value in inputs.items()}


# ------------------------------------------------------------------ outputs


class OutputError(Exception):
    """An output file that could not be delivered; the prediction fails with this message."""


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
        if isinstance(fs, LocalFileSystem):  # a local folder (a trainer's weights beside local artifacts) has folders
            fs.makedirs(posixpath.dirname(remote), exist_ok=True)
        fs.put_file(str(path), remote)
    except OSError as exc:
        raise OutputError(f"could not upload {path.name} to {url}: {exc}") from None
    expires = bytes_setting("LAMBDAML_PRESIGN_SECONDS", 0)
    if expires:
        try:
            return fs.sign(remote, expiration=expires)
        except (NotImplementedError, ValueError, OSError):
            return url  # this store cannot presign with these credentials: give the plain URL
    return url


def upload_outputs(output: Any, key: str, location: str | None) -> Any:
    """``output`` with every returned file delivered (uploaded, or inlined) and replaced by its URL."""
    return replace_in(output, pathlib.PurePath, lambda path: _deliver(pathlib.Path(path), key, location))


_SCALARS = frozenset({str, int, float, bool, type(None)})


def has_files(output: Any) -> bool:
    return type(output) not in _SCALARS and bool(found_in(output, pathlib.PurePath))  # most outputs are scalars


def total_size(output: Any) -> int:
    """Bytes of the files in ``output`` (missing ones count 0; delivering them fails later)."""
    return sum(pathlib.Path(p).stat().st_size for p in found_in(output, pathlib.PurePath) if pathlib.Path(p).is_file())
