"""The serve stage, model side: a loaded model inside one replica.

``ModelRuntime`` runs ``setup()`` once, then turns validated inputs into a
prediction object: it times the call, captures what the model prints, enforces
the timeout and converts any exception into ``status: "failed"``. The object has
the fields ``schema.Prediction`` describes but stays a plain JSON-ready dict:
building and dumping a pydantic object per request cost more than the rest of
the request path. It knows nothing of HTTP or Ray, so it can be exercised
directly in a test.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import pathlib
import time
import shutil
import tempfile
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from lambdaml import _clock
from lambdaml._ids import new_id
from lambdaml._file_basics import output_location
from lambdaml.serve import log_capture, streams, transfer
from lambdaml._settings import cancel_grace
from lambdaml.serve.threads import SyncRunner
from lambdaml._urls import input_locations
from lambdaml.errors import InputError
from lambdaml.serve.metrics import GpuMemory, NoMetrics
from lambdaml.model import Model


OnItem = Callable[[Any], Awaitable[None]] | None
OnStart = Callable[[str, Any], None] | None  # (started_at, the log capture)
Inputs = dict[str, Any] | BaseModel  # raw inputs, or inputs already validated (``ModelRuntime.parse``)


def _prediction(prediction_id: str, echoed: dict[str, Any], created_at: str) -> dict[str, Any]:
    """A new prediction object with every field of ``schema.Prediction``, in its order (``predict`` fills it in)."""
    return {"id": prediction_id, "status": "starting", "input": echoed, "output": None, "error": None, "logs": "",
            "metrics": {}, "created_at": created_at, "started_at": None, "completed_at": None}


def _error_message(exc: BaseException, debug: bool) -> str:
    message = str(exc) or type(exc).__name__
    if debug:
        message += "\n" + "".join(traceback.format_exception(exc))
    return message


def _setup_arguments(setup: Callable[..., Any], weights: str | None) -> dict[str, Any]:
    """``setup(weights=...)``, as Cog has it: a local copy of a trained version's weights (fetched once
    per node, ``lambdaml.files.cached``), or None for a version no training made."""
    if "weights" not in inspect.signature(setup).parameters:
        return {}
    from lambdaml._weights import cached

    return {"weights": cached(weights) if weights else None}


class ModelRuntime:
    """One replica's model: set up once, then predict many times."""

    def __init__(
        self,
        model: Model,
        debug: bool = False,
        masked: list[str] = (),
        metrics: NoMetrics | None = None,
        batcher: Callable[[dict[str, Any]], Awaitable[Any]] | None = None,
        weights: str | None = None,
        outputs: str | None = None,
    ):
        log_capture.install()
        log_capture.mask_everywhere(list(masked))
        self._metrics = metrics or NoMetrics()
        self._batcher = batcher  # Ray Serve's batching queue (lambdaml.serve.server), which calls run_batch
        self._slots = asyncio.Semaphore(model.spec.running_limit)
        self.recent_errors: collections.deque[dict[str, str]] = collections.deque(maxlen=5)
        self._masked = list(masked)  # secret values from the environment: never in logs
        self.spec = model.spec
        self.schema = model.schema
        self.debug = debug
        self._instance: Any = None
        self._predict: Any = model.target
        self._setup = {"started_at": _clock.now(), "status": "succeeded", "logs": "", "error": None}
        with log_capture.capture(self._masked) as logs:
            try:
                if model.is_class:
                    self._instance = model.target()
                    if hasattr(self._instance, "setup"):
                        self._instance.setup(**_setup_arguments(self._instance.setup, weights))
                    self._predict = self._instance.predict
            except Exception as exc:
                self._setup.update(status="failed", error=_error_message(exc, debug))
        self._setup.update(completed_at=_clock.now(), logs=logs.text())
        self._is_async = inspect.iscoroutinefunction(self._predict)
        self._threads = SyncRunner(f"{self.spec.name}-predict")
        self._cancel_grace = cancel_grace()
        self.stuck: str | None = None  # why this replica must be replaced (see _until_stopped)
        self._output_location = outputs or output_location(self.spec.output_url)  # a trainer's: beside the artifacts
        self._input_locations = input_locations(self._output_location)  # for s3:// and gs:// inputs
        self._gpu = GpuMemory.found()  # after setup(), which is where torch gets imported

    @property
    def setup_failed(self) -> bool:
        return self._setup["status"] == "failed"

    def health(self) -> dict[str, Any]:
        """Cog's health-check body: READY, or SETUP_FAILED with the setup error and logs; recent failures."""
        status = "SETUP_FAILED" if self.setup_failed else "READY"
        return {"status": status, "setup": dict(self._setup), "recent_errors": list(self.recent_errors)}

    def parse(self, body: bytes) -> tuple[BaseModel, str | None]:
        """Validate a whole HTTP request body in one pass: ``(inputs, id)`` for ``predict``, or an InputError."""
        try:
            return self.schema.validate_request(body)
        except InputError:
            self._metrics.finished("invalid")
            raise

    async def predict(
        self,
        raw_input: Inputs,
        record: dict[str, Any] | None = None,
        on_item: OnItem = None,
        on_start: OnStart = None,
        cancel_reason: Callable[[], str] | None = None,
    ) -> dict[str, Any]:
        """Run one prediction and return the prediction object (a JSON-ready dict).

        Raises InputError (nothing runs) if the inputs are invalid or unreachable.

        ``record``: the prediction's record, made by the caller with its ``id``, ``input``
        (echoed) and ``created_at``. It is filled in and returned: one dict per prediction,
        not a new one merged into it (each copy cost on every request). Without it, a new one.
        For a generator predict, ``on_item`` is awaited with each output item as it is produced.
        ``on_start(started_at, logs)`` is called when predict starts running (its slot is free).
        With ``cancel_reason``, cancelling the task that runs this coroutine ends it with a
        ``canceled`` prediction whose error is ``cancel_reason()``, once the work has really
        stopped (a sync predict's thread included); without it, ``CancelledError`` propagates.
        """
        created = time.perf_counter()
        if isinstance(raw_input, BaseModel):
            inputs = raw_input
        else:
            try:
                inputs = self.schema.validate(raw_input)
            except InputError:
                self._metrics.finished("invalid")
                raise
        if record is None:
            record = _prediction(new_id(), self.schema.echo(inputs), _clock.now())
        prediction_id = record["id"]
        if self.setup_failed:
            self._metrics.finished("failed")
            record.update(status="failed", completed_at=_clock.now(),
                          error=f"The model's setup() failed, so it cannot predict: {self._setup['error']}")
            return record
        kwargs = dict(inputs.__dict__)  # a validated model's fields, by name
        masked = self._masked
        if self.schema.secret_fields:
            masked = masked + [kwargs[name].get_secret_value() for name in self.schema.secret_fields if kwargs[name]]
        figures: dict[str, float] = {}
        logs = log_capture.capture(masked)
        started_at = None
        folder = pathlib.Path(tempfile.mkdtemp(prefix="lambdaml-")) if self.schema.file_fields else None
        try:
            if folder is not None:
                kwargs = await self._fetch(kwargs, folder, figures)
            # at most `concurrency` run; the rest wait here, visible to the autoscaler. acquire/release
            # rather than `async with`: two coroutines fewer per request, on the request path
            await self._slots.acquire()
            self._metrics.started()
            try:
                started_at, started = _clock.now(), time.perf_counter()
                if on_start is not None:
                    on_start(started_at, logs)
                with logs:
                    output, error = await self._call(kwargs, prediction_id, logs, figures, on_item)
            finally:
                self._metrics.stopped()
                self._slots.release()
            figures["predict_time"] = time.perf_counter() - started
        except asyncio.CancelledError:  # a BaseException: queued, fetching or running, it is counted here
            self._metrics.finished("canceled")
            if cancel_reason is None:
                raise
            record.update(status="canceled", error=cancel_reason(), logs=logs.text(), started_at=started_at,
                          metrics={"total_time": time.perf_counter() - created}, completed_at=_clock.now())
            return record
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        status = "failed" if error is not None else "succeeded"
        self._metrics.finished(status, figures)
        if error is not None:
            self.recent_errors.append({"id": prediction_id, "at": record["created_at"], "error": error})
        metrics = {"predict_time": figures["predict_time"]}
        if "fetch_time" in figures:
            metrics["fetch_time"] = figures["fetch_time"]
        if "gpu_peak" in figures:  # lambdaml status and the web page read it from the records
            metrics["gpu_peak"] = figures["gpu_peak"]
        metrics["total_time"] = time.perf_counter() - created
        if logs.metrics:  # what the model recorded itself (a Cog model's current_scope().record_metric)
            metrics = {**logs.metrics, **metrics}
        record.update(status=status, output=output, error=error, logs=logs.text(), metrics=metrics,
                      started_at=started_at, completed_at=_clock.now())
        return record

    async def _fetch(self, kwargs: dict[str, Any], folder: pathlib.Path, figures: dict[str, float]) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            kwargs = await transfer.fetch_inputs(kwargs, folder, self._input_locations)
        except InputError:  # a file that cannot be had
            self._metrics.finished("invalid")
            raise
        figures["fetch_time"] = time.perf_counter() - started
        figures["bytes_in"] = float(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()))
        return kwargs

    async def _call(
        self, kwargs: dict[str, Any], prediction_id: str, logs: Any, figures: dict[str, float], on_item: OnItem
    ) -> tuple[Any, str | None]:
        """Run predict with the timeout and deliver its output (files included): ``(output, error)``."""
        if self._gpu is not None:
            self._gpu.reset()
        try:
            if self.schema.streaming:
                work = self._collect(kwargs, prediction_id, figures, on_item)
            else:
                work = self._single(kwargs, prediction_id, figures)
            if self.spec.timeout:  # unlike wait_for, no extra task per request
                async with asyncio.timeout(self.spec.timeout):
                    output = await work
            else:  # no timer, and no context manager's two coroutines, per request
                output = await work
            if self._gpu is not None:
                figures["gpu_peak"] = self._gpu.peak()
            return output, None
        except TimeoutError:
            return None, f"The prediction took longer than its timeout of {self.spec.timeout:g} s (@model(timeout=...))"
        except transfer.OutputError as exc:
            return None, logs.mask(str(exc))
        except Exception as exc:
            return None, logs.mask(_error_message(exc, self.debug))

    def _invoke(self, kwargs: dict[str, Any]) -> Awaitable[Any]:
        return self._predict(**kwargs) if self._is_async else self._run_sync(self._predict, kwargs)

    async def _run_sync(self, function: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        """A sync call in a worker thread. Cancelled (a cancel, a timeout, a caller gone), the
        thread is interrupted and waited for: the prediction's slot is only given back once
        the work has really stopped, so ``concurrency=1`` always means one running predict."""
        job = self._threads.start(function, kwargs)
        try:
            return await job.wait()
        except asyncio.CancelledError:
            job.cancel()
            await self._until_stopped(job)
            raise

    async def _until_stopped(self, job: Any) -> None:
        """Wait for an interrupted job's thread, however often we are cancelled meanwhile.

        Past the grace period (a long C or CUDA call does not see the interruption) the
        replica reports itself unhealthy, and Ray Serve replaces it.
        """
        grace: float | None = self._cancel_grace
        while not job.done_future.done():
            try:
                await asyncio.wait([job.done_future], timeout=grace)  # never raises the job's own exception
            except asyncio.CancelledError:
                continue
            if not job.done_future.done():
                self.stuck = (
                    f"a canceled or timed-out predict did not stop within {self._cancel_grace:g} s "
                    "(LAMBDAML_CANCEL_GRACE); the replica is being replaced"
                )
                grace = None
        job.done_future.exception()  # Interrupted, as asked: retrieved, so asyncio does not warn

    async def _single(self, kwargs: dict[str, Any], prediction_id: str, figures: dict[str, float]) -> Any:
        result = await (self._batcher(kwargs) if self._batcher is not None else self._invoke(kwargs))
        if transfer.has_files(result):
            return await self._deliver(result, prediction_id, figures)
        return self.schema.dump_output(result)  # no coroutine of _deliver's: the usual case, on every request

    async def _collect(
        self, kwargs: dict[str, Any], prediction_id: str, figures: dict[str, float], on_item: OnItem
    ) -> Any:
        """A generator predict: deliver each item as it comes (``on_item``), return them all combined."""
        items = []
        async for item in streams.iterate(self._predict(**kwargs), self._threads):
            items.append(await self._deliver(item, prediction_id, figures))
            if on_item is not None:
                await on_item(items[-1])
        return streams.combine(items, self.schema.streams_text)

    async def _deliver(self, result: Any, prediction_id: str, figures: dict[str, float]) -> Any:
        if transfer.has_files(result):
            figures["bytes_out"] = figures.get("bytes_out", 0.0) + transfer.total_size(result)
            result = await asyncio.to_thread(transfer.upload_outputs, result, prediction_id, self._output_location)
        return self.schema.dump_output(result)

    async def run_batch(self, batch: list[dict[str, Any]]) -> list[Any]:
        """One call of a batching model's predict: each input as a list, one output per request back."""
        columns = {name: [request[name] for request in batch] for name in batch[0]}
        outputs = await self._invoke(columns)
        if not isinstance(outputs, (list, tuple)) or len(outputs) != len(batch):
            raise ValueError(
                f"with @model(batch=...), predict must return a list with one output per input "
                f"({len(batch)} here), not {type(outputs).__name__}"
            )
        return list(outputs)

    def teardown(self) -> None:
        """Call the model's teardown(), if it has one; errors are printed, not raised."""
        if self._instance is not None and hasattr(self._instance, "teardown"):
            try:
                self._instance.teardown()
            except Exception as exc:  # the replica is going away anyway
                print(f"teardown() failed: {exc}")

