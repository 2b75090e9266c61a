"""The predictions HTTP API through Ray Serve's real ingress (HAProxy by default)."""

import httpx
import pytest

from lambdaml import Input, Secret, model
from lambdaml.schema import Prediction


@model(name="http-model", cpu=0.1, min=1, max=1)
def http_model(
    text: str = Input(description="Text", min_length=1),
    times: int = Input(default=1, ge=1, le=3, description="Repeats"),
    key: Secret = Input(default="", description="A key"),
) -> list[str]:
    print(f"working on {text} with {key.get_secret_value()}")
    if text == "fail":
        raise RuntimeError("the model refused")
    return [text] * times


@pytest.fixture(scope="module")
def url(cluster):
    deployment = http_model.deploy()
    yield deployment.url
    http_model.delete()


def post(url, body, **kwargs):
    return httpx.post(f"{url}/predictions", timeout=30, **({"json": body} if not isinstance(body, bytes) else {"content": body}))


def test_prediction_has_replicate_fields(url):
    response = post(url, {"input": {"text": "hi", "times": 2}})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == set(Prediction.model_fields)  # Replicate's fields, and the record's
    assert body["model"] == "http-model" and body["urls"]["get"].endswith(f"/v1/predictions/{body['id']}")
    assert body["status"] == "succeeded" and body["output"] == ["hi", "hi"] and body["error"] is None
    assert body["input"] == {"text": "hi", "times": 2, "key": "**********"}
    assert body["metrics"]["predict_time"] > 0
    assert "working on hi" in body["logs"]


def test_caller_chosen_prediction_id_is_kept(url):
    assert post(url, {"input": {"text": "x"}, "id": "my-id-1"}).json()["id"] == "my-id-1"


def test_model_exception_is_a_failed_prediction_not_a_5xx(url):
    response = post(url, {"input": {"text": "fail"}})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "failed" and body["error"] == "the model refused" and "Traceback" not in body["error"]


@pytest.mark.parametrize(
    "body, fields",
    [
        ({"input": {"text": "", "times": 9, "extra": 1}}, {"text", "times", "extra"}),
        ({"input": {"times": "lots"}}, {"text", "times"}),
        ({"text": "no envelope"}, {"text"}),
        (b"{not json", {"body"}),
        ({"input": "not an object"}, {"input"}),
    ],
)
def test_invalid_requests_are_422_naming_every_field(url, body, fields):
    response = post(url, body)
    assert response.status_code == 422
    detail = response.json()
    assert {f["field"] for f in detail["invalid_fields"]} == fields
    for field in fields:
        assert field in detail["detail"]


def test_secret_never_echoed_or_logged(url):
    body = post(url, {"input": {"text": "s", "key": "hunter2-secret"}}).text
    assert "hunter2-secret" not in body and "working on s with **********" in body
    invalid = post(url, {"input": {"text": "", "key": "hunter2-secret"}}).text
    assert "hunter2-secret" not in invalid


def test_openapi_and_health_check(url):
    document = httpx.get(f"{url}/openapi.json").json()
    assert document["components"]["schemas"]["Input"]["properties"]["times"]["maximum"] == 3
    assert document["components"]["schemas"]["Output"]["type"] == "array"
    assert httpx.get(f"{url}/health-check").json() == {"status": "READY"}  # no recent errors shown to callers


def test_unknown_route_and_method_are_json_errors(url):
    assert httpx.get(f"{url}/nope").status_code == 404
    assert httpx.get(f"{url}/predictions").status_code == 405


def test_batching_gathers_concurrent_requests_into_one_predict_call(deployed):
    import concurrent.futures

    from lambdaml import model

    @model(name="batcher", cpu=0.1, min=1, batch={"max_size": 4, "wait_ms": 200})
    def batcher(x: list[int]) -> list[dict]:
        return [{"double": value * 2, "batch": len(x)} for value in x]

    deployment = deployed(batcher)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(
            lambda x: httpx.post(f"{deployment.url}/predictions", json={"input": {"x": x}}, timeout=60).json(), range(8)
        ))
    assert [r["output"]["double"] for r in responses] == [x * 2 for x in range(8)]
    assert max(r["output"]["batch"] for r in responses) > 1  # several requests shared a call of predict
    invalid = httpx.post(f"{deployment.url}/predictions", json={"input": {"x": "seven"}})
    assert invalid.status_code == 422  # validation stays per request


def test_async_models_with_concurrency_run_requests_at_once_in_one_replica(deployed):
    import concurrent.futures

    from lambdaml import model

    @model(name="gathering", cpu=0.1, min=1, max=1, concurrency=3)
    async def gathering(x: int) -> dict:
        import asyncio
        import os

        state = globals().setdefault("_arrivals", {"count": 0})  # shared by the requests of this replica
        state["count"] += 1
        for _ in range(200):  # up to 10 s for the other two to arrive
            if state["count"] >= 3:
                return {"together": True, "pid": os.getpid()}
            await asyncio.sleep(0.05)
        return {"together": False, "pid": os.getpid()}

    deployment = deployed(gathering)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        outputs = list(pool.map(
            lambda x: httpx.post(f"{deployment.url}/predictions", json={"input": {"x": x}}, timeout=60).json()["output"],
            range(3),
        ))
    assert all(o["together"] for o in outputs) and len({o["pid"] for o in outputs}) == 1
