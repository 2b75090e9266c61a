"""ModelRuntime: setup, predictions, failures, logs and timeouts, without Ray in between."""

import asyncio
import logging
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from lambdaml import Input, InputError, Secret, model
from lambdaml.serve.metrics import NoMetrics
from lambdaml.serve.runtime import ModelRuntime
from lambdaml.schema import Prediction


def predict(runtime: ModelRuntime, **inputs) -> Prediction:
    """Run one prediction; checking it has the fields of ``Prediction`` a runtime fills in (the server adds the rest)."""
    prediction = asyncio.run(runtime.predict(inputs))
    assert list(prediction) == list(Prediction.model_fields)[: list(Prediction.model_fields).index("completed_at") + 1]
    return Prediction.model_validate(prediction)


@model
def shout(text: str, token: Secret = Input(default="")) -> str:
    print("got", text, token.get_secret_value())
    logging.getLogger("shout").warning("logged %s", token.get_secret_value())
    if text == "boom":
        raise ValueError("cannot shout boom")
    return text.upper()


def test_success_has_replicate_fields_and_timing():
    prediction = predict(ModelRuntime(shout), text="hi")
    assert prediction.status == "succeeded" and prediction.output == "HI" and prediction.error is None
    assert prediction.metrics["predict_time"] > 0
    assert prediction.created_at <= prediction.started_at <= prediction.completed_at
    assert len(prediction.id) == 32


def test_timestamps_are_iso_8601_utc_now():
    before = datetime.now(timezone.utc)
    prediction = predict(ModelRuntime(shout), text="hi")
    after = datetime.now(timezone.utc)
    for stamp in (prediction.created_at, prediction.started_at, prediction.completed_at):
        parsed = datetime.fromisoformat(stamp)
        assert parsed.utcoffset() == timedelta(0) and len(stamp) == len("2026-11-22T08:02:42.063804+00:00")
        assert before - timedelta(milliseconds=1) <= parsed <= after + timedelta(milliseconds=1)


def test_user_exception_becomes_failed_prediction_without_traceback():
    prediction = predict(ModelRuntime(shout), text="boom")
    assert prediction.status == "failed"
    assert prediction.error == "cannot shout boom"
    assert "Traceback" not in prediction.error


def test_debug_adds_the_traceback():
    prediction = Prediction.model_validate(asyncio.run(ModelRuntime(shout, debug=True).predict({"text": "boom"})))
    assert "Traceback" in prediction.error and "cannot shout boom" in prediction.error


def test_logs_capture_print_and_logging_with_secrets_masked():
    prediction = predict(ModelRuntime(shout), text="hi", token="tok-42")
    assert "got hi **********" in prediction.logs
    assert "logged **********" in prediction.logs
    assert "tok-42" not in prediction.model_dump_json()


def test_invalid_input_raises_before_running():
    with pytest.raises(InputError):
        predict(ModelRuntime(shout), text=3.5)


def test_concurrent_predictions_keep_their_own_logs():
    @model
    async def slow(name: str) -> str:
        for _ in range(3):
            print(name)
            await asyncio.sleep(0.01)
        return name

    runtime = ModelRuntime(slow)

    async def both():
        return await asyncio.gather(runtime.predict({"name": "a"}), runtime.predict({"name": "b"}))

    first, second = asyncio.run(both())
    assert first["logs"] == "a\na\na\n" and second["logs"] == "b\nb\nb\n"


def test_timeout_fails_the_prediction():
    @model(timeout=0.2)
    def sleepy(seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    prediction = predict(ModelRuntime(sleepy), seconds=1)
    assert prediction.status == "failed" and "timeout of 0.2 s" in prediction.error


def test_class_setup_runs_once_and_teardown_on_request():
    events = []

    @model
    class Counter:
        def setup(self):
            events.append("setup")
            self.count = 0

        def predict(self) -> int:
            self.count += 1
            return self.count

        def teardown(self):
            events.append("teardown")

    runtime = ModelRuntime(Counter)
    assert [predict(runtime).output for _ in range(3)] == [1, 2, 3]
    runtime.teardown()
    assert events == ["setup", "teardown"]
    assert runtime.health()["status"] == "READY"


def test_setup_failure_is_reported_not_raised():
    @model
    class Broken:
        def setup(self):
            print("loading weights")
            raise RuntimeError("weights file is missing")

        def predict(self) -> int:
            return 1

    runtime = ModelRuntime(Broken)
    health = runtime.health()
    assert health["status"] == "SETUP_FAILED"
    assert health["setup"]["error"] == "weights file is missing"
    assert "loading weights" in health["setup"]["logs"]
    prediction = predict(runtime)
    assert prediction.status == "failed" and "setup() failed" in prediction.error


def test_unserialisable_output_fails_clearly():
    @model
    def odd() -> object:
        return object()

    prediction = predict(ModelRuntime(odd))
    assert prediction.status == "failed" and "serialize" in prediction.error


def test_run_batch_passes_lists_and_checks_one_output_per_request():
    @model(batch=4)
    def double(x: list[int]) -> list[int]:
        return [value * 2 for value in x]

    runtime = ModelRuntime(double)
    assert asyncio.run(runtime.run_batch([{"x": 1}, {"x": 2}])) == [2, 4]

    @model(batch=4)
    def wrong(x: list[int]) -> list[int]:
        return [0]

    with pytest.raises(ValueError, match="one output per input \\(2 here\\)"):
        asyncio.run(ModelRuntime(wrong).run_batch([{"x": 1}, {"x": 2}]))


def test_no_more_than_concurrency_predictions_run_at_once():
    import threading

    state = {"now": 0, "most": 0}
    lock = threading.Lock()

    @model(concurrency=2)
    def busy(x: int) -> int:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return x

    runtime = ModelRuntime(busy)

    async def six_at_once():
        return await asyncio.gather(*(runtime.predict({"x": x}) for x in range(6)))

    assert [p["output"] for p in asyncio.run(six_at_once())] == list(range(6))
    assert state["most"] == 2


class CountingMetrics(NoMetrics):
    """The runtime's metrics interface, counting: the in-flight figure and each outcome."""

    def __init__(self) -> None:
        self.in_flight, self.lowest, self.outcomes = 0, 0, []

    def started(self) -> None:
        self.in_flight += 1

    def stopped(self) -> None:
        self.in_flight -= 1
        self.lowest = min(self.lowest, self.in_flight)

    def finished(self, status: str, **figures: float) -> None:
        self.outcomes.append(status)


def test_in_flight_never_goes_below_zero_and_every_end_is_counted():
    @model
    class Broken:
        def setup(self):
            raise RuntimeError("no weights")

        def predict(self) -> int:
            return 1

    broken = CountingMetrics()
    predict(ModelRuntime(Broken, metrics=broken))
    assert broken.in_flight == 0 and broken.outcomes == ["failed"]

    @model(concurrency=1)
    async def slow(x: int) -> int:
        await asyncio.sleep(5)
        return x

    counted = CountingMetrics()
    runtime = ModelRuntime(slow, metrics=counted)

    async def one_running_one_queued_both_cancelled():
        running = asyncio.ensure_future(runtime.predict({"x": 1}))
        queued = asyncio.ensure_future(runtime.predict({"x": 2}))
        await asyncio.sleep(0.2)
        running.cancel()
        queued.cancel()  # a caller who went away before its prediction got a slot
        await asyncio.gather(running, queued, return_exceptions=True)

    asyncio.run(one_running_one_queued_both_cancelled())
    assert counted.outcomes == ["canceled", "canceled"] and counted.in_flight == 0 and counted.lowest == 0


class _FakeCuda:
    """torch.cuda as a model that uses a GPU sees it: peak memory reset per prediction, then read."""

    def __init__(self):
        self.resets = 0

    def is_available(self) -> bool:
        return True

    def reset_peak_memory_stats(self) -> None:
        self.resets += 1

    def max_memory_allocated(self) -> int:
        return 2 * 2**30


def test_a_gpu_models_peak_memory_reaches_its_record(monkeypatch):
    """Read per prediction from torch.cuda (a fake GPU here) into metrics, where the records and lambdaml status find it."""
    cuda = _FakeCuda()
    monkeypatch.setitem(sys.modules, "torch", type("torch", (), {"cuda": cuda}))
    prediction = predict(ModelRuntime(shout), text="hi")
    assert prediction.metrics["gpu_peak"] == 2 * 2**30 and cuda.resets == 1
    monkeypatch.delitem(sys.modules, "torch")
    assert "gpu_peak" not in predict(ModelRuntime(shout), text="hi").metrics
