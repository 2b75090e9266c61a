"""Inside a replica: a Cog predictor run as a lambdaml model class (``setup`` and ``predict``).

``runner_class`` makes, per project, a subclass of ``CogRunner`` whose ``predict`` has the
signature ``interface.CogInterface`` describes, so lambdaml's describe stage sees the Cog
inputs as its own. ``setup`` unpacks the project's files, makes it the working directory and
the first import path (where Cog's image would have put it), imports the predictor and runs
its ``setup``. Each prediction hands the predictor Cog's own ``Path`` and ``Secret`` values
and hands back its output the way lambdaml delivers outputs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import importlib
import inspect
import io
import mimetypes
import os
import pathlib
import sys
import tempfile
import types
import zipfile
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from lambdaml._file_basics import replace_in
from lambdaml.cog.interface import CogInterface
from lambdaml.cog.project import Ref
from lambdaml.inputs import Secret
from lambdaml.serve import log_capture


def _to_cog(value: Any) -> Any:
    """A validated lambdaml input value as the Cog type the predictor expects."""
    import cog

    if isinstance(value, list):
        return [_to_cog(item) for item in value]
    if isinstance(value, Secret):
        return cog.Secret(value.get_secret_value())
    if isinstance(value, pathlib.PurePath):
        return cog.Path(value)
    return value


def _from_cog(value: Any) -> Any:
    """A predictor's output as lambdaml delivers it: a ``cog.BaseModel`` (a dataclass) becomes a dict."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _from_cog(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_from_cog(item) for item in value]
    return value


def upload(path: pathlib.Path, upload_url: str) -> str:
    """What ``cog serve --upload-url`` does with a file output: PUT it to ``{upload_url}{name}``.

    The output is the answer's ``Location`` without its query (a presigned URL's signature), else the PUT URL.
    """
    import httpx

    target = f"{upload_url}{path.name}"
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    with path.open("rb") as body:
        answer = httpx.put(target, content=body, headers={"Content-Type": content_type}, timeout=60.0)
    answer.raise_for_status()
    location = answer.headers.get("Location")
    if not location:
        return target
    return urlunsplit(urlsplit(location)._replace(query=""))


class _Metrics:
    """``current_scope().metrics``: Cog's metrics of the running prediction, kept in its ``metrics``."""

    def __getitem__(self, name: str) -> Any:
        return log_capture.recorded_metric(name)

    def __setitem__(self, name: str, value: Any) -> None:
        log_capture.record_metric(name, value)

    def record(self, name: str, value: Any, mode: str = "replace") -> None:
        if mode == "incr":
            value = (log_capture.recorded_metric(name) or 0) + value
        elif mode == "append":
            value = [*(log_capture.recorded_metric(name) or []), value]
        elif mode != "replace":
            raise ValueError(f"unknown metric mode {mode!r}; Cog's modes are replace, incr and append")
        log_capture.record_metric(name, value)


class _Scope:
    """What ``cog.current_scope()`` returns in a lambdaml replica (Cog's own needs its Rust server running)."""

    metrics = _Metrics()

    def record_metric(self, name: str, value: Any, mode: str = "replace") -> None:
        self.metrics.record(name, value, mode)


def _current_scope() -> _Scope:
    return _Scope()


class CogRunner:
    """The lambdaml model class around one Cog predictor (subclassed per project by ``runner_class``)."""

    _archive: bytes
    _ref: Ref
    _interface: CogInterface
    _upload_url: str | None

    def setup(self, weights: pathlib.Path | None = None) -> None:
        """``weights``: a trained version's (``lambdaml.serve.training``); else Cog's own sources (``_weights``)."""
        root = pathlib.Path(tempfile.mkdtemp(prefix="lambdaml-cog-"))
        with zipfile.ZipFile(io.BytesIO(self._archive)) as archive:
            archive.extractall(root)
        os.chdir(root)  # a replica is its own process, and Cog's predictors read files relative to the project
        import cog

        cog.current_scope = _current_scope  # before the predictor's `from cog import current_scope`
        sys.path.insert(0, str(root))
        target = getattr(importlib.import_module(self._ref.module), self._ref.name)
        if self._interface.method is None:  # a plain function
            self._call = target
            return
        predictor = target()
        if hasattr(predictor, "setup"):
            arguments = {"weights": _weights(weights)} if self._interface.setup_takes_weights else {}
            _run_to_end(predictor.setup(**arguments))
        self._call = getattr(predictor, self._interface.method)

    def _arguments(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {name: _to_cog(value) for name, value in inputs.items()}

    def _deliver(self, output: Any) -> Any:
        output = _from_cog(output)
        if self._upload_url:
            output = replace_in(output, pathlib.PurePath, lambda path: upload(pathlib.Path(path), self._upload_url))
        return output


def _run_to_end(result: Any) -> None:
    """Finish an ``async def setup``: on its own loop (the replica's is not running while it starts).

    Objects it binds to that loop (an aiohttp session) cannot be used by predict; Cog
    documents async setup for loading weights, which this serves.
    """
    if inspect.isawaitable(result):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(_awaited(result))
            return
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a loop runs in this thread: use another
            pool.submit(asyncio.run, _awaited(result)).result()


async def _awaited(result: Any) -> Any:
    return await result


def _weights(trained: pathlib.Path | None) -> Any:
    """Cog's ``setup(weights=...)``: a trained version's, else ``COG_WEIGHTS`` (a URL, fetched once per
    node), else ``./weights`` if present."""
    import cog

    from lambdaml._weights import cached

    if trained is not None:
        return cog.Path(trained)
    url = os.environ.get("COG_WEIGHTS")
    if url:
        return cog.Path(cached(url) if "://" in url else url)
    local = pathlib.Path("weights")
    return cog.Path(local) if local.exists() else None


# The four shapes predict can have; runner_class copies one and gives it the predictor's signature.
def _returns(self: CogRunner, **inputs: Any) -> Any:
    return self._deliver(self._call(**self._arguments(inputs)))


def _yields(self: CogRunner, **inputs: Any) -> Any:
    for item in self._call(**self._arguments(inputs)):
        yield self._deliver(item)


async def _returns_async(self: CogRunner, **inputs: Any) -> Any:
    return self._deliver(await self._call(**self._arguments(inputs)))


async def _yields_async(self: CogRunner, **inputs: Any) -> Any:
    async for item in self._call(**self._arguments(inputs)):
        yield self._deliver(item)


def runner_class(name: str, archive: bytes, ref: Ref, interface: CogInterface, upload_url: str | None) -> type[CogRunner]:
    """A ``CogRunner`` subclass whose ``predict`` declares the Cog predictor's inputs and output."""
    template = {
        (False, False): _returns, (False, True): _yields, (True, False): _returns_async, (True, True): _yields_async,
    }[(interface.is_async, interface.streaming)]
    title = "".join(part.capitalize() for part in name.split("-")) or "Cog"
    predict = types.FunctionType(template.__code__, template.__globals__, "predict")
    predict.__qualname__ = f"{title}.predict"
    signature = interface.signature()
    predict.__signature__ = signature  # type: ignore[attr-defined]
    predict.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()
                               if p.annotation is not inspect.Parameter.empty}
    predict.__annotations__["return"] = signature.return_annotation
    attributes = {"predict": predict, "_archive": archive, "_ref": ref, "_interface": interface,
                  "_upload_url": upload_url, "__module__": __name__, "__qualname__": title}
    return type(title, (CogRunner,), attributes)
