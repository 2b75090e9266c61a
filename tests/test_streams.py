"""Streaming: generator predicts over SSE, as one combined output, and through .remote; the helpers."""

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from lambdaml import ModelError, model
from lambdaml.serve.streams import combine, iterate, sse
from lambdaml.serve.threads import SyncRunner
from lambdaml.serve.runtime import ModelRuntime


def test_iterate_handles_sync_and_async_generators():
    def numbers():
        yield from (1, 2, 3)

    async def letters():
        for letter in "ab":
            yield letter

    async def collect(produced):
        return [item async for item in iterate(produced, SyncRunner("t"))]

    assert asyncio.run(collect(numbers())) == [1, 2, 3]
    assert asyncio.run(collect(letters())) == ["a", "b"]


def test_combine_and_sse_format():
    assert combine(["Hel", "lo"], text=True) == "Hello" and combine([], text=True) == ""
    assert combine([1, 2], text=False) == [1, 2] and combine(["a"], text=False) == ["a"]
    assert sse("output", "two\nlines") == b"event: output\ndata: two\ndata: lines\n\n"
    assert sse("done", {"status": "succeeded"}) == b'event: done\ndata: {"status": "succeeded"}\n\n'


@model(name="counter-stream", cpu=0.1, min=1)
def counter_stream(upto: int, fail_at: int = -1) -> Iterator[str]:
    for number in range(upto):
        if number == fail_at:
            raise RuntimeError(f"stopped at {number}")
        yield f"{number},"


def test_runtime_streams_items_as_they_come_and_combines_them():
    seen = []

    async def on_item(item):
        seen.append(item)

    prediction = asyncio.run(ModelRuntime(counter_stream).predict({"upto": 3}, on_item=on_item))
    assert seen == ["0,", "1,", "2,"] and prediction["output"] == "0,1,2,"


@model(name="async-stream", cpu=0.1, min=1)
async def async_stream(upto: int) -> AsyncIterator[dict]:
    for number in range(upto):
        await asyncio.sleep(0)
        yield {"n": number}


@pytest.fixture(scope="module")
def streaming_models(cluster):
    urls = [counter_stream.deploy().url, async_stream.deploy().url]
    yield urls
    counter_stream.delete()
    async_stream.delete()


def sse_events(url: str, inputs: dict) -> list[tuple[str, str]]:
    events, kind = [], None
    headers = {"Accept": "text/event-stream"}
    with httpx.stream("POST", f"{url}/predictions", json={"input": inputs}, headers=headers, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, line[6:]))
    return events


def test_sse_sends_outputs_then_done(streaming_models):
    events = sse_events(streaming_models[0], {"upto": 3})
    assert events[:3] == [("output", "0,"), ("output", "1,"), ("output", "2,")]
    assert events[3][0] == "done" and json.loads(events[3][1])["output"] == "0,1,2,"


def test_a_failure_mid_stream_is_an_error_event(streaming_models):
    events = sse_events(streaming_models[0], {"upto": 5, "fail_at": 2})
    assert [kind for kind, _ in events] == ["output", "output", "error", "done"]
    assert json.loads(events[2][1]) == {"detail": "stopped at 2"}


def test_invalid_input_is_a_422_before_streaming(streaming_models):
    response = httpx.post(f"{streaming_models[0]}/predictions", json={"input": {"upto": "x"}},
                          headers={"Accept": "text/event-stream"})
    assert response.status_code == 422 and response.json()["invalid_fields"][0]["field"] == "upto"


def test_non_streaming_requests_get_combined_outputs(streaming_models):
    text = httpx.post(f"{streaming_models[0]}/predictions", json={"input": {"upto": 4}}).json()
    assert text["output"] == "0,1,2,3,"
    items = httpx.post(f"{streaming_models[1]}/predictions", json={"input": {"upto": 2}}).json()
    assert items["output"] == [{"n": 0}, {"n": 1}]


def test_remote_returns_an_iterator(streaming_models):
    assert list(counter_stream.remote(upto=3)) == ["0,", "1,", "2,"]
    assert list(async_stream.remote(upto=2)) == [{"n": 0}, {"n": 1}]
    with pytest.raises(ModelError, match="stopped at 1"):
        list(counter_stream.remote(upto=3, fail_at=1))


def test_the_schema_shows_a_stream_of_items():
    assert counter_stream.schema.json_schema()["output"] == {"type": "string", "x-lambdaml-stream": True}  # joined
    items = async_stream.schema.json_schema()["output"]
    assert items["type"] == "array" and items["x-lambdaml-stream"] is True
